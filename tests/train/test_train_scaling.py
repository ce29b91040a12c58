"""Multi-worker semantics: the global batch, lr scaling, milestones in global steps, sync BN."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from train_helpers import REPO

from depthseg.config import load_config, parse_overrides
from depthseg.errors import InputError
from depthseg.model import build_model
from depthseg.train.loop import batch_text, build_optimizer, check_batch_split
from depthseg.train.ray_train import sync_batch_norm


@pytest.mark.parametrize(("preset", "batch"), [("vits", 8), ("vitb", 4), ("vitl", 2)])
def test_paper_presets_keep_their_global_batch_and_lr(preset, batch):
    config = load_config(REPO / "configs" / f"{preset}.yaml")
    assert config.train.batch_size == config.train.lr_reference_batch == batch
    assert config.train.effective_lr == config.train.lr == 1e-4
    for workers in (1, 2) if batch % 2 == 0 else (1,):
        check_batch_split(config, workers)  # the paper's global batch splits: accepted
        assert batch_text(config, workers).startswith(f"global batch {batch} = {workers}")


def test_a_larger_global_batch_scales_the_lr_linearly():
    config = load_config(REPO / "configs" / "vits.yaml", parse_overrides(["train.batch_size=32"]))
    assert config.train.effective_lr == pytest.approx(4e-4)  # 1e-4 x 32 / 8
    assert "lr 0.0004 (train.lr 0.0001 at batch 8, scaled linearly)" in batch_text(config, 4)
    tiny = load_config(REPO / "configs" / "tiny.yaml", parse_overrides(["train.batch_size=8"]))
    model = build_model(tiny.model)
    optimizer, scheduler = build_optimizer(model, tiny, total_steps=100)
    assert optimizer.param_groups[0]["lr"] == tiny.train.lr  # no reference batch: as given
    # Milestones count optimiser steps of the global batch: 30 % and 60 % of the run's steps.
    assert sorted(scheduler.milestones) == [30, 60]
    scaled = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train,
                                                                 lr_reference_batch=4))
    optimizer, _ = build_optimizer(model, scaled, total_steps=100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2 * tiny.train.lr)


def test_a_global_batch_that_does_not_split_is_refused():
    config = load_config(REPO / "configs" / "vitl.yaml")
    with pytest.raises(InputError, match=r"train.batch_size 2 is the global batch and does "
                                         r"not split over 4 workers; give --batch-size 4"):
        check_batch_split(config, 4)


def test_batch_norm_is_synchronised_across_gpu_workers_only():
    model = build_model(load_config(REPO / "configs" / "tiny.yaml").model)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms  # adapter, prompter and decoder normalise with batch statistics
    params = {id(p) for p in model.parameters()}
    synced = sync_batch_norm(model, torch.device("cuda"), world_size=2)
    kinds = {type(m) for m in synced.modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    assert kinds == {torch.nn.SyncBatchNorm}
    assert {id(p) for p in synced.parameters()} == params  # an optimiser built before still fits
    fresh = build_model(load_config(REPO / "configs" / "tiny.yaml").model)
    for device, world in ((torch.device("cpu"), 2), (torch.device("cuda"), 1)):
        assert sync_batch_norm(fresh, device, world) is fresh
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in fresh.modules())
