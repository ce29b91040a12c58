"""Catalogs: folders, globs, STAC, S3; footprints; reprojection; first-valid compositing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject

from depthseg.errors import InputError
from depthseg.io.catalog import open_catalog
from depthseg.io.storage import Storage


def _write(path: Path, value: int, transform: Affine, crs: str = "EPSG:32649",
           size: int = 64, tags: dict[str, str] | None = None, nodata: int | None = 0) -> None:
    with rasterio.open(path, "w", driver="GTiff", height=size, width=size, count=2,
                       dtype="uint16", crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(np.full((2, size, size), value, dtype=np.uint16))
        dst.write(np.full((size, size), value + 1, dtype=np.uint16), 2)
        dst.update_tags(**(tags or {}))


def test_folder_glob_and_stac_open_the_same_scenes(synthetic_region: Any, tmp_path: Path) -> None:
    scenes = synthetic_region.root / "scenes"
    folder = open_catalog(str(scenes))
    glob = open_catalog(str(scenes / "scene_0*.tif"))
    features = [{"type": "Feature", "stac_version": "1.0.0", "id": p.stem,
                 "properties": {"datetime": "2024-05-01T00:00:00Z"}, "geometry": None,
                 "links": [],
                 "assets": {"visual": {"href": f"scenes/{p.name}",
                                       "type": "image/tiff; application=geotiff"}}}
                for p in sorted(scenes.glob("*.tif"))]
    stac = synthetic_region.root / "items.json"
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    from_stac = open_catalog(str(stac), asset="visual")
    assert len(folder.scenes) == len(glob.scenes) == len(from_stac.scenes) == 4
    # Dates are known from the scenes' tags: newest first.
    dates = [s.acquired for s in folder.scenes]
    assert dates == sorted(dates, reverse=True) and all(dates)
    assert {Path(s.uri).name for s in from_stac.scenes} == {Path(s.uri).name
                                                             for s in folder.scenes}
    assert len(open_catalog(str(stac)).scenes) == 4, "falls back to the one GeoTIFF asset"
    for feature in features:
        feature["assets"]["visual"].pop("type")
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(InputError, match="no asset 'image'"):
        open_catalog(str(stac))


def test_newest_valid_pixel_wins_and_nodata_falls_through(tmp_path: Path) -> None:
    origin = Affine(1.0, 0, 500_000, 0, -1.0, 2_000_000)
    _write(tmp_path / "old.tif", 10, origin, tags={"datetime": "2020-01-01T00:00:00Z"})
    newer = tmp_path / "new.tif"
    _write(newer, 20, origin * Affine.translation(32, 0), tags={"datetime": "2023-01-01T00:00:00Z"})
    with rasterio.open(newer, "r+") as dst:  # a no-data hole in the newer scene
        block = dst.read()
        block[:, :8, :8] = 0
        dst.write(block)
    catalog = open_catalog(str(tmp_path))
    pixels, valid = catalog.read("EPSG:32649", origin * Affine.translation(-4, 0), 70, 110,
                                 (2, 1))
    assert pixels.shape == (2, 70, 110) and pixels.dtype == np.uint16
    assert (pixels[:, 0, 50] == (21, 20)).all(), "newest scene on top, bands in contract order"
    assert (pixels[:, 0, 37] == (11, 10)).all(), "hole in the newest scene filled by the older"
    assert (pixels[:, 0, 20] == (11, 10)).all()
    assert not valid[:, :4].any() and not valid[66:].any() and not valid[:, 100:].any()
    assert (pixels[:, ~valid] == 0).all()


def test_scenes_in_another_crs_are_reprojected(tmp_path: Path) -> None:
    target = Affine(2.0, 0, 500_000, 0, -2.0, 2_000_000)
    src = np.arange(128 * 128, dtype=np.uint16).reshape(128, 128) % 1000 + 1
    # The same field stored in Web Mercator: the catalog must warp it back onto UTM.
    transform, width, height = calculate_default_transform(
        "EPSG:32649", "EPSG:3857", 128, 128, *rasterio.transform.array_bounds(128, 128, target)
        [::-1][::-1])
    warped = np.zeros((height, width), dtype=np.uint16)
    reproject(src, warped, src_transform=target, src_crs="EPSG:32649", dst_transform=transform,
              dst_crs="EPSG:3857", src_nodata=0, dst_nodata=0)
    with rasterio.open(tmp_path / "merc.tif", "w", driver="GTiff", height=height, width=width,
                       count=1, dtype="uint16", crs="EPSG:3857", transform=transform,
                       nodata=0) as dst:
        dst.write(warped, 1)
    catalog = open_catalog(str(tmp_path))
    assert catalog.footprints("EPSG:32649")[0].area == pytest.approx(256 * 256, rel=0.05)
    pixels, valid = catalog.read("EPSG:32649", target, 128, 128, (1,))
    inner = valid.copy()
    inner[:4], inner[-4:], inner[:, :4], inner[:, -4:] = False, False, False, False
    assert inner.mean() > 0.8
    close = np.abs(pixels[0].astype(int) - src.astype(int))[inner] <= 2 * 128 + 2
    assert close.mean() > 0.9


def test_s3_prefix_is_a_catalog(synthetic_region: Any, s3_prefix: str,
                                s3_storage: Storage) -> None:
    for path in sorted((synthetic_region.root / "scenes").glob("*.tif"))[:2]:
        s3_storage.upload(path, f"{s3_prefix}/scenes/{path.name}")
    catalog = open_catalog(f"{s3_prefix}/scenes/", s3_storage)
    assert len(catalog.scenes) == 2 and catalog.scenes[0].uri.startswith("s3://")
    scene = catalog.scenes[0]
    pixels, valid = catalog.read(scene.crs, Affine(*scene.transform), 32, 32, (1, 2))
    with rasterio.open(synthetic_region.root / "scenes" / Path(scene.uri).name) as src:
        expected = src.read((1, 2), window=((0, 32), (0, 32)))
    np.testing.assert_array_equal(pixels[:, valid], expected[:, valid])


def test_empty_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no GeoTIFF"):
        open_catalog(str(tmp_path))


def test_zarr_mosaic_reads_like_its_geotiff(synthetic_region: Any, tmp_path: Path) -> None:
    import rioxarray
    from affine import Affine as _Affine

    scene = sorted((synthetic_region.root / "scenes").glob("*.tif"))[0]
    image = rioxarray.open_rasterio(scene).load().rio.write_nodata(0, encoded=False)
    dataset = image.to_dataset(name="image")
    dataset.image.encoding = {}
    dataset.to_zarr(tmp_path / "mosaic.zarr", mode="w", zarr_format=3, consolidated=False)
    from_zarr = open_catalog(str(tmp_path / "mosaic.zarr"))
    from_tiff = open_catalog(str(scene))
    assert from_zarr.scenes[0].crs == "EPSG:32649" and from_zarr.dtype == "uint16"
    assert from_zarr.scenes[0].acquired == from_tiff.scenes[0].acquired
    window = _Affine(*from_tiff.scenes[0].transform) * _Affine.translation(-10, -5)
    zarr_pixels, zarr_valid = from_zarr.read("EPSG:32649", window, 100, 120, (3, 2, 1))
    tiff_pixels, tiff_valid = from_tiff.read("EPSG:32649", window, 100, 120, (3, 2, 1))
    np.testing.assert_array_equal(zarr_valid, tiff_valid)
    np.testing.assert_array_equal(zarr_pixels, tiff_pixels)
    assert not zarr_valid[:5].any() and zarr_valid[10:, 12:].all()


def test_zarr_without_crs_is_refused(tmp_path: Path) -> None:
    import xarray as xr

    xr.Dataset({"image": (("band", "y", "x"), np.ones((3, 8, 8), np.uint8))}).to_zarr(
        tmp_path / "plain.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(InputError, match="no georeferenced"):
        open_catalog(str(tmp_path / "plain.zarr"))


def test_resampling_of_a_smooth_field_in_another_crs(tmp_path: Path) -> None:
    """A smooth ramp warped from Web Mercator: bilinear is closer to the truth than nearest."""
    target = Affine(2.0, 0, 500_000, 0, -2.0, 2_000_000)
    rows, cols = np.mgrid[0:128, 0:128]
    src = (100 + 7 * rows + 3 * cols).astype(np.uint16)
    transform, width, height = calculate_default_transform(
        "EPSG:32649", "EPSG:3857", 128, 128, *rasterio.transform.array_bounds(128, 128, target),
        resolution=1.3)
    warped = np.zeros((height, width), dtype=np.uint16)
    reproject(src, warped, src_transform=target, src_crs="EPSG:32649", dst_transform=transform,
              dst_crs="EPSG:3857", src_nodata=0, dst_nodata=0, resampling=Resampling.bilinear)
    with rasterio.open(tmp_path / "merc.tif", "w", driver="GTiff", height=height, width=width,
                       count=1, dtype="uint16", crs="EPSG:3857", transform=transform,
                       nodata=0) as dst:
        dst.write(warped, 1)
    errors = {}
    for name in ("nearest", "bilinear"):
        catalog = open_catalog(str(tmp_path))
        catalog.resampling = name
        pixels, valid = catalog.read("EPSG:32649", target, 128, 128, (1,))
        inner = valid.copy()
        inner[:6], inner[-6:], inner[:, :6], inner[:, -6:] = False, False, False, False
        errors[name] = np.abs(pixels[0].astype(float) - src)[inner].mean()
    assert errors["bilinear"] < 0.6 * errors["nearest"], errors


def test_unknown_resampling_is_refused() -> None:
    from depthseg.mapping import MapRequest

    with pytest.raises(InputError, match="--resampling is 'bicubic'.*bilinear"):
        MapRequest(bbox=(0, 0, 1, 1), imagery="x", model="y", out="z", resampling="bicubic")
