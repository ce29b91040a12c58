"""Pretrained weights at a path or URI -> a local file the model code can load.

``depthseg/model`` loads only local files (it must run on a bare GPU box). Weights kept in
object storage (``s3://bucket/weights/dinov2_vits14_pretrain.pth``, or a Hugging Face model
folder for the Depth Anything teacher) are copied to a local cache first. The cache key holds
the object's ETag/size, so a replaced object is fetched again. Nothing is ever downloaded
from a model hub.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from depthseg.errors import InputError
from depthseg.model import ModelConfig, build_model

if TYPE_CHECKING:
    from depthseg.model.teacher import DepthTeacher, TeacherConfig
from depthseg.io.storage import Storage, scheme_of, with_retries


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/depthseg`` (``~/.cache/depthseg``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "depthseg"


def _cache_slot(uri: str, fingerprint: str, cache_dir: Path | None) -> Path:
    digest = hashlib.sha256(f"{uri}|{fingerprint}".encode()).hexdigest()[:20]
    return (cache_dir or default_cache_dir()) / digest


def fetch_file(uri: str, storage: Storage | None = None, cache_dir: Path | None = None) -> Path:
    """A local path holding the file at ``uri`` (the path itself when it is local).

    Raises:
        InputError: the file or object does not exist.
    """
    storage = storage or Storage()
    if scheme_of(uri) in ("", "file"):
        path = Path(uri.removeprefix("file://"))
        if not path.is_file():
            raise InputError(f"weights file {uri!r} does not exist; give the path of the file")
        return path
    fs, key = storage.fs(uri)
    try:
        info = with_retries(lambda: fs.info(key))
    except FileNotFoundError as err:
        raise InputError(f"weights object {uri!r} does not exist; check the URI") from err
    if info.get("type") == "directory":
        raise InputError(f"{uri!r} is a prefix, not a file; give the URI of the weights file")
    slot = _cache_slot(uri, f"{info.get('ETag')}|{info.get('size')}", cache_dir)
    target = slot / Path(key).name
    if not target.is_file():
        slot.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with_retries(lambda: fs.get_file(key, str(partial)))
        os.replace(partial, target)
    return target


def fetch_dir(uri: str, storage: Storage | None = None, cache_dir: Path | None = None) -> Path:
    """A local folder holding every object under the prefix ``uri`` (e.g. a HF model folder)."""
    storage = storage or Storage()
    if scheme_of(uri) in ("", "file"):
        path = Path(uri.removeprefix("file://"))
        if not path.is_dir():
            raise InputError(f"model folder {uri!r} does not exist; give the folder's path")
        return path
    fs, prefix = storage.fs(uri)
    prefix = prefix.rstrip("/")
    listing = with_retries(lambda: fs.find(prefix, detail=True))
    if not listing:
        raise InputError(f"nothing found under {uri!r}; give the URI of the model folder")
    fingerprint = "|".join(
        f"{key}:{meta.get('ETag')}:{meta.get('size')}" for key, meta in sorted(listing.items())
    )
    slot = _cache_slot(uri, fingerprint, cache_dir)
    done = slot / ".complete"
    if not done.exists():
        staging = slot.with_name(slot.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        for key in listing:
            target = staging / Path(key).relative_to(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            with_retries(functools.partial(fs.get_file, key, str(target)))
        shutil.rmtree(slot, ignore_errors=True)
        os.replace(staging, slot)
        done.touch()
    return slot


def resolve_model_config(config: ModelConfig, storage: Storage | None = None) -> ModelConfig:
    """``config`` with an ``s3://`` encoder weights URI replaced by a local cached copy.

    ``depthseg.model.build_model`` loads local files only; call this first wherever a config
    may name weights in object storage.
    """
    weights = config.encoder.weights
    if weights is None or scheme_of(str(weights)) in ("", "file"):
        return config
    local = fetch_file(str(weights), storage)
    return dataclasses.replace(
        config, encoder=dataclasses.replace(config.encoder, weights=str(local))
    )


def build_model_from_uri(config: ModelConfig, storage: Storage | None = None) -> torch.nn.Module:
    """:func:`depthseg.model.build_model`, with encoder weights at a path or ``s3://`` URI."""
    return build_model(resolve_model_config(config, storage))


def load_teacher(
    uri: str,
    storage: Storage | None = None,
    config: TeacherConfig | None = None,
    device: str | torch.device = "cpu",
) -> DepthTeacher:
    """A Depth Anything teacher from a local path or ``s3://`` URI.

    A Hugging Face folder (``config.json`` + ``model.safetensors``) or an official
    Depth-Anything-V2 checkpoint file (``depth_anything_v2_vit*.pth``, converted on load).
    """
    # Local import: transformers is slow to import and only preparation needs the teacher.
    from depthseg.model.teacher import DepthTeacher, TeacherConfig

    official = uri.rstrip("/").endswith((".pth", ".pt"))
    local = fetch_file(uri, storage) if official else fetch_dir(uri, storage)
    return DepthTeacher.from_pretrained(local, config or TeacherConfig(), device)
