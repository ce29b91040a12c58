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


def test_bad_lattice_input() -> None:
    with pytest.raises(InputError, match="chunk of 0 pixels"):
        lattice_offsets(0, 8, 2, 1)
    with pytest.raises(InputError, match="larger than its overlap"):
        lattice_halo(100, 8, 8)
