"""The map is the bbox: no pixel outside it, extents of the bbox, chunk ids still global."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from mapping_helpers import region_request
from PIL import Image
from pyproj import Transformer

from depthseg.mapping import map_region


@pytest.fixture(scope="module")
def clipped(synthetic_region: Any, bundle_uint16: str,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, tuple[float, ...]]:
    """A lon/lat bbox well inside the region, off every chunk edge (curved in UTM)."""
    region = synthetic_region
    to_lonlat = Transformer.from_crs(region.crs, "EPSG:4326", always_xy=True)
    size = region.size * region.resolution
    x0, y0 = region.transform.c, region.transform.f
    west, south = to_lonlat.transform(x0 + 0.23 * size, y0 - 0.81 * size)
    east, north = to_lonlat.transform(x0 + 0.71 * size, y0 - 0.12 * size)
    bbox = (west, south, east, north)
    out = tmp_path_factory.mktemp("clipped") / "out"
    request = region_request(region, out, bundle_uint16)
    report = map_region(replace(request, bbox=bbox, bbox_crs="EPSG:4326"), log=lambda _: None)
    assert report.ok
    return out, report, bbox


def _inside(bbox: tuple[float, ...], crs: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    return (lon >= bbox[0]) & (lon <= bbox[2]) & (lat >= bbox[1]) & (lat <= bbox[3])


def test_no_pixel_outside_the_bbox_is_mapped(clipped: tuple[Path, Any, tuple[float, ...]]
                                            ) -> None:
    out, report, bbox = clipped
    mosaic = xr.open_zarr(out / "mosaic.zarr")
    xs, ys = np.meshgrid(mosaic["x"].values, mosaic["y"].values)
    inside = _inside(bbox, report.plan.grid.crs, xs, ys)
    landcover = mosaic["landcover"].values
    mapped = landcover != 255
    # Every mapped pixel has its centre in the bbox (checked in lon/lat, independently of
    # the densified ring the mapper uses); all three layers agree.
    assert mapped.any() and not (mapped & ~inside).any()
    assert np.array_equal(mapped, mosaic["confidence"].values != 0)
    assert np.array_equal(mapped, np.isfinite(mosaic["depth"].values.astype(np.float32)))
    # Inside, the imagery (which covers the bbox) is mapped, up to the ring's rounding.
    resolution = report.plan.grid.resolution
    shrunk = _inside(bbox, report.plan.grid.crs, xs, ys) & _inside(
        bbox, report.plan.grid.crs, xs + 2 * resolution, ys + 2 * resolution) & _inside(
        bbox, report.plan.grid.crs, xs - 2 * resolution, ys - 2 * resolution)
    assert mapped[shrunk].all()


def test_vrt_overview_and_quicklook_cover_the_bbox_not_the_chunks(
        clipped: tuple[Path, Any, tuple[float, ...]]) -> None:
    out, report, bbox = clipped
    grid = report.plan.grid
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True)
    minx, miny, maxx, maxy = to_grid.transform_bounds(*bbox, densify_pts=21)
    for layer in ("landcover", "confidence", "depth"):
        with rasterio.open(out / "cog" / f"{layer}.vrt") as vrt:
            left, bottom, right, top = vrt.bounds
            # The bbox's pixels: within one pixel of its bounds, and well inside the grid.
            assert abs(left - minx) <= grid.resolution and abs(right - maxx) <= grid.resolution
            assert abs(top - maxy) <= grid.resolution
            assert abs(bottom - miny) <= grid.resolution
            assert vrt.width < grid.width and vrt.height < grid.height
            if layer == "landcover":
                data = vrt.read(1)
                assert (data != 255).mean() > 0.9  # mostly mapped: the extent is the bbox
        with rasterio.open(out / "cog" / "overview" / f"{layer}.tif") as overview:
            assert overview.bounds.left == pytest.approx(left, abs=2 * overview.res[0])
            assert overview.bounds.top == pytest.approx(top, abs=2 * overview.res[0])
            assert overview.width <= -(-vrt.width // 2) + 1
    with Image.open(out / "quicklook.png") as image:
        # Land cover plus a legend strip; no-data corners transparent.
        assert image.mode == "RGBA" and image.width < grid.width // 2 + 160
        alpha = np.asarray(image)[..., 3]
        legend = 16 * 7 + 8
        # The bbox's curved edges leave no-data corners: transparent.
        assert (alpha[:-legend] == 0).any() and (alpha[:-legend] == 255).mean() > 0.9


def test_chunk_ids_stay_global(clipped: tuple[Path, Any, tuple[float, ...]],
                               synthetic_region: Any, tmp_path: Path) -> None:
    out, report, _ = clipped
    # Ids depend only on CRS, resolution and chunk size: the clipped run's chunks are the
    # whole region's chunks under the bbox.
    whole = map_region(region_request(synthetic_region, tmp_path / "whole",
                                      report.request.model), log=lambda _: None)
    assert set(report.plan.chunks) <= set(whole.plan.chunks)
    assert len(report.plan.chunks) < len(whole.plan.chunks)
