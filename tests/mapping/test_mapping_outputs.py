"""One mapping run of a synthetic region, and everything a user reads from its outputs."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers .rio
import xarray as xr
from affine import Affine
from mapping_helpers import region_request
from rio_cogeo.cogeo import cog_validate

from depthseg.errors import InputError
from depthseg.geo import ChunkId
from depthseg.io.catalog import open_catalog
from depthseg.io.storage import Storage
from depthseg.mapping import map_region
from depthseg.mapping.write import Mosaic


@pytest.fixture(scope="module")
def mapped(synthetic_region: Any, bundle_uint16: str, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, Any]:
    out = tmp_path_factory.mktemp("mapped") / "run"
    # 320 px chunks do not line up with the region's edges: edge chunks are part imagery,
    # part no-data, so the no-data rule is exercised inside mapped chunks.
    report = map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=320))
    return out, report


def test_run_maps_every_chunk_with_imagery(mapped: tuple[Path, Any]) -> None:
    out, report = mapped
    run = json.loads((out / "run.json").read_text())
    assert report.ok and run["ok"]
    assert run["chunks"]["planned"] == run["chunks"]["done"] > 0
    assert run["chunks"]["failed"] == 0 and run["failed_chunks"] == []
    assert run["km2_mapped"] > 0 and run["km2_per_hour"] > 0
    assert {"plan", "read", "predict", "write", "map", "finalise", "total"} <= set(run["seconds"])
    done = sorted(p.name for p in (out / "done").iterdir())
    assert done == sorted(json.loads((out / "plan.json").read_text())["chunks"])
    # 320 px chunks are not a multiple of the 98 px stride: said, with a better size.
    assert any("--chunk 320 is not a multiple of the tile stride 98" in n for n in run["notes"])
    # Tiles: at most ceil(320 / 98)^2 = 16 per chunk, fewer where a chunk is part no-data.
    tiles, timeline = run["tiles"], run["timeline"]
    assert 0 < tiles["first_chunk"] <= 16
    assert run["chunks"]["done"] < tiles["computed"] < 16 * run["chunks"]["done"]
    assert timeline["map"] <= timeline["first_tile"] <= timeline["first_chunk_done"]
    assert timeline["first_chunk_done"] < timeline["last_chunk_done"]
    assert 0 < run["seconds"]["first_chunk"] < run["seconds"]["map"]
    assert tiles["steady_per_s"] > 0


def test_mosaic_opens_with_the_plans_crs_and_transform(mapped: tuple[Path, Any]) -> None:
    out, _ = mapped
    plan = json.loads((out / "plan.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consolidated metadata: xarray's default open is quiet
        dataset = xr.open_zarr(out / "mosaic.zarr")
    assert dataset.rio.crs.to_string() == plan["grid"]["crs"] == "EPSG:32649"
    assert tuple(dataset.rio.transform())[:6] == pytest.approx(plan["transform"])
    assert dataset.landcover.shape == (plan["grid"]["height"], plan["grid"]["width"])
    assert dataset.landcover.dtype == np.uint8 and dataset.depth.dtype == np.float16
    assert dataset.landcover.encoding["chunks"] == (320, 320)


def test_imagery_nodata_stays_nodata_in_every_layer(mapped: tuple[Path, Any],
                                                    synthetic_region: Any) -> None:
    out, _ = mapped
    plan = json.loads((out / "plan.json").read_text())
    dataset = xr.open_zarr(out / "mosaic.zarr", consolidated=False)
    catalog = open_catalog(str(synthetic_region.root / "scenes"))
    _, valid = catalog.read("EPSG:32649", Affine(*plan["transform"]), plan["grid"]["height"],
                            plan["grid"]["width"], (3, 2, 1))
    landcover, confidence = dataset.landcover.values, dataset.confidence.values
    depth = dataset.depth.values
    assert (~valid).any() and valid.any(), "the test region must hold both"
    assert (landcover[~valid] == 255).all() and (landcover[valid] < 7).all()
    assert (confidence[~valid] == 0).all() and (confidence[valid] > 0).all()
    assert np.isnan(depth[~valid]).all() and np.isfinite(depth[valid]).all()


def test_cogs_validate_and_vrt_equals_the_mosaic(mapped: tuple[Path, Any]) -> None:
    out, report = mapped
    cogs = sorted(p for p in (out / "cog").glob("*/*.tif") if p.parent.name != "overview")
    assert len(cogs) == 3 * len(list((out / "done").iterdir()))
    for path in cogs:
        valid, errors, _warnings = cog_validate(str(path), quiet=True)
        assert valid, (path, errors)
    dataset = xr.open_zarr(out / "mosaic.zarr", consolidated=False)
    # The VRT covers the bbox's pixels (here the region's), a window of the chunk grid.
    window = report.plan.bbox_window()
    rows = slice(window.row_off, window.row_off + window.height)
    cols = slice(window.col_off, window.col_off + window.width)
    assert (window.height, window.width) == (1024, 1024)
    with rasterio.open(out / "cog" / "landcover.vrt") as vrt:
        assert vrt.crs.to_string() == "EPSG:32649"
        assert vrt.transform.almost_equals(report.plan.grid.window_transform(window))
        np.testing.assert_array_equal(vrt.read(1), dataset.landcover.values[rows, cols])
        assert (dataset.landcover.values[rows, cols] != 255).all()
        assert vrt.colormap(1)[1][:3] == (30, 130, 40)
    with rasterio.open(cogs[0].parent.parent / "landcover" / cogs[0].name) as cog:
        assert json.loads(cog.tags()["class_names"])[2] == "building"
        assert cog.tags()["OVERVIEW_RESAMPLING"] == "MODE"


def test_stac_quicklook_and_plan(mapped: tuple[Path, Any], synthetic_region: Any) -> None:
    out, _ = mapped
    collection = json.loads((out / "stac" / "collection.json").read_text())
    items = sorted((out / "stac" / "items").glob("*.json"))
    assert collection["type"] == "Collection" and len(items) == len(list((out / "done").iterdir()))
    item = json.loads(items[0].read_text())
    assert item["properties"]["proj:code"] == "EPSG:32649"
    assert (items[0].parent / item["assets"]["landcover"]["href"]).resolve().is_file()
    # Items carry the imagery's acquisition time (the synthetic scenes are dated), not the
    # time the map was made; the collection's extent spans them.
    from datetime import datetime

    import rasterio

    def when(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    scene_dates = []
    for scene in sorted((synthetic_region.root / "scenes").glob("*.tif")):
        with rasterio.open(scene) as src:
            scene_dates.append(when(src.tags()["datetime"]))
    starts = []
    for path in items:
        props = json.loads(path.read_text())["properties"]
        start, end = when(props["start_datetime"]), when(props["end_datetime"])
        assert min(scene_dates) <= start <= end == when(props["datetime"]) <= max(scene_dates)
        assert end < when(props["created"])
        starts.append(start)
    extent = collection["extent"]["temporal"]["interval"][0]
    assert when(extent[0]) == min(starts)
    from PIL import Image

    with Image.open(out / "quicklook.png") as image:
        assert image.mode == "RGBA" and image.width >= 160
        alpha = np.asarray(image)[..., 3]
        # The bbox is the region, all imagery: the map part is opaque, none of the chunk
        # grid's no-data margin is drawn (the clipped test sees transparent no-data).
        assert (alpha[:512] == 255).all()


def test_overview_level_equals_a_downsampling_of_the_full_mosaic(mapped: tuple[Path, Any]
                                                                 ) -> None:
    from depthseg.mapping.products import downsample

    out, report = mapped
    root = xr.open_zarr(out / "mosaic.zarr", consolidated=False)
    [level_path] = [d["path"] for d in root.attrs["multiscales"][0]["datasets"]
                    if d["path"] != "."]
    factor = int(level_path.rsplit("/", 1)[-1])
    level = xr.open_zarr(out / "mosaic.zarr", group=level_path, consolidated=False)
    assert level.rio.crs == root.rio.crs
    assert level.rio.transform().a == pytest.approx(root.rio.transform().a * factor)
    for layer in ("landcover", "confidence", "depth"):
        expected = downsample(layer, root[layer].values, factor)
        np.testing.assert_array_equal(level[layer].values, expected)
    # The run's area is summed from the level's valid counts: exact, no mosaic re-read.
    assert int(level.valid_count.values.sum()) == int((root.landcover.values != 255).sum())
    assert report.valid_pixels == int((root.landcover.values != 255).sum())
    # One overview COG per layer, equal to the level under the bbox, referenced by the VRT
    # as its overview.
    window = report.plan.bbox_window()
    rows = slice(window.row_off // factor, -(-(window.row_off + window.height) // factor))
    cols = slice(window.col_off // factor, -(-(window.col_off + window.width) // factor))
    for layer in ("landcover", "confidence", "depth"):
        with rasterio.open(out / "cog" / "overview" / f"{layer}.tif") as cog:
            data = cog.read(1)
            expected = level[layer].values[rows, cols].astype(data.dtype)
            np.testing.assert_array_equal(data, expected)
            assert cog.transform.almost_equals(
                report.plan.grid.window_transform(window) * rasterio.Affine.scale(factor))
            assert max(cog.shape) <= 8192
        with rasterio.open(out / "cog" / f"{layer}.vrt") as vrt:
            assert vrt.overviews(1)[0] == factor


def test_stac_item_index_is_geoparquet_of_every_item(mapped: tuple[Path, Any]) -> None:
    import pyarrow.parquet as pq
    import shapely

    out, _ = mapped
    table = pq.read_table(out / "stac" / "items.parquet")
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(p.name for p in (out / "done").iterdir())
    for k, key in enumerate(ids[:3]):
        item = json.loads((out / "stac" / table.column("href")[k].as_py()).read_text())
        assert item["id"] == key
        polygon = shapely.from_wkb(table.column("geometry")[k].as_py())
        assert polygon.bounds == pytest.approx(tuple(item["bbox"]), abs=1e-6)


def test_existing_output_is_refused_without_resume(mapped: tuple[Path, Any],
                                                    synthetic_region: Any,
                                                    bundle_uint16: str) -> None:
    out, _ = mapped
    with pytest.raises(InputError, match="--resume"):
        map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=320))


def test_resume_of_a_complete_run_maps_nothing_and_keeps_bytes(
        mapped: tuple[Path, Any], synthetic_region: Any, bundle_uint16: str) -> None:
    out, _ = mapped
    before = {p: p.read_bytes() for p in (out / "mosaic.zarr").rglob("c/*/*")}
    report = map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=320,
                                       resume=True))
    assert report.todo == 0 and report.already_done == report.planned and report.ok
    assert before == {p: p.read_bytes() for p in (out / "mosaic.zarr").rglob("c/*/*")}


def test_resume_in_another_precision_is_refused(mapped: tuple[Path, Any],
                                                synthetic_region: Any,
                                                bundle_uint16: str) -> None:
    """One mosaic never mixes fp32 and bf16 chunks: the precision is part of the plan."""
    out, _ = mapped
    plan_bytes = (out / "plan.json").read_bytes()
    with pytest.raises(InputError, match="holds a different plan"):
        map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=320,
                                  resume=True, precision="bf16"))
    assert (out / "plan.json").read_bytes() == plan_bytes
    # 'auto' was resolved for the CPU run: fp32, which an explicit fp32 resume matches.
    report = map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=320,
                                       resume=True, precision="fp32"))
    assert report.todo == 0 and report.request.precision == "fp32"


def test_a_deleted_done_marker_is_recomputed_identically(
        mapped: tuple[Path, Any], synthetic_region: Any, bundle_uint16: str) -> None:
    out, _ = mapped
    key = sorted(p.name for p in (out / "done").iterdir())[0]
    chunk = ChunkId.parse(key)
    mosaic = Mosaic(str(out), Storage())
    plan = json.loads((out / "plan.json").read_text())
    cog = out / "cog" / "landcover" / f"{key}.tif"
    cog_bytes = cog.read_bytes()
    (out / "done" / key).unlink()
    assert chunk not in mosaic.done_chunks()
    report = map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=320,
                                       resume=True))
    assert report.todo == 1 and report.done == len(plan["chunks"])
    assert cog.read_bytes() == cog_bytes


def test_separate_write_stage_writes_the_same_mosaic(mapped: tuple[Path, Any],
                                                     synthetic_region: Any, bundle_uint16: str,
                                                     tmp_path: Path, ray_local: Any) -> None:
    """Ray Data write tasks after the predict actors (the GPU default) give the same bytes."""
    out, _ = mapped
    report = map_region(region_request(synthetic_region, tmp_path / "run", bundle_uint16,
                                       chunk_size=320, executor="ray", write_stage="separate"))
    assert report.ok
    chunks = sorted(p.relative_to(out) for p in (out / "mosaic.zarr").rglob("c/*/*"))
    assert chunks and chunks == sorted(
        p.relative_to(tmp_path / "run") for p in (tmp_path / "run" / "mosaic.zarr").rglob("c/*/*"))
    for chunk in chunks:
        assert (out / chunk).read_bytes() == (tmp_path / "run" / chunk).read_bytes(), chunk


def test_gis_tools_see_class_names_units_and_styles(mapped: tuple[Path, Any]) -> None:
    import xml.etree.ElementTree as ET

    from mapping_helpers import CLASS_NAMES, PALETTE, gdal_band_categories

    out, _ = mapped
    names, rows = gdal_band_categories(out / "cog" / "landcover.vrt")
    assert names == list(CLASS_NAMES)
    assert rows[2] == ["2", "building", *map(str, PALETTE[2])]
    with rasterio.open(out / "cog" / "confidence.vrt") as vrt:
        assert vrt.scales == (1 / 255,) and vrt.units == ("1",)
        assert "probability" in vrt.descriptions[0]
    with rasterio.open(out / "cog" / "depth.vrt") as vrt:
        assert vrt.units == ("1",) and "relative depth in [0, 1]" in vrt.descriptions[0]
    for layer in ("landcover", "confidence", "depth"):
        style = ET.parse(out / "cog" / f"{layer}.qml").getroot()
        renderer = style.find("pipe/rasterrenderer")
        assert style.tag == "qgis" and renderer is not None
        if layer == "landcover":
            entries = renderer.findall("colorPalette/paletteEntry")
            assert [e.get("label") for e in entries] == list(CLASS_NAMES)
            assert entries[1].get("color") == "#1e8228"  # forest (30, 130, 40)
        else:
            assert renderer.get("type") == "singlebandpseudocolor"
            ramp = renderer.find("rastershader/colorrampshader")
            assert ramp is not None and len(ramp.findall("item")) >= 3


def test_zarr_format_2_mosaic_opens_in_gdal_and_xarray(synthetic_region: Any,
                                                        bundle_uint16: str,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "v2"
    report = map_region(region_request(synthetic_region, out, bundle_uint16, zarr_format=2),
                        log=lambda _: None)
    assert report.ok and (out / "mosaic.zarr" / ".zgroup").exists()
    mosaic = xr.open_zarr(out / "mosaic.zarr")
    assert mosaic.rio.crs.to_epsg() == 32649
    for layer in ("landcover", "confidence", "depth"):
        # GDAL's own Zarr driver: georeferenced, no data declared, the same pixels.
        with rasterio.open(f'ZARR:"{out / "mosaic.zarr"}":/{layer}') as src:
            assert src.crs.to_epsg() == 32649
            assert src.transform.almost_equals(mosaic.rio.transform())
            np.testing.assert_array_equal(src.read(1), mosaic[layer].values)
    assert json.loads((out / "plan.json").read_text())["zarr_format"] == 2


def test_the_depth_layer_is_named_after_what_the_model_learnt() -> None:
    from dataclasses import replace as with_fields

    from mapping_helpers import contract_for

    from depthseg.mapping.products import asset_text
    from depthseg.mapping.styles import describe, vrt_band_lines

    contract = contract_for("uint8", (1, 2, 3))
    heights = with_fields(contract, depth_source="height")
    assert describe("depth", heights).startswith("relative height above ground (trained on "
                                                 "nDSM heights)")
    assert "Depth Anything" in describe("depth", with_fields(contract, depth_source="teacher"))
    assert describe("depth", contract).startswith("relative depth in [0, 1]")  # not recorded
    assert any("relative height above ground" in line for line in vrt_band_lines("depth",
                                                                                 heights))
    assert asset_text("depth", heights)[1].startswith("Relative height above ground")
    from depthseg.io.bundle import Contract

    assert Contract.from_dict(heights.to_dict()).depth_source == "height"


def test_probabilities_and_polygons_on_request(synthetic_region: Any, bundle_uint16: str,
                                              tmp_path: Path) -> None:
    from mapping_helpers import CLASS_NAMES

    out = tmp_path / "probs"
    report = map_region(region_request(synthetic_region, out, bundle_uint16, probabilities=True,
                                       polygons=True), log=lambda _: None)
    assert report.ok and json.loads((out / "plan.json").read_text())["probabilities"] is True
    mosaic = xr.open_zarr(out / "mosaic.zarr")
    grid = report.plan.grid
    for chunk in report.plan.chunks:
        path = out / "cog" / "probabilities" / f"{chunk.key}.tif"
        assert cog_validate(str(path), quiet=True)[0], path
        with rasterio.open(path) as cog:
            assert cog.count == len(CLASS_NAMES) and cog.descriptions == CLASS_NAMES
            assert cog.nodata == 255 and cog.scales[0] == pytest.approx(1 / 254)
            probs = cog.read()
        window = grid.chunk_window(chunk)
        rows = slice(window.row_off, window.row_off + window.height)
        cols = slice(window.col_off, window.col_off + window.width)
        landcover = mosaic["landcover"].values[rows, cols]
        confidence = mosaic["confidence"].values[rows, cols].astype(int)
        valid = landcover != 255
        assert np.array_equal(valid, probs[0] != 255)
        if not valid.any():
            continue
        p = probs[:, valid].astype(int)
        # The classes sum to one, the land cover's class holds the top probability and its
        # value is the confidence (up to uint8 rounding: this random model's classes are
        # nearly tied, so only "top within one step" is exact).
        assert np.abs(p.sum(axis=0) - 254).max() <= len(CLASS_NAMES)
        chosen = p[landcover[valid], np.arange(p.shape[1])]
        assert (chosen >= p.max(axis=0) - 1).all()
        assert np.abs(p.max(axis=0) * 255 / 254 - confidence[valid]).max() <= 2
        item = json.loads((out / "stac" / "items" / f"{chunk.key}.json").read_text())
        assert item["assets"]["probabilities"]["href"].endswith(f"probabilities/{chunk.key}.tif")
    with rasterio.open(out / "cog" / "probabilities.vrt") as vrt:
        assert vrt.count == len(CLASS_NAMES) and vrt.descriptions == CLASS_NAMES
        assert vrt.transform.almost_equals(grid.window_transform(report.plan.bbox_window()))
        stacked = vrt.read()
        assert (stacked[:, stacked[0] != 255].astype(int).sum(axis=0) >= 254 - 7).all()
    # The polygons are the mosaic's regions: drawn back they are its land cover, and there
    # are as many as it has 4-connected regions (none cut at a chunk border).
    import geopandas as gpd
    from rasterio.features import rasterize
    from scipy import ndimage

    frame = gpd.read_parquet(out / "vector" / "landcover")
    assert frame.crs.to_string() == grid.crs and frame.geometry.is_valid.all()
    assert set(frame["class_name"]) <= set(CLASS_NAMES)
    landcover = mosaic["landcover"].values
    drawn = rasterize(zip(frame.geometry, frame["class"].astype(int), strict=True),
                      out_shape=landcover.shape, transform=grid.transform, fill=255,
                      dtype="uint8")
    assert np.array_equal(drawn, landcover)
    cross = ndimage.generate_binary_structure(2, 1)
    regions = sum(ndimage.label(landcover == k, structure=cross)[1]
                  for k in range(len(CLASS_NAMES)))
    assert len(frame) == regions
    size = grid.chunk_size * grid.resolution
    spans = (frame.bounds.maxx - frame.bounds.minx > size) | (
        frame.bounds.maxy - frame.bounds.miny > size)
    assert spans.any()  # some polygon is wider than a chunk: merged across borders
    collection = json.loads((out / "stac" / "collection.json").read_text())
    assert collection["assets"]["polygons"]["href"] == "../vector/landcover/"
    assert "polygons" in json.loads((out / "run.json").read_text())["finalise_seconds"]
