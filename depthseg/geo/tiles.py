"""Halos and model tiles inside a chunk: pure index maths, no I/O.

A chunk is read with a halo (its window grown by ``halo`` pixels on every side) and cut into
overlapping square tiles; tile outputs are blended (see :mod:`depthseg.geo.blend`) and the
halo is cropped off again. With ``halo >= overlap`` every chunk pixel lies at least ``overlap``
pixels inside the outermost tiles, i.e. where blending weights are flat, so a chunk's border
pixels get the same full-context prediction as its centre and chunks meet without seams.

Edge rule of :func:`tile_windows` (per axis, length ``L``, tile ``T``, ``stride = T - overlap``):

- tiles start at ``0, stride, 2 * stride, ...``;
- the last tile is shifted inward so it ends exactly at ``L``: it never reaches past the data,
  and it overlaps its neighbour by at least ``overlap`` pixels;
- so for ``L >= T`` there are ``ceil((L - T) / stride) + 1`` tiles and every pixel is covered;
- for ``L < T`` there is one tile at 0 and the *caller pads* the data by ``T - L`` pixels at
  the bottom / right (with no-data, marked invalid) to make a full tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, NamedTuple

from depthseg.errors import InputError

if TYPE_CHECKING:
    from depthseg.geo.grid import PixelWindow

DEFAULT_TILE = 518  # 37 x the ViT patch 14: DINOv2's native 518 px input
DEFAULT_OVERLAP = 64
VIT_PATCH = 14


class TileOffset(NamedTuple):
    """Top-left of a tile, in pixels of the (padded) chunk + halo area."""

    row_off: int
    col_off: int


def _check_tile(tile: int, overlap: int) -> None:
    if not (isinstance(tile, Integral) and isinstance(overlap, Integral)):
        raise InputError(f"tile {tile!r} and overlap {overlap!r} must be whole pixels; give ints")
    if overlap < 0:
        raise InputError(f"tile overlap {overlap} is negative; give 0 or more, e.g. 64")
    if tile <= overlap:
        raise InputError(
            f"tile {tile} must be larger than its overlap {overlap} (stride = tile - overlap "
            "must be positive); give e.g. tile 518 with overlap 64"
        )


@dataclass(frozen=True)
class TileSpec:
    """How a chunk is cut into model tiles.

    Attributes:
        tile: Tile side in pixels (a multiple of the ViT patch avoids resampling; not required).
        overlap: Pixels shared by neighbouring tiles; blending ramps over them.
        halo: Pixels read around a chunk; ``None`` means ``overlap``.
    """

    tile: int = DEFAULT_TILE
    overlap: int = DEFAULT_OVERLAP
    halo: int | None = None

    def __post_init__(self) -> None:
        _check_tile(self.tile, self.overlap)
        if self.halo is not None and self.halo < 0:
            raise InputError(f"halo {self.halo} is negative; give 0 or more (default: overlap)")

    @property
    def stride(self) -> int:
        """Distance between neighbouring tile starts."""
        return self.tile - self.overlap

    @property
    def halo_px(self) -> int:
        """The halo in pixels, with the default resolved."""
        return self.overlap if self.halo is None else self.halo

    def layout(self, chunk_height: int, chunk_width: int) -> TileLayout:
        """Tiles over a chunk of the given size plus this spec's halo on every side."""
        halo = self.halo_px
        return tile_windows(chunk_height + 2 * halo, chunk_width + 2 * halo,
                            self.tile, self.overlap)


@dataclass(frozen=True)
class TileLayout:
    """Tiles covering an area of ``height`` x ``width`` pixels (see the module's edge rule).

    Attributes:
        height: Rows of the data area.
        width: Columns of the data area.
        tile: Tile side in pixels.
        overlap: Nominal overlap between neighbouring tiles.
        offsets: Tile top-lefts, row-major.
        pad_rows: Rows of padding the caller adds below the data (non-zero only if
            ``height < tile``).
        pad_cols: Columns of padding the caller adds right of the data (likewise).
    """

    height: int
    width: int
    tile: int
    overlap: int
    offsets: tuple[TileOffset, ...]
    pad_rows: int
    pad_cols: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(rows, cols) of the area the tiles cover: the data plus the caller's padding."""
        return self.height + self.pad_rows, self.width + self.pad_cols

    def __len__(self) -> int:
        return len(self.offsets)


def axis_offsets(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis, by the module's edge rule.

    Args:
        length: Pixels along the axis (at least 1).
        tile: Tile side in pixels.
        overlap: Nominal overlap between neighbouring tiles.

    Returns:
        ``[0]`` when ``length <= tile`` (the caller pads), else ``ceil((length - tile) /
        stride) + 1`` increasing starts, the last one ``length - tile``.
    """
    _check_tile(tile, overlap)
    if length < 1:
        raise InputError(f"cannot tile an axis of {length} pixels; give at least 1")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    # Only the last start is clamped: (count - 2) * stride < length - tile <= (count-1) * stride.
    return [min(i * stride, length - tile) for i in range(count)]


def tile_windows(height: int, width: int, tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP) -> TileLayout:
    """Overlapping square tiles covering a ``height`` x ``width`` area, row-major.

    Args:
        height: Rows of the area (typically chunk + 2 * halo).
        width: Columns of the area.
        tile: Tile side in pixels.
        overlap: Nominal overlap between neighbouring tiles.

    Returns:
        The layout: offsets, and the bottom/right padding the caller must add when the area
        is smaller than one tile.
    """
    row_starts = axis_offsets(height, tile, overlap)
    col_starts = axis_offsets(width, tile, overlap)
    return TileLayout(
        height=height,
        width=width,
        tile=tile,
        overlap=overlap,
        offsets=tuple(TileOffset(r, c) for r in row_starts for c in col_starts),
        pad_rows=max(tile - height, 0),
        pad_cols=max(tile - width, 0),
    )


def chunk_read_window(chunk_window: PixelWindow, halo: int) -> PixelWindow:
    """The chunk's window grown by ``halo`` pixels on all sides.

    The result may reach outside the output grid (negative offsets, past the last row): the
    reader fills that part from neighbouring imagery or marks it no-data.
    """
    if halo < 0:
        raise InputError(f"halo {halo} is negative; give 0 or more (default: the tile overlap)")
    from depthseg.geo.grid import PixelWindow  # needs pyproj/odc-geo: only here

    return PixelWindow(
        row_off=chunk_window.row_off - halo,
        col_off=chunk_window.col_off - halo,
        height=chunk_window.height + 2 * halo,
        width=chunk_window.width + 2 * halo,
    )


def round_to_patch(tile: int, patch: int = VIT_PATCH) -> int:
    """The multiple of ``patch`` nearest to ``tile`` (ties round up), at least one patch.

    A ViT with patch 14 takes any size, but a multiple of 14 avoids resampling the tile.
    """
    if tile < 1 or patch < 1:
        raise InputError(f"tile {tile} and patch {patch} must be positive; give e.g. 518 and 14")
    return max(patch, (tile + patch // 2) // patch * patch)
