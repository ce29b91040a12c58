"""Ray Train: 2 CPU workers with DDP; restore after a worker failure and with --resume."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from train_helpers import scene_store

from depthseg.config import load_config
from depthseg.errors import InputError
from depthseg.io.bundle import load_bundle
from depthseg.io.storage import Storage, join
from depthseg.train.loop import RunSpec
from depthseg.train.ray_train import Scaling, train, worker_cpus


@pytest.mark.slow
def test_two_worker_ddp_run_learns_and_survives_a_failure(tmp_path, ray_local):
    chips = scene_store(tmp_path, str(tmp_path / "store"), 256, 64, (0.75, 0.25, 0.0))
    base = load_config("tiny")
    config = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=3,
                                                                 batch_size=4))
    runs = tmp_path / "runs"
    # Worker 1 dies before it reports epoch 2, once rank 0 has written epoch 2's checkpoint:
    # Ray never records that checkpoint (it waits for every worker's report), yet the
    # restart must continue from it, not from epoch 1 and not from scratch.
    spec = RunSpec(config, chips, str(runs / "ddp"), Storage(), fault_after_epoch=2,
                   fault_rank=1)
    scaling = Scaling(num_workers=2, max_failures=1, cpus_per_worker=0.5)
    first = train(spec, "ddp", str(runs), scaling)
    assert first.metrics["step"] == 9
    restores = [json.loads(line) for line in
                (runs / "ddp" / "restores.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in restores] == [(2, 6)]
    state = torch.load(runs / "ddp" / "checkpoint_epoch_0003" / "state.pt",
                       weights_only=True)
    # The optimiser's own step count continued from the restored state: 3 steps per epoch,
    # 3 epochs, each step taken once.
    steps = {int(v["step"]) for v in state["optimizer"]["state"].values()}
    assert state["step"] == 9 and steps == {9}
    # The global batch (4) splits over the 2 workers, and LR milestones count those global
    # steps: 30 % and 60 % of 9.
    assert sorted(int(k) for k in state["scheduler"]["milestones"]) == [3, 5]
    # --resume: a new fit of the same run name and storage continues from its checkpoint.
    longer = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=4))
    result = train(dataclasses.replace(spec, config=longer), "ddp", str(runs), scaling,
                   resume=True)
    lines = (runs / "ddp" / "metrics.jsonl").read_text().splitlines()
    history = [json.loads(line) for line in lines]
    # 12 train chips, 2 workers x batch 2: 3 steps per epoch on each worker; 3 + 1 epochs.
    assert [m["step"] for m in history] == [3, 6, 9, 12]
    assert result.metrics["step"] == 12 and (runs / "ddp" / "fault_injected_2").exists()
    restores = [json.loads(line) for line in
                (runs / "ddp" / "restores.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"]) for r in restores] == [(2, 6), (3, 9)]
    assert history[-1]["loss"] < history[0]["loss"]
    assert "val_mIoU" in history[-1]
    assert load_bundle(str(runs / "ddp" / "best")).contract.tile_size == 70
    with pytest.raises(InputError, match="--resume"):
        train(spec, "ddp", str(runs), Scaling(num_workers=1, cpus_per_worker=0.5))
    with pytest.raises(InputError, match="no run"):
        train(spec, "other", str(runs), scaling, resume=True)


@pytest.mark.slow
def test_run_storage_and_chips_on_s3(tmp_path, ray_local, s3_prefix, s3_storage):
    chips = scene_store(tmp_path, join(s3_prefix, "chips"), 128, 64, (0.5, 0.5, 0.0),
                        s3_storage)
    base = load_config("tiny")
    config = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=2,
                                                                 batch_size=1))
    spec = RunSpec(config, chips, "", s3_storage, fault_after_epoch=1)
    result = train(spec, "on-s3", join(s3_prefix, "runs"),
                   Scaling(num_workers=1, max_failures=1, cpus_per_worker=0.5))
    assert result.metrics["step"] == 4  # 2 train chips, batch 1, 2 epochs; restored once
    run = join(s3_prefix, "runs", "on-s3")
    assert s3_storage.exists(join(run, "checkpoint_epoch_0002", "state.pt"))
    assert s3_storage.exists(join(run, "fault_injected_1"))
    assert load_bundle(join(run, "best"), s3_storage).contract.tile_size == 70


@pytest.mark.parametrize(("scaling", "cached", "nodes", "expected"), [
    (Scaling(num_workers=1), True, [2.0], 2.0),  # the demo machine: 2 torch threads, not 1
    (Scaling(num_workers=2), True, [2.0], 1.0),
    (Scaling(num_workers=4), True, [16.0, 16.0], 8.0),
    (Scaling(num_workers=1), True, [16.0, 16.0], 16.0),  # never more than one node holds
    (Scaling(num_workers=1), False, [2.0], 1.0),  # a streaming split keeps CPUs to read with
    (Scaling(num_workers=1, gpu=True), True, [16.0], 1.0),
    (Scaling(num_workers=1, cpus_per_worker=0.5), True, [2.0], 0.5),  # the user's word wins
])
def test_worker_cpus_share_the_cluster_when_the_split_is_cached(scaling, cached, nodes,
                                                                expected):
    assert worker_cpus(scaling, cached, nodes) == expected


def test_non_positive_cpus_per_worker_is_refused():
    with pytest.raises(InputError, match=r"--cpus-per-worker 0 must be > 0"):
        worker_cpus(Scaling(cpus_per_worker=0), True, [2.0])
