"""The chip store: chips written by index, done last, statistics over valid pixels only."""

from __future__ import annotations

import numpy as np
import pytest

from depthseg.errors import InputError
from depthseg.io.chips import ChipSchema, ChipStore


def _schema(n: int = 4) -> ChipSchema:
    return ChipSchema(
        num_chips=n, chip_size=32, band_names=("red", "green", "blue"), band_indices=(1, 2, 3),
        input_dtype="uint8", value_range=(0, 255), class_names=("a", "b"),
        palette=((0, 0, 0), (255, 255, 255)), depth_source="height",
    )


@pytest.mark.parametrize("where", ["local", "s3"])
def test_chips_round_trip_and_statistics_exclude_no_data(tmp_path, s3_storage, s3_prefix, where):
    uri = str(tmp_path / "chips.zarr") if where == "local" else f"{s3_prefix}/chips.zarr"
    store = ChipStore.create(uri, _schema(), s3_storage)
    rng = np.random.default_rng(0)
    written = {}
    for index, split in [(0, 0), (2, 1), (3, 0)]:
        image = rng.integers(1, 200, (3, 32, 32), dtype=np.uint8)
        label = rng.integers(0, 2, (32, 32), dtype=np.uint8)
        label[:8] = 255  # no data: zero image there
        image[:, :8] = 0
        depth = rng.random((32, 32)).astype(np.float32)
        store.write_chip(index, image, label, depth, split)
        written[index] = (image, label, depth)

    again = ChipStore.open(uri, s3_storage)
    assert again.done().tolist() == [True, False, True, True]
    assert again.indices("train").tolist() == [0, 3] and again.indices("val").tolist() == [2]
    got = again.read([3, 0])
    np.testing.assert_array_equal(got["image"][0], written[3][0])
    np.testing.assert_array_equal(got["label"][1], written[0][1])
    np.testing.assert_allclose(got["depth"][0], written[3][2], atol=1e-3)

    stats = ChipStore.open(uri, s3_storage, mode="r+").finalize_stats()
    valid_pixels = np.concatenate([written[i][0][:, 8:].reshape(3, -1) for i in (0, 3)], axis=1)
    np.testing.assert_allclose(stats["mean"], valid_pixels.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], valid_pixels.std(axis=1), rtol=1e-9)
    assert ChipStore.open(uri, s3_storage).stats == stats


def test_reopening_with_another_layout_is_refused(tmp_path):
    uri = str(tmp_path / "chips.zarr")
    ChipStore.create(uri, _schema(4))
    assert ChipStore.create(uri, _schema(4)).schema == _schema(4)  # same layout: continue
    with pytest.raises(InputError, match="different layout"):
        ChipStore.create(uri, _schema(5))


def test_bad_chips_and_missing_store_are_clear_errors(tmp_path):
    store = ChipStore.create(str(tmp_path / "c.zarr"), _schema())
    with pytest.raises(InputError, match="do not match"):
        store.write_chip(0, np.zeros((3, 16, 16), np.uint8), np.zeros((16, 16), np.uint8), None, 0)
    assert not store.done().any()
    with pytest.raises(InputError, match="no chip store"):
        ChipStore.open(str(tmp_path / "missing.zarr"))
