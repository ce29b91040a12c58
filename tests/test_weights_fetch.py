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
