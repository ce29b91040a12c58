"""Predict one chunk: chunk + halo pixels -> land cover, confidence and depth for the chunk.

Tiles are cut with :class:`~depthseg.geo.TileSpec`, sent to the device as raw uint8/uint16
and normalised there, run in batches (bf16 autocast on CUDA, and on the CPU when asked:
:data:`~depthseg.mapping.request.PRECISIONS`), and blended with weights that
fall towards zero at tile edges (the weights of :class:`~depthseg.geo.Blender`,
accumulated on the device by :class:`DeviceBlender`). Classes are blended as
softmax probabilities and depth as values, in one accumulator of K + 1 channels.

Output encoding (also written to the mosaic attributes):

- ``landcover`` uint8: argmax class; 255 = no data.
- ``confidence`` uint8: ``round(255 * max blended probability)``; 0 = no data (a valid pixel
  is at least ``255 / K``, so 0 is never a real value).
- ``depth`` float16: blended relative depth in [0, 1]; NaN = no data (and everywhere when the
  model has no depth branch).
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import numpy as np
import torch

from depthseg.errors import InputError
from depthseg.geo import TileSpec, blend_weights, crop_halo
from depthseg.geo.tiles import TileLayout, TileWindow, select_tiles, trim_tiles
from depthseg.io.bundle import Contract
from depthseg.mapping.layers import (
    CONFIDENCE_NODATA,
    LANDCOVER_NODATA,
    PROBABILITY_NODATA,
    PROBABILITY_SCALE,
    ChunkPrediction,
)
from depthseg.mapping.request import BATCH_SIZE, PRECISIONS
from depthseg.model import normalize

__all__ = ["CONFIDENCE_NODATA", "LANDCOVER_NODATA", "PRECISIONS", "ChunkPrediction",
           "ChunkPredictor", "DeviceBlender", "cpu_micro_batch", "inference_autocast",
           "encode_on_device", "pick_device"]


def inference_autocast(precision: str, device: torch.device) -> torch.autocast:
    """The model's arithmetic of ``precision`` on ``device``: a bf16 autocast, or none (fp32).

    ``auto`` is bf16 on CUDA and fp32 elsewhere; ``bf16`` autocasts on any device.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not known; give one of "
                         f"{', '.join(PRECISIONS)}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


# On the CPU a forward pass of more than about a megapixel of tiles runs slower per tile
# (activations outgrow the caches): ViT-S at 518 px took 0.64 s per tile in passes of 1-4
# tiles and 0.77 s in passes of 8 (2-core Xeon, fp32); the tiny preset at 126-252 px is
# fastest at 8. See :func:`cpu_micro_batch`.
CPU_PASS_PIXELS = 1 << 20


def cpu_micro_batch(tile: int, batch_size: int) -> int:
    """Tiles per forward pass on the CPU: as many as fit :data:`CPU_PASS_PIXELS`, at least 1."""
    return max(1, min(batch_size, CPU_PASS_PIXELS // (tile * tile)))


def pick_device(gpus: int) -> torch.device:
    """CUDA when a GPU was asked for and is visible, else the CPU."""
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


class ChunkPredictor:
    """Runs a model over chunk + halo areas; one per actor, reused for every chunk."""

    def __init__(self, model: torch.nn.Module, contract: Contract, tiles: TileSpec,
                 batch_size: int = BATCH_SIZE, device: torch.device | str = "cpu",
                 num_classes: int | None = None, compile_model: bool = False,
                 micro_batch: int | None = None, precision: str = "auto") -> None:
        """Move the model to the device once.

        Args:
            model: Returns a ``DepthSegOutput`` (``logits``, ``depths``) for (B, C, T, T) input.
            contract: The bundle's preprocessing contract (mean, std, classes).
            tiles: Tile size, overlap and halo.
            batch_size: Tiles per forward pass.
            device: Where the model runs.
            num_classes: Class count (default: the contract's).
            compile_model: ``torch.compile`` the model (first batches compile; worth it for
                long GPU runs). Short batches are padded to ``batch_size`` so one static shape
                is compiled.
            micro_batch: Tiles per forward pass within a batch (default: the whole batch on
                CUDA, :func:`cpu_micro_batch` on the CPU). Results do not depend on it.
            precision: One of :data:`PRECISIONS`.
        """
        if batch_size < 1:
            raise InputError(f"batch size {batch_size} must be >= 1; give e.g. 8")
        self.device = torch.device(device)
        inference_autocast(precision, self.device)  # an unknown precision fails here, once
        self.precision = precision
        self.model = model.to(self.device).eval()
        # On the CPU oneDNN's convolutions (the DPT head and the decoder: about a third of a
        # ViT-S forward) run in channels-last memory without reordering every input: the
        # forward took 0.97 s per 518 px tile against 1.12-1.17 s (2-core Xeon), with the
        # same outputs to 1e-7. CUDA keeps its layout (not measured there).
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.contract = contract
        self.tiles = tiles
        self.batch_size = batch_size
        self.num_classes = num_classes or len(contract.class_names)
        self.tiles_run = 0
        self.last_chunk_tiles = 0
        self.last_chunk_tile_px = 0  # pixels the model ran on (trimmed tiles count less)
        self.first_forward_at: float | None = None  # epoch seconds of the first tile batch
        self.compiled = compile_model
        if micro_batch is None:
            micro_batch = (batch_size if self.device.type == "cuda"
                           else cpu_micro_batch(tiles.tile, batch_size))
        self.micro_batch = max(1, min(micro_batch, batch_size))
        self._run: Any = torch.compile(self.model) if compile_model else self.model
        # Only the finest depth map is stored: a model that can skip the coarser ones does.
        self._forward_kwargs = ({"depth_scales": 1} if "depth_scales" in inspect.signature(
            self.model.forward).parameters else {})

    def _forward(self, tiles: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Raw tiles (B, C, T, T) -> probabilities (B, K, T, T) and depth, on the device."""
        if self.first_forward_at is None:
            self.first_forward_at = time.time()
        batch = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        # torch has limited uint16 support; widen on the device, not on the host.
        if batch.dtype not in (torch.uint8,):
            batch = batch.to(torch.int32)
        images = normalize(batch, self.contract.mean, self.contract.std)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        count = images.shape[0]
        probs_parts, depth_parts = [], []
        with torch.inference_mode(), inference_autocast(self.precision, self.device):
            for first in range(0, count, self.micro_batch):
                part = images[first:first + self.micro_batch]
                size = part.shape[0]
                if self.compiled and size < self.micro_batch:  # one static shape to compile
                    part = torch.cat([part, part.new_zeros(
                        (self.micro_batch - size, *part.shape[1:]))])
                out = self._run(part, **self._forward_kwargs)
                probs_parts.append(torch.softmax(out.logits[:size].float(), dim=1))
                if len(out.depths):
                    depth_parts.append(out.depths[0][:size].float())
            probs = probs_parts[0] if len(probs_parts) == 1 else torch.cat(probs_parts)
            depth = None
            if depth_parts:
                depth = depth_parts[0] if len(depth_parts) == 1 else torch.cat(depth_parts)
                if depth.shape[-2:] != probs.shape[-2:]:
                    depth = torch.nn.functional.interpolate(
                        depth, size=probs.shape[-2:], mode="bilinear", align_corners=False)
        self.tiles_run += tiles.shape[0]
        return probs, depth

    def predict_tiles(self, tiles: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Model forward on raw tiles (B, C, T, T) -> (probabilities (B, K, T, T), depth).

        Depth is (B, 1, T, T) or None when the model has no depth branch. Results are float32
        on the CPU.
        """
        probs, depth = self._forward(tiles)
        return probs.cpu(), (depth.cpu() if depth is not None else None)

    def predict_chunk(self, pixels: np.ndarray, valid: np.ndarray,
                      probabilities: bool = False) -> ChunkPrediction:
        """Predict the chunk inside a chunk + halo area.

        Blending and encoding run on the model's device; only the three stored layers of
        the chunk (uint8, uint8, float16) come back to the host.

        Args:
            pixels: (band, row, col) uint8/uint16, chunk + 2 * halo on each axis.
            valid: (row, col) bool, False where the imagery has no data.
            probabilities: Also return every class's probability (uint8, see
                :func:`encode_on_device`).

        Returns:
            The chunk's outputs with the halo cropped; no-data where ``valid`` is False.
        """
        _bands, height, width = pixels.shape
        layout = self.tiles.layout(height - 2 * self.tiles.halo_px,
                                   width - 2 * self.tiles.halo_px)
        if layout.pad_rows or layout.pad_cols:
            pad = ((0, 0), (0, layout.pad_rows), (0, layout.pad_cols))
            pixels = np.pad(pixels, pad)
            valid = np.pad(valid, pad[1:])
        # Tiles that see only no-data, or only add a sliver another tile covers, are skipped;
        # tiles cut by the bbox or the imagery's edge are trimmed to what they map (not when
        # compiled: one static shape).
        offsets = select_tiles(layout, valid, self.tiles.halo_px)
        windows = ([TileWindow(r, c, layout.tile, layout.tile) for r, c in offsets]
                   if self.compiled else trim_tiles(layout, valid, self.tiles.halo_px, offsets))
        self.last_chunk_tiles = len(windows)
        self.last_chunk_tile_px = sum(w.height * w.width for w in windows)
        blender = DeviceBlender(self.num_classes + 1, layout, self.device)
        has_depth = False
        shapes: dict[tuple[int, int], list[TileWindow]] = {}
        for window in windows:  # one batch shape per tile size, in lattice order
            shapes.setdefault((window.height, window.width), []).append(window)
        for (rows, cols), same in shapes.items():
            for start in range(0, len(same), self.batch_size):
                batch_windows = same[start:start + self.batch_size]
                batch = np.stack([pixels[:, r:r + rows, c:c + cols]
                                  for r, c, _, _ in batch_windows])
                probs, depth = self._forward(batch)
                has_depth = depth is not None
                if depth is None:
                    depth = torch.zeros_like(probs[:, :1])
                blender.add_batch(torch.cat([probs, depth], dim=1), batch_windows)
        halo = self.tiles.halo_px
        blended = blender.result()[:, halo:height - halo, halo:width - halo]
        chunk_valid = crop_halo(valid[:height, :width], halo)
        return encode_on_device(blended, chunk_valid, has_depth=has_depth,
                                probabilities=probabilities)


class DeviceBlender:
    """:class:`~depthseg.geo.Blender`'s weighted mean, accumulated in torch on the device.

    Same weights (:func:`~depthseg.geo.blend_weights`) and the same arithmetic in float32,
    so results equal the host blender's to rounding; tile outputs never leave the device.
    """

    def __init__(self, channels: int, layout: TileLayout, device: torch.device) -> None:
        """Empty (channels, rows, cols) accumulators over the padded layout area."""
        self.tile, self.overlap, self.device = layout.tile, layout.overlap, device
        self._weights: dict[tuple[int, int], torch.Tensor] = {}
        rows, cols = max(layout.height, self.tile), max(layout.width, self.tile)
        self.value_sum = torch.zeros((channels, rows, cols), dtype=torch.float32, device=device)
        self.weight_sum = torch.zeros((rows, cols), dtype=torch.float32, device=device)

    def weights(self, rows: int, cols: int) -> torch.Tensor:
        """The (rows, cols) blending weights of a (trimmed) tile, made once per shape."""
        if (rows, cols) not in self._weights:
            self._weights[(rows, cols)] = torch.from_numpy(
                blend_weights(rows, self.overlap, width=cols)).to(self.device)
        return self._weights[(rows, cols)]

    def add_batch(self, values: torch.Tensor, windows: list[TileWindow]) -> None:
        """Add (B, C, rows, cols) outputs of same-sized tiles at their windows."""
        rows, cols = values.shape[-2:]
        weights = self.weights(rows, cols)
        weighted = values.float() * weights
        for tile_values, (row, col, *_) in zip(weighted, windows, strict=True):
            self.value_sum[:, row:row + rows, col:col + cols] += tile_values
            self.weight_sum[row:row + rows, col:col + cols] += weights

    def result(self) -> torch.Tensor:
        """(C, rows, cols) weighted mean; 0 where no tile was added."""
        covered = self.weight_sum > 0
        return torch.where(covered, self.value_sum / self.weight_sum.clamp_min(1e-12),
                           torch.zeros((), device=self.value_sum.device))


def encode_on_device(blended: torch.Tensor, valid: np.ndarray,
                     has_depth: bool, probabilities: bool = False) -> ChunkPrediction:
    """Blended (K + 1, row, col) probabilities + depth -> the stored layers, on the device.

    Only the uint8/uint8/float16 layers are copied back to the host.

    ``probabilities`` also returns each class's blended probability as uint8
    ``round(254 x p)`` (255 = no data).
    """
    probs, depth = blended[:-1], blended[-1]
    top, landcover = probs.max(dim=0)
    confidence = torch.clamp(torch.round(top * 255), 1, 255).to(torch.uint8)
    mask = torch.from_numpy(np.ascontiguousarray(valid)).to(blended.device)
    landcover = torch.where(mask, landcover.to(torch.uint8),
                            torch.full((), LANDCOVER_NODATA, dtype=torch.uint8,
                                       device=blended.device))
    confidence = torch.where(mask, confidence, torch.zeros_like(confidence))
    nan = torch.full((), float("nan"), device=blended.device)
    depth16 = torch.where(mask, depth, nan) if has_depth else torch.full_like(depth, float("nan"))
    per_class = None
    if probabilities:
        scaled = torch.round(probs * PROBABILITY_SCALE).clamp(0, PROBABILITY_SCALE)
        per_class = torch.where(mask, scaled.to(torch.uint8), torch.full(
            (), PROBABILITY_NODATA, dtype=torch.uint8, device=blended.device)).cpu().numpy()
    return ChunkPrediction(landcover=landcover.cpu().numpy(),
                           confidence=confidence.cpu().numpy(),
                           depth=depth16.to(torch.float16).cpu().numpy(),
                           probabilities=per_class)
