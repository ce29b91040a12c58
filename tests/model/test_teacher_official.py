"""Official Depth-Anything-V2 ``.pth`` files: converted in code, same depth as the official net.

The reference here is written from the official repository's structure (DINOv2 backbone with
``get_intermediate_layers(norm=True)``, DPT head: ``projects`` -> ``resize_layers`` ->
``scratch.layerN_rn`` -> ``refinenet4..1`` -> ``output_conv1/2``), with timm's DINOv2 as the
backbone: an implementation independent of the transformers model the checkpoint becomes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from depthseg.errors import InputError
from depthseg.model.encoder import DinoV2VisionTransformer
from depthseg.model.teacher import DepthTeacher, TeacherConfig, load_teacher_model

WIDTH, BLOCKS, LAYERS = 32, 8, [1, 3, 5, 7]
OUT_CHANNELS, FEATURES, HEAD = [8, 16, 32, 32], 16, 8


def _backbone() -> DinoV2VisionTransformer:
    return DinoV2VisionTransformer(img_size=98, patch_size=14, embed_dim=WIDTH, depth=BLOCKS,
                                   num_heads=1, mlp_ratio=2, init_values=1.0, num_classes=0,
                                   dynamic_img_size=True)


def _official_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random model in the official layout (``pretrained.`` + ``depth_head.``)."""
    torch.manual_seed(seed)
    vit = _backbone()
    state = {f"pretrained.{k}": v.clone() for k, v in vit.state_dict().items()}
    state["pretrained.pos_embed"] = torch.randn_like(state["pretrained.pos_embed"]) * 0.5
    for k in [k for k in state if k.endswith(("ls1.gamma", "ls2.gamma"))]:
        state[k] = 0.5 + torch.rand_like(state[k])
    state["pretrained.mask_token"] = torch.zeros(1, WIDTH)

    def conv(name: str, shape: tuple[int, ...], bias: bool = True) -> None:
        fan_in = shape[1] * shape[-1] ** 2
        state[f"depth_head.{name}.weight"] = torch.randn(shape) * (2 / fan_in) ** 0.5
        if bias:
            state[f"depth_head.{name}.bias"] = torch.randn(shape[0]) * 0.1

    oc = OUT_CHANNELS
    for i in range(4):
        conv(f"projects.{i}", (oc[i], WIDTH, 1, 1))
    conv("resize_layers.0", (oc[0], oc[0], 4, 4))
    conv("resize_layers.1", (oc[1], oc[1], 2, 2))
    conv("resize_layers.3", (oc[3], oc[3], 3, 3))
    for i in range(4):
        conv(f"scratch.layer{i + 1}_rn", (FEATURES, oc[i], 3, 3), bias=False)
    for j in range(1, 5):
        conv(f"scratch.refinenet{j}.out_conv", (FEATURES, FEATURES, 1, 1))
        for unit in (1, 2):
            for c in (1, 2):
                conv(f"scratch.refinenet{j}.resConfUnit{unit}.conv{c}",
                     (FEATURES, FEATURES, 3, 3))
    conv("scratch.output_conv1", (FEATURES // 2, FEATURES, 3, 3))
    conv("scratch.output_conv2.0", (HEAD, FEATURES // 2, 3, 3))
    conv("scratch.output_conv2.2", (1, HEAD, 1, 1))
    state["depth_head.scratch.output_conv2.2.bias"] += 1.0  # keep the final ReLU mostly open
    return state


def _reference_depth(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The official ``DepthAnythingV2.forward`` on a normalised image batch."""
    vit = _backbone()
    vit.load_state_dict({k[len("pretrained."):]: v for k, v in state.items()
                         if k.startswith("pretrained.") and "mask_token" not in k})
    vit.eval()
    ph, pw = x.shape[-2] // 14, x.shape[-1] // 14
    feats = vit.forward_intermediates(x, indices=LAYERS, norm=True, output_fmt="NLC",
                                      intermediates_only=True)
    s = {k[len("depth_head."):]: v for k, v in state.items() if k.startswith("depth_head.")}
    levels = []
    for i, tokens in enumerate(feats):
        y = tokens.permute(0, 2, 1).reshape(x.shape[0], WIDTH, ph, pw)
        y = F.conv2d(y, s[f"projects.{i}.weight"], s[f"projects.{i}.bias"])
        if i == 0:
            y = F.conv_transpose2d(y, s["resize_layers.0.weight"], s["resize_layers.0.bias"], 4)
        elif i == 1:
            y = F.conv_transpose2d(y, s["resize_layers.1.weight"], s["resize_layers.1.bias"], 2)
        elif i == 3:
            y = F.conv2d(y, s["resize_layers.3.weight"], s["resize_layers.3.bias"], 2, 1)
        levels.append(F.conv2d(y, s[f"scratch.layer{i + 1}_rn.weight"], padding=1))

    def unit(y: torch.Tensor, p: str) -> torch.Tensor:
        out = F.conv2d(F.relu(y), s[p + "conv1.weight"], s[p + "conv1.bias"], padding=1)
        out = F.conv2d(F.relu(out), s[p + "conv2.weight"], s[p + "conv2.bias"], padding=1)
        return out + y

    def fuse(j: int, *ys: torch.Tensor, size: tuple[int, ...] | None = None) -> torch.Tensor:
        p = f"scratch.refinenet{j}."
        out = ys[0]
        if len(ys) == 2:
            out = out + unit(ys[1], p + "resConfUnit1.")
        out = unit(out, p + "resConfUnit2.")
        out = F.interpolate(out, size=size, scale_factor=None if size else 2, mode="bilinear",
                            align_corners=True)
        return F.conv2d(out, s[p + "out_conv.weight"], s[p + "out_conv.bias"])

    path = fuse(4, levels[3], size=levels[2].shape[2:])
    path = fuse(3, path, levels[2], size=levels[1].shape[2:])
    path = fuse(2, path, levels[1], size=levels[0].shape[2:])
    path = fuse(1, path, levels[0])
    out = F.conv2d(path, s["scratch.output_conv1.weight"], s["scratch.output_conv1.bias"],
                   padding=1)
    out = F.interpolate(out, (ph * 14, pw * 14), mode="bilinear", align_corners=True)
    out = F.relu(F.conv2d(out, s["scratch.output_conv2.0.weight"], s["scratch.output_conv2.0.bias"],
                          padding=1))
    out = F.relu(F.conv2d(out, s["scratch.output_conv2.2.weight"],
                          s["scratch.output_conv2.2.bias"]))
    return F.relu(out).squeeze(1)


@pytest.mark.parametrize("size", [(98, 98), (126, 98), (70, 154)])
def test_official_v2_pth_gives_the_official_depth(tmp_path, size):
    state = _official_state()
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(state, path)
    model = load_teacher_model(path)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        got = model(pixel_values=x).predicted_depth
        want = _reference_depth(state, x)
    assert got.shape == want.shape == (2, *size)
    assert want.abs().mean() > 1e-3  # a depth map, not a dead ReLU
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_official_teacher_predicts_through_the_same_wrapper(tmp_path):
    path = tmp_path / "depth_anything_v2_vits.pth"
    torch.save(_official_state(), path)
    teacher = DepthTeacher(load_teacher_model(path), TeacherConfig(input_size=98))
    images = torch.randint(0, 256, (1, 3, 64, 80), dtype=torch.uint8)
    depth = teacher.predict(images)
    assert depth.shape == (1, 1, 64, 80) and 0 <= float(depth.min()) <= float(depth.max()) <= 1


def test_not_an_official_file_is_a_clear_error(tmp_path):
    other = tmp_path / "model.pth"
    torch.save({"weight": torch.zeros(2)}, other)
    with pytest.raises(InputError, match="not an official Depth-Anything-V2 state dict"):
        load_teacher_model(other)
    state = _official_state()
    state["depth_head.extra.weight"] = torch.zeros(1)
    odd = tmp_path / "odd.pth"
    torch.save(state, odd)
    with pytest.raises(InputError, match="'depth_head.extra.weight' is not part of"):
        load_teacher_model(odd)
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        load_teacher_model(broken)
