"""A user's own scenes and labels: no black chips, label no-data, per-scene labels, remaps."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from train_helpers import CRS, ORIGIN, RES, image_of, label_field, load_job, write_tif

from depthseg.errors import InputError
from depthseg.io.chips import ChipStore
from depthseg.train.prepare import PrepareOptions, prepare_chips

prepare_job = load_job("prepare")


def _quiet(*_args):
    pass


def _write_shifted(path, data, shift_px: float, nodata=None):
    """A raster half a pixel (or ``shift_px``) off the label grid, in the same CRS."""
    count, rows, cols = data.shape
    transform = Affine(RES, 0, ORIGIN[0] + shift_px * RES, 0, -RES, ORIGIN[1] - shift_px * RES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=count,
                       dtype=data.dtype.name, crs=CRS, transform=transform, nodata=nodata) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("order", ["a_first", "b_first"])
def test_scene_without_nodata_off_the_label_grid_never_blackens_chips(tmp_path, order):
    # The user's case: scene A declares no no-data and sits half a pixel off the label grid,
    # covering only the left half; scene B covers everything. Pixels outside A must not count
    # as valid zeros, whatever the order the scenes are given in.
    size = 64
    labels = label_field(size, 0)
    write_tif(tmp_path / "labels.tif", labels[None], nodata=255)
    image = image_of(labels, 1)
    scene_a = _write_shifted(tmp_path / "a.tif", image[:, :, : size // 2], 0.5)
    scene_b = write_tif(tmp_path / "b.tif", image, nodata=0)
    scenes = (scene_a, scene_b) if order == "a_first" else (scene_b, scene_a)
    opts = PrepareOptions(out=str(tmp_path / "store"), scenes=tuple(map(str, scenes)),
                          labels=(str(tmp_path / "labels.tif"),), no_depth=True, chip_size=16,
                          block=1, fractions=(1, 0, 0))
    report = prepare_chips(opts, log=_quiet)
    store = ChipStore.open(opts.out)
    chips = store.read(np.arange(report.num_chips))
    # Every chip has image data wherever it has a label: no black chip anywhere.
    per_chip_max = chips["image"].reshape(report.num_chips, -1).max(axis=1)
    assert (per_chip_max > 0).all()
    assert min(report.stats["std"]) > 5
    # The right half (only B covers it) holds B's pixels exactly, in either order.
    plan = [(r, c) for r in range(0, size, 16) for c in range(0, size, 16)]
    for k, (row, col) in enumerate(plan):
        if col >= size // 2 + 16:
            np.testing.assert_array_equal(chips["image"][k], image[:, row:row + 16, col:col + 16])


def test_chips_with_no_image_are_refused_not_written_as_black(tmp_path):
    size = 64
    labels = label_field(size, 0)
    write_tif(tmp_path / "labels.tif", labels[None], nodata=255)
    # A scene of zeros with no no-data value: "valid", but constant: nothing to learn from.
    write_tif(tmp_path / "black.tif", np.zeros((3, size, size), np.uint8))
    opts = PrepareOptions(out=str(tmp_path / "store"), scenes=(str(tmp_path / "black.tif"),),
                          labels=(str(tmp_path / "labels.tif"),), no_depth=True, chip_size=32)
    with pytest.raises(InputError, match="degenerate band statistics"):
        prepare_chips(opts, log=_quiet)


def test_label_nodata_is_no_label_not_class_zero(tmp_path):
    size = 64
    raw = label_field(size, 2, classes=4) + 1  # classes 1..4
    raw[:, : size // 2] = 0  # unlabelled half, declared as the raster's no-data
    write_tif(tmp_path / "labels.tif", raw[None], nodata=0)
    write_tif(tmp_path / "img.tif", image_of(raw, 3), nodata=0)
    opts = PrepareOptions(out=str(tmp_path / "store"), scenes=(str(tmp_path / "img.tif"),),
                          labels=(str(tmp_path / "labels.tif"),), no_depth=True, chip_size=32,
                          classes=("nothing", "a", "b", "c", "d"), block=1, fractions=(1, 0, 0))
    report = prepare_chips(opts, log=_quiet)
    store = ChipStore.open(opts.out)
    assert report.num_chips == 2  # only the labelled right half is kept
    chips = store.read(np.arange(2))["label"]
    assert 0 not in np.unique(chips), "no-data 0 must not become class 0"
    np.testing.assert_array_equal(chips[0], raw[:32, 32:])


def test_labels_per_scene_with_a_remap_file_and_gsd_recorded(tmp_path, capsys):
    # Two scenes side by side, each with its own label raster in raw codes 10/20/30 and 99
    # (an "unclassified" code the user leaves out of the map), 0 = no-data.
    size = 64
    for k, col_off in enumerate((0, size)):
        classes = label_field(size, 10 + k, classes=3)
        raw = np.choose(classes, [10, 20, 30]).astype(np.uint16)
        raw[:8] = 99
        write_tif(tmp_path / "labels" / f"l{k}.tif", raw[None], col_off=col_off, nodata=0)
        write_tif(tmp_path / "scenes" / f"s{k}.tif", image_of(classes, k), col_off=col_off,
                  nodata=0, names=("red", "green", "blue"))
    (tmp_path / "map.yaml").write_text(
        "# raw value: class name\n10: water\n20: building\n30: water\n"
        "colors: {water: '#0070FF', building: '#E60000'}\n")
    rc = prepare_job.main(["--out", str(tmp_path / "store"), "--scenes", str(tmp_path / "scenes"),
                           "--label", str(tmp_path / "labels"), "--label-map",
                           str(tmp_path / "map.yaml"), "--no-depth", "--chip-size", "32",
                           "--block", "1"])
    assert rc == 0, capsys.readouterr().err
    store = ChipStore.open(str(tmp_path / "store"))
    schema = store.schema
    assert schema.class_names == ("water", "building")
    assert schema.palette == ((0, 112, 255), (230, 0, 0))
    assert schema.gsd == pytest.approx(RES)
    assert schema.band_descriptions == ("red", "green", "blue") and schema.source_bands == 3
    assert store.done().sum() == 8  # 2 x 2 chips in each of the two label rasters
    labels = store.read(np.flatnonzero(store.done()))["label"]
    assert set(np.unique(labels)) == {0, 1, 255}
    assert (labels[:, :8] == 255).sum() > 0  # the unmapped code 99 is ignored


def test_label_map_errors_are_one_line(tmp_path, capsys):
    write_tif(tmp_path / "labels.tif", np.ones((1, 32, 32), np.uint8), nodata=0)
    write_tif(tmp_path / "img.tif", np.full((3, 32, 32), 7, np.uint8), nodata=0)
    (tmp_path / "map.yaml").write_text("one: building\n")
    assert prepare_job.main(["--out", str(tmp_path / "s"), "--scenes", str(tmp_path / "img.tif"),
                             "--label", str(tmp_path / "labels.tif"), "--label-map",
                             str(tmp_path / "map.yaml"), "--no-depth", "--chip-size", "32"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'one'" in err and "integer" in err
