"""The per-chunk stages, usable with or without Ray: read -> predict -> write.

Pixels travel once from a read task to a predict actor (raw uint8/uint16 chunk + halo:
2 bytes x bands x 2176^2 = 38 MB for a default 4-band uint16 chunk), and the encoded chunk
(4 bytes per pixel: 17 MB at 2048 px) once from the actor to a write task, so the model's
device never waits on Zarr encoding or uploads. Only chunk keys, timings and error strings
leave the write stage.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from depthseg.errors import DepthSegError
from depthseg.geo import ChunkId, OutputGrid, TileSpec, chunk_read_window
from depthseg.io.bundle import Bundle, load_bundle
from depthseg.io.catalog import Catalog
from depthseg.io.storage import Storage
from depthseg.mapping.predict import ChunkPrediction, ChunkPredictor, pick_device
from depthseg.mapping.write import LAYERS, Mosaic


@dataclass(frozen=True)
class ChunkContext:
    """What every stage needs to know about the run (small; pickled to Ray workers).

    Attributes:
        catalog: Scenes and their footprint index.
        grid: The output grid.
        tiles: Tile size, overlap, halo.
        bands: 1-based imagery bands in model channel order.
        out: Output URI.
        storage: Storage settings.
        scale: ``(scale, offset)`` applied to pixels before the model, or None.
        dtype: The dtype the model bundle takes (pixels are converted to it after scaling).
        value_range: The bundle's valid pixel range (scaled pixels are clipped to it).
    """

    catalog: Catalog
    grid: OutputGrid
    tiles: TileSpec
    bands: tuple[int, ...]
    out: str
    storage: Storage
    scale: tuple[float, float] | None = None
    dtype: str | None = None
    value_range: tuple[float, float] = (0.0, 65535.0)

    @property
    def pixel_dtype(self) -> str:
        """The dtype of the pixels handed to the model."""
        return self.dtype or self.catalog.dtype


def read_chunk(ctx: ChunkContext, chunk: ChunkId) -> tuple[np.ndarray, np.ndarray]:
    """Chunk + halo pixels (band, row, col) and valid mask (row, col), composited, once."""
    window = chunk_read_window(ctx.grid.chunk_window(chunk), ctx.tiles.halo_px)
    pixels, valid = ctx.catalog.read(ctx.grid.crs, ctx.grid.window_transform(window),
                                     window.height, window.width, ctx.bands)
    if ctx.scale is not None:
        scale, offset = ctx.scale
        scaled = pixels.astype(np.float32) * np.float32(scale) + np.float32(offset)
        low, high = ctx.value_range
        pixels = np.clip(np.rint(scaled), low, high).astype(ctx.pixel_dtype)
        pixels[:, ~valid] = 0
    return pixels, valid


def _error_text(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if isinstance(err, DepthSegError) else f"{type(err).__name__}: {text}"


def _error_detail(err: BaseException) -> str:
    """The traceback of an unexpected error ("" for expected ones: their line says it all)."""
    if isinstance(err, DepthSegError):
        return ""
    return "".join(traceback.format_exception(err)).rstrip()


def read_batch(batch: dict[str, np.ndarray], ctx: ChunkContext) -> dict[str, Any]:
    """Ray Data read task: chunk keys -> pixels + valid mask (or an error string)."""
    keys = [str(k) for k in batch["chunk"]]
    window = chunk_read_window(ctx.grid.chunk_window(ChunkId.parse(keys[0])),
                               ctx.tiles.halo_px)
    shape = (len(ctx.bands), window.height, window.width)
    pixels, valid, errors, details, seconds = [], [], [], [], []
    for key in keys:
        start = time.perf_counter()
        try:
            chunk_pixels, chunk_valid = read_chunk(ctx, ChunkId.parse(key))
            errors.append("")
            details.append("")
        except Exception as err:  # noqa: BLE001 - a bad scene fails its chunk, not the run
            chunk_pixels = np.zeros(shape, dtype=ctx.pixel_dtype)
            chunk_valid = np.zeros(shape[1:], dtype=bool)
            errors.append(_error_text(err))
            details.append(_error_detail(err))
        pixels.append(chunk_pixels)
        valid.append(chunk_valid)
        seconds.append(time.perf_counter() - start)
    return {"chunk": np.array(keys), "pixels": np.stack(pixels), "valid": np.stack(valid),
            "error": np.array(errors), "detail": np.array(details), "read_s": np.array(seconds)}


class ChunkPredictActor:
    """Predict one chunk at a time; built once per actor (model loaded once).

    Returns the chunk's encoded layers (uint8, uint8, float16: 4 bytes per pixel) for the
    write stage, so the model's device never waits on Zarr encoding or object-store uploads
    (measured on the CPU box: ~25 ms per megapixel to write, against ~2 ms per megapixel of
    ViT-S model time on an H100).
    """

    def __init__(self, ctx: ChunkContext, model_uri: str | None = None,
                 bundle: Bundle | None = None, gpus: int = 0, batch_size: int = 8,
                 cpu_threads: int | None = None, compile_model: bool = False,
                 write: bool = False) -> None:
        """Load the model onto this worker's device.

        Args:
            ctx: The run context.
            model_uri: Bundle URI (loaded here, on the worker).
            bundle: An already-loaded bundle (tests, benchmarks) instead of ``model_uri``.
            gpus: > 0 to run on CUDA when visible.
            batch_size: Tiles per forward pass.
            cpu_threads: Torch threads when the model runs on the CPU. Ray starts a worker
                with ``OMP_NUM_THREADS`` = its ``num_cpus`` (1), which would leave a CPU
                actor on one core while the read tasks mostly wait on I/O.
            compile_model: ``torch.compile`` the model (see :class:`ChunkPredictor`).
            write: Also write each chunk here and return :func:`write_batch`'s rows: for
                CPU-only runs, where the model shares the cores with the writes anyway and a
                separate stage only adds a hop through the object store.
        """
        if bundle is None:
            assert model_uri is not None
            bundle = load_bundle(model_uri, ctx.storage)
        self.ctx = ctx
        device = pick_device(gpus)
        if device.type == "cpu" and cpu_threads:
            torch.set_num_threads(min(cpu_threads, os.cpu_count() or 1))
        self.predictor = ChunkPredictor(bundle.model, bundle.contract, ctx.tiles,
                                        batch_size=batch_size, device=device,
                                        compile_model=compile_model)
        self.write = write

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data actor call: read rows -> predicted rows (encoded layers, no input pixels)."""
        size = self.ctx.grid.chunk_size
        out: dict[str, list[Any]] = {name: [] for name in (
            "chunk", "error", "detail", "read_s", "predict_s", *LAYERS)}
        for i, key in enumerate(batch["chunk"]):
            error, detail, seconds = str(batch["error"][i]), str(batch["detail"][i]), 0.0
            prediction = None
            if not error:
                start = time.perf_counter()
                try:
                    prediction = self.predictor.predict_chunk(batch["pixels"][i],
                                                              batch["valid"][i])
                except Exception as err:  # noqa: BLE001 - fail the chunk, keep the run
                    error, detail = _error_text(err), _error_detail(err)
                seconds = time.perf_counter() - start
            for name, spec in LAYERS.items():
                out[name].append(getattr(prediction, name) if prediction is not None else
                                 np.full((size, size), spec["fill_value"], spec["dtype"]))
            for name, value in (("chunk", str(key)), ("error", error), ("detail", detail),
                                ("read_s", float(batch["read_s"][i])), ("predict_s", seconds)):
                out[name].append(value)
        rows = {name: np.stack(v) if name in LAYERS else np.array(v) for name, v in out.items()}
        return write_batch(rows, self.ctx) if self.write else rows


def write_batch(batch: dict[str, np.ndarray], ctx: ChunkContext) -> dict[str, np.ndarray]:
    """Ray Data write task: predicted rows -> Zarr chunks + done markers -> result rows.

    Only chunk keys, errors and timings leave this stage.
    """
    mosaic = Mosaic(ctx.out, ctx.storage)
    results: dict[str, list[Any]] = {"chunk": [], "error": [], "detail": [], "read_s": [],
                                     "predict_s": [], "write_s": []}
    for i, key in enumerate(batch["chunk"]):
        error, detail, seconds = str(batch["error"][i]), str(batch["detail"][i]), 0.0
        if not error:
            start = time.perf_counter()
            try:
                mosaic.write_chunk(ctx.grid, ChunkId.parse(str(key)), ChunkPrediction(
                    **{name: batch[name][i] for name in LAYERS}))
            except Exception as err:  # noqa: BLE001 - fail the chunk, keep the run
                error, detail = _error_text(err), _error_detail(err)
            seconds = time.perf_counter() - start
        for name, value in (("chunk", str(key)), ("error", error), ("detail", detail),
                            ("read_s", float(batch["read_s"][i])),
                            ("predict_s", float(batch["predict_s"][i])), ("write_s", seconds)):
            results[name].append(value)
    return {name: np.array(values) for name, values in results.items()}


def run_local(ctx: ChunkContext, chunks: list[ChunkId], predictor: ChunkPredictActor,
              on_result: Callable[[dict[str, Any]], None]) -> None:
    """The same stages in one process, chunk by chunk (debugging, tests, the benchmark)."""
    for chunk in chunks:
        read = read_batch({"chunk": np.array([chunk.key])}, ctx)
        predicted = predictor(read)
        out = predicted if predictor.write else write_batch(predicted, ctx)
        on_result({name: values[0] for name, values in out.items()})
