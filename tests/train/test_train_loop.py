from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from train_helpers import load_job, scene_store

from depthseg.config import load_config
from depthseg.io.bundle import load_bundle
from depthseg.io.chips import ChipStore
from depthseg.io.storage import Storage
from depthseg.metrics import confusion_matrix, scores
from depthseg.train.checkpoint import STATE_FILE
from depthseg.train.data import LocalFeed, augment
from depthseg.train.evaluate import evaluate
from depthseg.train.loop import RunSpec, align_schedule, build_optimizer, fit

CONFIG = load_config("tiny")


def _config(epochs: int = 3, batch: int = 2):
    return dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, epochs=epochs,
                                                                 batch_size=batch))


@pytest.fixture(scope="module")
def chip_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop")
    return scene_store(root, str(root / "store"), 128, 32, (0.6, 0.2, 0.2))


def _fit(store, run_dir, config, **kw):
    spec = RunSpec(config, store, str(run_dir), Storage(), **kw)
    return fit(spec, LocalFeed(store, Storage(), config.train.batch_size, config.train.seed),
               log=lambda *_: None)


def test_lr_milestones_fall_at_30_and_60_percent():
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model, CONFIG, total_steps=20)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    lr = CONFIG.train.lr
    assert lrs[5] == pytest.approx(lr) and lrs[6] == pytest.approx(lr * 0.2)
    assert lrs[11] == pytest.approx(lr * 0.2) and lrs[12] == pytest.approx(lr * 0.04)
    assert CONFIG.train.milestone_steps(20) == [6, 12]


def test_resuming_with_more_epochs_moves_the_lr_milestones():
    """Checkpoint at step 8 of a 20-step run, resumed as a 40-step run (milestones 12, 24)."""
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer(model, CONFIG, total_steps=20)
    for _ in range(8):
        optimizer.step()
        scheduler.step()
    saved = optimizer.state_dict(), scheduler.state_dict()
    lr = CONFIG.train.lr
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr * 0.2)  # passed 6
    optimizer, scheduler = build_optimizer(model, CONFIG, total_steps=40)
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    assert align_schedule(optimizer, scheduler, CONFIG.train.milestone_steps(40))
    lrs = []
    for _ in range(8, 40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Steps 8..11 at the full lr again (milestone 12 not reached), 12..23 x0.2, 24.. x0.04.
    assert lrs[0] == pytest.approx(lr) and lrs[3] == pytest.approx(lr)
    assert lrs[4] == pytest.approx(lr * 0.2) and lrs[15] == pytest.approx(lr * 0.2)
    assert lrs[16] == pytest.approx(lr * 0.04) and lrs[-1] == pytest.approx(lr * 0.04)
    assert not align_schedule(optimizer, scheduler, CONFIG.train.milestone_steps(40))


def test_augment_moves_image_label_and_depth_together():
    image = torch.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8)
    batch = {"image": image, "label": image[:, 0].clone(), "depth": image[:, 0].float()}
    out = augment(batch, torch.Generator().manual_seed(1), crop=6)
    assert out["image"].shape == (2, 3, 6, 6)
    assert torch.equal(out["image"][:, 0], out["label"]) and torch.equal(
        out["label"].float(), out["depth"])


def test_augment_none_only_crops_keeping_orientation():
    # Shadows cast to one side: train.augment=none keeps every chip's orientation, and takes
    # the same crops as d4 would.
    image = torch.arange(4 * 1 * 8 * 8).reshape(4, 1, 8, 8)
    batch = {"image": image, "label": image[:, 0].clone(), "depth": image[:, 0].float()}
    kept = augment(batch, torch.Generator().manual_seed(3), crop=6, dihedral=False)
    turned = augment(batch, torch.Generator().manual_seed(3), crop=6)
    for k in range(4):
        window = kept["image"][k, 0]
        r, c = divmod(int((window[0, 0] - image[k, 0, 0, 0]).item()), 8)
        assert torch.equal(window, image[k, 0, r:r + 6, c:c + 6])  # a plain crop
        # d4's chip is a flip/rotation of the very same crop
        assert any(torch.equal(turned["image"][k, 0], torch.rot90(t, n))
                   for t in (window, window.flip(-1)) for n in range(4))
    assert not all(torch.equal(kept["image"][k], turned["image"][k]) for k in range(4))
    assert load_config("demo", {"train.augment": "none"}).train.augment == "none"


def test_stopped_then_resumed_run_equals_the_uninterrupted_one(chip_store, tmp_path):
    config = _config(epochs=3)
    full = _fit(chip_store, tmp_path / "full", config)
    with pytest.raises(RuntimeError, match="injected fault"):
        _fit(chip_store, tmp_path / "cut", config, fault_after_epoch=1)
    assert sorted(p.name for p in (tmp_path / "cut").glob("checkpoint_epoch_*")) == [
        "checkpoint_epoch_0001"]
    resumed = _fit(chip_store, tmp_path / "cut", config, fault_after_epoch=1)
    assert (resumed.epoch, resumed.step) == (full.epoch, full.step) == (3, 3 * full.step // 3)
    a = torch.load(tmp_path / "full" / "checkpoint_epoch_0003" / STATE_FILE, weights_only=False)
    b = torch.load(tmp_path / "cut" / "checkpoint_epoch_0003" / STATE_FILE, weights_only=False)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == full.step
    assert a["scheduler"]["_last_lr"] == b["scheduler"]["_last_lr"]
    assert a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    for k, state in a["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(state[name], b["optimizer"]["state"][k][name])
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name])
    assert [m["loss"] for m in full.history] == pytest.approx([m["loss"] for m in resumed.history])


def test_val_every_validates_and_checkpoints_every_n_epochs_and_the_last(chip_store, tmp_path):
    every = _fit(chip_store, tmp_path / "every", _config(epochs=5))
    config = _config(epochs=5)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, val_every=2))
    sparse = _fit(chip_store, tmp_path / "sparse", config)
    assert sorted(p.name for p in (tmp_path / "sparse").glob("checkpoint_epoch_*")) == [
        "checkpoint_epoch_0002", "checkpoint_epoch_0004", "checkpoint_epoch_0005"]
    assert ["val_mIoU" in m for m in sparse.history] == [False, True, False, True, True]
    lines = (tmp_path / "sparse" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4, 5]
    # Skipping validation leaves the training itself unchanged
    assert [m["loss"] for m in sparse.history] == pytest.approx([m["loss"] for m in every.history])
    assert sparse.history[-1]["val_mIoU"] == pytest.approx(every.history[-1]["val_mIoU"])
    assert (tmp_path / "sparse" / "best").is_dir()
    with pytest.raises(ValueError, match="train.val_every=0"):
        load_config("demo", {"train.val_every": 0})


def test_checkpoint_leaves_the_frozen_encoder_out(chip_store, tmp_path):
    state = _fit(chip_store, tmp_path, _config(epochs=1))
    saved = torch.load(tmp_path / "checkpoint_epoch_0001" / STATE_FILE, weights_only=False)
    assert not any(k.startswith("encoder.vit.") for k in saved["model"])
    assert state.epoch == 1 and (tmp_path / "metrics.jsonl").read_text().count("\n") == 1
    # The curves picture comes with every epoch: train and val loss, mIoU, lr.
    from PIL import Image

    assert state.history[0]["val_loss"] > 0 and state.history[0]["loss"] > 0
    with Image.open(tmp_path / "curves.png") as picture:
        assert picture.format == "PNG" and picture.width > 3 * picture.height / 2
    bundle = load_bundle(str(tmp_path / "best"))
    store = ChipStore.open(chip_store)
    assert bundle.contract.mean == tuple(store.stats["mean"])
    assert bundle.contract.class_names == store.schema.class_names
    # What the depth head learnt is recorded: mapping names the depth layer after it.
    assert bundle.contract.depth_source == store.schema.depth_source != ""


def test_s3_chip_store_trains_like_a_local_one(chip_store, tmp_path, s3_prefix, s3_storage):
    from depthseg.io.storage import join

    fs, path = s3_storage.fs(s3_prefix)
    fs.put(chip_store, path + "/store", recursive=True)
    s3_chips = join(s3_prefix, "store")
    config = _config(epochs=1)
    local = _fit(chip_store, tmp_path / "local", config)
    spec = RunSpec(config, s3_chips, join(s3_prefix, "run"), s3_storage)
    remote = fit(spec, LocalFeed(s3_chips, s3_storage, 2, 0), log=lambda *_: None)
    assert remote.history[0]["loss"] == pytest.approx(local.history[0]["loss"], rel=1e-6)
    assert fs.exists(path + "/run/best/bundle.json")
    assert fs.exists(path + "/run/checkpoint_epoch_0001/state.pt")


def test_evaluate_writes_reports_matching_direct_scores(chip_store, tmp_path, capsys):
    _fit(chip_store, tmp_path / "run", _config(epochs=1))
    job = load_job("evaluate")
    assert job.main(["--model", str(tmp_path / "run" / "best"), "--chips", chip_store,
                     "--split", "test", "--out", str(tmp_path / "report")]) == 0
    assert "| mPre | mRecall | mF1 | mIoU | OA | Kappa |" in capsys.readouterr().out
    doc = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert (tmp_path / "report" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "mIoU" in (tmp_path / "report" / "metrics.md").read_text()
    # The same numbers straight from the model and the chips.
    bundle = load_bundle(str(tmp_path / "run" / "best"))
    store = ChipStore.open(chip_store)
    chips = store.read(store.indices("test"))
    from depthseg.model import normalize
    with torch.no_grad():
        x = normalize(torch.from_numpy(chips["image"]), bundle.contract.mean, bundle.contract.std)
        pred = bundle.model(x).logits.argmax(1)
    direct = scores(confusion_matrix(pred, torch.from_numpy(chips["label"]), 7),
                    bundle.contract.class_names)
    assert np.array_equal(np.array(doc["confusion_matrix"]),
                          confusion_matrix(pred, torch.from_numpy(chips["label"]), 7))
    for key in ("mPre", "mRecall", "mF1", "mIoU", "OA", "Kappa"):
        assert doc[key] == pytest.approx(direct[key])
    again = evaluate(str(tmp_path / "run" / "best"), chip_store, "test")
    assert again.scores["mIoU"] == pytest.approx(direct["mIoU"])


def test_class_weights_follow_the_training_split(chip_store, tmp_path):
    """inverse_sqrt: 1/sqrt(pixel share) of the training chips, mean 1; rarer weighs more."""
    from depthseg.train.loop import class_shares, class_weights

    store = ChipStore.open(chip_store, Storage())
    labels = np.stack([np.asarray(store.array("label")[int(i)])
                       for i in store.indices("train")])
    counts = np.bincount(labels[labels != 255].ravel(), minlength=7)[:7]
    np.testing.assert_allclose(class_shares(store, 7), counts / counts.sum())
    assert class_weights(store, CONFIG) is None  # the paper's (and the default): none
    weighted = dataclasses.replace(CONFIG, train=dataclasses.replace(
        CONFIG.train, class_weighting="inverse_sqrt"))
    weights = class_weights(store, weighted)
    present = counts > 0
    assert weights is not None and present.sum() >= 3
    np.testing.assert_allclose(weights[present].mean(), 1.0)
    rare, common = np.argmin(np.where(present, counts, np.inf)), np.argmax(counts)
    assert weights[rare] > weights[common]
    np.testing.assert_allclose(weights[rare] / weights[common],
                               np.sqrt(counts[common] / counts[rare]))
    stronger = class_weights(store, dataclasses.replace(CONFIG, train=dataclasses.replace(
        CONFIG.train, class_weighting="inverse")))
    assert stronger is not None
    np.testing.assert_allclose(stronger[present].mean(), 1.0)
    np.testing.assert_allclose(stronger[rare] / stronger[common], counts[common] / counts[rare])

    lines: list[str] = []
    spec = RunSpec(dataclasses.replace(weighted, train=dataclasses.replace(
        weighted.train, epochs=1, batch_size=2)), chip_store, str(tmp_path / "run"), Storage())
    fit(spec, LocalFeed(chip_store, Storage(), 2, 0), log=lines.append)
    assert any(line.startswith("class weights (inverse_sqrt): ") for line in lines), lines
