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
    assert [p.requires_grad for p in rgbn.parameters()].count(True) == 1


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
