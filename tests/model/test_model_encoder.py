"""Encoder: DINOv2 architectures, pruning, extra bands, weights from Meta and timm files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from depthseg.errors import InputError
from depthseg.model import (
    Encoder,
    EncoderConfig,
    build_model,
    count_parameters,
    load_encoder_weights,
)
from depthseg.model.encoder import build_vit


def _meta_layout(vit) -> dict[str, torch.Tensor]:
    """A timm dinov2 state dict as Meta's dinov2_vit*14_pretrain.pth stores it."""
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    state["mask_token"] = torch.zeros(1, vit.embed_dim)
    return state


def _encoder(cfg, seed, in_channels=3):
    torch.manual_seed(seed)
    return Encoder(cfg, in_channels).eval()


S_SHAPED = EncoderConfig(name="vits", embed_dim=32, num_heads=2)
TINY = EncoderConfig(name="tiny")


@pytest.mark.parametrize(
    ("name", "dim", "depth", "expected_m"),
    [
        ("vits", 384, 12, 22.06),
        ("vitb", 768, 12, 86.58),
        ("vitl", 1024, 24, 304.37),
    ],
)
def test_full_size_encoders_have_dinov2_parameter_counts(name, dim, depth, expected_m):
    with torch.device("meta"):
        encoder = Encoder(EncoderConfig(name=name))
    assert encoder.embed_dim == dim and len(encoder.vit.blocks) == depth
    assert pytest.approx(count_parameters(encoder) / 1e6, rel=0.01) == expected_m
    assert encoder.vit.pos_embed.shape[1] == 37 * 37 + 1
    assert count_parameters(encoder, trainable_only=True) == 0


def test_encoder_returns_four_nchw_maps_for_any_size():
    encoder = _encoder(S_SHAPED, 0)
    maps = encoder(torch.randn(2, 3, 100, 130))
    assert isinstance(maps, list) and len(maps) == 4
    assert all(m.shape == (2, 32, 7, 9) for m in maps)


def test_blocks_after_the_last_layer_are_pruned():
    cfg = EncoderConfig(name="vits", embed_dim=32, num_heads=2, layers=(0, 1, 2, 3))
    assert len(_encoder(cfg, 0).vit.blocks) == 4


@pytest.mark.parametrize("cfg", [TINY, S_SHAPED], ids=["tiny", "vits-shaped"])
def test_meta_pth_loads_back_to_identical_outputs(tmp_path, cfg):
    source, target = _encoder(cfg, 0), _encoder(cfg, 1)
    images = torch.randn(1, 3, 70, 84)
    with torch.no_grad():
        expected = source(images)
        assert not torch.equal(target(images)[0], expected[0])
        path = tmp_path / "dinov2_test14_pretrain.pth"
        torch.save(_meta_layout(source.vit), path)
        load_encoder_weights(target, path)
        for got, want in zip(target(images), expected, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("cfg", [TINY, S_SHAPED], ids=["tiny", "vits-shaped"])
def test_timm_safetensors_load_back_to_identical_outputs(tmp_path, cfg):
    source, target = _encoder(cfg, 0), _encoder(cfg, 1)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, str(path))
    load_encoder_weights(target, path)
    images = torch.randn(2, 3, 56, 42)
    with torch.no_grad():
        for got, want in zip(target(images), source(images), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_full_checkpoint_loads_into_a_pruned_encoder():
    cfg = EncoderConfig(name="vits", embed_dim=32, num_heads=2, layers=(1, 3, 4, 6))
    torch.manual_seed(0)
    full = build_vit(cfg).eval()
    encoder = _encoder(cfg, 1)
    load_encoder_weights(encoder, _meta_layout(full))
    images = torch.randn(1, 3, 70, 70)
    with torch.no_grad():
        want = full.forward_intermediates(
            images, indices=[1, 3, 4, 6], norm=True, intermediates_only=True
        )
        for got, ref in zip(encoder(images), want, strict=True):
            torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_extra_band_starts_at_zero_so_rgb_features_are_unchanged():
    rgb, rgbn = _encoder(TINY, 0), _encoder(TINY, 1, in_channels=4)
    load_encoder_weights(rgbn, _meta_layout(rgb.vit))  # an RGB checkpoint into a 4-band encoder
    images = torch.randn(1, 4, 70, 70)
    with torch.no_grad():
        for got, want in zip(rgbn(images), rgb(images[:, :3]), strict=True):
            torch.testing.assert_close(got, want)
    trainable = {n for n, p in rgbn.named_parameters() if p.requires_grad}
    assert trainable == {"extra_bands.proj.weight", "extra_bands.proj.bias"}


def test_build_model_loads_configured_weights(tmp_path, shrunk):
    source = _encoder(TINY, 0)
    path = tmp_path / "tiny.pth"
    torch.save(_meta_layout(source.vit), path)
    cfg = shrunk("tiny")
    cfg = type(cfg).from_dict({**cfg.to_dict(), "encoder": {"name": "tiny", "weights": str(path)}})
    model = build_model(cfg)
    torch.testing.assert_close(model.encoder.vit.pos_embed, source.vit.pos_embed)


def test_vitb_checkpoint_into_vits_is_a_clear_error():
    with torch.device("meta"):
        vitb_state = build_vit(EncoderConfig(name="vitb")).state_dict()
        vits = Encoder(EncoderConfig(name="vits"))
    with pytest.raises(InputError) as err:
        load_encoder_weights(vits, vitb_state)
    message = str(err.value)
    assert "\n" not in message
    assert "embed dim 768 and 12 blocks (a vitb)" in message
    assert "encoder is vits (embed dim 384, 12 blocks)" in message
    assert "set encoder.name" in message


def test_wrong_size_file_names_the_file(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(_meta_layout(_encoder(TINY, 0).vit), path)
    with pytest.raises(InputError, match=r"tiny\.pth.*embed dim 64 and 4 blocks.*vits"):
        load_encoder_weights(_encoder(S_SHAPED, 0), path)


def test_missing_file_is_a_clear_error(tmp_path):
    path = tmp_path / "nope" / "dinov2_vits14_pretrain.pth"
    with pytest.raises(InputError, match=r"nope/dinov2_vits14_pretrain\.pth' does not exist"):
        load_encoder_weights(_encoder(S_SHAPED, 0), path)


def test_unreadable_file_and_remote_uri_and_hf_layout_are_clear_errors(tmp_path):
    encoder = _encoder(TINY, 0)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        load_encoder_weights(encoder, junk)
    with pytest.raises(InputError, match="remote URI.*depthseg.io"):
        load_encoder_weights(encoder, "s3://bucket/dinov2_vits14_pretrain.pth")
    hf = {"embeddings.patch_embeddings.projection.weight": torch.zeros(64, 3, 14, 14)}
    with pytest.raises(InputError, match="transformers"):
        load_encoder_weights(encoder, hf)


# ------------------------------------------------------------------------------------------
# DINOv2's own position-embedding interpolation


def _reference_interpolate(pos_embed: torch.Tensor, height: int, width: int, patch: int
                           ) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` formula, written from its paper code's rule.

    ``pos_embed`` is (1, 1 + M * M, D) with the class token first; the image is (height,
    width). Bicubic, no antialiasing, scale factor (n + 0.1) / M, nothing done for a square
    image of M x M patches.
    """
    import math

    count = pos_embed.shape[1] - 1
    side = int(math.sqrt(count))
    rows, cols = height // patch, width // patch
    if rows * cols == count and height == width:
        return pos_embed
    grid = pos_embed[:, 1:].float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(
        grid, scale_factor=(float(rows + 0.1) / side, float(cols + 0.1) / side),
        mode="bicubic", antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([pos_embed[:, :1], grid], dim=1)


def _reference_tokens(vit, images: torch.Tensor) -> torch.Tensor:
    """Patch tokens + class token + DINOv2 position embeddings, as DINOv2 prepares them."""
    x = vit.patch_embed(images).flatten(1, 2)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
    patch = vit.patch_embed.patch_size[0]
    return x + _reference_interpolate(vit.pos_embed, *images.shape[-2:], patch)


@pytest.mark.parametrize("size", [224, 126, 518, 742, 1036])
def test_position_embeddings_follow_dinov2_at_any_size(size):
    torch.manual_seed(0)
    vit = build_vit(TINY).eval()
    with torch.no_grad():
        vit.pos_embed.normal_()  # a learnt-looking grid, not timm's near-zero init
        images = torch.randn(1, 3, size, size + 14)  # non-square too
        got = vit._pos_embed(vit.patch_embed(images))
        want = _reference_tokens(vit, images)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
        if size != 518:
            # timm's default (antialiased, resized to the exact size) is measurably different.
            from timm.layers import resample_abs_pos_embed

            grid = vit.patch_embed(images).shape[1:3]
            timm_pos = resample_abs_pos_embed(vit.pos_embed, new_size=grid, old_size=(37, 37),
                                              num_prefix_tokens=1)
            assert not torch.allclose(timm_pos, _reference_interpolate(
                vit.pos_embed, *images.shape[-2:], 14), atol=1e-4)


def test_square_518_keeps_the_stored_grid_exactly():
    torch.manual_seed(0)
    vit = build_vit(TINY).eval()
    images = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        tokens = vit.patch_embed(images).flatten(1, 2)
        got = vit._pos_embed(vit.patch_embed(images))
    torch.testing.assert_close(got[:, 1:], tokens + vit.pos_embed[:, 1:], rtol=0, atol=0)


def _reg4_meta_layout(vit) -> dict[str, torch.Tensor]:
    """A reg4 DINOv2 checkpoint as Meta stores it: register_tokens, class pos in pos_embed."""
    state = {k: v.clone() for k, v in vit.state_dict().items()
             if k not in ("reg_token", "cls_token", "pos_embed")}
    cls_pos = torch.randn(1, 1, vit.embed_dim)
    state["pos_embed"] = torch.cat([cls_pos, vit.pos_embed.detach()], dim=1)
    state["cls_token"] = vit.cls_token.detach() - cls_pos
    state["register_tokens"] = vit.reg_token.detach().clone()
    state["mask_token"] = torch.zeros(1, vit.embed_dim)
    return state


def test_reg4_checkpoints_load_with_registers_and_are_refused_without():
    cfg = EncoderConfig(name="vits", embed_dim=32, num_heads=2, registers=4)
    source, target = _encoder(cfg, 0), _encoder(cfg, 1)
    assert source.vit.reg_token.shape == (1, 4, 32)
    load_encoder_weights(target, _reg4_meta_layout(source.vit))
    images = torch.randn(1, 3, 70, 98)
    with torch.no_grad():
        for got, want in zip(target(images), source(images), strict=True):
            torch.testing.assert_close(got, want)
    plain = _encoder(S_SHAPED, 0)
    with pytest.raises(InputError, match=r"4 register tokens .*set encoder.registers: 4"):
        load_encoder_weights(plain, _reg4_meta_layout(source.vit))
    with pytest.raises(InputError, match=r"no register tokens.*set encoder.registers: 0"):
        load_encoder_weights(_encoder(cfg, 2), _meta_layout(plain.vit))
    with pytest.raises(InputError, match=r"encoder.registers=2 is not 0 or 4"):
        EncoderConfig(name="vits", registers=2)


def test_a_frozen_vit_runs_without_autograd_with_extra_bands():
    encoder = _encoder(S_SHAPED, 0, in_channels=4).train()
    seen = []
    encoder.vit.blocks[0].register_forward_hook(
        lambda *_: seen.append(torch.is_grad_enabled()))
    maps = encoder(torch.randn(2, 4, 56, 56))
    assert seen == [False]  # no activation of the ViT is kept for backward
    sum(m.sum() for m in maps).backward()
    assert encoder.extra_bands.proj.weight.grad is not None
    assert all(p.grad is None for p in encoder.vit.parameters())
