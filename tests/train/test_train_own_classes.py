"""Own classes flow from the chip store into training with no config edit; mismatches fail
in one line before Ray starts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from train_helpers import REPO, image_of, label_field, load_job, write_tif

from depthseg.config import explicit_model_keys, load_config
from depthseg.errors import InputError
from depthseg.io.bundle import load_bundle
from depthseg.io.chips import ChipStore
from depthseg.io.storage import Storage
from depthseg.train.data import LocalFeed
from depthseg.train.loop import RunSpec, fit, fit_config_to_store
from depthseg.train.prepare import PrepareOptions, prepare_chips

train_job = load_job("train")
CLASSES = ("water", "building", "tree", "road", "grass")


@pytest.fixture(scope="module")
def five_class_store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("five")
    labels = label_field(128, 4, classes=5)
    write_tif(root / "labels.tif", labels[None], nodata=255)
    write_tif(root / "img.tif", image_of(labels, 5), nodata=0)
    out = str(root / "store")
    prepare_chips(PrepareOptions(out=out, scenes=(str(root / "img.tif"),),
                                 labels=(str(root / "labels.tif"),), no_depth=True,
                                 chip_size=32, block=1, classes=CLASSES,
                                 fractions=(0.6, 0.2, 0.2)), log=lambda *_: None)
    return out


def test_num_classes_comes_from_the_store(five_class_store, tmp_path):
    preset = REPO / "configs" / "tiny.yaml"
    assert "num_classes" not in explicit_model_keys(preset)
    config = load_config(preset)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   depth_prompter=False),
                                 train=dataclasses.replace(config.train, epochs=1,
                                                           batch_size=2))
    store = ChipStore.open(five_class_store)
    fitted = fit_config_to_store(config, store, explicit_model_keys(preset))
    assert fitted.model.num_classes == 5
    spec = RunSpec(fitted, five_class_store, str(tmp_path / "run"), Storage())
    fit(spec, LocalFeed(five_class_store, Storage(), 2, 0), log=lambda *_: None)
    bundle = load_bundle(str(tmp_path / "run" / "best"))
    assert bundle.contract.class_names == CLASSES and bundle.config.num_classes == 5


def test_explicit_class_count_that_disagrees_fails_before_ray(five_class_store, tmp_path,
                                                              capsys):
    config = tmp_path / "seven.yaml"
    config.write_text((REPO / "configs" / "tiny.yaml").read_text().replace(
        "model:\n", "model:\n  num_classes: 7\n", 1))
    rc = train_job.main(["--config", str(config), "--chips", five_class_store, "--storage",
                         str(tmp_path / "runs"), "--name", "r",
                         # No Ray listens there: reaching ray.init would fail differently.
                         "--ray-address", "127.0.0.1:1"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "5 classes" in err and "num_classes=7" in err
    assert not Path(tmp_path / "runs").exists()


def test_store_without_depth_and_a_prompter_is_refused(five_class_store):
    config = load_config(REPO / "configs" / "tiny.yaml")
    with pytest.raises(InputError, match="holds no depth"):
        fit_config_to_store(config, ChipStore.open(five_class_store))
    assert np.isfinite(ChipStore.open(five_class_store).stats["std"]).all()


@pytest.mark.parametrize("preset", ["vits", "vitb", "vitl"])
def test_a_paper_preset_without_encoder_weights_is_refused(preset, tmp_path, capsys):
    # Before anything is opened: the chip store need not exist for this to be said.
    argv = ["--config", str(REPO / "configs" / f"{preset}.yaml"), "--chips",
            str(tmp_path / "no-store"), "--storage", str(tmp_path / "runs")]
    assert train_job.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"encoder {preset} is frozen (encoder.freeze: true) but encoder.weights is null" in err
    assert f"dinov2_{preset}14_pretrain.pth" in err and "--set encoder.weights=" in err
    # With the flag (or weights) it goes on, and fails on the missing store instead.
    assert train_job.main([*argv, "--random-frozen-encoder"]) == 2
    assert "frozen" not in capsys.readouterr().err
