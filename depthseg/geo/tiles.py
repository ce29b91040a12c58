"""Halos and model tiles inside a chunk: pure index maths, no I/O.

Tiles lie on a *lattice*: per axis a chunk of ``C`` pixels is split into ``n = ceil(C /
stride)`` equal cells (``stride = tile - overlap``) and one tile is centred on each cell. When
``C`` is a multiple of the stride (the planner's default chunk size) the cells are exactly
``stride`` wide, the tiles of neighbouring chunks continue one region-wide lattice, and every
tile belongs to exactly one chunk: no tile is computed twice and the tile count is the
minimal cover of the mapped area. Other chunk sizes get ``n`` slightly narrower cells (tiles
overlap a little more; still no tile is computed twice).

A tile reaches ``(tile - cell) / 2`` pixels (``overlap / 2`` on the lattice) beyond its cell;
at a chunk's edge that part lies in the chunk's *halo*, the margin read around the chunk
(:func:`lattice_halo`). Tile outputs are blended (see :mod:`depthseg.geo.blend`) and the halo
is cropped off again, so every chunk pixel lies at least ``overlap / 2`` pixels inside a tile:
no pixel is predicted from a tile's edge.

:func:`tile_windows` (one sliding window over an area, the last window shifted inward) is
kept for training chips and for the plain-loop baseline of ``jobs/bench.py``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from depthseg.errors import InputError

if TYPE_CHECKING:
    from depthseg.geo.grid import PixelWindow

DEFAULT_TILE = 518  # 37 x the ViT patch 14: DINOv2's native 518 px input
DEFAULT_OVERLAP = 64
DEFAULT_CHUNK_SIZE = 2048  # the chunk side the default chunk size stays near
VIT_PATCH = 14


class TileOffset(NamedTuple):
    """Top-left of a tile, in pixels of the (padded) chunk + halo area."""

    row_off: int
    col_off: int


class TileWindow(NamedTuple):
    """A tile as the model runs it: top-left and size in the (padded) chunk + halo area.

    Lattice tiles are ``tile`` x ``tile``; :func:`trim_tiles` shrinks the ones that only
    partly hold pixels to map.
    """

    row_off: int
    col_off: int
    height: int
    width: int


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
        """The lattice tiles of a chunk of the given size, read with this spec's halo.

        Offsets are in the chunk + halo area (the chunk's first pixel is at ``halo_px``).
        """
        halo = self.halo_px
        rows = lattice_offsets(chunk_height, self.tile, self.overlap, halo)
        cols = lattice_offsets(chunk_width, self.tile, self.overlap, halo)
        height, width = chunk_height + 2 * halo, chunk_width + 2 * halo
        return TileLayout(height=height, width=width, tile=self.tile, overlap=self.overlap,
                          offsets=tuple(TileOffset(r, c) for r in rows for c in cols),
                          pad_rows=max(self.tile - height, 0),
                          pad_cols=max(self.tile - width, 0))


def _cell_edges(length: int, stride: int) -> list[int]:
    count = max(1, math.ceil(length / stride))
    return [(i * length) // count for i in range(count + 1)]


def lattice_offsets(length: int, tile: int, overlap: int, halo: int) -> list[int]:
    """Tile starts along one axis of a chunk of ``length`` pixels, in chunk + halo coordinates.

    One tile per cell (see the module docstring), centred on it; a tile that would reach past
    the chunk + halo area is moved inward. An area smaller than one tile gets one tile at 0
    (the caller pads, as for :func:`tile_windows`).
    """
    _check_tile(tile, overlap)
    if length < 1 or halo < 0:
        raise InputError(f"cannot tile a chunk of {length} pixels with halo {halo}; give a "
                         "length of at least 1 and a halo of 0 or more")
    area = length + 2 * halo
    if area <= tile:
        return [0]
    edges = _cell_edges(length, tile - overlap)
    return [min(max(lo + (hi - lo) // 2 - tile // 2 + halo, 0), area - tile)
            for lo, hi in itertools.pairwise(edges)]


def lattice_halo(chunk: int, tile: int, overlap: int) -> int:
    """The halo a chunk's lattice tiles reach into.

    ``overlap / 2`` when ``chunk`` is a multiple of the stride, more for other chunk sizes.
    """
    _check_tile(tile, overlap)
    edges = _cell_edges(chunk, tile - overlap)
    starts = [lo + (hi - lo) // 2 - tile // 2 for lo, hi in itertools.pairwise(edges)]
    return max(0, -min(starts), max(starts) + tile - chunk)


def lattice_overlap(tile: int, least: int = DEFAULT_OVERLAP) -> int:
    """The default overlap of ``tile``, so that the stride holds a high power of two.

    At least ``min(least, tile // 4)`` and at most a quarter tile; the stride is a multiple of
    the highest power of two (up to 64) that allows.

    Chunks are multiples of the stride (:func:`lattice_chunk_size`); a stride with factors of
    two gives chunks whose overview factor (which must divide the chunk) can reach the
    hundreds a province needs. Tile 518: overlap 70, stride 448 = 7 x 64, chunk 1792.
    """
    base = min(least, tile // 4)
    for step in (64, 32, 16, 8, 4, 2):
        stride = (tile - base) // step * step
        if stride > 0 and base <= tile - stride <= max(base, tile // 4):
            return tile - stride
    return base


def lattice_chunk_size(tile: int, overlap: int, batch_size: int = 8,
                       target: int = DEFAULT_CHUNK_SIZE) -> int:
    """A chunk side that is a multiple of the stride, near ``target``.

    Its tile count per chunk (``n * n``) fills whole batches of ``batch_size`` when it can.

    E.g. tile 518, overlap 64, batch 8: 1816 px (4 x 4 tiles of stride 454, 2 batches).
    """
    _check_tile(tile, overlap)
    stride = tile - overlap
    step = next((m for m in range(1, batch_size + 1) if (m * m) % batch_size == 0), 1)
    ideal = max(target / stride, 1.0)
    best = max(step, round(ideal / step) * step)
    return best * stride


def _inner_valid(valid: np.ndarray, halo: int) -> np.ndarray:
    """``valid`` with the halo cleared: the pixels a chunk's tiles must map."""
    rows, cols = valid.shape
    inner = np.zeros(valid.shape, dtype=bool)
    inner[halo:rows - halo, halo:cols - halo] = valid[halo:rows - halo, halo:cols - halo]
    return inner


def select_tiles(layout: TileLayout, valid: np.ndarray, halo: int,
                 margin: int | None = None) -> list[TileOffset]:
    """The tiles of ``layout`` a chunk needs: none that only sees no-data, none redundant.

    A tile is needed when it holds a valid chunk pixel (halo excluded) that no other needed
    tile covers at least ``margin`` pixels (default: a quarter of the overlap) inside its
    edges. Tiles with the fewest valid pixels are dropped first, so the choice depends only on
    the valid mask (a resumed chunk drops the same tiles). On a fully valid chunk nothing is
    dropped; at the edge of the imagery a lattice tile that would only add a sliver already
    covered by its neighbour is dropped, so a region costs no more tiles than one sliding
    window over it.

    Args:
        layout: The chunk's lattice (:meth:`TileSpec.layout`).
        valid: (rows, cols) bool over the padded chunk + halo area.
        halo: The halo in pixels (its pixels do not need covering).
        margin: Pixels inside a tile's edges that count as covered.
    """
    margin = layout.overlap // 4 if margin is None else margin
    tile = layout.tile
    inner = _inner_valid(valid, halo)
    windows = {o: (slice(o.row_off, o.row_off + tile), slice(o.col_off, o.col_off + tile))
               for o in layout.offsets}
    core = {o: (slice(o.row_off + margin, o.row_off + tile - margin),
                slice(o.col_off + margin, o.col_off + tile - margin)) for o in layout.offsets}
    counts = {o: int(inner[windows[o]].sum()) for o in layout.offsets}
    kept = [o for o in layout.offsets if counts[o]]
    covered = np.zeros(valid.shape, dtype=np.int32)
    own = np.zeros((tile, tile), dtype=np.int32)  # a tile's own share of ``covered``
    own[margin:tile - margin, margin:tile - margin] = 1
    for offset in kept:
        covered[core[offset]] += 1
    for offset in sorted(kept, key=lambda o: (counts[o], o)):
        window = windows[offset]
        others = covered[window] - own
        if (others[inner[window]] >= 1).all():
            covered[core[offset]] -= 1
            kept.remove(offset)
    return kept


def _trimmed_axis(any_needed: np.ndarray, tile: int, overlap: int, least: int,
                  patch: int) -> tuple[int, int]:
    """(start, size) within a tile axis that keeps every needed pixel ``overlap / 2`` inside."""
    needed = np.flatnonzero(any_needed)
    context = overlap // 2
    lo = max(int(needed[0]) - context, 0)
    hi = min(int(needed[-1]) + 1 + context, tile)
    size = min(tile, max(-(-(hi - lo) // patch) * patch, least))
    if tile - size < max(overlap, 1):  # too small a saving for another batch shape
        return 0, tile
    if hi == tile:  # only the near side was cut: the far side stays where the lattice put it
        return tile - size, size
    if lo == 0:
        return 0, size
    return min(max(lo - (size - (hi - lo)) // 2, 0), tile - size), size


def trim_tiles(layout: TileLayout, valid: np.ndarray, halo: int,
               offsets: list[TileOffset], patch: int = VIT_PATCH) -> list[TileWindow]:
    """Shrink tiles that only partly hold pixels to map: at a bbox or imagery edge.

    A lattice tile whose cell is cut by the bbox (a region's first and last chunks on each
    side) or by the imagery's edge holds pixels to map only on one side. Running the whole
    ``tile`` x ``tile`` there costs model time for no-data and for pixels outside the bbox:
    on a 4096 px region with chunks of 1792 px, every chunk past the region's edge is such
    a sliver, and the region cost 100 lattice tiles where one sliding window needs 81.

    Each tile is cut, per axis, to the pixels it must map (valid, outside the halo) plus
    ``overlap / 2`` pixels of context on each side: the same context every lattice tile
    gives its cell, so no mapped pixel is predicted from a tile's edge. The size is rounded
    up to a multiple of ``patch`` (whole ViT patches) and kept at least ``2 * overlap``; a
    tile is only cut where that saves at least ``overlap`` pixels (fully valid chunks keep
    whole tiles). The side facing the pixels to map keeps its position, so a cut tile
    overlaps its lattice neighbour exactly as before and blending stays seamless. The
    result depends only on the valid mask, so a resumed chunk runs the same tiles.

    Args:
        layout: The chunk's lattice (:meth:`TileSpec.layout`).
        valid: (rows, cols) bool over the padded chunk + halo area.
        halo: The halo in pixels (its pixels need not be mapped).
        offsets: The tiles to run (:func:`select_tiles`).
        patch: The model's patch size.

    Returns:
        One window per offset, in the same order.
    """
    tile, overlap = layout.tile, layout.overlap
    least = max(2 * overlap, patch)
    inner = _inner_valid(valid, halo)
    windows = []
    for row, col in offsets:
        part = inner[row:row + tile, col:col + tile]
        row_start, height = _trimmed_axis(np.any(part, axis=1), tile, overlap, least, patch)
        col_start, width = _trimmed_axis(np.any(part, axis=0), tile, overlap, least, patch)
        windows.append(TileWindow(row + row_start, col + col_start, height, width))
    return windows


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
    from depthseg.geo.grid import PixelWindow  # needs pyproj and shapely: only here

    return PixelWindow(
        row_off=chunk_window.row_off - halo,
        col_off=chunk_window.col_off - halo,
        height=chunk_window.height + 2 * halo,
        width=chunk_window.width + 2 * halo,
    )
