"""Training state <-> one ``state.pt`` file in a checkpoint directory.

A checkpoint holds what a resumed run needs to take the very next optimiser step as the
uninterrupted run would: the trainable weights and buffers (the frozen encoder is left out:
it is rebuilt from the config's weights file, and a ViT-L copy per epoch would cost 1.2 GB),
the optimizer and scheduler states, completed epochs, the global step, the best mIoU so far,
the metrics history and the RNG states.

``state.pt`` is read with ``torch.load(weights_only=True)``: run storage may be a shared bucket,
and an unrestricted unpickler would run whatever code a writer there put in the file. So the
file holds tensors and plain Python data only (the scheduler's milestone ``Counter`` is saved
as a dict, numpy's RNG keys as a tensor); a file that needs anything else is refused with an
:class:`~depthseg.errors.InputError`. Checkpoints written before this format (numpy RNG state as
an ``ndarray``) still load: numpy's array reconstruction is allowlisted for that, and nothing
else is.

A checkpoint is durable once its ``state.pt`` is in run storage: :func:`persist_checkpoint`
writes it whole (a local rename or one S3 PUT) before Ray or anyone else is told of it, and a
restore takes the newest checkpoint directory holding a ``state.pt``
(:func:`newest_checkpoint`), whether or not Ray recorded it before a worker died.

Checkpoints in remote storage are restored from a local copy: :func:`local_copy` makes one in a
``depthseg-ckpt-*`` temporary directory and :func:`restoring` removes it once the state is
loaded (never a checkpoint directory it did not create).
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from depthseg.errors import InputError
from depthseg.io.storage import Storage, join, scheme_of

STATE_FILE = "state.pt"
CHECKPOINT_PREFIX = "checkpoint_epoch_"  # + 4-digit epoch: sorts in epoch order
TEMP_PREFIX = "depthseg-ckpt-"  # local copies of checkpoints (and of states being written)

_temp_copies: set[str] = set()  # directories made by local_copy() in this process


@dataclass
class TrainState:
    """Where a run stands.

    Attributes:
        epoch: Completed epochs.
        step: Completed optimiser steps (global: every worker takes the same steps).
        best_miou: Best validation mIoU so far (-1 before any validation).
        history: One metrics dict per completed epoch.
    """

    epoch: int = 0
    step: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def frozen_names(model: nn.Module) -> set[str]:
    """Names of the parameters that do not train (kept out of checkpoints and DDP)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def save_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, state: TrainState, extra: dict[str, Any] | None = None) -> Path:
    """Write ``state.pt`` into ``directory`` (created); returns its path."""
    frozen = frozen_names(model)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in frozen}
    payload = {
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": _plain_scheduler_state(scheduler.state_dict()),
        "epoch": state.epoch,
        "step": state.step,
        "best_miou": state.best_miou,
        "history": state.history,
        "rng": {"torch": torch.get_rng_state(), "numpy": _numpy_rng_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        **(extra or {}),
    }
    path = Path(directory) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any) -> tuple[TrainState, dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNGs from ``directory``; return the state.

    Raises:
        InputError: ``state.pt`` holds objects other than tensors and plain data (a file not
            written by :func:`save_state`, or tampered with); nothing in it was executed.
    """
    payload = read_payload(Path(directory) / STATE_FILE)
    result = model.load_state_dict(payload["model"], strict=False)
    missing = set(result.missing_keys) - frozen_names(model)
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint {directory} does not fit the model: missing "
                           f"{sorted(missing)[:5]}, unexpected {result.unexpected_keys[:5]}")
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(_scheduler_state_for(scheduler, payload["scheduler"]))
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(_numpy_rng_tuple(rng["numpy"]))
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = TrainState(payload["epoch"], payload["step"], payload["best_miou"],
                       list(payload["history"]))
    return state, payload


def read_payload(path: str | Path) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with a one-line error for a refused file."""
    try:
        with _legacy_globals():
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"checkpoint {os.fspath(path)} holds objects other than tensors and plain data "
            f"({_unpickler_reason(err)}); it was not written by depthseg or was altered, so it "
            "was not loaded; delete it, or restore it from a copy you trust") from None
    if not isinstance(payload, dict) or "model" not in payload:
        raise InputError(f"checkpoint {os.fspath(path)} is not a depthseg training state (no "
                         "'model' entry); point the run at its own checkpoint_epoch_* folders")
    return payload


def local_copy(fill: Callable[[str], Any]) -> str:
    """A new ``depthseg-ckpt-*`` temporary directory, filled by ``fill(directory)``.

    Pass the result to :func:`restoring` (or :func:`discard_copy`) to remove it; if ``fill``
    raises, the directory is removed at once.
    """
    # The process id in the name lets sweep_temp_dirs remove copies of killed workers.
    directory = os.path.normpath(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
    _temp_copies.add(directory)
    try:
        fill(directory)
    except BaseException:
        discard_copy(directory)
        raise
    return directory


def discard_copy(directory: str | Path | None) -> None:
    """Remove ``directory`` if :func:`local_copy` made it; any other directory is left alone."""
    if directory is None:
        return
    key = os.path.normpath(os.fspath(directory))
    if key in _temp_copies:
        _temp_copies.discard(key)
        shutil.rmtree(key, ignore_errors=True)


@contextmanager
def restoring(directory: str | None) -> Iterator[str | None]:
    """Yield ``directory`` (a checkpoint to load); then remove it if it is a local copy."""
    try:
        yield directory
    finally:
        discard_copy(directory)


def _plain_scheduler_state(state: dict[str, Any]) -> dict[str, Any]:
    # MultiStepLR keeps its milestones in a Counter; a dict of int -> int needs no allowlist.
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in state.items()}


def _scheduler_state_for(scheduler: Any, state: dict[str, Any]) -> dict[str, Any]:
    # Back to a Counter where the scheduler keeps one (a missing milestone must count 0).
    return {k: Counter(v) if isinstance(getattr(scheduler, k, None), Counter)
            and isinstance(v, dict) else v for k, v in state.items()}


def _numpy_rng_state() -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return name, torch.from_numpy(np.asarray(keys).astype(np.int64)), pos, has_gauss, cached


def _numpy_rng_tuple(saved: Any) -> tuple[Any, ...]:
    name, keys, pos, has_gauss, cached = saved  # keys: a tensor, or an ndarray (old files)
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    return name, keys.astype(np.uint32), int(pos), int(has_gauss), float(cached)


def _legacy_globals() -> Any:
    """Allowlist numpy's array reconstruction and Counter while loading (older checkpoints)."""
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5: such files are refused
        return nullcontext()
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return safe_globals([_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32)),
                         Counter])


def _unpickler_reason(err: BaseException) -> str:
    text = str(err)
    match = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\s+Please use|\n\n|$)", text, re.S)
    reason = match.group(1) if match else text
    return " ".join(reason.split())[:200] or type(err).__name__


def checkpoint_name(epoch: int) -> str:
    """``checkpoint_epoch_NNNN``: the folder of the checkpoint after ``epoch`` epochs."""
    return f"{CHECKPOINT_PREFIX}{epoch:04d}"


def persist_checkpoint(local_dir: str | Path, run_dir: str, epoch: int,
                       storage: Storage) -> str:
    """Copy ``local_dir``'s ``state.pt`` into ``<run_dir>/checkpoint_epoch_NNNN/``.

    The copy is atomic (a temporary file renamed locally, one PUT to S3), so a checkpoint
    folder that holds a ``state.pt`` holds all of it. Returns the folder's URI.
    """
    target = join(run_dir, checkpoint_name(epoch))
    storage.upload(Path(local_dir) / STATE_FILE, join(target, STATE_FILE))
    return target


def newest_checkpoint(run_dir: str, storage: Storage) -> str | None:
    """The newest durable checkpoint of a run, as a local directory, or None.

    Folders are tried newest first; one without a ``state.pt`` (a checkpoint whose writer
    died) is skipped. A remote checkpoint comes as a temporary local copy: pass it to
    :func:`restoring`, which removes it once loaded.
    """
    fs, path = storage.fs(run_dir)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return None
    names = sorted((p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)),
                   reverse=True)
    for name in names:
        if not name.startswith(CHECKPOINT_PREFIX):
            continue
        uri = join(run_dir, name)
        if not storage.exists(join(uri, STATE_FILE)):
            continue
        if scheme_of(uri) in ("", "file"):
            return uri
        def fill(local: str, uri: str = uri) -> None:
            Path(local, STATE_FILE).write_bytes(storage.read_bytes(join(uri, STATE_FILE)))

        return local_copy(fill)
    return None
