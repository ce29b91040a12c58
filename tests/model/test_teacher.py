"""Depth teacher: tiny random Depth Anything saved and reloaded, normalisation invariants."""

import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel, DepthAnythingForDepthEstimation

from depthseg.errors import InputError
from depthseg.model.teacher import (
    DepthTeacher,
    TeacherConfig,
    depth_from_height,
    load_teacher_model,
    normalize_depth,
    tiny_teacher_config,
    to_uint8,
)

# Hub config.json of the real small models, as written by transformers 4.38-4.45.
_HUB_SMALL = {
    "architectures": ["DepthAnythingForDepthEstimation"],
    "backbone": None,
    "fusion_hidden_size": 64,
    "head_hidden_size": 32,
    "head_in_index": -1,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-05,
    "model_type": "depth_anything",
    "neck_hidden_sizes": [48, 96, 192, 384],
    "patch_size": 14,
    "reassemble_factors": [4, 2, 1, 0.5],
    "reassemble_hidden_size": 384,
    "torch_dtype": "float32",
    "use_pretrained_backbone": False,
}


def _hub_backbone(out_indices):
    return {
        "architectures": ["Dinov2Model"],
        "hidden_size": 384,
        "image_size": 518,
        "model_type": "dinov2",
        "num_attention_heads": 6,
        "out_features": [f"stage{i}" for i in out_indices],
        "out_indices": out_indices,
        "patch_size": 14,
        "reshape_hidden_states": False,
        "torch_dtype": "float32",
    }


@pytest.fixture(scope="module", params=["v1", "v2"])
def saved_teacher(request, tmp_path_factory):
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(tiny_teacher_config(request.param))
    path = tmp_path_factory.mktemp(f"teacher_{request.param}")
    model.save_pretrained(path, safe_serialization=True)
    return path


def _images(seed=0, shape=(2, 3, 100, 130), high=256, dtype=torch.uint8):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, shape, generator=generator).to(dtype)


def test_predict_gives_normalised_depth_at_input_size(saved_teacher):
    assert (saved_teacher / "model.safetensors").is_file()
    teacher = DepthTeacher.from_pretrained(saved_teacher, TeacherConfig(input_size=56))
    assert teacher.model_input_size(100, 130) == (56, 70)
    images = _images()
    depth = teacher.predict(images)
    assert depth.shape == (2, 1, 100, 130) and depth.dtype == torch.float32
    assert torch.isfinite(depth).all() and depth.min() >= 0 and depth.max() <= 1
    assert depth.std() > 0.1  # a real depth map, not the flat fallback
    assert not depth.is_inference()
    torch.testing.assert_close(teacher.predict(images), depth, rtol=0, atol=0)


def test_predict_marks_invalid_pixels(saved_teacher):
    teacher = DepthTeacher.from_pretrained(saved_teacher, TeacherConfig(input_size=28))
    valid = torch.ones(2, 100, 130, dtype=torch.bool)
    valid[:, :10] = False
    depth = teacher.predict(_images(), valid)
    assert depth[:, :, :10].isnan().all() and torch.isfinite(depth[:, :, 10:]).all()


def test_multispectral_uint16_goes_through_rgb_indices_and_stretch(saved_teacher):
    bgrn = _images(1, shape=(2, 4, 45, 60), high=1024, dtype=torch.int32).to(torch.uint16)
    config = TeacherConfig(input_size=None, rgb_indices=(2, 1, 0))
    teacher = DepthTeacher.from_pretrained(saved_teacher, config)
    assert teacher.model_input_size(45, 60) == (42, 56)
    depth = teacher.predict(bgrn)
    assert depth.shape == (2, 1, 45, 60) and torch.isfinite(depth).all()
    # Same result as stretching the RGB bands by hand and feeding uint8 RGB.
    rgb_teacher = DepthTeacher(teacher.model, TeacherConfig(input_size=None))
    torch.testing.assert_close(rgb_teacher.predict(to_uint8(bgrn[:, [2, 1, 0]])), depth)
    with pytest.raises(InputError, match="4 bands, expected 3"):
        rgb_teacher.predict(bgrn)
    with pytest.raises(InputError, match="rgb_indices=\\(2, 1, 5\\)"):
        DepthTeacher(teacher.model, TeacherConfig(rgb_indices=(2, 1, 5))).predict(bgrn)


def test_metric_teacher_is_negated_so_larger_is_nearer():
    torch.manual_seed(0)
    model = DepthAnythingForDepthEstimation(tiny_teacher_config("v2", "metric"))
    depth = DepthTeacher(model, TeacherConfig(input_size=28)).predict(_images())
    assert depth.shape == (2, 1, 100, 130) and torch.isfinite(depth).all()
    assert DepthTeacher(model).sign == -1.0


def test_stretch_maps_percentiles_to_full_range():
    band = torch.arange(0, 1000, dtype=torch.int32).reshape(1, 1, 20, 50) + 300
    out = to_uint8(band.to(torch.uint16))
    assert out.dtype == torch.uint8 and out.min() == 0 and out.max() == 255
    assert (out.flatten().diff().to(torch.int16) >= 0).all()  # monotone
    same = torch.full((1, 3, 4, 4), 7, dtype=torch.uint8)
    assert to_uint8(same) is same


@pytest.mark.parametrize(("scale", "shift"), [(1.0, 0.0), (3.5, -20.0), (0.1, 40.0), (250.0, 1e3)])
def test_normalize_depth_is_affine_invariant(scale, shift):
    depth = torch.randn(3, 1, 33, 47, generator=torch.Generator().manual_seed(2)).double()
    expected = normalize_depth(depth.float())
    assert expected.min() == 0 and expected.max() == 1
    torch.testing.assert_close(
        normalize_depth((scale * depth + shift).float()), expected, atol=2e-4, rtol=0
    )


def test_normalize_depth_ignores_nans_and_masked_pixels():
    depth = torch.rand(2, 1, 30, 40, generator=torch.Generator().manual_seed(3))
    spiked = depth.clone()
    spiked[0, 0, :5] = float("nan")
    spiked[1, 0, :5] = 1e6  # masked out below: must not shift the stretch
    valid = torch.ones(2, 30, 40, dtype=torch.bool)
    valid[1, :5] = False
    out = normalize_depth(spiked, valid)
    assert out[:, :, :5].isnan().all()
    reference = normalize_depth(depth[:, :, 5:])
    torch.testing.assert_close(out[:, :, 5:], reference)
    assert normalize_depth(spiked, valid, fill=0.0)[:, :, :5].eq(0).all()


def test_flat_and_empty_images_do_not_divide_by_zero():
    flat = torch.full((1, 1, 8, 8), 42.0)
    assert normalize_depth(flat).eq(0).all()
    empty = torch.full((1, 1, 8, 8), float("nan"))
    assert normalize_depth(empty).isnan().all()


def test_depth_from_height_keeps_height_order():
    generator = torch.Generator().manual_seed(4)
    heights = torch.rand(1, 1, 1, 500, generator=generator) * 30.0
    heights[..., 0] = -2.0  # nDSM noise below ground: clipped to 0
    heights[..., 1] = float("-inf")
    depth = depth_from_height(heights)
    assert torch.isnan(depth[..., 1]) and depth[..., 0] == 0
    order = heights[0, 0, 0, 2:].argsort()
    assert (depth[0, 0, 0, 2:][order].diff() >= 0).all()
    torch.testing.assert_close(depth_from_height(heights * 3.28), depth, equal_nan=True)  # feet


def test_wrong_paths_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_teacher_model(tmp_path / "nowhere")
    with pytest.raises(InputError, match=f"{tmp_path} has no config.json"):
        load_teacher_model(tmp_path)
    with pytest.raises(InputError, match="URI"):
        load_teacher_model("s3://bucket/teacher")
    bert = BertModel(
        BertConfig(
            hidden_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            vocab_size=10,
        )
    )
    bert.save_pretrained(tmp_path / "bert")
    with pytest.raises(InputError, match=f"{tmp_path / 'bert'} holds a 'bert' model"):
        load_teacher_model(tmp_path / "bert")


def test_config_without_weights_is_refused(tmp_path):
    tiny_teacher_config("v1").save_pretrained(tmp_path)
    with pytest.raises(InputError, match="no readable weights"):
        load_teacher_model(tmp_path)


@pytest.mark.parametrize(
    ("version", "out_indices"), [("v1", [9, 10, 11, 12]), ("v2", [3, 6, 9, 12])]
)
def test_real_small_configs_load(tmp_path, version, out_indices):
    (tmp_path / "config.json").write_text(
        json.dumps({**_HUB_SMALL, "backbone_config": _hub_backbone(out_indices)})
    )
    config = DepthAnythingForDepthEstimation.config_class.from_pretrained(tmp_path)
    assert config.backbone_config.out_indices == out_indices
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    assert 24e6 < sum(p.numel() for p in model.parameters()) < 26e6  # ViT-S + DPT
    assert DepthTeacher(model).model_input_size(512, 512) == (518, 518)


def test_bad_settings_are_refused(saved_teacher):
    model = load_teacher_model(saved_teacher)
    with pytest.raises(InputError, match="input_size=500 is not a multiple"):
        DepthTeacher(model, TeacherConfig(input_size=500))
    with pytest.raises(InputError, match="expected DepthAnythingForDepthEstimation"):
        DepthTeacher(torch.nn.Linear(2, 2))
    with pytest.raises(InputError, match="rgb_indices"):
        TeacherConfig(rgb_indices=(0, 0, 1))
    with pytest.raises(InputError, match="percentiles"):
        TeacherConfig(depth_percentiles=(98.0, 2.0))
    with pytest.raises(InputError, match="version 'v3'"):
        tiny_teacher_config("v3")
    teacher = DepthTeacher(model)
    with pytest.raises(InputError, match="channel-last"):
        teacher.predict(_images(shape=(2, 100, 130, 3)))
    with pytest.raises(InputError, match="float"):
        teacher.predict(torch.rand(2, 3, 28, 28))
    with pytest.raises(InputError, match="valid mask"):
        teacher.predict(_images(), torch.ones(2, 99, 130, dtype=torch.bool))


def test_teacher_sees_imagenet_normalised_rgb_in_band_order(saved_teacher):
    teacher = DepthTeacher.from_pretrained(
        saved_teacher, TeacherConfig(input_size=42, rgb_indices=(2, 1, 0))
    )
    seen = {}

    def spy(module, args, kwargs):
        seen["x"] = kwargs["pixel_values"]

    handle = teacher.model.register_forward_pre_hook(spy, with_kwargs=True)
    # Image 0: B, G, R, NIR at the ImageNet mean (normalised ~0); image 1: pure red.
    bgrn = torch.tensor([[104, 116, 124, 200], [0, 0, 255, 9]], dtype=torch.uint8)
    teacher.predict(bgrn.view(2, 4, 1, 1).expand(2, 4, 30, 45).contiguous())
    handle.remove()
    x = seen["x"]
    assert x.shape == (2, 3, 42, 56)  # long side 45 * 42 / 30 = 63 -> 4.5 patches -> 4
    assert x[0].abs().max() < 0.01
    red = torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    torch.testing.assert_close(x[1].mean((1, 2)), red, atol=1e-4, rtol=0)


def test_normalize_depth_matches_numpy_percentiles():
    depth = torch.randn(2, 1, 23, 31, generator=torch.Generator().manual_seed(5))
    valid = torch.rand(2, 23, 31, generator=torch.Generator().manual_seed(6)) > 0.3
    out = normalize_depth(depth, valid)
    for i in range(2):
        values = depth[i, 0].numpy()
        lo, hi = np.percentile(values[valid[i].numpy()], [2, 98])
        expected = np.clip((values - lo) / (hi - lo), 0, 1)
        np.testing.assert_allclose(
            out[i, 0][valid[i]].numpy(), expected[valid[i].numpy()], atol=1e-6
        )
