"""Pretrained weights kept in object storage are fetched to a local cache, never from a hub."""

from __future__ import annotations

import pytest

from depthseg.errors import InputError
from depthseg.io.weights import fetch_dir, fetch_file


def test_fetch_file_caches_and_refetches_a_replaced_object(tmp_path, s3_storage, s3_prefix):
    uri = f"{s3_prefix}/weights/dinov2_vits14_pretrain.pth"
    s3_storage.write_bytes_atomic(uri, b"first")
    cache = tmp_path / "cache"
    first = fetch_file(uri, s3_storage, cache_dir=cache)
    assert first.read_bytes() == b"first" and first.name == "dinov2_vits14_pretrain.pth"
    assert fetch_file(uri, s3_storage, cache_dir=cache) == first

    s3_storage.write_bytes_atomic(uri, b"second version")
    second = fetch_file(uri, s3_storage, cache_dir=cache)
    assert second.read_bytes() == b"second version"


def test_fetch_dir_copies_a_model_folder(tmp_path, s3_storage, s3_prefix):
    files = {"config.json": b"{}", "model.safetensors": b"abc", "sub/x.txt": b"x"}
    for name, data in files.items():
        s3_storage.write_bytes_atomic(f"{s3_prefix}/teacher/{name}", data)
    local = fetch_dir(f"{s3_prefix}/teacher", s3_storage, cache_dir=tmp_path)
    assert (local / "config.json").read_bytes() == b"{}"
    assert (local / "sub" / "x.txt").read_bytes() == b"x"


def test_missing_weights_are_clear_errors(tmp_path, s3_storage, s3_prefix):
    with pytest.raises(InputError, match="does not exist"):
        fetch_file(str(tmp_path / "nope.pth"))
    with pytest.raises(InputError, match="does not exist"):
        fetch_file(f"{s3_prefix}/nope.pth", s3_storage, cache_dir=tmp_path)
    with pytest.raises(InputError, match="nothing found"):
        fetch_dir(f"{s3_prefix}/empty", s3_storage, cache_dir=tmp_path)


def test_encoder_weights_in_s3_load_into_the_model(tmp_path, s3_storage, s3_prefix):
    import dataclasses

    import torch

    from depthseg.io.weights import build_model_from_uri
    from depthseg.model import EncoderConfig, ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(encoder=EncoderConfig(name="tiny"), in_channels=3)
    source = build_model(config).eval()
    # Meta's dinov2_vit*14_pretrain.pth layout: the bare ViT state dict plus a mask token.
    state = {k: v.clone() for k, v in source.encoder.vit.state_dict().items()}
    state["mask_token"] = torch.zeros(1, source.encoder.vit.embed_dim)
    local = tmp_path / "dinov2_tiny14_pretrain.pth"
    torch.save(state, local)
    uri = f"{s3_prefix}/weights/dinov2_tiny14_pretrain.pth"
    s3_storage.upload(local, uri)

    torch.manual_seed(1)
    with_uri = dataclasses.replace(config, encoder=dataclasses.replace(config.encoder, weights=uri))
    model = build_model_from_uri(with_uri, s3_storage).eval()
    images = torch.randn(1, 3, 70, 70)
    with torch.no_grad():
        for got, want in zip(model.encoder(images), source.encoder(images), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_teacher_in_s3_loads_and_predicts(tmp_path, s3_storage, s3_prefix):
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from depthseg.io.weights import load_teacher
    from depthseg.model.teacher import tiny_teacher_config

    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(tiny_teacher_config("v2")).save_pretrained(tmp_path / "da")
    for path in (tmp_path / "da").iterdir():
        s3_storage.upload(path, f"{s3_prefix}/teacher/{path.name}")
    teacher = load_teacher(f"{s3_prefix}/teacher", s3_storage)
    depth = teacher.predict(torch.randint(0, 255, (1, 3, 56, 70), dtype=torch.uint8))
    assert depth.shape == (1, 1, 56, 70) and torch.isfinite(depth).all()
