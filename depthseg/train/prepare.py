"""Build a chip store: sources -> chips -> depth (teacher or heights) -> statistics.

:func:`prepare_chips` plans the chips (:mod:`depthseg.train.sources`), creates or reopens
the store (:class:`~depthseg.io.chips.ChipStore`), skips the chips already done, cuts the
others and writes them, then computes the band statistics. Depth comes from

* ``teacher``: Depth Anything run by a Ray Data actor pool (the model loads once per actor;
  one GPU per actor when the cluster has GPUs): read (CPU tasks) -> teacher (actors) ->
  write (CPU tasks);
* ``height``: a DSM/nDSM raster, normalised by ``depth_from_height`` (no Ray needed);
* ``none``: no depth (models with ``depth_prompter: off``).

The plan is saved as ``plan.json`` in the store; a rerun with other inputs is refused, a rerun
with the same inputs continues with the chips not done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from depthseg.errors import InputError
from depthseg.io.chips import ChipSchema, ChipStore
from depthseg.io.storage import Storage, join, scheme_of
from depthseg.model.depthnorm import depth_from_height
from depthseg.train import sources
from depthseg.train.sources import ChipPixels, ChipRef, PairReader, SceneReader

#: LiuZhou classes (paper) and display colours: the default class list.
LIUZHOU_CLASSES = ("cropland", "forest", "building", "road", "impervious surface", "bare land",
                   "water")
LIUZHOU_PALETTE = ((255, 211, 127), (38, 115, 0), (230, 0, 0), (89, 89, 89), (178, 178, 178),
                   (168, 112, 0), (0, 112, 255))
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class PrepareOptions:
    """What to prepare (one of ``pairs`` or ``scenes`` + ``label``).

    Attributes:
        out: Chip store URI (local folder or ``s3://`` prefix).
        pairs: Folder/prefix of chip pairs (see :mod:`depthseg.train.sources`).
        scenes: Scene files or folders/prefixes of ``*.tif`` (with ``label``).
        label: Label raster whose grid the chips are cut from (with ``scenes``).
        height: DSM/nDSM raster (metres) for depth, instead of a teacher.
        teacher: Depth Anything model folder (Hugging Face format) for depth.
        no_depth: Store no depth (for models without the depth prompter).
        bands: 1-based source bands in model channel order (R, G, B first); default all.
        chip_size: Chip side in pixels.
        block: Side of a split block in chips (scenes only).
        fractions: train/val/test fractions.
        seed: Seed of the split shuffle.
        classes: Class names in label order.
        palette: One (r, g, b) per class; default: the LiuZhou palette or grey levels.
        value_range: (min, max) valid pixel values; default: the dtype's range.
        min_labelled: Smallest labelled fraction of a scene chip to keep it.
        teacher_batch: Chips per teacher call.
        teacher_actors: Size of the teacher actor pool.
        gpu: Give each teacher actor one GPU.
        threads: Reader threads when no teacher runs.
    """

    out: str
    pairs: str | None = None
    scenes: tuple[str, ...] = ()
    label: str | None = None
    height: str | None = None
    teacher: str | None = None
    no_depth: bool = False
    bands: tuple[int, ...] | None = None
    chip_size: int = 512
    block: int = 4
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    classes: tuple[str, ...] = LIUZHOU_CLASSES
    palette: tuple[tuple[int, int, int], ...] | None = None
    value_range: tuple[float, float] | None = None
    min_labelled: float = 0.01
    teacher_batch: int = 8
    teacher_actors: int = 1
    gpu: bool = False
    threads: int = 4

    def check(self) -> None:
        """Refuse contradictory or missing inputs with one-line messages."""
        if (self.pairs is None) == (not self.scenes):
            raise InputError("give either --pairs FOLDER or --scenes ... --label RASTER (not both, "
                             "not neither)")
        if self.scenes and self.label is None:
            raise InputError("--scenes needs --label RASTER: the land-cover raster whose grid the "
                             "chips are cut from")
        depth_sources = sum([self.teacher is not None, self.height is not None, self.no_depth])
        if depth_sources == 0:
            raise InputError("no depth source: give --teacher URI (a Depth Anything folder) or "
                             "--height URI (a DSM/nDSM raster), or --no-depth for models without "
                             "the depth prompter")
        if depth_sources > 1:
            raise InputError("give only one of --teacher, --height and --no-depth")
        if self.height is not None and self.pairs is not None:
            raise InputError("--height works with --scenes/--label only; chip pairs have no grid "
                             "to read heights on; use --teacher")
        if self.chip_size < 16:
            raise InputError(f"--chip-size {self.chip_size} is too small; expected >= 16 px")

    @property
    def depth_source(self) -> str:
        """``teacher``, ``height`` or ``none``."""
        if self.teacher is not None:
            return "teacher"
        return "height" if self.height is not None else "none"


@dataclass(frozen=True)
class PrepareReport:
    """What a run did."""

    uri: str
    num_chips: int
    written: int
    skipped: int
    per_split: dict[str, int]
    stats: dict[str, list[float]]
    seconds: float


def expand_scenes(scenes: tuple[str, ...], storage: Storage) -> list[str]:
    """Scene files: files as given, folders/prefixes expanded to their ``*.tif``, sorted."""
    out: list[str] = []
    for uri in scenes:
        fs, path = storage.fs(uri)
        if fs.isdir(path):
            found = sorted(f for f in fs.find(path) if f.lower().endswith((".tif", ".tiff")))
            if not found:
                raise InputError(f"no .tif scenes under {uri!r}; give scene files or a folder "
                                 "of GeoTIFFs")
            out += [f"s3://{f}" if scheme_of(uri) == "s3" else f for f in found]
        elif fs.exists(path):
            out.append(uri)
        else:
            raise InputError(f"scene {uri!r} does not exist; check the path")
    return out


def plan(opts: PrepareOptions, storage: Storage) -> tuple[list[ChipRef], Any, ChipSchema]:
    """Chip refs, their reader and the store schema for ``opts``."""
    opts.check()
    n_classes = len(opts.classes)
    if opts.pairs is not None:
        refs, layout, header = sources.plan_pairs(opts.pairs, opts.chip_size, opts.fractions,
                                                  opts.seed, storage)
        if layout == "loveda" and header["count"] == 3 and not any(header["names"]):
            header = {**header, "names": ("red", "green", "blue")}  # LoveDA PNGs are RGB
        info = sources.source_info(header, opts.bands, opts.pairs)
        reader: Any = PairReader(info.band_indices, opts.chip_size, n_classes, layout, storage)
    else:
        assert opts.label is not None
        scenes, header = sources.newest_first(expand_scenes(opts.scenes, storage), storage)
        info = sources.source_info(header, opts.bands, scenes[0])
        refs, grid = sources.plan_scenes(opts.label, opts.chip_size, opts.block, opts.fractions,
                                         opts.seed, storage, opts.min_labelled)
        reader = SceneReader(tuple(scenes), opts.height, grid, info.band_indices, info.dtype,
                             opts.chip_size, n_classes, storage)
    if not refs:
        raise InputError("the sources hold no chip with labelled pixels; check --label and "
                         "--min-labelled")
    palette = opts.palette or (
        LIUZHOU_PALETTE if opts.classes == LIUZHOU_CLASSES
        else tuple((v, v, v) for v in np.linspace(0, 255, n_classes).astype(int).tolist()))
    default_range = (0.0, 255.0) if info.dtype == "uint8" else (0.0, 65535.0)
    schema = ChipSchema(
        num_chips=len(refs), chip_size=opts.chip_size, band_names=info.band_names,
        band_indices=info.band_indices, input_dtype=info.dtype,
        value_range=tuple(opts.value_range or default_range),  # type: ignore[arg-type]
        class_names=tuple(opts.classes), palette=tuple(palette), depth_source=opts.depth_source,
    )
    return refs, reader, schema


def prepare_chips(opts: PrepareOptions, storage: Storage | None = None,
                  log: Any = print) -> PrepareReport:
    """Build (or continue) the chip store ``opts.out``; see the module docstring."""
    storage = storage or Storage()
    start = time.perf_counter()
    refs, reader, schema = plan(opts, storage)
    plan_doc = {"sources": {k: v for k, v in asdict(opts).items()
                            if k not in ("out", "teacher_batch", "teacher_actors", "gpu",
                                         "threads")},
                "chips": [[r.split, r.image, r.label, r.row, r.col] for r in refs]}
    store = ChipStore.create(opts.out, schema, storage)
    plan_uri = join(opts.out, PLAN_FILE)
    if storage.exists(plan_uri):
        if json.loads(storage.read_bytes(plan_uri))["chips"] != plan_doc["chips"]:
            raise InputError(f"chip store {opts.out!r} was prepared from other inputs (its "
                             f"{PLAN_FILE} differs); choose a new --out or delete the old store")
    else:
        storage.write_bytes_atomic(plan_uri, json.dumps(plan_doc).encode())
    done = store.done()
    todo = [r for r in refs if not done[r.index]]
    log(f"prepare: {len(refs)} chips planned, {len(refs) - len(todo)} already done, "
        f"{len(todo)} to cut ({schema.depth_source} depth)")
    if todo:
        if opts.teacher is not None:
            _run_teacher_pipeline(opts, todo, reader, storage)
        else:
            _run_local(opts, todo, reader, store)
    stats = store.finalize_stats()
    group: Any = store.group
    splits = np.asarray(group["split"][:])
    per_split = {name: int(((splits == k) & store.done()).sum())
                 for k, name in enumerate(sources.SPLIT_NAMES)}
    seconds = time.perf_counter() - start
    log(f"prepare: {opts.out} holds {int(store.done().sum())} chips {per_split}; "
        f"mean {np.round(stats['mean'], 2).tolist()} std {np.round(stats['std'], 2).tolist()} "
        f"({seconds:.1f} s)")
    return PrepareReport(opts.out, len(refs), len(todo), len(refs) - len(todo), per_split, stats,
                         seconds)


def height_depth(height: np.ndarray | None) -> np.ndarray | None:
    """(S,S) normalised depth in [0, 1] (NaN invalid) from heights in metres."""
    if height is None:
        return None
    h = torch.from_numpy(np.ascontiguousarray(height, np.float32))[None, None]
    return depth_from_height(h)[0, 0].numpy()


def _run_local(opts: PrepareOptions, todo: list[ChipRef], reader: Any, store: ChipStore) -> None:
    # Readers wait on GDAL/S3 with the GIL released: threads overlap the I/O.
    def cut(ref: ChipRef) -> int:
        px: ChipPixels = reader.read(ref)
        store.write_chip(ref.index, px.image, px.label, height_depth(px.height), ref.split,
                         px.valid)
        return ref.index

    with ThreadPoolExecutor(max(1, opts.threads)) as pool:
        for _ in pool.map(cut, todo):
            pass


# ------------------------------------------------------------------------------------------
# Teacher depth with Ray Data


class TeacherActor:
    """Ray Data actor: loads the Depth Anything teacher once, predicts depth per batch."""

    def __init__(self, uri: str, storage: Storage, rgb: tuple[int, int, int] | None,
                 gpu: bool) -> None:
        from depthseg.io.weights import load_teacher
        from depthseg.model.teacher import TeacherConfig

        device = "cuda" if gpu and torch.cuda.is_available() else "cpu"
        self.teacher = load_teacher(uri, storage, TeacherConfig(rgb_indices=rgb), device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add ``depth`` (B,S,S) float32 to a batch with ``image`` and ``valid``."""
        images = torch.from_numpy(np.ascontiguousarray(batch["image"]).astype(np.int32))
        valid = torch.from_numpy(np.ascontiguousarray(batch["valid"]))
        with torch.inference_mode():
            depth = self.teacher.predict(images, valid)
        batch["depth"] = depth[:, 0].cpu().numpy().astype(np.float32)
        return batch


def _read_batch(batch: dict[str, np.ndarray], reader: Any) -> dict[str, np.ndarray]:
    chips = [reader.read(ChipRef(int(i), int(s), str(im), str(lb), int(r), int(c)))
             for i, s, im, lb, r, c in zip(batch["index"], batch["split"], batch["image"],
                                           batch["label"], batch["row"], batch["col"],
                                           strict=True)]
    return {"index": batch["index"], "split": batch["split"],
            "image": np.stack([c.image for c in chips]),
            "label": np.stack([c.label for c in chips]),
            "valid": np.stack([c.valid for c in chips])}


def _write_batch(batch: dict[str, np.ndarray], uri: str, storage: Storage) -> dict[str, Any]:
    store = ChipStore.open(uri, storage, mode="r+")
    for k, index in enumerate(batch["index"]):
        store.write_chip(int(index), batch["image"][k], batch["label"][k], batch["depth"][k],
                         int(batch["split"][k]), batch["valid"][k])
    return {"index": batch["index"]}


def _run_teacher_pipeline(opts: PrepareOptions, todo: list[ChipRef], reader: Any,
                          storage: Storage) -> None:
    import ray.data

    assert opts.teacher is not None
    rows = [asdict(r) for r in todo]
    bands = len(reader.bands)
    rgb = None if bands == 3 else (0, 1, 2)
    ds: Any = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // 4, 200)))
    ds = ds.map_batches(_read_batch, fn_kwargs={"reader": reader}, batch_size=opts.teacher_batch)
    # The one place the actor-pool arguments of map_batches are spelled (they moved across
    # Ray releases; pyproject pins the range).
    ds = ds.map_batches(TeacherActor, fn_constructor_kwargs={
        "uri": opts.teacher, "storage": storage, "rgb": rgb, "gpu": opts.gpu},
        batch_size=opts.teacher_batch, concurrency=max(1, opts.teacher_actors),
        num_gpus=1 if opts.gpu else 0)
    ds = ds.map_batches(_write_batch, fn_kwargs={"uri": opts.out, "storage": storage},
                        batch_size=opts.teacher_batch)
    written = 0
    for batch in _iter(ds):
        written += len(batch["index"])
    if written != len(todo):
        raise InputError(f"teacher pipeline wrote {written} of {len(todo)} chips; rerun to "
                         "continue")


def _iter(ds: Any) -> Iterator[dict[str, Any]]:
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
