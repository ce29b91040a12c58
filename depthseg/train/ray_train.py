"""Ray Train around :func:`depthseg.train.loop.fit`: the handful of Ray lines live here.

* ``TorchTrainer`` with one worker per GPU (CPU workers without GPUs);
* training chips from a Ray Dataset, one equal shard per worker (``get_dataset_shard`` +
  ``iter_torch_batches``); validation chips are read from the store by each worker, every
  ``world``-th chip, because Ray's equal split would drop up to ``world - 1`` of them and the
  metrics must count every chip;
* DDP via ``ray.train.torch.prepare_model``, with the frozen encoder's parameters excluded
  from DDP (nothing to all-reduce, nothing to broadcast);
* confusion matrices and loss sums added over workers with ``torch.distributed.all_reduce``;
* a checkpoint per epoch, written to run storage by rank 0 and only then reported with
  ``ray.train.report`` (by reference); ``FailureConfig(max_failures)`` restarts the worker
  group from the newest durable checkpoint in the run folder (one Ray may not have recorded
  yet, when a worker died before its report), and a new ``fit`` of the same run name and
  storage path (``--resume``) continues from it too; ``restores.jsonl`` in the run folder
  lists every restore (epoch, step).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from depthseg.errors import DepthSegError, InputError
from depthseg.io.chips import ChipStore
from depthseg.io.storage import Storage, join, scheme_of
from depthseg.train.checkpoint import (
    checkpoint_name,
    local_copy,
    newest_checkpoint,
    persist_checkpoint,
)
from depthseg.train.data import Batch, RayFeed, ray_datasets, read_chips, split_bytes
from depthseg.train.loop import Hooks, RunSpec, fault_before_report, fit

SNAPSHOT = "checkpoint_manager_snapshot.json"  # Ray Train v2's run-state file


@dataclass(frozen=True)
class Scaling:
    """How many workers and what they hold.

    Attributes:
        num_workers: Training workers (one per GPU with ``gpu``).
        gpu: One GPU per worker.
        max_failures: Worker-group restarts from the latest checkpoint before giving up.
        keep_checkpoints: Checkpoints kept in storage (the newest ones).
        cpus_per_worker: CPUs reserved per worker; Ray sets the worker's torch threads to
            it. ``None`` (the default) picks them (:func:`worker_cpus`). Ray Data's read
            tasks get what the workers leave over, so when the training split streams on a
            small machine (2 CPUs, 2 workers) use a fraction (0.5).
    """

    num_workers: int = 1
    gpu: bool = False
    max_failures: int = 3
    keep_checkpoints: int = 2
    cpus_per_worker: float | None = None


def worker_cpus(scaling: Scaling, cached: bool, node_cpus: list[float]) -> float:
    """CPUs each training worker reserves, and so its torch threads (Ray sets them).

    An explicit ``scaling.cpus_per_worker`` wins. GPU workers take 1. CPU workers whose
    training split is cached in the object store run no read tasks after the first epoch, so
    they share the cluster's CPUs (at most one node's, at least 1): on the 2-core demo
    machine one worker trains with 2 threads, twice as fast as with Ray's 1. A streaming
    split leaves its readers the rest: 1 per worker.
    """
    if scaling.cpus_per_worker is not None:
        if scaling.cpus_per_worker <= 0:
            raise InputError(f"--cpus-per-worker {scaling.cpus_per_worker} must be > 0 (e.g. "
                             "0.5 or 2), or left out to let the job choose")
        return scaling.cpus_per_worker
    if scaling.gpu or not cached or not node_cpus:
        return 1.0
    share = int(sum(node_cpus) // scaling.num_workers)
    return float(max(1, min(share, int(max(node_cpus)))))


def _node_cpus() -> list[float]:
    import ray

    return [float(node["Resources"].get("CPU", 0)) for node in ray.nodes()
            if node.get("Alive")]


def ray_storage(uri: str, storage: Storage) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for ``RunConfig`` (pyarrow wraps s3fs)."""
    fs, path = storage.fs(uri)
    if scheme_of(uri) in ("", "file"):
        return path, None
    import pyarrow.fs

    return path, pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))


def sync_batch_norm(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """BatchNorm layers as SyncBatchNorm when several GPU workers train one model.

    The adapter, prompter and decoder normalise with batch statistics; with the paper's small
    batches (8 / 4 / 2) split over workers, per-worker statistics of 1-4 chips are noise.
    SyncBatchNorm shares the parameters, so an optimiser built before keeps working.
    PyTorch synchronises batch norm on accelerators only: CPU workers keep per-worker
    statistics (tests, the CPU demo).
    """
    if world_size > 1 and device.type == "cuda":
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


class RayHooks(Hooks):
    """Distribution, checkpoints and reporting through Ray Train."""

    def __init__(self, spec: RunSpec) -> None:
        import ray.train

        super().__init__(spec)
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()

    def device(self) -> torch.device:
        """The worker's device (its GPU, or the CPU)."""
        import ray.train.torch

        return ray.train.torch.get_device()

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP over the trainable parameters only; batch norm synchronised on GPUs."""
        import ray.train.torch

        model = sync_batch_norm(model, self.device(), self.world_size)
        # DDP puts only parameters that require a gradient in its buckets, so the frozen
        # encoder costs no all-reduce; it is broadcast once, when DDP starts (every worker
        # loaded the same weights anyway). No private torch API is needed for that.
        return ray.train.torch.prepare_model(model, move_to_device=False)

    def all_reduce(self, tensor: Tensor) -> Tensor:
        """Sum over workers."""
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor)
        return tensor

    def latest_checkpoint(self) -> str | None:
        """The newest durable checkpoint in the run folder, after a failure or on a resume.

        Not only the one Ray recorded: Ray records a checkpoint once every worker reported
        it, so a worker that died just before its report would cost an epoch that rank 0
        had already written. A temporary local copy where storage is remote:
        :func:`~depthseg.train.loop.fit` removes it once loaded.
        """
        import ray.train

        newest = newest_checkpoint(self.spec.run_dir, self.spec.storage)
        if newest is not None:
            return newest
        checkpoint = ray.train.get_checkpoint()  # none of ours there: whatever Ray has
        return None if checkpoint is None else local_copy(checkpoint.to_directory)

    def report(self, metrics: dict[str, Any], checkpoint: str | None, epoch: int) -> None:
        """Report metrics (every worker) with rank 0's checkpoint, persisted first.

        Rank 0 writes the checkpoint to run storage itself (whole, atomically) and then
        hands Ray a reference to it (``NO_UPLOAD``): a checkpoint Ray hears of is durable.
        """
        import ray.train
        from ray.train import CheckpointUploadMode

        reported = None
        if checkpoint is not None:
            persist_checkpoint(checkpoint, self.spec.run_dir, epoch, self.spec.storage)
            storage = ray.train.get_context().get_storage()
            reported = ray.train.Checkpoint(
                path=f"{storage.experiment_fs_path}/{checkpoint_name(epoch)}",
                filesystem=storage.storage_filesystem)
        fault_before_report(self.spec, epoch, self.rank)
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        ray.train.report(flat, checkpoint=reported, checkpoint_dir_name=checkpoint_name(epoch),
                         checkpoint_upload_mode=CheckpointUploadMode.NO_UPLOAD)


class RayWorkerFeed(RayFeed):
    """Training batches from the Ray shard, validation chips from the store.

    A worker's validation chips of at most :data:`VAL_CACHE_MAX_BYTES` are read once and kept
    in its memory for every later epoch.
    """

    def __init__(self, spec: RunSpec, num_train: int, batch_size: int, rank: int,
                 world: int) -> None:
        super().__init__(num_train, batch_size, spec.config.train.seed, has_val=False)
        self.store = ChipStore.open(spec.chips, spec.storage)
        self.val = self.store.indices("val")[rank::world]
        self._cache_val = split_bytes(self.store, len(self.val)) <= VAL_CACHE_MAX_BYTES
        self._val_batches: list[Batch] | None = None

    def val_batches(self) -> Any:
        """Every ``world``-th validation chip, from this worker's rank on."""
        if self._val_batches is not None:
            yield from self._val_batches
            return
        kept: list[Batch] = []
        for start in range(0, len(self.val), self.batch_size):
            chunk = read_chips(self.store, self.val[start:start + self.batch_size])
            batch: Batch = {k: torch.from_numpy(np.ascontiguousarray(v))
                            for k, v in chunk.items()}
            if self._cache_val:
                kept.append(batch)
            yield batch
        if self._cache_val:  # only a pass read to its end is kept
            self._val_batches = kept


#: A worker keeps its validation chips in memory up to this size (read once, not per epoch).
VAL_CACHE_MAX_BYTES = 256 << 20


INPUT_ERROR = "input_error.txt"


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function.

    An input error (:class:`DepthSegError`) does not get better with retries: the worker
    writes its one line to ``<run>/input_error.txt`` and ends normally, so Ray does not
    restart the group, and the driver reports the line (:func:`worker_input_error`).
    Anything else fails the worker, and Ray restarts it from the latest checkpoint.
    """
    spec: RunSpec = config["spec"]
    if not config.get("verbose", False):
        _quiet_train_worker()
    hooks = RayHooks(spec)
    worker_batch = spec.config.train.batch_size // hooks.world_size
    try:
        feed = RayWorkerFeed(spec, config["num_train"], worker_batch, hooks.rank,
                             hooks.world_size)
        fit(spec, feed, hooks)
    except DepthSegError as err:
        if hooks.rank == 0:
            spec.storage.write_bytes_atomic(join(spec.run_dir, INPUT_ERROR),
                                            str(err).splitlines()[0].encode())


def _quiet_train_worker() -> None:
    """Hide Ray Train's per-report INFO line on this worker.

    Its logger is named after its file, so ``LoggingConfig`` does not reach it; the epoch
    lines say the same.
    """
    import logging

    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray layout: its chatter stays
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def worker_input_error(run_dir: str, storage: Storage) -> str | None:
    """The input error a worker reported for this run, or None."""
    uri = join(run_dir, INPUT_ERROR)
    return storage.read_bytes(uri).decode() if storage.exists(uri) else None


def run_exists(run_dir: str, storage: Storage) -> bool:
    """Whether ``run_dir`` holds a Ray Train run (its checkpoint-manager snapshot)."""
    return storage.exists(join(run_dir, SNAPSHOT))


def train(spec: RunSpec, name: str, storage_uri: str, scaling: Scaling,
          resume: bool = False, verbose: bool = False) -> Any:
    """Run (or, with ``resume``, continue) the training run ``<storage_uri>/<name>``.

    Ray Train's own INFO lines (resources, each reported result) are hidden unless
    ``verbose``: the epoch lines and the in-epoch progress are the display.

    ``spec.run_dir`` is replaced by ``<storage_uri>/<name>``, Ray's folder of the run.

    Returns:
        Ray's ``Result`` (metrics of the last epoch, the latest checkpoint, the run path).

    Raises:
        InputError: the run exists and ``resume`` is off, or ``resume`` finds no run.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig
    from ray.train.torch import TorchTrainer

    # Ray keeps the run in <storage_path>/<name>; our artefacts go to the same folder.
    spec = dataclasses.replace(spec, run_dir=join(storage_uri, name))
    exists = run_exists(spec.run_dir, spec.storage)
    if exists and not resume:
        raise InputError(f"run {name!r} already exists in {storage_uri!r}; pass --resume to "
                         "continue it or choose another --name")
    if resume and not exists:
        raise InputError(f"--resume found no run {name!r} in {storage_uri!r} (no {SNAPSHOT}); "
                         "check --name and --storage, or drop --resume to start one")
    store = ChipStore.open(spec.chips, spec.storage)
    num_train = int(len(store.indices("train")))
    if spec.storage.exists(join(spec.run_dir, INPUT_ERROR)):  # a resumed run tries again
        spec.storage.fs(spec.run_dir)[0].rm(spec.storage.fs(join(spec.run_dir, INPUT_ERROR))[1])
    storage_path, filesystem = ray_storage(storage_uri, spec.storage)
    datasets = ray_datasets(spec.chips, spec.storage, splits=("train",))
    from ray.data.dataset import MaterializedDataset

    cached = isinstance(datasets["train"], MaterializedDataset)
    scaling = dataclasses.replace(scaling, cpus_per_worker=worker_cpus(scaling, cached,
                                                                        _node_cpus()))
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"spec": spec, "num_train": num_train, "verbose": verbose},
        scaling_config=_scaling_config(scaling),
        run_config=RunConfig(  # type: ignore[call-arg]  # Ray Train v2 (mypy sees v1)
            name=name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=scaling.keep_checkpoints),
            logging_config=LoggingConfig(log_level="INFO" if verbose else "WARNING"),
        ),
        datasets=datasets,
    )
    return trainer.fit()


def _scaling_config(scaling: Scaling) -> Any:
    from ray.train import ScalingConfig

    if scaling.num_workers < 1:
        raise InputError(f"--num-workers {scaling.num_workers} must be >= 1")
    return ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.gpu,
                         resources_per_worker={"CPU": scaling.cpus_per_worker,
                                               **({"GPU": 1} if scaling.gpu else {})})
