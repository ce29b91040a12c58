"""Typed model/train configs: presets, validation, exact round trips."""

from __future__ import annotations

import pytest

from depthseg.config import TrainConfig
from depthseg.errors import InputError
from depthseg.model import EncoderConfig, ModelConfig
from depthseg.model.config import head_preset


@pytest.mark.parametrize(
    ("name", "layers", "dim", "depth"),
    [
        ("tiny", (0, 1, 2, 3), 64, 4),
        ("vits", (2, 5, 8, 11), 384, 12),
        ("vitb", (2, 5, 8, 11), 768, 12),
        ("vitl", (4, 11, 17, 23), 1024, 24),
    ],
)
def test_encoder_presets(name, layers, dim, depth):
    cfg = EncoderConfig(name=name)
    assert (cfg.layers, cfg.embed_dim, cfg.depth, cfg.freeze, cfg.patch_size) == (
        layers,
        dim,
        depth,
        True,
        14,
    )


def test_model_defaults_follow_the_encoder_preset():
    cfg = ModelConfig(encoder=EncoderConfig(name="vitl"))
    preset = head_preset("vitl")
    assert cfg.dpt_features == preset.dpt_features
    assert cfg.decoder_channels == preset.decoder_channels
    assert (cfg.num_classes, cfg.adapter, cfg.depth_prompter, cfg.arch) == (
        7,
        True,
        True,
        "depthseg",
    )


@pytest.mark.parametrize(
    "cfg",
    [
        ModelConfig(),
        ModelConfig(
            encoder=EncoderConfig(name="vitl", weights="/w/dinov2_vitl14_pretrain.pth"),
            in_channels=4,
            adapter=False,
            decoder_channels=(8, 8, 8, 8),
        ),
        ModelConfig(arch="deeplabv3", baseline_backbone="mobilenet_v3_large", in_channels=1),
    ],
)
def test_model_config_round_trip_is_exact(cfg):
    data = cfg.to_dict()
    assert isinstance(data["encoder"]["layers"], list)
    assert ModelConfig.from_dict(data) == cfg
    assert ModelConfig.from_dict(data).to_dict() == data


def test_train_config_round_trip_and_paper_recipe():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.betas, cfg.lr_gamma, cfg.lr_milestones) == (
        1e-4,
        1e-3,
        (0.9, 0.999),
        0.2,
        (0.3, 0.6),
    )
    assert (cfg.epochs, cfg.chip_size, cfg.depth_loss_weight, cfg.cls_loss_weight) == (
        50,
        512,
        1.0,
        1.0,
    )
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert [TrainConfig.paper(n).batch_size for n in ("vits", "vitb", "vitl")] == [8, 4, 2]
    assert cfg.milestone_steps(1000) == [300, 600]


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(InputError, match=r"unknown model config key\(s\) 'adaptor', 'colour'"):
        ModelConfig.from_dict({"adaptor": False, "colour": 1})
    with pytest.raises(InputError, match=r"unknown encoder config key\(s\) 'size'"):
        ModelConfig.from_dict({"encoder": {"size": "vits"}})
    with pytest.raises(InputError, match=r"unknown train config key\(s\) 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-4})


@pytest.mark.parametrize(
    ("make", "pattern"),
    [
        (
            lambda: EncoderConfig(name="vith"),
            r"encoder.name='vith' is not allowed; expected one of 'tiny', 'vits', 'vitb', 'vitl'",
        ),
        (lambda: EncoderConfig(layers=(2, 5, 8)), r"encoder.layers=\[2, 5, 8\] must be 4"),
        (lambda: EncoderConfig(layers=(2, 5, 8, 12)), r"in \[0, 12\)"),
        (lambda: EncoderConfig(embed_dim=100), "not divisible"),
        (lambda: EncoderConfig(freeze="yes"), "encoder.freeze='yes' is not a boolean"),
        (lambda: ModelConfig(in_channels=2), "model.in_channels=2 is too few"),
        (lambda: ModelConfig(num_classes=0), r"model.num_classes=0 must be in \[1, 255\]"),
        (lambda: ModelConfig(num_classes=7.5), "not an integer"),
        (lambda: ModelConfig(decoder_channels=(8, 8)), "model.decoder_channels=.*4 positive"),
        (lambda: ModelConfig(arch="unet"), "model.arch='unet' is not allowed"),
        (lambda: TrainConfig(lr_milestones=(0.6, 0.3)), "increasing fractions"),
        (lambda: TrainConfig(lr="fast"), "train.lr='fast' is not a number"),
        (lambda: TrainConfig(betas=(0.9,)), "has 1 items; expected 2"),
    ],
)
def test_bad_values_give_one_line_errors(make, pattern):
    with pytest.raises(InputError, match=pattern) as err:
        make()
    assert "\n" not in str(err.value)


def test_yaml_style_values_are_coerced():
    cfg = TrainConfig(lr="1e-4", weight_decay=0, betas=[0.9, 0.999])
    assert cfg.lr == 1e-4 and isinstance(cfg.weight_decay, float) and cfg.betas == (0.9, 0.999)
