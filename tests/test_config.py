"""YAML presets -> typed configs and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthseg.config import Config, dump_config, load_config, preset_names
from depthseg.errors import InputError
from depthseg.model import EncoderConfig, ModelConfig
from depthseg.model.config import head_preset

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRESETS = ("tiny", "vits", "vitb", "vitl")


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(tmp_path, name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.encoder.name == name
    out = tmp_path / "dumped.yaml"
    dump_config(cfg, out)
    assert load_config(out) == cfg
    assert Config.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("name", PRESETS)
def test_preset_files_agree_with_code_defaults(name):
    cfg = load_config(CONFIGS / f"{name}.yaml").model
    defaults = ModelConfig(encoder=EncoderConfig(name=name), in_channels=cfg.in_channels)
    assert cfg == defaults, "the YAML preset and head_preset()/encoder_preset() disagree"
    assert cfg.dpt_channels == head_preset(name).dpt_channels


def test_paper_recipe_in_presets():
    batch = {n: load_config(CONFIGS / f"{n}.yaml").train.batch_size for n in PRESETS[1:]}
    assert batch == {"vits": 8, "vitb": 4, "vitl": 2}
    vitl = load_config(CONFIGS / "vitl.yaml")
    assert vitl.model.encoder.layers == (4, 11, 17, 23)
    assert (vitl.train.lr, vitl.train.epochs, vitl.train.chip_size) == (1e-4, 50, 512)
    tiny = load_config(CONFIGS / "tiny.yaml")
    assert tiny.model.in_channels == 3 and tiny.train.chip_size % tiny.model.encoder.patch_size == 0


def test_missing_train_batch_size_takes_the_paper_value(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("model:\n  encoder:\n    name: vitb\ntrain:\n  epochs: 3\n")
    cfg = load_config(path)
    assert (cfg.train.batch_size, cfg.train.epochs) == (4, 3)
    assert load_config(CONFIGS / "vits.yaml").train.lr == 1e-4


def test_unknown_keys_name_the_key_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  encoder:\n    name: vits\n  adaptor: false\n")
    with pytest.raises(InputError, match=r"bad\.yaml: unknown model config key\(s\) 'adaptor'"):
        load_config(path)
    path.write_text("modle:\n  num_classes: 7\n")
    with pytest.raises(InputError, match=r"bad\.yaml: unknown config section\(s\) 'modle'"):
        load_config(path)
    path.write_text("train:\n  lr: [1, 2]\n")
    with pytest.raises(InputError, match=r"bad\.yaml: train.lr=\[1, 2\] is not a number"):
        load_config(path)


def test_presets_load_by_name_from_the_package() -> None:
    """An installed depthseg has its presets: ``load_config("vits")``, no checkout needed."""
    import depthseg

    shipped = Path(depthseg.__file__).parent / "presets"
    assert preset_names() == ["demo", "tiny", "vitb", "vitl", "vits"]
    for name in preset_names():
        assert load_config(name) == load_config(shipped / f"{name}.yaml")
    assert load_config("vits") == load_config(CONFIGS / "vits.yaml")  # configs/ links there


def test_missing_and_invalid_files_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist") as missing:
        load_config(tmp_path / "none.yaml")
    assert "tiny, vitb, vitl, vits" in str(missing.value)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML") as err:
        load_config(broken)
    assert "\n" not in str(err.value)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config(model=ModelConfig())
