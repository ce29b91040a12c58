"""The training loop: plain PyTorch; distribution, data and checkpoint I/O come from hooks.

:func:`fit` runs the paper's recipe (AdamW, MultiStepLR at ``lr_milestones`` of the total
steps, L = w_D (1 - SSIM) + w_cls CE) over a feed of chip batches. Everything Ray-specific
lives in :class:`Hooks` (:mod:`depthseg.train.ray_train` overrides it); the defaults run one
process with checkpoints under ``<run_dir>/checkpoints/``, so a unit test runs an epoch
without Ray.

Per epoch: train (augmented on the device, normalised there with the chip store's band
statistics, bf16 autocast on CUDA), validate (confusion matrices summed over workers),
export the model bundle to ``<run_dir>/best/`` when mIoU improved, write ``metrics.jsonl``
and report metrics with a checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Collection, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from depthseg.config import Config, dump_config
from depthseg.errors import InputError
from depthseg.io.bundle import Contract, save_bundle
from depthseg.io.chips import ChipStore
from depthseg.io.storage import Storage, join, scheme_of, sweep_temp_dirs, temp_dir
from depthseg.io.weights import build_model_from_uri
from depthseg.metrics import MEAN_KEYS, confusion_matrix, scores
from depthseg.model import DepthSegLoss, normalize
from depthseg.progress import Progress
from depthseg.train.checkpoint import (
    STATE_FILE,
    TrainState,
    checkpoint_name,
    load_state,
    newest_checkpoint,
    persist_checkpoint,
    restoring,
    save_state,
)
from depthseg.train.data import Batch, augment, epoch_seed, steps_per_epoch


@dataclass(frozen=True)
class RunSpec:
    """One training run.

    Attributes:
        config: Model and training recipe.
        chips: Chip store URI.
        run_dir: ``<storage>/<name>``: checkpoints, ``best/``, ``metrics.jsonl``, config.
        storage: Storage settings.
        tensorboard: Also write TensorBoard event files (when a writer is installed).
        fault_after_epoch: Fault injection for tests: raise after this epoch's checkpoint
            the first time it is reached (a marker file in ``run_dir`` remembers).
        fault_rank: With ``fault_after_epoch``: only this worker fails, before it reports
            the epoch (see :func:`fault_before_report`).
    """

    config: Config
    chips: str
    run_dir: str
    storage: Storage = Storage()
    tensorboard: bool = False
    fault_after_epoch: int | None = None
    fault_rank: int | None = None


class Feed(Protocol):
    """Where batches come from (:class:`~depthseg.train.data.LocalFeed`, ``RayFeed``)."""

    num_train: int

    def train_batches(self, epoch: int) -> Iterable[Batch]: ...  # noqa: D102

    def val_batches(self) -> Iterable[Batch]: ...  # noqa: D102


class Hooks:
    """Single-process defaults; the Ray version overrides every method."""

    rank = 0
    world_size = 1

    def __init__(self, spec: RunSpec) -> None:
        self.spec = spec

    def device(self) -> torch.device:
        """Where the model runs."""
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        """Wrap the model for data parallelism (identity in one process)."""
        return model

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum over workers (identity in one process)."""
        return tensor

    def latest_checkpoint(self) -> str | None:
        """Local directory of the newest durable checkpoint, or None."""
        return newest_checkpoint(self.spec.run_dir, self.spec.storage)

    def report(self, metrics: dict[str, Any], checkpoint: str | None, epoch: int) -> None:
        """Persist ``checkpoint`` (a local directory) as ``<run_dir>/checkpoint_epoch_NNNN``."""
        if checkpoint is not None:
            persist_checkpoint(checkpoint, self.spec.run_dir, epoch, self.spec.storage)


#: Where the official DINOv2 checkpoints come from (Meta's downloads; timm's safetensors work
#: too: timm/vit_{small,base,large}_patch14_dinov2.lvd142m on the Hugging Face Hub).
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_{0}14/dinov2_{0}14_pretrain.pth"


def check_encoder_weights(config: Config, allow_random: bool = False) -> None:
    """Refuse to train a paper preset whose frozen encoder would stay randomly initialised.

    The paper freezes a *pretrained* DINOv2: a frozen random ViT only trains the heads on
    noise features, and the run would look fine while mapping nothing. The ``tiny`` preset
    (tests, CPU demo) is exempt; ``allow_random`` (``--random-frozen-encoder``) trains anyway.
    """
    encoder = config.model.encoder
    if (config.model.arch == "depthseg" and encoder.freeze and encoder.weights is None
            and encoder.name != "tiny" and not allow_random):
        raise InputError(
            f"encoder {encoder.name} is frozen (encoder.freeze: true) but encoder.weights is "
            f"null, so it would stay random; download {DINOV2_URL.format(encoder.name)} and set "
            "encoder.weights to its path or s3:// URI (--set encoder.weights=PATH), or pass "
            "--random-frozen-encoder to train the heads on a random encoder anyway")


def fit_config_to_store(config: Config, store: ChipStore,
                        explicit: Collection[str] = ()) -> Config:
    """The config with the store's class count, checked against the store before training.

    ``model.num_classes`` comes from the store's class list unless the preset sets it
    (``explicit``), in which case the two must agree. Everything a worker would otherwise
    find out minutes later is refused here, in one line: band count, missing statistics,
    no depth for a model with the depth prompter, no training chips.
    """
    schema = store.schema
    classes = len(schema.class_names)
    if "num_classes" in explicit and config.model.num_classes != classes:
        raise InputError(f"chip store {store.uri!r} has {classes} classes "
                         f"{list(schema.class_names)} but the config sets model.num_classes="
                         f"{config.model.num_classes}; remove num_classes from the config (it "
                         "then comes from the store) or prepare the chips with those classes")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                   num_classes=classes))
    if schema.bands != config.model.in_channels:
        raise InputError(f"chip store {store.uri!r} has {schema.bands} bands "
                         f"{list(schema.band_names)} but model.in_channels="
                         f"{config.model.in_channels}; prepare the chips with matching --bands "
                         "or set model.in_channels in the config")
    if store.stats is None:
        raise InputError(f"chip store {store.uri!r} has no band statistics; finish preparing it "
                         "(rerun jobs/prepare.py with the same arguments)")
    prompter = getattr(config.model, "depth_prompter", False)
    if prompter and schema.depth_source == "none" and config.train.depth_loss_weight > 0:
        raise InputError(f"chip store {store.uri!r} holds no depth but the model's depth "
                         "prompter learns from it; prepare the chips with --teacher or "
                         "--height, or set model.depth_prompter: false")
    if not len(store.indices("train")):
        raise InputError(f"chip store {store.uri!r} has no training chips; prepare it with a "
                         "train fraction > 0 (--fractions)")
    return config


def contract_from_store(store: ChipStore, config: Config) -> Contract:
    """The preprocessing contract of a model trained on ``store``."""
    schema, stats = store.schema, store.stats
    if stats is None:
        raise InputError(f"chip store {store.uri!r} has no band statistics; finish preparing it "
                         "(rerun jobs/prepare.py with the same arguments)")
    if schema.bands != config.model.in_channels:
        raise InputError(f"chip store {store.uri!r} has {schema.bands} bands {schema.band_names} "
                         f"but model.in_channels={config.model.in_channels}; prepare the chips "
                         "with matching --bands or change the config")
    if len(schema.class_names) != config.model.num_classes:
        raise InputError(f"chip store {store.uri!r} has {len(schema.class_names)} classes but "
                         f"model.num_classes={config.model.num_classes}; make them agree")
    patch = config.model.encoder.patch_size
    return Contract(
        band_indices=schema.band_indices, band_names=schema.band_names,
        input_dtype=schema.input_dtype, value_range=schema.value_range,
        mean=tuple(stats["mean"]), std=tuple(stats["std"]), class_names=schema.class_names,
        palette=schema.palette or tuple((128, 128, 128) for _ in schema.class_names),
        tile_size=max(patch, round(schema.chip_size / patch) * patch), nodata=0,
        gsd=schema.gsd, band_descriptions=schema.band_descriptions,
        source_bands=schema.source_bands, resampling=schema.resampling,
        depth_source=schema.depth_source,
    )


def check_batch_split(config: Config, workers: int) -> None:
    """``train.batch_size`` is the global batch: it must split evenly over the workers."""
    batch = config.train.batch_size
    if batch % workers:
        fit_to = -(-batch // workers) * workers
        raise InputError(
            f"train.batch_size {batch} is the global batch and does not split over {workers} "
            f"workers; give --batch-size {fit_to} (a multiple of {workers}; the lr follows "
            "linearly when train.lr_reference_batch is set) or use fewer workers")


def batch_text(config: Config, workers: int) -> str:
    """How the global batch and the lr were set, for the run's first log line."""
    tc = config.train
    text = f"global batch {tc.batch_size} = {workers} worker(s) x {tc.batch_size // workers}"
    if tc.effective_lr != tc.lr:
        text += (f", lr {tc.effective_lr:.3g} (train.lr {tc.lr:.3g} at batch "
                 f"{tc.lr_reference_batch}, scaled linearly)")
    return text


def build_optimizer(model: nn.Module, config: Config, total_steps: int) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and MultiStepLR at the recipe's milestones."""
    tc = config.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.effective_lr, weight_decay=tc.weight_decay,
                                  betas=tc.betas)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=tc.milestone_steps(total_steps), gamma=tc.lr_gamma)
    return optimizer, scheduler


def align_schedule(optimizer: Any, scheduler: Any, milestones: list[int]) -> bool:
    """Move a restored MultiStepLR onto this run's milestones; True when they changed.

    A checkpoint holds the milestones of the run that wrote it; resuming with more (or fewer)
    ``epochs`` moves them. The learning rate is set to what the new schedule gives at the
    restored step: ``base_lr * gamma ** (milestones passed)``.
    """
    from bisect import bisect_right
    from collections import Counter

    wanted = Counter(milestones)
    if scheduler.milestones == wanted:
        return False
    scheduler.milestones = wanted
    passed = bisect_right(sorted(wanted.elements()), scheduler.last_epoch)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs, strict=True):
        group["lr"] = base * scheduler.gamma ** passed
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    return True


def autocast(device: torch.device, precision: str) -> Any:
    """bf16 autocast on CUDA when the recipe asks for it; fp32 elsewhere."""
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.no_grad()
def confusion_over(model: nn.Module, batches: Iterable[Batch], mean: Tensor, std: Tensor,
                   num_classes: int, device: torch.device, precision: str = "fp32",
                   loss_fn: DepthSegLoss | None = None, loss_sums: Tensor | None = None,
                   ) -> Tensor:
    """(K, K) int64 confusion matrix of ``model`` over ``batches`` (on ``device``).

    With ``loss_fn``, also adds (loss x chips, chips) of the batches to ``loss_sums`` (the
    validation loss of the training curves).
    """
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    with torch.no_grad():
        for batch in batches:
            images = normalize(batch["image"].to(device, non_blocking=True), mean, std)
            with autocast(device, precision):
                out = model(images)
            labels = batch["label"].to(device)
            cm += torch.from_numpy(confusion_matrix(out.logits.argmax(1), labels,
                                                    num_classes)).to(device)
            if loss_fn is not None and loss_sums is not None:
                parts = loss_fn(out.logits.float(), [d.float() for d in out.depths], labels,
                                batch["depth"].to(device).float())
                loss_sums += torch.stack([parts.loss.detach().double() * images.shape[0],
                                          torch.tensor(float(images.shape[0]),
                                                       dtype=torch.float64, device=device)])
    model.train(was_training)
    return cm


CLASS_SHARE_CHIPS = 256  # training chips read to estimate class shares (bounded at any size)


def class_shares(store: ChipStore, num_classes: int, ignore_index: int = 255,
                 seed: int = 0) -> np.ndarray:
    """(K,) pixel share of each class in the training split.

    Read from every training chip up to :data:`CLASS_SHARE_CHIPS`, else from that many
    chosen with ``seed``: the labels only, so the cost stays bounded for a store of any size.
    """
    train = store.indices("train")
    if len(train) > CLASS_SHARE_CHIPS:
        train = np.sort(np.random.default_rng(seed).choice(train, CLASS_SHARE_CHIPS,
                                                           replace=False))
    labels = store.array("label")
    counts = np.zeros(num_classes, dtype=np.int64)
    for index in train:
        values = np.asarray(labels[int(index)]).ravel()
        values = values[(values != ignore_index) & (values < num_classes)]
        counts += np.bincount(values, minlength=num_classes)
    total = counts.sum()
    if total == 0:
        raise InputError(f"the training split of {store.uri!r} has no labelled pixel; "
                         "class_weighting needs labels: check the label rasters or set "
                         "train.class_weighting=none")
    return counts / total


def class_weights(store: ChipStore, config: Config) -> np.ndarray | None:
    """Cross-entropy class weights of ``train.class_weighting`` (None for ``none``).

    ``inverse_sqrt``: ``1 / sqrt(share)``; ``inverse``: ``1 / share``; scaled to mean 1 over
    the classes present; a class absent from the training split gets weight 1 (it has no
    pixel to weigh).
    """
    tc = config.train
    if tc.class_weighting == "none":
        return None
    shares = class_shares(store, config.model.num_classes, tc.ignore_index, tc.seed)
    present = shares > 0
    weights = np.ones_like(shares)
    power = 1.0 if tc.class_weighting == "inverse" else 0.5
    weights[present] = shares[present] ** -power
    weights[present] /= weights[present].mean()
    return weights


def fit(spec: RunSpec, feed: Feed, hooks: Hooks | None = None, log: Any = print) -> TrainState:
    """Train (or continue training) the run ``spec``; returns the final state."""
    hooks = hooks or Hooks(spec)
    sweep_temp_dirs()  # checkpoint copies of killed workers on this machine
    cfg, tc, storage = spec.config, spec.config.train, spec.storage
    rank, world = hooks.rank, hooks.world_size
    store = ChipStore.open(spec.chips, storage)
    contract = contract_from_store(store, cfg)
    device = hooks.device()
    torch.manual_seed(tc.seed)  # identical initial weights on every worker
    model = build_model_from_uri(cfg.model, storage).to(device)
    check_batch_split(cfg, world)
    worker_batch = tc.batch_size // world
    spe = steps_per_epoch(feed.num_train, world, worker_batch)
    total = tc.epochs * spe
    optimizer, scheduler = build_optimizer(model, cfg, total)
    state = TrainState()
    checkpoint = hooks.latest_checkpoint()
    if checkpoint is not None:
        with restoring(checkpoint):  # removes a temporary local copy, never run storage
            state, _ = load_state(checkpoint, model, optimizer, scheduler)
        model.to(device)
        log_rank0(rank, log, f"resumed from {checkpoint}: epoch {state.epoch}, step {state.step}")
        if rank == 0:
            _record_restore(spec, state)
        if align_schedule(optimizer, scheduler, tc.milestone_steps(total)):
            log_rank0(rank, log, f"epochs changed: LR milestones moved to "
                      f"{tc.milestone_steps(total)}, lr now {scheduler.get_last_lr()}")
    net = hooks.wrap(model)
    weights = class_weights(store, cfg)
    if weights is not None:
        log_rank0(rank, log, f"class weights ({tc.class_weighting}): " + ", ".join(
            f"{name} {w:.2f}" for name, w in zip(contract.class_names, weights, strict=True)))
    loss_fn = DepthSegLoss(tc.depth_loss_weight, tc.cls_loss_weight, tc.ignore_index,
                           depth_l1_weight=tc.depth_l1_weight,
                           depth_bce_weight=tc.depth_bce_weight,
                           class_weights=None if weights is None else torch.tensor(
                               weights, dtype=torch.float32, device=device))
    mean = torch.tensor(contract.mean, device=device)
    std = torch.tensor(contract.std, device=device)
    crop = min(tc.chip_size, store.schema.chip_size)
    if rank == 0 and state.epoch == 0:
        storage.write_bytes_atomic(join(spec.run_dir, "config.yaml"), dump_config(cfg).encode())
    board = _board(spec) if rank == 0 else None
    log_rank0(rank, log, f"train: {feed.num_train} chips, {batch_text(cfg, world)}, "
              f"{spe} steps/epoch, {total} steps, milestones "
              f"{tc.milestone_steps(total)}, device {device}"
              + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else ""))
    first_epoch, drawn = state.epoch, time.perf_counter()
    for epoch in range(state.epoch, tc.epochs):
        net.train()
        generator = torch.Generator().manual_seed(epoch_seed(tc.seed, epoch, rank))
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        start, steps = time.perf_counter(), 0
        # Worker 0 shows the epoch's progress (a bar on a terminal, else a line every 30 s).
        progress = Progress(spe, f"epoch {epoch + 1}/{tc.epochs}", "steps", every_s=30,
                            log=None if rank == 0 and log is print and sys.stderr.isatty()
                            else (lambda line: log_rank0(rank, log, line)))
        for batch in feed.train_batches(epoch):
            if steps == spe:
                break  # every worker takes exactly `spe` steps, whatever its shard holds
            batch = augment({k: v.to(device, non_blocking=True) for k, v in batch.items()},
                            generator, crop, dihedral=tc.augment == "d4")
            images = normalize(batch["image"], mean, std)
            with autocast(device, tc.precision):
                out = net(images)
            parts = loss_fn(out.logits, out.depths, batch["label"], batch["depth"].float())
            optimizer.zero_grad(set_to_none=True)
            parts.loss.backward()
            optimizer.step()
            scheduler.step()
            steps += 1
            state.step += 1
            progress.update(1)  # no loss shown: reading it would sync the GPU every step
            n = images.shape[0]
            sums += torch.stack([parts.loss.detach() * n, parts.l_depth.detach() * n,
                                 parts.l_cls.detach() * n,
                                 torch.tensor(n, device=device)]).double()
        progress.close()
        seconds = time.perf_counter() - start
        sums = hooks.all_reduce(sums)
        # Validation, best/ and the checkpoint every `val_every` epochs and after the last.
        validate = (epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs
        val_sums = torch.zeros(2, dtype=torch.float64, device=device)
        cm = torch.zeros(0, dtype=torch.int64, device=device)
        if validate:
            cm = hooks.all_reduce(confusion_over(model, feed.val_batches(), mean, std,
                                                 cfg.model.num_classes, device, tc.precision,
                                                 loss_fn, val_sums))
            val_sums = hooks.all_reduce(val_sums)
        metrics = _metrics(epoch + 1, state.step, sums, cm, optimizer, seconds, store)
        if float(val_sums[1]) > 0:
            metrics["val_loss"] = float(val_sums[0] / val_sums[1])
        state.epoch = epoch + 1
        state.history.append(metrics)
        improved = validate and (metrics.get("val_mIoU", -1.0) > state.best_miou
                                 or cm.sum() == 0)
        if rank == 0 and improved:
            state.best_miou = max(state.best_miou, metrics.get("val_mIoU", -1.0))
            save_bundle(join(spec.run_dir, "best"), model, cfg.model, contract, storage)
        metrics["best_mIoU"] = state.best_miou
        if rank == 0:
            lines = "".join(json.dumps(m) + "\n" for m in state.history)
            storage.write_bytes_atomic(join(spec.run_dir, "metrics.jsonl"), lines.encode())
            if (time.perf_counter() - drawn >= CURVES_EVERY_S or state.epoch == tc.epochs
                    or epoch == first_epoch):
                storage.write_bytes_atomic(join(spec.run_dir, "curves.png"),
                                           plot_curves(state.history))
                drawn = time.perf_counter()
            if board is not None:
                for key, value in metrics.items():
                    if isinstance(value, float) and math.isfinite(value):
                        board.add_scalar(key, value, state.step)
        log_rank0(rank, log, format_epoch(metrics, tc.epochs))
        if not validate:
            continue
        with temp_dir("ckpt") as tmp:
            ckpt = None
            if rank == 0:
                save_state(tmp, model, optimizer, scheduler, state,
                           {"total_steps": total, "config": cfg.to_dict()})
                ckpt = str(tmp)
            hooks.report(metrics, ckpt, state.epoch)
        _maybe_fault(spec, state.epoch, storage)
    if board is not None:
        board.close()
    return state


def log_rank0(rank: int, log: Any, message: str) -> None:
    """Print once per run, not once per worker."""
    if rank == 0:
        log(message)


def _metrics(epoch: int, step: int, sums: Tensor, cm: Tensor, optimizer: Any, seconds: float,
             store: ChipStore) -> dict[str, Any]:
    loss, l_depth, l_cls, n = (float(v) for v in sums.cpu())
    metrics: dict[str, Any] = {
        "epoch": epoch, "step": step, "lr": float(optimizer.param_groups[0]["lr"]),
        "loss": loss / max(n, 1), "l_depth": l_depth / max(n, 1), "l_cls": l_cls / max(n, 1),
        "samples_per_s": n / max(seconds, 1e-9), "train_seconds": seconds,
    }
    if int(cm.sum()) > 0:
        result = scores(cm.cpu().numpy(), store.schema.class_names)
        metrics.update({f"val_{k}": float(result[k]) for k in MEAN_KEYS})
        metrics["val_per_class_iou"] = {k: v["iou"] for k, v in result["per_class"].items()}
    return metrics


def format_epoch(m: dict[str, Any], epochs: int) -> str:
    """One terminal line per epoch."""
    line = (f"epoch {m['epoch']}/{epochs} step {m['step']} loss {m['loss']:.4f} "
            f"(depth {m['l_depth']:.4f}, cls {m['l_cls']:.4f}) lr {m['lr']:.2e} "
            f"{m['samples_per_s']:.1f} samples/s")
    if "val_mIoU" in m:
        line += " | val " + " ".join(f"{k} {100 * m[f'val_{k}']:.2f}" for k in MEAN_KEYS)
    return line


def _board(spec: RunSpec) -> Any:
    if not spec.tensorboard:
        return None
    if scheme_of(spec.run_dir) not in ("", "file"):
        print("tensorboard: event files are written to local run dirs only; see metrics.jsonl")
        return None
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("tensorboard: neither tensorboardX nor tensorboard is installed; metrics are "
                  "in metrics.jsonl (pip install tensorboard to get event files)")
            return None
    return SummaryWriter(str(Path(spec.run_dir) / "tensorboard"))


RESTORES = "restores.jsonl"


def _record_restore(spec: RunSpec, state: TrainState) -> None:
    """Append where a restart or resume continued from to ``<run_dir>/restores.jsonl``."""
    uri = join(spec.run_dir, RESTORES)
    before = spec.storage.read_bytes(uri) if spec.storage.exists(uri) else b""
    line = json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "epoch": state.epoch, "step": state.step})
    spec.storage.write_bytes_atomic(uri, before + line.encode() + b"\n")


def fault_before_report(spec: RunSpec, epoch: int, rank: int) -> None:
    """Fault injection for tests: worker ``spec.fault_rank`` dies before it reports ``epoch``.

    It waits until rank 0's checkpoint of that epoch is durable, so the checkpoint is in run
    storage while Ray, missing this worker's report, never records it.
    """
    if spec.fault_rank is None or rank != spec.fault_rank or epoch != spec.fault_after_epoch:
        return
    marker = join(spec.run_dir, f"fault_injected_{epoch}")
    if spec.storage.exists(marker):
        return
    state = join(spec.run_dir, checkpoint_name(epoch), STATE_FILE)
    deadline = time.monotonic() + 120
    while not spec.storage.exists(state) and time.monotonic() < deadline:
        time.sleep(0.05)
    spec.storage.write_bytes_atomic(marker, b"1")
    raise RuntimeError(f"injected fault on rank {rank} before reporting epoch {epoch}")


def _maybe_fault(spec: RunSpec, epoch: int, storage: Storage) -> None:
    if (spec.fault_after_epoch is None or epoch != spec.fault_after_epoch
            or spec.fault_rank is not None):
        return
    marker = join(spec.run_dir, f"fault_injected_{epoch}")
    if storage.exists(marker):
        return
    storage.write_bytes_atomic(marker, b"1")
    raise RuntimeError(f"injected fault after epoch {epoch} (RunSpec.fault_after_epoch)")


#: curves.png is redrawn at most this often (and after the first and last epochs): drawing
#: it took longer than a demo epoch's validation.
CURVES_EVERY_S = 30.0


def plot_curves(history: list[dict[str, Any]]) -> bytes:
    """``curves.png``: train/val loss, validation mIoU/mF1 and the learning rate per epoch."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]

    def series(key: str, scale: float = 1.0) -> list[float]:
        return [float(m[key]) * scale if key in m else float("nan") for m in history]

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    axes[0].plot(epochs, series("loss"), "o-", label="train loss")
    axes[0].plot(epochs, series("val_loss"), "o-", label="val loss")
    axes[0].plot(epochs, series("l_depth"), ":", label="train depth loss")
    axes[0].plot(epochs, series("l_cls"), ":", label="train class loss")
    axes[0].set_title("loss")
    axes[1].plot(epochs, series("val_mIoU", 100), "o-", label="val mIoU")
    axes[1].plot(epochs, series("val_mF1", 100), "o-", label="val mF1")
    axes[1].plot(epochs, series("best_mIoU", 100), "--", label="best mIoU")
    axes[1].set_title("validation (%)")
    axes[2].plot(epochs, series("lr"), "o-", label="lr")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for axis in axes:
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
