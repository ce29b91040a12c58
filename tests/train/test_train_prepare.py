from __future__ import annotations

import json

import numpy as np
import pytest
from train_helpers import load_job, make_pairs, make_scenes, write_tif

from depthseg.errors import InputError
from depthseg.io.chips import ChipStore
from depthseg.train.prepare import PrepareOptions, prepare_chips
from depthseg.train.sources import block_splits, split_counts

prepare_job = load_job("prepare")


def _quiet(*_args):
    pass


def test_pairs_become_a_store_with_nodata_excluded_from_stats(tmp_path):
    make_pairs(tmp_path / "pairs", n=5, size=64)
    opts = PrepareOptions(out=str(tmp_path / "store"), pairs=str(tmp_path / "pairs"),
                          no_depth=True, chip_size=32, fractions=(0.6, 0.2, 0.2))
    report = prepare_chips(opts, log=_quiet)
    assert report.num_chips == 20 and report.written == 20
    store = ChipStore.open(str(tmp_path / "store"))
    assert store.schema.band_names == ("band1", "band2", "band3")
    assert store.schema.depth_source == "none"
    # All 4 chips of a file share its split.
    splits = np.asarray(store.group["split"][:]).reshape(5, 4)
    assert (splits == splits[:, :1]).all() and set(splits[:, 0]) == {0, 1, 2}
    chip = store.read([0])
    assert (chip["label"][0, :4, :4] == 255).all()
    # Stats of the train chips equal numpy's over their valid pixels (label 255 is not no-data
    # for the image: the image's own mask decides).
    train = store.indices("train")
    images = store.read(train)["image"].astype(np.float64)
    np.testing.assert_allclose(store.stats["mean"], images.mean(axis=(0, 2, 3)), rtol=1e-9)


def test_loveda_masks_are_shifted_to_class_ids(tmp_path):
    make_pairs(tmp_path / "Train", n=2, size=32, layout="loveda")
    make_pairs(tmp_path / "Val", n=1, size=32, layout="loveda", seed=5)
    prepare_chips(PrepareOptions(out=str(tmp_path / "store"), pairs=str(tmp_path), no_depth=True,
                                 chip_size=32), log=_quiet)
    store = ChipStore.open(str(tmp_path / "store"))
    assert store.schema.band_names == ("red", "green", "blue")
    assert list(np.asarray(store.group["split"][:])) == [0, 0, 1]  # from Train/ and Val/
    label = store.read([0])["label"][0]
    assert (label[:4, :4] == 255).all() and label[label != 255].max() < 7
    from PIL import Image
    mask = np.asarray(Image.open(tmp_path / "Train" / "masks_png" / "0.png"))
    np.testing.assert_array_equal(label[4:, 4:], mask[4:, 4:] - 1)


def test_scene_chips_composite_newest_first_with_disjoint_split_blocks(tmp_path):
    data = make_scenes(tmp_path, size=256)
    opts = PrepareOptions(out=str(tmp_path / "store"), scenes=(str(tmp_path / "scenes"),),
                          labels=(str(data["labels"]),), height=str(data["height"]), chip_size=32,
                          block=2, fractions=(0.5, 0.25, 0.25), seed=3)
    report = prepare_chips(opts, log=_quiet)
    store = ChipStore.open(opts.out)
    plan = json.loads((tmp_path / "store" / "plan.json").read_text())["chips"]
    assert report.num_chips == len(plan) == 64  # 8 x 8 chips of 32 px, all labelled
    # Chips never overlap, and each 2 x 2 block of chips has a single split.
    origins = {(row, col) for _, _, _, row, col in plan}
    assert len(origins) == len(plan) and all(r % 32 == 0 and c % 32 == 0 for r, c in origins)
    by_block: dict = {}
    for split, _, _, row, col in plan:
        by_block.setdefault((row // 64, col // 64), set()).add(split)
    assert all(len(s) == 1 for s in by_block.values())
    assert {s for v in by_block.values() for s in v} == {0, 1, 2}
    # The composite takes the newer scene A in the overlap (B holds 1s there).
    k = next(i for i, (_, _, _, row, col) in enumerate(plan) if (row, col) == (64, 128))
    chip = store.read([k])
    np.testing.assert_array_equal(chip["image"][0], data["image"][:, 64:96, 128:160])
    assert np.nanmax(chip["depth"]) <= 1 and np.isfinite(chip["depth"]).all()
    top = store.read([0])["label"][0]
    assert (top[:8] == 255).all()


def test_block_split_counts():
    assert split_counts(10, (0.7, 0.15, 0.15)) == (7, 2, 1) or sum(split_counts(10, (0.7, .15,
                                                                                   .15))) == 10
    assert split_counts(3, (0.9, 0.05, 0.05)) == (1, 1, 1)
    grid = block_splits(7, 5, 3, (0.5, 0.25, 0.25), seed=0)
    assert grid.shape == (7, 5)
    for r in range(7):
        for c in range(5):
            assert grid[r, c] == grid[r // 3 * 3, c // 3 * 3]


def test_prepare_resumes_exactly_the_missing_chips(tmp_path):
    data = make_scenes(tmp_path, size=128)
    opts = PrepareOptions(out=str(tmp_path / "full"), scenes=tuple(map(str, data["scenes"])),
                          labels=(str(data["labels"]),), height=str(data["height"]), chip_size=32)
    prepare_chips(opts, log=_quiet)
    partial = PrepareOptions(**{**opts.__dict__, "out": str(tmp_path / "partial")})
    prepare_chips(partial, log=_quiet)
    store = ChipStore.open(partial.out, mode="r+")
    # Simulate a run killed after some chips: their done flags and data never got written.
    lost = [1, 4, 5]
    for i in lost:
        store.group["done"][i] = False
        store.group["image"][i] = np.zeros_like(store.group["image"][i])
        store.group["band_count"][i] = 0
    report = prepare_chips(partial, log=_quiet)
    assert (report.written, report.skipped) == (len(lost), report.num_chips - len(lost))
    full = ChipStore.open(opts.out)
    for name in ("image", "label", "depth", "split", "done", "band_sum"):
        np.testing.assert_array_equal(full.group[name][:], store.group[name][:])
    assert full.stats == ChipStore.open(partial.out).stats


def test_prepare_refuses_other_inputs_on_an_existing_store(tmp_path):
    data = make_scenes(tmp_path, size=128)
    opts = PrepareOptions(out=str(tmp_path / "s"), scenes=(str(data["scenes"][0]),),
                          labels=(str(data["labels"]),), no_depth=True, chip_size=32)
    prepare_chips(opts, log=_quiet)
    with pytest.raises(InputError, match="other inputs|different layout"):
        prepare_chips(PrepareOptions(**{**opts.__dict__, "seed": 9, "block": 1}), log=_quiet)


def _cli_error(capsys, argv) -> str:
    assert prepare_job.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    return err


def test_cli_refuses_bad_label_values(tmp_path, capsys):
    make_pairs(tmp_path / "p", n=1, size=32)
    write_tif(tmp_path / "p" / "c00_label.tif", np.full((1, 32, 32), 9, np.uint8))
    err = _cli_error(capsys, ["--out", str(tmp_path / "s"), "--pairs", str(tmp_path / "p"),
                              "--no-depth", "--chip-size", "32"])
    assert "value 9" in err and "255" in err


def test_cli_refuses_size_mismatch(tmp_path, capsys):
    make_pairs(tmp_path / "p", n=1, size=32)
    write_tif(tmp_path / "p" / "c00_label.tif", np.zeros((1, 40, 32), np.uint8))
    err = _cli_error(capsys, ["--out", str(tmp_path / "s"), "--pairs", str(tmp_path / "p"),
                              "--no-depth", "--chip-size", "32"])
    assert "32x32" in err and "40x32" in err


def test_cli_refuses_missing_depth_source(tmp_path, capsys):
    make_pairs(tmp_path / "p", n=1, size=32)
    err = _cli_error(capsys, ["--out", str(tmp_path / "s"), "--pairs", str(tmp_path / "p")])
    assert "--teacher" in err and "--height" in err
    assert not (tmp_path / "s").exists()


def test_cli_builds_a_store_with_band_order(tmp_path, capsys):
    data = make_scenes(tmp_path, size=128, dtype="uint16")
    rc = prepare_job.main(["--out", str(tmp_path / "s"), "--scenes", str(tmp_path / "scenes"),
                           "--label", str(data["labels"]), "--height", str(data["height"]),
                           "--bands", "3", "2", "1", "4", "--chip-size", "32",
                           "--value-range", "0", "1023"])
    assert rc == 0
    store = ChipStore.open(str(tmp_path / "s"))
    assert store.schema.band_indices == (3, 2, 1, 4) and store.schema.input_dtype == "uint16"
    assert store.schema.value_range == (0.0, 1023.0)
    chip = store.read([0])["image"][0]
    src = data["image"][:, :32, :32]
    np.testing.assert_array_equal(chip, src[[2, 1, 0, 3]])


@pytest.mark.slow
def test_teacher_depth_through_ray_data_actors(tmp_path, ray_local):
    from transformers import DepthAnythingForDepthEstimation

    from depthseg.model.teacher import tiny_teacher_config

    teacher = tmp_path / "teacher"
    DepthAnythingForDepthEstimation(tiny_teacher_config("v2")).save_pretrained(teacher)
    make_pairs(tmp_path / "p", n=3, size=64)
    report = prepare_chips(PrepareOptions(out=str(tmp_path / "s"), pairs=str(tmp_path / "p"),
                                          teacher=str(teacher), chip_size=32, teacher_batch=4),
                           log=_quiet)
    assert report.written == 12
    depth = ChipStore.open(str(tmp_path / "s")).read(list(range(12)))["depth"]
    assert np.nanmin(depth) >= 0 and np.nanmax(depth) <= 1 and np.isfinite(depth).mean() > 0.5
