"""Forward/backward of DepthSeg: shapes at any size, gradients, ablations, bf16, overfitting."""

from __future__ import annotations

import math

import pytest
import torch

from depthseg.model import (
    DepthSeg,
    DepthSegLoss,
    DepthSegOutput,
    EncoderConfig,
    ModelConfig,
    build_model,
    count_parameters,
    fit_to_patch,
)

SIZES = {
    "tiny": [(70, 70), (126, 126), (518, 518), (100, 130)],
    "vits": [(70, 70), (126, 126), (100, 130)],
    "vitb": [(70, 70), (126, 126), (100, 130)],
    "vitl": [(70, 70), (100, 130)],
}
CASES = [(name, hw) for name, sizes in SIZES.items() for hw in sizes]


def _batch(cfg, hw, batch=2):
    h, w = hw
    images = torch.randn(batch, cfg.in_channels, h, w)
    labels = torch.randint(0, cfg.num_classes, (batch, h, w))
    labels[:, : h // 4] = 255
    teacher = torch.rand(batch, 1, h, w)
    teacher[:, :, -3:] = torch.nan
    return images, labels, teacher


@pytest.mark.parametrize(("name", "hw"), CASES, ids=[f"{n}-{h}x{w}" for n, (h, w) in CASES])
def test_forward_backward_shapes_and_gradients(shrunk, name, hw):
    cfg = shrunk(name)
    model = DepthSeg(cfg).train()
    images, labels, teacher = _batch(cfg, hw)

    out = model(images)
    assert isinstance(out, DepthSegOutput)
    h, w = hw
    assert out.logits.shape == (2, cfg.num_classes, h, w)
    expected = [(h, w), (math.ceil(h / 2), math.ceil(w / 2)), (math.ceil(h / 4), math.ceil(w / 4))]
    assert [tuple(d.shape) for d in out.depths] == [(2, 1, *s) for s in expected]
    assert all(bool(((d >= 0) & (d <= 1)).all()) for d in out.depths)

    parts = DepthSegLoss()(*out, labels, teacher)
    assert torch.isfinite(parts.loss) and parts.l_depth > 0 and parts.l_cls > 0
    parts.loss.backward()

    for pname, p in model.named_parameters():
        if pname.startswith("encoder.") and not pname.startswith("encoder.extra_bands."):
            assert p.grad is None, f"frozen {pname} got a gradient"
        else:
            assert p.grad is not None, f"trainable {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), pname


def test_frozen_encoder_stays_in_eval_mode(shrunk):
    model = DepthSeg(shrunk("vits")).train()
    assert not model.encoder.vit.training
    assert model.adapter.training and model.decoder.training
    trainable = {n for n, p in model.encoder.named_parameters() if p.requires_grad}
    # 4-band S-shaped model: only the extra-band embedding beside the ViT trains.
    assert trainable == {"extra_bands.proj.weight", "extra_bands.proj.bias"}


def test_unfrozen_encoder_trains(shrunk):
    cfg = shrunk("tiny")
    encoder = {**cfg.encoder.to_dict(), "freeze": False}
    cfg = type(cfg).from_dict({**cfg.to_dict(), "encoder": encoder})
    model = DepthSeg(cfg).train()
    assert model.encoder.vit.training
    images, labels, teacher = _batch(cfg, (70, 70))
    DepthSegLoss()(*model(images), labels, teacher).loss.backward()
    assert model.encoder.vit.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.parametrize("name", ["vits", "vitb", "vitl"])
def test_ablation_switches_remove_exactly_their_modules(shrunk, name):
    full = DepthSeg(shrunk(name))
    no_adapter = DepthSeg(shrunk(name, adapter=False))
    no_prompter = DepthSeg(shrunk(name, depth_prompter=False))
    bare = DepthSeg(shrunk(name, adapter=False, depth_prompter=False))
    n = count_parameters
    assert n(full.adapter) > 0 and n(no_adapter.adapter) == 0
    assert n(full) - n(no_adapter) == n(full.adapter)
    # Prompter off drops the whole depth branch (DPT head + prompter).
    assert no_prompter.depth_head is None and no_prompter.prompter is None
    assert n(full) - n(no_prompter) == n(full.prompter) + n(full.depth_head)
    assert n(full) - n(bare) == n(full.adapter) + n(full.prompter) + n(full.depth_head)


def test_prompter_off_has_no_depth_and_no_depth_loss(shrunk):
    cfg = shrunk("tiny", depth_prompter=False)
    model = DepthSeg(cfg).train()
    images, labels, teacher = _batch(cfg, (100, 130))
    out = model(images)
    assert out.depths == [] and out.logits.shape == (2, 7, 100, 130)
    parts = DepthSegLoss()(*out, labels, teacher)
    assert parts.l_depth == 0 and parts.loss == parts.l_cls
    parts.loss.backward()


def test_bf16_autocast_forward_backward_on_cpu(shrunk):
    cfg = shrunk("vits")
    model = DepthSeg(cfg).train()
    images, labels, teacher = _batch(cfg, (70, 98))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(images)
        parts = DepthSegLoss()(*out, labels, teacher)
    assert out.logits.dtype == torch.bfloat16
    assert parts.loss.dtype == torch.float32 and torch.isfinite(parts.loss)
    parts.loss.backward()
    grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_loss_falls_when_overfitting_one_batch(shrunk):
    cfg = shrunk("tiny")
    model = build_model(cfg).train()
    h = w = 70
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    images = torch.randn(2, 3, h, w)
    labels = ((yy >= h // 2).long() * 2 + (xx >= w // 2).long()).expand(2, h, w).clone()
    teacher = (yy + xx).float().expand(2, 1, h, w).clone()
    loss_fn = DepthSegLoss()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=3e-3, weight_decay=1e-3)
    losses = []
    for _ in range(30):
        parts = loss_fn(*model(images), labels, teacher)
        opt.zero_grad()
        parts.loss.backward()
        opt.step()
        losses.append(parts.loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_eval_is_deterministic_and_batch_independent(shrunk):
    model = DepthSeg(shrunk("tiny")).eval()
    images = torch.randn(3, 3, 70, 84)
    with torch.inference_mode():
        full = model(images)
        single = model(images[1:2])
    torch.testing.assert_close(full.logits[1:2], single.logits, atol=1e-4, rtol=1e-4)


def test_mapping_asks_for_the_finest_depth_only(shrunk):
    """``depth_scales=1`` (what the mapping predictor asks) skips the two coarser maps only."""
    model = DepthSeg(shrunk("tiny")).eval()
    images = torch.randn(2, 3, 70, 98)
    with torch.inference_mode():
        every, finest = model(images), model(images, depth_scales=1)
    assert len(every.depths) == 3 and len(finest.depths) == 1
    assert torch.equal(every.logits, finest.logits)
    assert torch.equal(every.depths[0], finest.depths[0])


def test_fit_to_patch_resizes_only_off_multiples():
    x = torch.randn(1, 3, 126, 70)
    assert fit_to_patch(x, 14) is x
    assert fit_to_patch(torch.randn(1, 3, 100, 130), 14).shape[-2:] == (98, 126)
    assert fit_to_patch(torch.randn(1, 3, 5, 512), 14).shape[-2:] == (14, 518)


def test_tiny_preset_is_small(shrunk):
    model = DepthSeg(shrunk("tiny"))
    assert count_parameters(model) < 1_000_000


@pytest.mark.parametrize("name", ["vits", "vitb", "vitl"])
def test_full_size_presets_run_on_the_meta_device(name):
    cfg = ModelConfig(encoder=EncoderConfig(name=name), in_channels=4)
    with torch.device("meta"):
        model = build_model(cfg).eval()
        out = model(torch.empty(2, 4, 512, 512))
    assert out.logits.shape == (2, 7, 512, 512)
    assert [tuple(d.shape[-2:]) for d in out.depths] == [(512, 512), (256, 256), (128, 128)]
    # The trainable heads stay well below the frozen encoder (paper: "lightweight").
    assert count_parameters(model, trainable_only=True) < 0.5 * count_parameters(model.encoder)
