"""Checkpoints are loaded with ``weights_only=True``, and restores leave no temporary copies."""

from __future__ import annotations

import dataclasses
import random
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import scene_store

import depthseg.train.checkpoint as checkpoint
from depthseg.config import load_config
from depthseg.errors import DepthSegError, InputError
from depthseg.io.storage import Storage, join
from depthseg.model.depthseg import build_model
from depthseg.train.checkpoint import (
    STATE_FILE,
    TEMP_PREFIX,
    TrainState,
    load_state,
    restoring,
    save_state,
)
from depthseg.train.data import LocalFeed
from depthseg.train.loop import Hooks, RunSpec, build_optimizer, fit

CONFIG = load_config("tiny")


class _WritesAMarker:
    """Unpickling this opens (creates) ``marker``: code execution, if the loader allows it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.marker), "w"))


def _malicious_state(directory: Path, marker: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / STATE_FILE
    torch.save({"model": {}, "epoch": _WritesAMarker(marker)}, path)
    return path


def _model_and_optimizer(seed: int, total_steps: int = 10):
    torch.manual_seed(seed)
    model = build_model(CONFIG.model, load_weights=False)
    optimizer, scheduler = build_optimizer(model, CONFIG, total_steps)
    return model, optimizer, scheduler


def _train_steps(model, optimizer, scheduler, steps: int) -> None:
    for _ in range(steps):
        out = model(torch.rand(2, CONFIG.model.in_channels, 28, 28))
        loss = out.logits.float().mean() + sum(d.float().mean() for d in out.depths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def _temp_copies(root: Path) -> list[str]:
    return sorted(p.name for p in root.glob(f"{TEMP_PREFIX}*"))


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A system temp dir of this test's own (the real one is shared with other processes)."""
    root = tmp_path / "systmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


@pytest.fixture(scope="module")
def chip_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return scene_store(root, str(root / "store"), 128, 32, (0.6, 0.2, 0.2))


def test_malicious_state_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_state(tmp_path / "checkpoint_epoch_0001", marker)
    model, optimizer, scheduler = _model_and_optimizer(0)
    with pytest.raises(InputError) as info:
        load_state(path.parent, model, optimizer, scheduler)
    message = str(info.value)
    assert isinstance(info.value, DepthSegError)
    assert str(path) in message and "\n" not in message
    assert "open" in message  # the refused global is named
    assert not marker.exists()


def test_own_checkpoint_round_trips_with_weights_only(tmp_path):
    model, optimizer, scheduler = _model_and_optimizer(0)
    _train_steps(model, optimizer, scheduler, 4)  # past the first milestone (3 of 10 steps)
    history = [{"epoch": 1, "loss": 0.5, "val_per_class_iou": {"water": 0.25}}]
    torch.manual_seed(123)
    np.random.seed(456)
    random.seed(789)
    path = save_state(tmp_path, model, optimizer, scheduler, TrainState(2, 4, 0.3, history),
                      {"total_steps": 10, "config": CONFIG.to_dict()})
    expected_draws = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []

    # Same frozen encoder (rebuilt, not saved), untrained head, fresh optimizer and scheduler.
    other, other_opt, other_sched = _model_and_optimizer(0)
    state, payload = load_state(tmp_path, other, other_opt, other_sched)

    assert (state.epoch, state.step, state.best_miou, state.history) == (2, 4, 0.3, history)
    assert payload["total_steps"] == 10 and payload["config"] == CONFIG.to_dict()
    torch.testing.assert_close(other_opt.state_dict(), optimizer.state_dict())
    assert other_sched.state_dict() == scheduler.state_dict()
    assert isinstance(other_sched.milestones, Counter)
    assert other_sched.get_last_lr() == scheduler.get_last_lr()
    trained = {k: v for k, v in model.state_dict().items() if not k.startswith("encoder.vit.")}
    torch.testing.assert_close({k: other.state_dict()[k] for k in trained}, trained)
    torch.testing.assert_close(torch.rand(3), expected_draws[0])
    np.testing.assert_array_equal(np.random.rand(3), expected_draws[1])
    assert random.random() == expected_draws[2]
    # The next step is the one the original run takes.
    torch.manual_seed(7)
    _train_steps(model, optimizer, scheduler, 1)
    torch.manual_seed(7)
    _train_steps(other, other_opt, other_sched, 1)
    torch.testing.assert_close(other_opt.state_dict(), optimizer.state_dict())


def test_checkpoint_in_the_previous_format_still_loads(tmp_path):
    """Before weights_only: numpy RNG keys as an ndarray, the milestones as a Counter."""
    model, optimizer, scheduler = _model_and_optimizer(0)
    _train_steps(model, optimizer, scheduler, 2)
    frozen = checkpoint.frozen_names(model)
    np.random.seed(5)
    torch.save({
        "model": {k: v for k, v in model.state_dict().items() if k not in frozen},
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "epoch": 1, "step": 2, "best_miou": 0.1, "history": [],
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                "python": random.getstate(), "cuda": None},
    }, tmp_path / STATE_FILE)
    expected = np.random.rand(2)
    other, other_opt, other_sched = _model_and_optimizer(1)
    state, _ = load_state(tmp_path, other, other_opt, other_sched)
    assert (state.epoch, state.step) == (1, 2)
    assert other_sched.state_dict() == scheduler.state_dict()
    np.testing.assert_array_equal(np.random.rand(2), expected)


def test_local_restore_keeps_the_run_checkpoint(tmp_path, private_tmp):
    run = tmp_path / "run"
    (run / "checkpoint_epoch_0001").mkdir(parents=True)
    (run / "checkpoint_epoch_0001" / STATE_FILE).write_bytes(b"x")
    spec = RunSpec(CONFIG, "unused", str(run), Storage())
    with restoring(Hooks(spec).latest_checkpoint()) as directory:
        assert directory == str(run / "checkpoint_epoch_0001")
    assert (run / "checkpoint_epoch_0001" / STATE_FILE).read_bytes() == b"x"
    assert _temp_copies(private_tmp) == []


def _config(epochs: int):
    return dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, epochs=epochs,
                                                                 batch_size=2))


def test_resume_from_remote_run_leaves_no_temp_copy(chip_store, s3_prefix, s3_storage,
                                                    private_tmp, monkeypatch):
    copies = []
    make_copy = checkpoint.local_copy
    monkeypatch.setattr(checkpoint, "local_copy",
                        lambda fill: copies.append(make_copy(fill)) or copies[-1])
    run_dir = join(s3_prefix, "run")

    def run(epochs: int) -> TrainState:
        spec = RunSpec(_config(epochs), chip_store, run_dir, s3_storage)
        return fit(spec, LocalFeed(chip_store, Storage(), 2, 0), log=lambda *_: None)

    assert run(1).epoch == 1 and copies == []
    resumed = run(2)  # restores epoch 1 from a local copy of s3://.../state.pt
    assert resumed.epoch == 2 and len(resumed.history) == 2
    assert len(copies) == 1 and Path(copies[0]).parent == private_tmp
    assert _temp_copies(private_tmp) == []


def test_malicious_remote_checkpoint_stops_fit_and_leaves_nothing(
        chip_store, tmp_path, s3_prefix, s3_storage, private_tmp):
    marker = tmp_path / "pwned"
    path = _malicious_state(tmp_path / "evil", marker)
    run_dir = join(s3_prefix, "run")
    s3_storage.upload(path, join(run_dir, "checkpoint_epoch_0001", STATE_FILE))
    spec = RunSpec(_config(1), chip_store, run_dir, s3_storage)
    with pytest.raises(InputError, match="checkpoint .*state.pt holds objects other than"):
        fit(spec, LocalFeed(chip_store, Storage(), 2, 0), log=lambda *_: None)
    assert not marker.exists()
    assert _temp_copies(private_tmp) == []


def test_ray_hooks_restore_the_newest_durable_checkpoint_from_a_removed_copy(
        private_tmp, s3_prefix, s3_storage):
    from depthseg.train.ray_train import RayHooks

    run_dir = join(s3_prefix, "run")
    s3_storage.write_bytes_atomic(join(run_dir, "checkpoint_epoch_0001", STATE_FILE), b"one")
    s3_storage.write_bytes_atomic(join(run_dir, "checkpoint_epoch_0002", STATE_FILE), b"two")
    # Epoch 3's writer died before its state.pt landed: the folder holds no state.
    s3_storage.write_bytes_atomic(join(run_dir, "checkpoint_epoch_0003", "other"), b"")
    hooks = RayHooks.__new__(RayHooks)  # no Ray Train context needed for this method
    hooks.spec = RunSpec(CONFIG, "unused", run_dir, s3_storage)
    with restoring(hooks.latest_checkpoint()) as directory:
        assert Path(directory).parent == private_tmp
        assert (Path(directory) / STATE_FILE).read_bytes() == b"two"
    assert _temp_copies(private_tmp) == []
    assert s3_storage.read_bytes(join(run_dir, "checkpoint_epoch_0002", STATE_FILE)) == b"two"
