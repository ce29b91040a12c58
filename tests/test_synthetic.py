"""Synthetic regions: determinism, co-registration, physics and file formats."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from depthseg.errors import InputError
from depthseg.synthetic import (
    CLASS_NAMES,
    PALETTE,
    Region,
    make_region,
    simulate,
    write_chip_pairs,
)
from depthseg.synthetic.classes import BUILDING, IMPERVIOUS, NODATA_LABEL

ROOT = Path(__file__).resolve().parents[1]
SEED = 3  # a seed whose small regions hold plenty of buildings and yards


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Region:
    return make_region(tmp_path_factory.mktemp("region"), size=512, seed=SEED)


@pytest.fixture(scope="module")
def scene_arrays():
    return simulate(512, SEED)


def _files(root: Path) -> dict[str, bytes]:
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in paths}


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    first = make_region(tmp_path / "a", size=256, seed=7)
    second = make_region(tmp_path / "b", size=256, seed=7)
    other = make_region(tmp_path / "c", size=256, seed=8)
    files_a, files_b = _files(first.root), _files(second.root)
    assert files_a.keys() == files_b.keys()
    assert all(files_a[name] == files_b[name] for name in files_a), "not deterministic"
    assert first.labels.read_bytes() != other.labels.read_bytes()
    assert first.scenes[0].read_bytes() != other.scenes[0].read_bytes()


def test_simulate_is_deterministic() -> None:
    one, two = simulate(128, 11), simulate(128, 11)
    assert np.array_equal(one.image, two.image)
    assert np.array_equal(one.labels, two.labels)
    assert np.array_equal(one.height, two.height)
    assert not np.array_equal(one.image, simulate(128, 12).image)


def test_scenes_labels_heights_are_coregistered(region: Region) -> None:
    with rasterio.open(region.labels) as labels, rasterio.open(region.height) as height:
        assert labels.crs == height.crs and labels.transform == height.transform
        assert (labels.width, labels.height) == (region.size, region.size)
        grid = labels.transform
        crs = labels.crs
    assert crs.to_epsg() == 32649
    covered = np.zeros((region.size, region.size), bool)
    for path in region.scenes:
        with rasterio.open(path) as scene:
            assert scene.crs == crs
            assert scene.res == (region.resolution, region.resolution)
            col, row = ~grid * (scene.transform.c, scene.transform.f)
            assert abs(col - round(col)) < 1e-6 and abs(row - round(row)) < 1e-6
            row, col = int(round(row)), int(round(col))
            assert row >= 0 and col >= 0
            assert row + scene.height <= region.size and col + scene.width <= region.size
            valid = scene.read_masks(1) > 0
            covered[row : row + scene.height, col : col + scene.width] |= valid
    assert len(region.scenes) == 4
    assert covered.all(), "the scenes leave part of the region uncovered"


def test_plausible_utm_origin_near_liuzhou(region: Region) -> None:
    x0, y0 = region.transform.c, region.transform.f
    assert 300_000 <= x0 <= 400_000 and 2_680_000 <= y0 <= 2_720_000
    assert region.transform.a == 0.8 and region.transform.e == -0.8


def test_nodata_borders_are_declared_and_zero(region: Region) -> None:
    wedges = 0
    for path in region.scenes:
        with rasterio.open(path) as scene:
            assert scene.nodata == 0
            data = scene.read()
            empty = (data == 0).all(axis=0)
            # A pixel is either no data in every band or valid (>= 1) in every band.
            assert np.array_equal((data == 0).any(axis=0), empty)
            assert np.array_equal(scene.read_masks(1) == 0, empty)
            wedges += int(empty.any())
    assert wedges >= 1, "expected at least one scene with a no-data border"


def test_scene_metadata_and_cog_layout(region: Region) -> None:
    times = []
    for path in region.scenes:
        with rasterio.open(path) as scene:
            assert scene.descriptions == ("blue", "green", "red", "nir")
            assert scene.dtypes == ("uint16",) * 4
            assert scene.block_shapes[0] == (512, 512) or scene.height < 512
            assert scene.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert scene.compression.name.lower() in ("zstd", "deflate")
            assert scene.overviews(1) or max(scene.shape) <= 512
            assert int(scene.read().max()) <= 1023
            tags = scene.tags()
            assert "TIFFTAG_DATETIME" in tags and "datetime" in tags
            times.append(tags["datetime"])
    assert len(set(times)) == len(times), "scenes should have distinct acquisition times"


def test_manifest(region: Region) -> None:
    info = json.loads(region.manifest.read_text())
    assert info["size"] == 512 and info["seed"] == SEED and info["crs"] == "EPSG:32649"
    assert info["class_names"] == list(CLASS_NAMES)
    assert [tuple(c) for c in info["palette"]] == list(PALETTE)
    assert info["band_names"] == ["blue", "green", "red", "nir"]
    assert 0 < info["sun_elevation"] < 90
    assert info["scenes"] == [p.name for p in region.scenes]
    assert region.preview.is_file() and Image.open(region.preview).size == (512, 512)
    with rasterio.open(region.labels) as labels:
        classes = np.unique(labels.read(1))
        assert NODATA_LABEL not in classes and classes.max() < len(CLASS_NAMES)
    assert Region.load(region.root) == region


def test_buildings_are_taller_than_impervious_ground(scene_arrays) -> None:
    height, labels = scene_arrays.height, scene_arrays.labels
    roofs, ground = height[labels == BUILDING], height[labels == IMPERVIOUS]
    assert roofs.size > 1000 and ground.size > 1000
    assert np.median(roofs) > 3.0 > np.percentile(ground, 90)
    assert 3.0 <= roofs.min() and roofs.max() <= 70.0


def test_shadows_are_darker_within_each_class(scene_arrays) -> None:
    brightness = scene_arrays.image[:3].astype(np.float64).sum(axis=0)
    compared = 0
    for label in range(len(CLASS_NAMES)):
        in_class = scene_arrays.labels == label
        shaded, lit = in_class & scene_arrays.shadow, in_class & ~scene_arrays.shadow
        if shaded.sum() >= 200 and lit.sum() >= 200:
            compared += 1
            assert brightness[shaded].mean() < 0.8 * brightness[lit].mean(), CLASS_NAMES[label]
    assert compared >= 4
    assert 0.02 < scene_arrays.shadow.mean() < 0.5


def test_roof_and_ground_spectra_overlap_but_heights_differ(scene_arrays) -> None:
    image = scene_arrays.image.astype(np.float64)
    labels, lit = scene_arrays.labels, ~scene_arrays.shadow
    roofs = image[:, (labels == BUILDING) & lit]
    ground = image[:, (labels == IMPERVIOUS) & lit]
    med_roof, med_ground = np.median(roofs, axis=1), np.median(ground, axis=1)
    assert np.all(np.abs(med_roof - med_ground) < 0.3 * med_ground)
    q_roof = np.percentile(roofs, [25, 75], axis=1)
    q_ground = np.percentile(ground, [25, 75], axis=1)
    assert np.all((q_roof[0] <= q_ground[1]) & (q_ground[0] <= q_roof[1]))
    heights = scene_arrays.height
    assert np.median(heights[labels == BUILDING]) - np.median(heights[labels == IMPERVIOUS]) > 5


def test_vegetation_water_and_soil_spectra(scene_arrays) -> None:
    blue, green, red, nir = scene_arrays.image.astype(np.float64)
    lit = ~scene_arrays.shadow
    forest = (scene_arrays.labels == 1) & lit
    water = (scene_arrays.labels == 6) & lit
    assert np.median(nir[forest]) > 1.5 * np.median(red[forest])  # red edge
    assert np.median(green[forest]) > np.median(red[forest])  # green peak
    assert np.median(nir[water]) < np.median(green[water])  # water absorbs NIR
    assert np.median(nir[water]) < 0.5 * np.median(nir[forest])


def test_uint8_rgb_product(tmp_path: Path) -> None:
    region = make_region(tmp_path, size=256, seed=2, dtype="uint8", n_scenes=2)
    assert len(region.scenes) == 2 and region.band_names == ("red", "green", "blue")
    for path in region.scenes:
        with rasterio.open(path) as scene:
            assert scene.count == 3 and scene.dtypes == ("uint8",) * 3
            assert scene.descriptions == ("red", "green", "blue")
            assert scene.read(masked=True).min() >= 1


def test_chip_pairs_share_the_region_grid(region: Region, tmp_path: Path) -> None:
    images = write_chip_pairs(region, tmp_path / "pairs", chip_size=256)
    assert len(images) == 4
    with rasterio.open(region.labels) as labels:
        region_labels, grid = labels.read(1), labels.transform
    for image_path in images:
        label_path = image_path.with_name(image_path.name.replace("_img.tif", "_label.tif"))
        with rasterio.open(image_path) as img, rasterio.open(label_path) as lab:
            assert img.shape == lab.shape == (256, 256)
            assert img.transform == lab.transform and img.crs == lab.crs
            assert img.count == 4 and lab.dtypes == ("uint8",)
            col, row = (int(round(v)) for v in ~grid * (img.transform.c, img.transform.f))
            assert image_path.name == f"y{row:05d}_x{col:05d}_img.tif"
            assert np.array_equal(lab.read(1), region_labels[row : row + 256, col : col + 256])
            assert img.read(1).min() >= 1


def test_loveda_layout(region: Region, tmp_path: Path) -> None:
    images = write_chip_pairs(region, tmp_path / "loveda", chip_size=256, layout="loveda")
    assert [p.name for p in images] == ["0.png", "1.png", "2.png", "3.png"]
    mask = np.asarray(Image.open(tmp_path / "loveda" / "masks_png" / "0.png"))
    picture = np.asarray(Image.open(images[0]))
    assert picture.shape == (256, 256, 3) and picture.dtype == np.uint8
    assert mask.shape == (256, 256) and 1 <= mask.min() and mask.max() <= len(CLASS_NAMES)
    with pytest.raises(InputError, match="layout"):
        write_chip_pairs(region, tmp_path / "x", layout="coco")


def test_geographic_crs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="EPSG:4326.*projected CRS such as EPSG:32649"):
        make_region(tmp_path, size=128, crs="EPSG:4326")
    result = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "make_synthetic.py"), "--out", str(tmp_path / "r"),
         "--size", "128", "--crs", "EPSG:4326"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert result.returncode == 2
    assert "EPSG:4326" in result.stderr and "EPSG:32649" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_other_projected_crs_gets_a_valid_origin(tmp_path: Path) -> None:
    region = make_region(tmp_path, size=128, seed=1, crs="EPSG:32633", n_scenes=1)
    with rasterio.open(region.scenes[0]) as scene:
        assert scene.crs.to_epsg() == 32633
        x0, y0 = scene.transform.c, scene.transform.f
    assert 100_000 < x0 < 900_000 and 0 < y0 < 9_400_000  # inside UTM zone 33N


@pytest.mark.parametrize("bad", [{"size": 8}, {"dtype": "float32"}, {"resolution": -1.0},
                                 {"n_scenes": 0}, {"crs": "not a crs"}])
def test_bad_arguments_raise_input_error(tmp_path: Path, bad: dict) -> None:
    with pytest.raises(InputError):
        make_region(tmp_path, **{"size": 128, **bad})


def test_shadow_of_a_box_points_away_from_the_sun() -> None:
    from depthseg.synthetic.shadows import cast_shadows

    height = np.zeros((64, 64), np.float32)
    height[30:34, 30:34] = 10.0  # a 10 m tower on 1 m pixels
    # Sun in the south at 45 degrees: a 10 m shadow on the north side, none elsewhere.
    shadow = cast_shadows(height, 1.0, sun_azimuth=180.0, sun_elevation=45.0)
    assert shadow[21:30, 30:34].all() and not shadow[:20, :].any()
    assert not shadow[34:, :].any() and not shadow[:, :30].any() and not shadow[:, 34:].any()
    # Sun in the east: the shadow falls west.
    shadow = cast_shadows(height, 1.0, sun_azimuth=90.0, sun_elevation=45.0)
    assert shadow[30:34, 21:30].all() and not shadow[:, 34:].any()


def test_sun_angles_do_not_change_the_layout() -> None:
    default = simulate(128, 5)
    custom = simulate(128, 5, sun_azimuth=default.sun_azimuth + 40, sun_elevation=30)
    assert np.array_equal(default.labels, custom.labels)
    assert custom.sun_elevation == 30 and not np.array_equal(default.shadow, custom.shadow)
