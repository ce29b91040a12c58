"""Blending overlapping tile outputs into one chunk: weights that fall off at tile edges.

A ViT sees least context at a tile's border, so its outputs there are the least reliable; each
tile's output is weighted by a window that is 1 inside and ramps towards 0 over the last
``overlap`` pixels of every edge, and the chunk is ``sum(weight * value) / sum(weight)``.
Because the result is a weighted *mean*, a field the model reproduces exactly (a constant, a
smooth ramp) comes out unchanged whatever the tile layout, and there are no seams where tiles
meet. Weights never reach 0 (``min_weight``), so a pixel covered by only a tile's edge (the
outer border of the chunk + halo area) still gets a defined value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np

from depthseg.errors import InputError
from depthseg.geo.tiles import TileLayout, TileOffset

BlendKind = Literal["cosine", "linear"]


def _ramp(tile: int, overlap: int, kind: BlendKind) -> np.ndarray:
    # Pixels from the nearer tile edge: 0 for the edge pixel. The ramp runs over pixels
    # 0 .. overlap - 1, from 0 (the edge pixel, least context) to 1; dividing by overlap - 1
    # makes the ramps of two tiles overlapping by exactly `overlap` pixels mirror each other.
    index = np.arange(tile, dtype=np.float64)
    distance = np.minimum(index, tile - 1 - index)
    if overlap == 0:
        return np.ones(tile)
    t = np.clip(distance / max(overlap - 1, 1), 0.0, 1.0)
    match kind:
        case "cosine":
            # f(t) + f(1 - t) = 1: two neighbours at the nominal stride sum to exactly 1.
            return 0.5 - 0.5 * np.cos(math.pi * t)
        case "linear":
            return t
        case _:
            raise InputError(f"blend kind {kind!r} is not known; give 'cosine' or 'linear'")


def blend_weights(
    tile: int, overlap: int, kind: BlendKind = "cosine", min_weight: float = 1e-3,
    width: int | None = None,
) -> np.ndarray:
    """Separable (tile, tile) float32 weights: 1 inside, ramping down over ``overlap`` pixels.

    Along each axis the weight is ``min_weight`` at the edge pixel and rises to 1 at
    ``max(overlap - 1, 1)`` pixels in, as a function of the distance to the nearer edge, so the
    weights are symmetric under flips and transposition. Both ramps satisfy f(t) + f(1 - t) = 1,
    so two tiles overlapping by exactly ``overlap`` pixels have weights summing to 1 across the
    overlap (before the ``min_weight`` floor). If ``overlap > tile / 2`` the ramps of opposite
    edges meet and the centre stays below 1; blending still works, as only ratios matter.

    Args:
        tile: Tile side in pixels.
        overlap: Ramp width in pixels (the tile overlap); 0 gives all ones.
        kind: ``"cosine"`` (smooth, default) or ``"linear"``.
        min_weight: Floor of every weight, in (0, 1].
        width: Columns of a tile that is not square (:func:`~depthseg.geo.trim_tiles`);
            ``tile`` is then its rows.

    Returns:
        Weights of shape (tile, tile), or (tile, width), in [min_weight, 1].
    """
    width = tile if width is None else width
    if min(tile, width) < 1 or not (0 <= overlap < min(tile, width)):
        raise InputError(
            f"tile {tile} x {width} / overlap {overlap} invalid: need tile > overlap >= 0; "
            "give e.g. tile 518 with overlap 64"
        )
    if not (0 < min_weight <= 1):
        raise InputError(f"min_weight {min_weight} must be in (0, 1]; give e.g. 1e-3")
    rows = _ramp(tile, overlap, kind)
    cols = rows if width == tile else _ramp(width, overlap, kind)
    return np.maximum(np.outer(rows, cols), min_weight).astype(np.float32)


def _as_numpy(values: Any) -> np.ndarray:
    # Accept torch tensors without importing torch here: geo stays numpy-only.
    if hasattr(values, "detach"):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)


class Blender:
    """Accumulates weighted tile outputs over a chunk + halo area.

    The buffers are at least one tile in each direction, so the padded layouts of
    :func:`~depthseg.geo.tiles.tile_windows` fit; :meth:`result` returns only the data area.
    Memory: (channels + 1) x padded area x 4 bytes, one chunk at a time.
    """

    def __init__(self, channels: int, height: int, width: int, weights: np.ndarray) -> None:
        """Create empty accumulators.

        Args:
            channels: Channels C of every tile output (e.g. class scores, or 1 for depth).
            height: Rows of the data area (chunk + 2 * halo).
            width: Columns of the data area.
            weights: (tile, tile) weights from :func:`blend_weights`.
        """
        weights = np.asarray(weights, dtype=np.float32)
        if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
            raise InputError(f"weights of shape {weights.shape} are not square (tile, tile); "
                             "make them with blend_weights()")
        if channels < 1 or height < 1 or width < 1:
            raise InputError(f"blender of {channels} channels x {height} x {width} is empty; "
                             "give positive sizes")
        self.channels, self.height, self.width = channels, height, width
        self.tile = weights.shape[0]
        self.weights = weights
        rows, cols = max(height, self.tile), max(width, self.tile)
        self._value_sum = np.zeros((channels, rows, cols), dtype=np.float32)
        self._weight_sum = np.zeros((rows, cols), dtype=np.float32)

    @classmethod
    def for_layout(
        cls, channels: int, layout: TileLayout, kind: BlendKind = "cosine",
        min_weight: float = 1e-3,
    ) -> Blender:
        """A blender sized for a tile layout, ramping over the layout's overlap."""
        weights = blend_weights(layout.tile, layout.overlap, kind, min_weight)
        return cls(channels, layout.height, layout.width, weights)

    def add(self, values: Any, row_off: int, col_off: int) -> None:
        """Add one tile output.

        Args:
            values: (C, tile, tile) array or torch tensor.
            row_off: Row of the tile's top-left in the (padded) area.
            col_off: Column of the tile's top-left.
        """
        values = _as_numpy(values)
        expected = (self.channels, self.tile, self.tile)
        if values.shape != expected:
            raise InputError(f"tile output of shape {values.shape} does not match the blender's "
                             f"(C, tile, tile) = {expected}")
        rows, cols = self._weight_sum.shape
        if not (0 <= row_off <= rows - self.tile and 0 <= col_off <= cols - self.tile):
            raise InputError(f"tile at (row_off {row_off}, col_off {col_off}) reaches outside "
                             f"the {rows} x {cols} area; use offsets from tile_windows()")
        rows_sl = slice(row_off, row_off + self.tile)
        cols_sl = slice(col_off, col_off + self.tile)
        self._value_sum[:, rows_sl, cols_sl] += values * self.weights
        self._weight_sum[rows_sl, cols_sl] += self.weights

    def add_batch(self, values: Any, offsets: Iterable[TileOffset | tuple[int, int]]) -> None:
        """Add a batch of tile outputs, (B, C, tile, tile), one offset per tile."""
        batch = _as_numpy(values)
        offsets = list(offsets)
        if batch.ndim != 4 or len(offsets) != batch.shape[0]:
            raise InputError(f"batch of shape {batch.shape} does not match {len(offsets)} "
                             "offsets; give (B, C, tile, tile) and B offsets")
        for tile_values, (row_off, col_off) in zip(batch, offsets, strict=True):
            self.add(tile_values, row_off, col_off)

    @property
    def weight_sum(self) -> np.ndarray:
        """(H, W) total weight per pixel of the data area; 0 where no tile was added."""
        return self._weight_sum[: self.height, : self.width]

    def result(self, fill_value: float = np.nan) -> np.ndarray:
        """(C, H, W) float32 weighted mean over the data area (padding dropped).

        Args:
            fill_value: Value of pixels no tile covered (none, for a full tile layout).
        """
        value_sum = self._value_sum[:, : self.height, : self.width]
        weight_sum = self.weight_sum
        out = np.full(value_sum.shape, fill_value, dtype=np.float32)
        np.divide(value_sum, weight_sum, out=out, where=weight_sum > 0)
        return out


def crop_halo(array: np.ndarray, halo: int) -> np.ndarray:
    """Drop ``halo`` pixels from every side of the last two (row, col) axes: chunk+halo -> chunk."""
    if halo < 0 or 2 * halo >= min(array.shape[-2:]):
        raise InputError(f"halo {halo} cannot be cropped from an area of {array.shape[-2:]}; "
                         "give 0 <= halo < half the area")
    if halo == 0:
        return array
    return array[..., halo:-halo, halo:-halo]
