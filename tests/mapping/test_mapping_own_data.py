"""A user's own imagery: bands by meaning, pixel-exact grids, the model's ground resolution,
float reflectance only through --scale, and input errors that arrive before any work."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from mapping_helpers import (
    ConstantModel,
    contract_for,
    fake_bundle,
    load_job,
    write_tiny_bundle,
)

from depthseg.errors import InputError
from depthseg.io.catalog import open_catalog
from depthseg.mapping import MapRequest, map_region
from depthseg.mapping.plan import make_plan

main = load_job("map_region").main
UTM = "EPSG:32618"


def _scene(path: Path, bands: int, res: float, origin: tuple[float, float], size=(40, 48),
           dtype="uint8", names: tuple[str, ...] | None = None, nodata=0) -> Path:
    rows, cols = size
    rng = np.random.default_rng(0)
    if dtype.startswith("float"):
        data = rng.uniform(0.05, 0.9, (bands, rows, cols)).astype(dtype)
    else:
        data = rng.integers(1, 250, (bands, rows, cols)).astype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=bands,
                       dtype=dtype, crs=UTM, nodata=nodata,
                       transform=Affine(res, 0, origin[0], 0, -res, origin[1])) as dst:
        dst.write(data)
        if names:
            dst.descriptions = names
    return path


def _request(scene: Path, out: Path | str = "/tmp/unused", **kw) -> MapRequest:
    with rasterio.open(scene) as src:
        bounds = tuple(src.bounds)
    fast = {"chunk_size": 64, "tile": 28, "overlap": 6, "batch_size": 4, "executor": "local"}
    return MapRequest(bbox=bounds, bbox_crs=UTM, imagery=str(scene), model="memory://test",
                      out=str(out), **{**fast, **kw})


def _plan(scene: Path, contract, **kw):
    return make_plan(_request(scene, **kw), open_catalog(str(scene)), contract)


RGB = replace(contract_for("uint8", (1, 2, 3)), band_descriptions=("red", "green", "blue"),
              source_bands=3)
LANDSAT = ("blue", "green", "red", "nir", "swir1", "thermal", "swir2")


# -- bands by meaning -----------------------------------------------------------------------


def test_described_bands_are_matched_by_name_not_position(tmp_path):
    scene = _scene(tmp_path / "l5.tif", 7, 30.0, (500_000, 4_000_020), names=LANDSAT)
    plan = _plan(scene, RGB)
    assert plan.bands == (3, 2, 1)  # red, green, blue of a B1=blue stack
    assert any("by name" in n for n in plan.notes)


def test_bands_that_do_not_match_the_contract_are_an_error_naming_both(tmp_path):
    names = tuple(f"B{k}" for k in range(1, 8))
    scene = _scene(tmp_path / "l7.tif", 7, 30.0, (500_000, 4_000_020), names=names)
    with pytest.raises(InputError) as err:
        _plan(scene, RGB)
    text = str(err.value)
    assert "'B1'" in text and "'red'" in text and "--bands" in text and "\n" not in text
    assert _plan(scene, RGB, bands=("3", "2", "1")).bands == (3, 2, 1)
    assert _plan(scene, RGB, bands=("b3", "B2", "B1")).bands == (3, 2, 1)


def test_undescribed_stack_with_another_band_count_needs_bands(tmp_path):
    scene = _scene(tmp_path / "stack.tif", 7, 30.0, (500_000, 4_000_020))
    with pytest.raises(InputError, match="7 bands but the model was trained on 3-band"):
        _plan(scene, RGB)
    assert _plan(scene, RGB, bands=("3", "2", "1")).bands == (3, 2, 1)
    with pytest.raises(InputError, match="one imagery band per model channel"):
        _plan(scene, RGB, bands=("3", "2"))


# -- pixel-exact grids ----------------------------------------------------------------------


@pytest.mark.parametrize("phase", [(0.0, 0.0), (7.5, 22.5), (29.0, 0.25)])
def test_mapped_bounds_equal_the_imagery_bounds_to_the_pixel(tmp_path, phase):
    res = 30.0
    origin = (500_010 * res + phase[0], 133_360 * res + phase[1])
    scene = _scene(tmp_path / "s.tif", 3, res, origin, size=(50, 70))
    contract = replace(RGB, tile_size=28)
    bundle = fake_bundle(ConstantModel((0, 0, 3, 0, 0, 0, 0), 0.5), contract)
    report = map_region(_request(scene, tmp_path / "out"), bundle=bundle, log=lambda _: None)
    assert report.ok
    assert (report.plan.grid.phase_x, report.plan.grid.phase_y) == phase
    with rasterio.open(tmp_path / "out" / "cog" / "landcover.vrt") as vrt:
        landcover = vrt.read(1)
        rows, cols = np.nonzero(landcover != 255)
        top_left = vrt.transform * (cols.min(), rows.min())
        bottom_right = vrt.transform * (cols.max() + 1, rows.max() + 1)
    with rasterio.open(scene) as src:
        assert top_left == pytest.approx((src.bounds.left, src.bounds.top), abs=1e-6)
        assert bottom_right == pytest.approx((src.bounds.right, src.bounds.bottom), abs=1e-6)
        assert (rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min()) == src.shape
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert (plan["grid"].get("phase_x", 0.0), plan["grid"].get("phase_y", 0.0)) == phase


# -- ground resolution ----------------------------------------------------------------------


def test_default_resolution_is_the_models_when_the_imagery_is_far_from_it(tmp_path):
    contract = replace(RGB, gsd=0.8)
    fine = _scene(tmp_path / "fine.tif", 3, 0.5, (500_000, 4_000_000))
    plan = _plan(fine, contract)
    assert plan.grid.resolution == 0.8 and any("training resolution" in n for n in plan.notes)
    native = _plan(fine, contract, resolution="native")
    assert native.grid.resolution == 0.5 and any("warning" in n for n in native.notes)
    close = _scene(tmp_path / "close.tif", 3, 0.7, (500_000, 4_000_000))
    assert _plan(close, contract).grid.resolution == 0.7  # within 25 %: the imagery's own
    coarse = _scene(tmp_path / "landsat.tif", 3, 300.0, (500_000, 4_000_200))
    with pytest.raises(InputError, match="300 m per pixel but the model was trained at 0.8 m"):
        _plan(coarse, contract)
    assert _plan(coarse, contract, resolution="native").grid.resolution == 300.0


def test_geographic_imagery_gets_its_ground_resolution_in_metres(tmp_path):
    path = tmp_path / "s2.tif"
    deg = 10 / 111_320  # about 10 m at the equator
    with rasterio.open(path, "w", driver="GTiff", width=40, height=40, count=3, dtype="uint8",
                       crs="EPSG:4326", nodata=0,
                       transform=Affine(deg, 0, 9.0, 0, -deg, 0.3)) as dst:
        dst.write(np.full((3, 40, 40), 9, np.uint8))
    with rasterio.open(path) as src:
        bbox = tuple(src.bounds)
    request = MapRequest(bbox=bbox, imagery=str(path), model="m", out="o", chunk_size=64,
                         tile=28, overlap=6, executor="local")
    plan = make_plan(request, open_catalog(str(path)), replace(RGB, gsd=10.0))
    assert plan.grid.crs == "EPSG:32632" and plan.grid.resolution == pytest.approx(10, abs=0.05)


# -- float reflectance needs --scale --------------------------------------------------------


def test_float_reflectance_maps_only_through_an_explicit_scale(tmp_path):
    scene = _scene(tmp_path / "refl.tif", 3, 10.0, (500_000, 4_000_000), dtype="float32",
                   nodata=None)
    with pytest.raises(InputError, match="float32 but the model bundle was trained on uint8"):
        _plan(scene, RGB)
    plan = _plan(scene, RGB, scale=255.0)
    assert plan.scale == (255.0, 0.0)
    from depthseg.mapping.stages import ChunkContext, read_chunk

    catalog = open_catalog(str(scene))
    ctx = ChunkContext(plan.grid, plan.tiles, plan.bands, "unused", catalog.storage,
                       source_dtype=catalog.dtype, scale=plan.scale, dtype="uint8",
                       value_range=(0, 255))
    pixels, valid = read_chunk(ctx, plan.chunks[0], catalog.scenes)
    assert pixels.dtype == np.uint8 and valid.any()
    with rasterio.open(scene) as src:
        expected = np.clip(np.rint(src.read() * 255), 0, 255)
    assert set(np.unique(pixels[:, valid])) <= set(np.unique(expected))


# -- errors before any work -----------------------------------------------------------------


def _cli(scene: Path, bundle: str, out: Path, *extra: str) -> list[str]:
    with rasterio.open(scene) as src:
        bounds = tuple(src.bounds)
    return ["--bbox", *map(str, bounds), "--bbox-crs", UTM, "--imagery", str(scene), "--model",
            bundle, "--out", str(out), "--chunk", "64", "--batch-size", "4", *extra]


def _fails_before_work(argv, out: Path, capsys, match: str) -> None:
    # No --local: a Ray start would be the first thing to take time; these fail before it.
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and match in err[-1], err
    assert not (out / "plan.json").exists() and not (out / "mosaic.zarr").exists()


def test_corrupt_weights_fail_in_seconds_and_leave_nothing(tmp_path, capsys):
    scene = _scene(tmp_path / "s.tif", 3, 1.0, (500_000, 4_000_000))
    bundle = write_tiny_bundle(tmp_path / "b", contract_for("uint8", (1, 2, 3)))
    weights = Path(bundle) / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    _fails_before_work(_cli(scene, bundle, tmp_path / "o"), tmp_path / "o", capsys, "truncated")


def test_output_that_is_a_file_fails_before_work(tmp_path, capsys):
    scene = _scene(tmp_path / "s.tif", 3, 1.0, (500_000, 4_000_000))
    bundle = write_tiny_bundle(tmp_path / "b", contract_for("uint8", (1, 2, 3)))
    (tmp_path / "file").write_text("x")
    _fails_before_work(_cli(scene, bundle, tmp_path / "file"), tmp_path / "file", capsys,
                       "is a file")
    _fails_before_work(_cli(scene, bundle, tmp_path / "file" / "sub"), tmp_path / "file" / "sub",
                       capsys, "which is a file")


def test_overlap_of_more_than_half_a_tile_is_refused(tmp_path, capsys):
    scene = _scene(tmp_path / "s.tif", 3, 1.0, (500_000, 4_000_000))
    bundle = write_tiny_bundle(tmp_path / "b", contract_for("uint8", (1, 2, 3)))
    _fails_before_work(_cli(scene, bundle, tmp_path / "o", "--tile", "126", "--overlap", "100"),
                       tmp_path / "o", capsys, "more than half the tile")


def test_tile_defaults_to_the_bundles(tmp_path):
    scene = _scene(tmp_path / "s.tif", 3, 1.0, (500_000, 4_000_000))
    plan = _plan(scene, replace(RGB, tile_size=70), tile=None, overlap=None)
    assert (plan.tiles.tile, plan.tiles.overlap) == (70, 17)
