"""Tiles inside chunk + halo: full coverage, the count formula, never past the edge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthseg.errors import InputError
from depthseg.geo import (
    PixelWindow,
    TileSpec,
    axis_offsets,
    chunk_read_window,
    tile_windows,
)

# (height, width, tile, overlap): sizes that do not divide evenly, exact fits, and tiny areas.
CASES = [
    (11, 13, 4, 1),
    (100, 100, 8, 0),
    (100, 100, 8, 3),
    (2048 + 2 * 64, 2048 + 2 * 64, 518, 64),
    (518, 1000, 518, 64),
    (519, 17, 8, 7),
    (3, 5, 4, 1),  # smaller than a tile along rows, larger along cols
    (1, 1, 518, 64),
]


def _expected_count(length: int, tile: int, overlap: int) -> int:
    return 1 if length <= tile else math.ceil((length - tile) / (tile - overlap)) + 1


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), CASES)
def test_every_pixel_covered_and_no_tile_past_edge(
    height: int, width: int, tile: int, overlap: int
) -> None:
    layout = tile_windows(height, width, tile, overlap)
    padded_rows, padded_cols = layout.padded_shape
    assert padded_rows == max(height, tile) and padded_cols == max(width, tile)
    coverage = np.zeros(layout.padded_shape, dtype=np.int32)
    for row_off, col_off in layout.offsets:
        assert row_off >= 0 and col_off >= 0
        # Past the data only into the caller's padding, i.e. only when the area < one tile.
        assert row_off + tile <= padded_rows and col_off + tile <= padded_cols
        coverage[row_off : row_off + tile, col_off : col_off + tile] += 1
    assert coverage.min() >= 1
    assert len(layout) == _expected_count(height, tile, overlap) * _expected_count(
        width, tile, overlap
    )


@pytest.mark.parametrize(("height", "width", "tile", "overlap"), CASES)
def test_axis_rule_stride_then_last_shifted_inward(
    height: int, width: int, tile: int, overlap: int
) -> None:
    for length in (height, width):
        starts = axis_offsets(length, tile, overlap)
        stride = tile - overlap
        assert starts[0] == 0
        assert starts[:-1] == [i * stride for i in range(len(starts) - 1)]
        if length >= tile:
            assert starts[-1] == length - tile  # ends exactly at the edge
        # Every neighbour pair overlaps by at least the nominal overlap.
        assert all(b - a <= stride for a, b in zip(starts, starts[1:], strict=False))
        assert starts == sorted(set(starts))


def test_offsets_are_row_major() -> None:
    layout = tile_windows(11, 13, 4, 1)
    assert list(layout.offsets) == sorted(layout.offsets)
    assert layout.offsets[:5] == ((0, 0), (0, 3), (0, 6), (0, 9), (3, 0))


def test_small_area_is_padded_by_the_caller() -> None:
    layout = tile_windows(300, 600, 518, 64)
    assert (layout.pad_rows, layout.pad_cols) == (218, 0)
    assert layout.offsets == ((0, 0), (0, 82))


def test_default_chunk_layout() -> None:
    spec = TileSpec()
    assert (spec.tile, spec.overlap, spec.halo_px, spec.stride) == (518, 64, 64, 454)
    layout = spec.layout(2048, 2048)
    assert (layout.height, layout.width) == (2176, 2176)
    assert len(layout) == 25 and (layout.pad_rows, layout.pad_cols) == (0, 0)
    assert TileSpec(halo=0).layout(2048, 2048).height == 2048


def test_chunk_read_window_grows_on_all_sides() -> None:
    assert chunk_read_window(PixelWindow(2048, 0, 2048, 2048), 64) == PixelWindow(
        1984, -64, 2176, 2176
    )
    assert chunk_read_window(PixelWindow(0, 0, 8, 8), 0) == PixelWindow(0, 0, 8, 8)


@pytest.mark.parametrize(
    ("tile", "overlap", "message"),
    [
        (64, 64, "tile 64 must be larger than its overlap 64"),
        (8, 10, "larger than its overlap"),
        (8, -1, "overlap -1 is negative"),
        (8.5, 1, "whole pixels"),
    ],
)
def test_bad_tile_settings(tile: int, overlap: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        tile_windows(100, 100, tile, overlap)
    with pytest.raises(InputError, match=message):
        TileSpec(tile=tile, overlap=overlap)


def test_bad_lengths_and_halo() -> None:
    with pytest.raises(InputError, match="axis of 0 pixels"):
        axis_offsets(0, 8, 2)
    with pytest.raises(InputError, match="halo -1 is negative"):
        chunk_read_window(PixelWindow(0, 0, 8, 8), -1)
    with pytest.raises(InputError, match="halo -2 is negative"):
        TileSpec(halo=-2)
