"""Chip batches for the training loop, with Ray Data or without, and on-device augmentation.

Batches are dicts of tensors: ``image`` (B,C,S,S) uint8 or int32 (raw digital numbers;
normalised on the device), ``label`` (B,S,S) uint8, ``depth`` (B,S,S) float16 (NaN invalid).

* :class:`LocalFeed`: reads the chip store directly (unit tests, one process).
* :func:`ray_datasets` + :class:`RayFeed`: a Ray Dataset per split (chip indices -> CPU read
  tasks), fed to each worker by ``get_dataset_shard(...).iter_torch_batches``.

Both give every worker ``floor(n / world) // batch`` training steps per epoch (shards are
equal, the last partial batch is dropped) so DDP workers never wait on each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from depthseg.errors import InputError
from depthseg.io.chips import ChipStore
from depthseg.io.storage import Storage

Batch = dict[str, Tensor]


def read_chips(store: ChipStore, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Raw chips of ``indices``: image (uint16 widened to int32: torch reads no uint16)."""
    idx = np.asarray(indices, np.int64)
    group: Any = store.group  # zarr's Group typing cannot express array members
    image = np.stack([group["image"][int(i)] for i in idx])
    if image.dtype == np.uint16:
        image = image.astype(np.int32)
    return {
        "image": image,
        "label": np.stack([group["label"][int(i)] for i in idx]),
        "depth": np.stack([group["depth"][int(i)] for i in idx]),
    }


def steps_per_epoch(num_train: int, world_size: int, worker_batch: int) -> int:
    """Optimiser steps per epoch: every worker's equal shard in whole batches."""
    steps = (num_train // world_size) // worker_batch
    if steps < 1:
        raise InputError(f"{num_train} training chips are too few for {world_size} worker(s) x "
                         f"batch {worker_batch}; prepare more chips or lower train.batch_size")
    return steps


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """One seed per (run seed, epoch, rank): data order and augmentation replay on resume."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


class LocalFeed:
    """Batches read straight from the chip store (no Ray): for tests and single processes."""

    def __init__(self, uri: str, storage: Storage, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        self.store = ChipStore.open(uri, storage)
        self.batch_size, self.seed = batch_size, seed
        train = self.store.indices("train")
        share = len(train) // world_size
        self.train = train
        self.rank, self.world_size, self.share = rank, world_size, share
        val = self.store.indices("val")
        self.val = val[rank::world_size]

    @property
    def num_train(self) -> int:
        """Training chips of the whole run."""
        return int(len(self.train))

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """One epoch of shuffled training batches of this worker's shard."""
        order = np.random.default_rng(epoch_seed(self.seed, epoch)).permutation(self.train)
        mine = order[self.rank * self.share:(self.rank + 1) * self.share]
        for start in range(0, len(mine) - self.batch_size + 1, self.batch_size):
            yield _tensors(read_chips(self.store, mine[start:start + self.batch_size]))

    def val_batches(self) -> Iterator[Batch]:
        """This worker's validation chips."""
        for start in range(0, len(self.val), self.batch_size):
            yield _tensors(read_chips(self.store, self.val[start:start + self.batch_size]))


def _tensors(batch: dict[str, np.ndarray]) -> Batch:
    return {k: torch.from_numpy(v) for k, v in batch.items()}


# ------------------------------------------------------------------------------------------
# Ray Data


def _read_batch(batch: dict[str, np.ndarray], uri: str, storage: Storage) -> dict[str, Any]:
    """Ray Data read stage: chip indices -> pixels."""
    return read_chips(ChipStore.open(uri, storage), batch["index"])


#: A split up to this size is read once and kept in Ray's object store
#: (``Dataset.materialize``), so later epochs run no read tasks: on the 2-core demo machine
#: the per-epoch pipeline cost more than the training steps of a small store.
CACHE_MAX_BYTES = 1 << 30


def split_bytes(store: ChipStore, count: int) -> int:
    """Bytes of ``count`` chips as the read stage returns them (image, label, depth).

    uint16 images travel widened to int32 (:func:`read_chips`): 4 bytes a pixel.
    """
    schema = store.schema
    pixels = schema.chip_size * schema.chip_size
    image = schema.bands * pixels * (1 if schema.input_dtype == "uint8" else 4)
    return count * (image + pixels * (1 + 2))


def ray_datasets(uri: str, storage: Storage, splits: tuple[str, ...] = ("train", "val"),
                 cache_max_bytes: int = CACHE_MAX_BYTES) -> dict[str, Any]:
    """``{split: Dataset}`` of the chip store's complete chips.

    A split of at most ``cache_max_bytes`` is read once, by Ray Data tasks, and kept in the
    object store for every epoch; a larger one streams from the store each epoch.
    """
    import ray.data

    store = ChipStore.open(uri, storage)
    out = {}
    for split in splits:
        indices = store.indices(split)
        if split == "train" and not len(indices):
            raise InputError(f"chip store {uri!r} has no training chips; prepare it with "
                             "jobs/prepare.py (check --fractions)")
        if not len(indices):
            continue  # no validation chips: the loop skips validation
        items = [{"index": int(i)} for i in indices]
        ds: Any = ray.data.from_items(items,
                                      override_num_blocks=max(1, min(len(items) // 8, 64)))
        ds = ds.map_batches(_read_batch, fn_kwargs={"uri": uri, "storage": storage},
                            batch_size=8)
        out[split] = (ds.materialize() if split_bytes(store, len(indices)) <= cache_max_bytes
                      else ds)
    return out


class RayFeed:
    """Batches of this worker's Ray Data shards (``ray.train.get_dataset_shard``)."""

    def __init__(self, num_train: int, batch_size: int, seed: int, has_val: bool) -> None:
        import ray.train

        self.train_shard = ray.train.get_dataset_shard("train")
        self.val_shard = ray.train.get_dataset_shard("val") if has_val else None
        self.num_train, self.batch_size, self.seed = num_train, batch_size, seed

    def train_batches(self, epoch: int) -> Iterator[Batch]:
        """One epoch of this worker's shard, locally shuffled, whole batches only."""
        yield from self.train_shard.iter_torch_batches(
            batch_size=self.batch_size, drop_last=True, device="cpu",
            local_shuffle_buffer_size=4 * self.batch_size,
            local_shuffle_seed=epoch_seed(self.seed, epoch))

    def val_batches(self) -> Iterator[Batch]:
        """This worker's validation chips."""
        if self.val_shard is None:
            return
        yield from self.val_shard.iter_torch_batches(batch_size=self.batch_size, device="cpu")


# ------------------------------------------------------------------------------------------
# Augmentation (on the device)


def augment(batch: Batch, generator: torch.Generator, crop: int | None = None,
            dihedral: bool = True) -> Batch:
    """Random flips and 90-degree rotations (and a random crop), the same for all 3 arrays.

    One draw per sample from ``generator`` (a CPU generator seeded per epoch and rank), so a
    resumed run augments exactly as the uninterrupted one. Without ``dihedral`` only the crop
    is applied (the same crops: the draws are the same).
    """
    image, label, depth = batch["image"], batch["label"], batch["depth"]
    b, s = image.shape[0], image.shape[-1]
    draws = torch.randint(0, 8, (b,), generator=generator).tolist()
    offsets = torch.randint(0, s - crop + 1 if crop and crop < s else 1, (b, 2),
                            generator=generator).tolist()
    images, labels, depths = [], [], []
    for k in range(b):
        x, y, d = image[k], label[k], depth[k]
        if crop and crop < s:
            r, c = offsets[k]
            x, y, d = x[:, r:r + crop, c:c + crop], y[r:r + crop, c:c + crop], \
                d[r:r + crop, c:c + crop]
        turns, flip = (draws[k] % 4, draws[k] >= 4) if dihedral else (0, False)
        if flip:
            x, y, d = x.flip(-1), y.flip(-1), d.flip(-1)
        x, y, d = (torch.rot90(t, turns, (-2, -1)) for t in (x, y, d))
        images.append(x)
        labels.append(y)
        depths.append(d)
    return {"image": torch.stack(images), "label": torch.stack(labels),
            "depth": torch.stack(depths)}
