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
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
import yaml

from depthseg.classes import LIUZHOU_CLASSES, LIUZHOU_PALETTE
from depthseg.errors import InputError
from depthseg.io.catalog import Catalog, Scene, open_catalog
from depthseg.io.chips import ChipSchema, ChipStore
from depthseg.io.storage import Storage, join
from depthseg.io.warp import check_resampling
from depthseg.model.depthnorm import depth_from_height
from depthseg.progress import Progress
from depthseg.train import sources
from depthseg.train.sources import (
    ChipPixels,
    ChipRef,
    LabelCoding,
    PairReader,
    SceneReader,
    loveda_coding,
)

PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class PrepareOptions:
    """What to prepare (one of ``pairs`` or ``scenes`` + ``labels``).

    Attributes:
        out: Chip store URI (local folder or ``s3://`` prefix).
        pairs: Folder/prefix of chip pairs (see :mod:`depthseg.train.sources`).
        scenes: Scene files or folders/prefixes of ``*.tif`` (with ``labels``).
        labels: Label rasters (files or folders/prefixes of ``*.tif``, e.g. one per scene)
            whose grids the chips are cut from (with ``scenes``).
        height: DSM/nDSM raster (metres) for depth, instead of a teacher.
        teacher: Depth Anything model folder (Hugging Face format) for depth.
        no_depth: Store no depth (for models without the depth prompter).
        bands: 1-based source bands in model channel order (R, G, B first); default all.
        chip_size: Chip side in pixels.
        block: Side of a split block in chips (scenes only).
        fractions: train/val/test fractions.
        seed: Seed of the split shuffle.
        classes: Class names in label order; default: the label map's, else the 7 LiuZhou
            classes.
        palette: One (r, g, b) per class; default: the label map's colours, the LiuZhou
            palette or distinct colours.
        label_map: YAML file mapping raw label values to class names (others are ignored).
        value_range: (min, max) valid pixel values; default: the dtype's range.
        min_labelled: Smallest labelled fraction of a scene chip to keep it.
        gsd: Ground sample distance of the imagery in metres, for sources without a CRS.
        resampling: How scenes off the label grid are resampled (recorded in the store and
            the model bundle; mapping uses it by default).
        teacher_batch: Chips per teacher call.
        teacher_actors: Size of the teacher actor pool.
        gpu: Give each teacher actor one GPU.
        threads: Reader threads when no teacher runs.
    """

    out: str
    pairs: str | None = None
    scenes: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    height: str | None = None
    teacher: str | None = None
    no_depth: bool = False
    bands: tuple[int, ...] | None = None
    chip_size: int = 512
    block: int = 4
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0
    classes: tuple[str, ...] | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    label_map: str | None = None
    value_range: tuple[float, float] | None = None
    min_labelled: float = 0.01
    gsd: float | None = None
    resampling: str = "nearest"
    teacher_batch: int = 8
    teacher_actors: int = 1
    gpu: bool = False
    threads: int = 4

    def check(self) -> None:
        """Refuse contradictory or missing inputs with one-line messages."""
        if (self.pairs is None) == (not self.scenes):
            raise InputError("give either --pairs FOLDER or --scenes ... --label RASTER (not both, "
                             "not neither)")
        if self.scenes and not self.labels:
            raise InputError("--scenes needs --label RASTER (or a folder of them): the "
                             "land-cover rasters whose grids the chips are cut from")
        if self.pairs is not None and self.labels:
            raise InputError("--label works with --scenes only; chip pairs carry their labels "
                             "(<id>_label.tif)")
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
        if self.gsd is not None and not self.gsd > 0:
            raise InputError(f"--gsd {self.gsd} must be a positive number of metres, e.g. 0.8")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise InputError(f"--classes {list(self.classes)} repeats a name; give each class "
                             "once, in label order")
        check_resampling(self.resampling)

    @property
    def depth_source(self) -> str:
        """``teacher``, ``height`` or ``none``."""
        if self.teacher is not None:
            return "teacher"
        return "height" if self.height is not None else "none"


@dataclass(frozen=True)
class LabelMap:
    """A user's label remap file, read: classes, their colours, raw value -> class id."""

    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None
    table: tuple[tuple[int, int], ...]


def _colour(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str) and re.fullmatch(r"#?[0-9A-Fa-f]{6}", value):
        text = value.lstrip("#")
        return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(v, int) and 0 <= v <= 255 for v in value):
        return int(value[0]), int(value[1]), int(value[2])
    raise InputError(f"{where}: colour {value!r} is not '#RRGGBB' or [r, g, b] (0-255)")


def load_label_map(uri: str, storage: Storage, classes: tuple[str, ...] | None) -> LabelMap:
    """Read a ``--label-map`` YAML file (see docs/TRAINING.md).

    The file maps raw label values to class names; several values may share a class, values
    not listed are ignored (255). An optional ``colors`` mapping gives ``'#RRGGBB'`` per class.
    Class ids follow ``classes`` when given, else the order in which names first appear.
    """
    try:
        document = yaml.safe_load(storage.read_bytes(uri))
    except yaml.YAMLError as err:
        raise InputError(f"--label-map {uri!r} is not YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(document, dict):
        raise InputError(f"--label-map {uri!r} must map raw label values to class names, e.g. "
                         "'1: building'")
    colours = document.pop("colors", None) or {}
    values: list[tuple[int, str]] = []
    for raw, name in document.items():
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise InputError(f"--label-map {uri!r}: key {raw!r} is not an integer label value; "
                             "write e.g. '1: building'")
        if name is None:
            continue  # an explicit 'ignore'
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"--label-map {uri!r}: value {raw} maps to {name!r}; give a class "
                             "name (text), or null to ignore it")
        values.append((raw, name.strip()))
    if not values:
        raise InputError(f"--label-map {uri!r} maps no value to a class")
    names = tuple(dict.fromkeys(n for _, n in values))
    if classes is not None:
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise InputError(f"--label-map {uri!r} names classes {unknown} that are not in "
                             f"--classes {list(classes)}; add them or fix the map")
        names = tuple(classes)
    if not isinstance(colours, dict) or any(k not in names for k in colours):
        raise InputError(f"--label-map {uri!r}: 'colors' must map class names {list(names)} "
                         "to '#RRGGBB'")
    palette = None
    if colours:
        missing = [n for n in names if n not in colours]
        if missing:
            raise InputError(f"--label-map {uri!r}: 'colors' has no colour for {missing}")
        palette = tuple(_colour(colours[n], f"--label-map {uri!r}") for n in names)
    return LabelMap(names, palette, tuple((raw, names.index(n)) for raw, n in values))


def default_palette(n: int) -> tuple[tuple[int, int, int], ...]:
    """``n`` distinct colours (matplotlib's tab20), for classes without a palette."""
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    return tuple(tuple(int(round(255 * v)) for v in cmap(k % 20)[:3])  # type: ignore[misc]
                 for k in range(n))


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


def plan(opts: PrepareOptions, storage: Storage) -> tuple[list[ChipRef], Any, ChipSchema]:
    """Chip refs, their reader and the store schema for ``opts``."""
    opts.check()
    label_map = (load_label_map(opts.label_map, storage, opts.classes) if opts.label_map
                 else None)
    classes = label_map.classes if label_map else (opts.classes or LIUZHOU_CLASSES)
    n_classes = len(classes)
    if opts.pairs is not None:
        refs, layout, header = sources.plan_pairs(opts.pairs, opts.chip_size, opts.fractions,
                                                  opts.seed, storage)
        if layout == "loveda" and header.count == 3 and not any(header.band_names):
            header = replace(header, band_names=("red", "green", "blue"))  # LoveDA PNGs are RGB
        coding = (LabelCoding(n_classes, label_map.table, strict=False) if label_map
                  else loveda_coding(n_classes) if layout == "loveda"
                  else LabelCoding(n_classes))
        info = sources.source_info(header, opts.bands, opts.pairs, opts.gsd)
        reader: Any = PairReader(info.band_indices, opts.chip_size, coding, storage)
    else:
        imagery = open_catalog(list(opts.scenes), storage, resampling=opts.resampling)
        info = sources.source_info(_first_of(imagery), opts.bands, imagery.source, opts.gsd)
        labels = sources.label_rasters(opts.labels, storage)
        coding = (LabelCoding(n_classes, label_map.table, strict=False) if label_map
                  else LabelCoding(n_classes))
        refs = sources.plan_scenes(labels, opts.chip_size, opts.block, opts.fractions, opts.seed,
                                   storage, coding, opts.min_labelled)
        label_gsd = next((g for g in (s.gsd() for s in labels) if g), None)
        info = replace(info, gsd=opts.gsd or label_gsd)
        heights = (open_catalog([opts.height], storage, resampling="bilinear")
                   if opts.height else None)
        reader = SceneReader(imagery, Catalog(labels, " ".join(opts.labels), storage),
                             heights, {s.uri: sources.Grid.of(s) for s in labels},
                             info.band_indices, opts.chip_size, coding)
    if not refs:
        raise InputError("the sources hold no chip with labelled pixels; check --label, its "
                         "no-data value, --label-map and --min-labelled")
    palette = opts.palette or (label_map.palette if label_map and label_map.palette else None) \
        or (LIUZHOU_PALETTE if classes == LIUZHOU_CLASSES else default_palette(n_classes))
    if len(palette) != n_classes:
        raise InputError(f"{len(palette)} palette colours for {n_classes} classes {list(classes)};"
                         " give one colour per class")
    default_range = (0.0, 255.0) if info.dtype == "uint8" else (0.0, 65535.0)
    schema = ChipSchema(
        num_chips=len(refs), chip_size=opts.chip_size, band_names=info.band_names,
        band_indices=info.band_indices, input_dtype=info.dtype,
        value_range=tuple(opts.value_range or default_range),  # type: ignore[arg-type]
        class_names=tuple(classes), palette=tuple(palette), depth_source=opts.depth_source,
        band_descriptions=info.band_descriptions, source_bands=info.source_bands,
        gsd=None if info.gsd is None else round(info.gsd, 6), resampling=opts.resampling,
    )
    return refs, reader, schema


def _first_of(catalog: Catalog) -> Scene:
    """The catalog's band layout, as one scene (checks that the scenes share it)."""
    first = catalog.scenes[0]
    for scene in catalog.scenes:
        if (scene.count, scene.dtype) != (first.count, first.dtype):
            raise InputError(f"scene {scene.uri!r} has {scene.count} {scene.dtype} bands but "
                             f"{first.uri!r} has {first.count} {first.dtype}; use scenes of one "
                             "sensor")
    return replace(first, band_names=catalog.band_names)


def prepare_chips(opts: PrepareOptions, storage: Storage | None = None,
                  log: Any = print, start_ray: Callable[[], None] | None = None,
                  ) -> PrepareReport:
    """Build (or continue) the chip store ``opts.out``; see the module docstring.

    ``start_ray`` is called once the inputs are checked and the chips planned, only when the
    teacher (a Ray Data pipeline) has chips to do: bad input fails before Ray starts.
    """
    storage = storage or Storage()
    start = time.perf_counter()
    if opts.teacher is not None and not storage.exists(join(opts.teacher, "config.json")):
        raise InputError(f"--teacher {opts.teacher!r} has no config.json; expected a Hugging "
                         "Face Depth Anything folder (config.json + model.safetensors)")
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
    # A bar on a terminal when logging to stdout; otherwise progress lines through ``log``.
    progress_log = None if log is print else log
    log(f"prepare: {len(refs)} chips planned, {len(refs) - len(todo)} already done, "
        f"{len(todo)} to cut ({schema.depth_source} depth)")
    if todo:
        if opts.teacher is not None:
            if start_ray is not None:
                start_ray()
            _run_teacher_pipeline(opts, todo, reader, storage, progress_log)
        else:
            _run_local(opts, todo, reader, store, progress_log)
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


def _run_local(opts: PrepareOptions, todo: list[ChipRef], reader: Any, store: ChipStore,
               progress_log: Callable[[str], None] | None = None) -> None:
    # Readers wait on GDAL/S3 with the GIL released: threads overlap the I/O.
    def cut(ref: ChipRef) -> int:
        px: ChipPixels = reader.read(ref)
        store.write_chip(ref.index, px.image, px.label, height_depth(px.height), ref.split,
                         px.valid)
        return ref.index

    with ThreadPoolExecutor(max(1, opts.threads)) as pool, \
            Progress(len(todo), "prepare", "chips", log=progress_log) as progress:
        for _ in pool.map(cut, todo):
            progress.update(1)


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
                          storage: Storage,
                          progress_log: Callable[[str], None] | None = None) -> None:
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
    with Progress(len(todo), "prepare (teacher depth)", "chips", log=progress_log) as progress:
        for batch in _iter(ds):
            written += len(batch["index"])
            progress.update(len(batch["index"]))
    if written != len(todo):
        raise InputError(f"teacher pipeline wrote {written} of {len(todo)} chips; rerun to "
                         "continue")


def _iter(ds: Any) -> Iterator[dict[str, Any]]:
    yield from ds.iter_batches(batch_size=None, batch_format="numpy")
