"""Chunk tiles on a region-wide lattice: each tile computed once, every pixel well inside one."""

from __future__ import annotations

import numpy as np
import pytest

from depthseg.errors import InputError
from depthseg.geo import (
    TileSpec,
    lattice_chunk_size,
    lattice_halo,
    lattice_offsets,
    select_tiles,
    tile_windows,
    trim_tiles,
)


def test_default_chunk_is_a_multiple_of_the_stride_that_fills_batches() -> None:
    chunk = lattice_chunk_size(518, 64, batch_size=8)
    assert chunk == 1816 and chunk % 454 == 0
    assert (chunk // 454) ** 2 % 8 == 0  # 16 tiles: two full batches
    assert lattice_chunk_size(126, 28, batch_size=8) % 98 == 0
    assert lattice_halo(1816, 518, 64) == 32


def test_neighbouring_chunks_continue_one_lattice() -> None:
    """Global tile starts of three chunks in a row: one arithmetic sequence, no repeats."""
    chunk, tile, overlap = 1816, 518, 64
    halo = lattice_halo(chunk, tile, overlap)
    starts = [origin - halo + offset for origin in (0, chunk, 2 * chunk)
              for offset in lattice_offsets(chunk, tile, overlap, halo)]
    assert np.diff(starts).tolist() == [tile - overlap] * (len(starts) - 1)


@pytest.mark.parametrize(("chunk", "tile", "overlap"), [
    (1816, 518, 64), (2048, 518, 64), (256, 126, 28), (384, 98, 30), (172, 70, 14),
    (100, 98, 28), (17, 8, 2)])
def test_every_chunk_pixel_lies_well_inside_a_tile(chunk: int, tile: int, overlap: int) -> None:
    halo = lattice_halo(chunk, tile, overlap)
    starts = lattice_offsets(chunk, tile, overlap, halo)
    area = chunk + 2 * halo
    assert all(0 <= s <= area - tile for s in starts)
    depth = np.full(area, -1)
    for start in starts:  # how far each pixel lies inside its best tile
        index = np.arange(tile)
        depth[start:start + tile] = np.maximum(depth[start:start + tile],
                                               np.minimum(index, tile - 1 - index))
    assert depth[halo:halo + chunk].min() >= overlap // 2
    # No more tiles than cells of one stride: nothing computed twice.
    assert len(starts) == -(-chunk // (tile - overlap))


def test_a_region_costs_no_more_tiles_than_one_sliding_window() -> None:
    """4096 px of imagery in 1816 px chunks: the chunks together run the minimal cover (81)."""
    tile, overlap, chunk, imagery = 518, 64, 1816, 4096
    spec = TileSpec(tile, overlap, halo=lattice_halo(chunk, tile, overlap))
    layout = spec.layout(chunk, chunk)
    total = 0
    for row in range(3):
        for col in range(3):
            valid = np.zeros((layout.height, layout.width), dtype=bool)
            top, left = row * chunk - spec.halo_px, col * chunk - spec.halo_px
            valid[max(-top, 0):max(imagery - top, 0), max(-left, 0):max(imagery - left, 0)] = True
            total += len(select_tiles(layout, valid, spec.halo_px))
    assert total == len(tile_windows(imagery, imagery, tile, overlap)) == 81


def test_full_chunks_keep_every_tile_and_empty_ones_none() -> None:
    spec = TileSpec(126, 28, halo=lattice_halo(294, 126, 28))
    layout = spec.layout(294, 294)
    full = np.ones((layout.height, layout.width), dtype=bool)
    assert select_tiles(layout, full, spec.halo_px) == list(layout.offsets)
    assert select_tiles(layout, ~full, spec.halo_px) == []
    halo_only = np.zeros_like(full)
    halo_only[:spec.halo_px] = True  # imagery in the halo alone needs no tile
    assert select_tiles(layout, halo_only, spec.halo_px) == []


def _region_valid(layout, spec: TileSpec, chunk: int, row: int, col: int,
                  region: tuple[int, int, int, int]) -> np.ndarray:
    """Chunk (row, col)'s valid mask for a bbox (top, left, bottom, right) in global px."""
    valid = np.zeros((layout.height, layout.width), dtype=bool)
    top, left = row * chunk - spec.halo_px, col * chunk - spec.halo_px
    r0, c0, r1, c1 = region
    valid[max(r0 - top, 0):max(r1 - top, 0), max(c0 - left, 0):max(c1 - left, 0)] = True
    return valid


def test_tiles_cut_by_the_bbox_are_trimmed_to_what_they_map() -> None:
    """A 4096 px bbox over 1792 px chunks (pieces 256 + 1792 + 1792 + 256 px per axis)."""
    tile, overlap, chunk = 518, 70, 1792
    spec = TileSpec(tile, overlap, halo=lattice_halo(chunk, tile, overlap))
    layout = spec.layout(chunk, chunk)
    region = (1536, 1536, 1536 + 4096, 1536 + 4096)
    pixels = 0
    for row in range(4):
        for col in range(4):
            valid = _region_valid(layout, spec, chunk, row, col, region)
            offsets = select_tiles(layout, valid, spec.halo_px)
            windows = trim_tiles(layout, valid, spec.halo_px, offsets)
            assert [(w.row_off, w.col_off) for w in windows] != [] or not valid.any()
            inner = np.zeros_like(valid)
            inner[spec.halo_px:-spec.halo_px, spec.halo_px:-spec.halo_px] = True
            depth = np.full(valid.shape, -1)
            for (r, c), w in zip(offsets, windows, strict=True):
                # Inside the lattice tile, whole ViT patches, at least 2 x overlap a side.
                assert r <= w.row_off and w.row_off + w.height <= r + tile
                assert c <= w.col_off and w.col_off + w.width <= c + tile
                assert w.height % 14 == 0 and w.width % 14 == 0
                assert min(w.height, w.width) >= 2 * overlap
                rows, cols = np.arange(w.height), np.arange(w.width)
                inside = np.minimum.outer(np.minimum(rows, w.height - 1 - rows),
                                          np.minimum(cols, w.width - 1 - cols))
                area = depth[w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width]
                np.maximum(area, inside, out=area)
                pixels += w.height * w.width
            # Every pixel to map lies at least overlap / 2 inside a tile, as on full tiles.
            assert (depth[valid & inner] >= overlap // 2).all()
            if row in (1, 2) and col in (1, 2):  # full chunks: whole lattice tiles
                assert windows == [(r, c, tile, tile) for r, c in layout.offsets]
    # 100 lattice tiles, but 336 px wide along the 256 px pieces: 86.4 tiles' worth of pixels
    # (one sliding window over the bbox: 81 whole tiles).
    assert 86 < pixels / tile**2 < 87
    edge = _region_valid(layout, spec, chunk, 0, 1, region)
    windows = trim_tiles(layout, edge, spec.halo_px, select_tiles(layout, edge, spec.halo_px))
    assert {(w.height, w.width) for w in windows} == {(336, tile)}
    # The cut side moved; the side facing the region kept its lattice position.
    assert all(w.row_off + w.height == layout.offsets[-1].row_off + tile for w in windows)


def test_bad_lattice_input() -> None:
    with pytest.raises(InputError, match="chunk of 0 pixels"):
        lattice_offsets(0, 8, 2, 1)
    with pytest.raises(InputError, match="larger than its overlap"):
        lattice_halo(100, 8, 8)
