"""Output grid and chunks: snapped to a global grid, stable ids, clear errors."""

from __future__ import annotations

import math

import pytest
import shapely
from odc.geo import geom as odc_geom
from pyproj import Transformer

from depthseg.errors import InputError
from depthseg.geo import ChunkId, OutputGrid, PixelWindow, auto_crs, plan_grid

LIUZHOU = (109.2, 24.1, 109.6, 24.5)


@pytest.fixture(scope="module")
def liuzhou_grid() -> OutputGrid:
    # A small chunk keeps the chunk count in the hundreds, so invariants cover many edges.
    return plan_grid(LIUZHOU, "EPSG:4326", "auto", resolution=10.0, chunk_size=256)


def test_auto_crs_liuzhou_north() -> None:
    assert auto_crs((109.3, 24.2, 109.5, 24.4)) == "EPSG:32649"


def test_auto_crs_south_and_antimeridian() -> None:
    assert auto_crs((14.5, -20.0, 15.5, -19.0)) == "EPSG:32733"
    assert auto_crs((179.5, 10.0, 180.0, 11.0)) == "EPSG:32660"
    assert auto_crs((-180.0, 10.0, -179.5, 11.0)) == "EPSG:32601"


def test_plan_grid_auto_crs_and_alignment(liuzhou_grid: OutputGrid) -> None:
    grid = liuzhou_grid
    assert grid.crs == "EPSG:32649"
    span = grid.chunk_size * grid.resolution
    for edge in grid.bounds:
        assert edge / span == pytest.approx(round(edge / span), abs=1e-9)
    assert grid.transform.a == grid.resolution and grid.transform.e == -grid.resolution
    assert (grid.transform.c, grid.transform.f) == (grid.bounds[0], grid.bounds[3])


def test_snapped_grid_contains_densified_bbox(liuzhou_grid: OutputGrid) -> None:
    grid = liuzhou_grid
    to_utm = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    minx, miny, maxx, maxy = to_utm.transform_bounds(*LIUZHOU, densify_pts=21)
    gminx, gminy, gmaxx, gmaxy = grid.bounds
    assert gminx <= minx and gminy <= miny and gmaxx >= maxx and gmaxy >= maxy
    # Snapped outward by less than one chunk on every side: no wasted chunk rows/cols.
    span = grid.chunk_size * grid.resolution
    assert max(minx - gminx, miny - gminy, gmaxx - maxx, gmaxy - maxy) < span


def test_bbox_on_chunk_boundaries_gets_no_extra_chunks() -> None:
    span = 256 * 10.0
    grid = plan_grid((2 * span, 1000 * span, 5 * span, 1003 * span), "EPSG:32649",
                     "EPSG:32649", resolution=10.0, chunk_size=256)
    assert grid.bounds == (2 * span, 1000 * span, 5 * span, 1003 * span)
    assert grid.shape == (3 * 256, 3 * 256)


def test_chunk_shapes_sum_to_grid(liuzhou_grid: OutputGrid) -> None:
    grid = liuzhou_grid
    chunks = grid.chunks()
    assert len(chunks) == len(grid.chunk_rows) * len(grid.chunk_cols)
    assert chunks == sorted(chunks)  # row-major
    area = 0
    for chunk in chunks:
        window = grid.chunk_window(chunk)
        assert 0 <= window.row_off and window.row_off + window.height <= grid.height
        assert 0 <= window.col_off and window.col_off + window.width <= grid.width
        area += window.height * window.width
    assert area == grid.height * grid.width
    first, last = grid.chunk_window(chunks[0]), grid.chunk_window(chunks[-1])
    assert first[:2] == (0, 0)
    assert (last.row_off + last.height, last.col_off + last.width) == grid.shape


def test_chunk_ids_stable_when_bbox_grows(liuzhou_grid: OutputGrid) -> None:
    small = liuzhou_grid
    large = plan_grid((108.7, 23.6, 110.1, 25.0), "EPSG:4326", "EPSG:32649",
                      resolution=10.0, chunk_size=256)
    assert set(small.chunks()) < set(large.chunks())
    for chunk in small.chunks()[:: max(1, len(small.chunks()) // 25)]:
        assert small.chunk_bounds(chunk) == large.chunk_bounds(chunk)
        assert small.chunk_transform(chunk) == large.chunk_transform(chunk)


def test_chunk_geometry_agrees_with_geobox(liuzhou_grid: OutputGrid) -> None:
    grid = liuzhou_grid
    chunk = grid.chunks()[7]
    window = grid.chunk_window(chunk)
    gbox = grid.geobox()
    assert gbox.shape.yx == grid.shape
    # The chunk's transform is the grid transform moved by (col_off, row_off) pixels.
    expected = gbox.affine * gbox.affine.translation(window.col_off, window.row_off)
    assert grid.chunk_transform(chunk).almost_equals(expected, precision=1e-6)
    assert grid.chunk_geobox(chunk).extent.geom.bounds == pytest.approx(grid.chunk_bounds(chunk))
    assert OutputGrid.from_geobox(gbox, grid.chunk_size) == grid


def test_window_may_reach_outside_grid(liuzhou_grid: OutputGrid) -> None:
    grid = liuzhou_grid
    halo_window = PixelWindow(-4, -4, grid.chunk_size + 8, grid.chunk_size + 8)
    minx, _, _, maxy = grid.window_bounds(halo_window)
    assert minx == pytest.approx(grid.bounds[0] - 4 * grid.resolution)
    assert maxy == pytest.approx(grid.bounds[3] + 4 * grid.resolution)


def test_chunks_intersecting_footprints(liuzhou_grid: OutputGrid) -> None:
    grid = liuzhou_grid
    chunks = grid.chunks()
    target = chunks[len(chunks) // 2]
    minx, miny, maxx, maxy = grid.chunk_bounds(target)
    # A footprint strictly inside one chunk selects only that chunk.
    inner = shapely.box(minx + 1, miny + 1, maxx - 1, maxy - 1)
    assert grid.chunks_intersecting(inner) == [target]
    # Exactly the chunk's bounds: neighbours only touch it and are not selected.
    assert grid.chunks_intersecting((minx, miny, maxx, maxy)) == [target]
    # Crossing the right edge by one metre adds the right neighbour.
    wider = (minx + 1, miny + 1, maxx + 1, maxy - 1)
    assert grid.chunks_intersecting([wider]) == [target, ChunkId(target.row, target.col + 1)]
    # A footprint far outside the grid selects nothing; an odc geometry in lon/lat is reprojected.
    assert grid.chunks_intersecting(shapely.box(0, 0, 10, 10)) == []
    assert grid.chunks_intersecting([odc_geom.box(*inner.bounds, crs=grid.crs)]) == [target]
    lonlat = odc_geom.box(*LIUZHOU, crs="EPSG:4326")
    assert len(grid.chunks_intersecting(lonlat)) > 0.9 * len(chunks)


def test_chunk_key_round_trip() -> None:
    chunk = ChunkId(-1646, 284)
    assert chunk.key == "r-1646_c284"
    assert ChunkId.parse(chunk.key) == chunk
    with pytest.raises(InputError, match="r<ROW>_c<COL>"):
        ChunkId.parse("1646-284")


def test_chunk_outside_grid_is_an_error(liuzhou_grid: OutputGrid) -> None:
    with pytest.raises(InputError, match="outside this grid"):
        liuzhou_grid.chunk_window(ChunkId(0, 0))


@pytest.mark.parametrize(
    ("bbox", "bbox_crs", "message"),
    [
        ((10, 5, 2, 8), "EPSG:4326", r"bbox \(10, 5, 2, 8\) has min x 10 >= max x 2; give MINX"),
        ((1, 8, 2, 5), "EPSG:4326", r"min y 8 >= max y 5; give MINX MINY MAXX MAXY"),
        ((24.1, 109.2, 24.5, 109.6), "EPSG:4326", r"outside lon \[-180, 180\] / lat"),
        ((1, 2, 3), "EPSG:4326", "has 3 numbers"),
        ((0, 0, math.inf, 1), "EPSG:4326", "non-finite"),
        ((1, 2, 3, 4), "EPSG:99999999", "not a CRS"),
    ],
)
def test_bad_bbox_errors(bbox: tuple[float, ...], bbox_crs: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        plan_grid(bbox, bbox_crs, "auto")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"resolution": 0}, "resolution 0 is not a positive"),
        ({"resolution": -0.8}, "resolution -0.8 is not a positive"),
        ({"chunk_size": 0}, "chunk_size 0 must be positive"),
        ({"crs": "EPSG:4326"}, "not a projected CRS in metres"),
        ({"crs": "not-a-crs"}, "not a CRS pyproj understands"),
    ],
)
def test_bad_grid_settings_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        plan_grid(LIUZHOU, "EPSG:4326", **{"crs": "auto", **kwargs})


def test_unaligned_grid_is_rejected() -> None:
    with pytest.raises(InputError, match="not a multiple of chunk_size"):
        OutputGrid("EPSG:32649", 0.8, row_off=10, col_off=0, height=2048, width=2048)
