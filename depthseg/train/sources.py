"""Where training chips come from: chip-pair folders, or scenes cut on label rasters' grids.

Two sources, one output: a list of :class:`ChipRef` (what to cut, which split) and a reader
that turns one ref into pixels (:class:`ChipPixels`). Every pixel is read through
:mod:`depthseg.io.catalog` / :mod:`depthseg.io.warp`, the path mapping reads through, so a
chip and a mapped tile of the same place hold the same pixels.

**Chip pairs** (:func:`plan_pairs`), found recursively under a folder or ``s3://`` prefix:

* ``<id>_img.tif`` + ``<id>_label.tif`` (same folder): labels are class ids, 255 = ignore;
* LoveDA: ``.../images_png/<n>.png`` + ``.../masks_png/<n>.png``: masks hold class + 1 and
  0 = no data (the LoveDA encoding), so label = mask - 1 and 0 becomes 255.

A pair larger than the chip size is cut into whole, non-overlapping chips (edge remainders
are dropped). A pair whose path has a folder named ``train``, ``val`` or ``test`` (any case,
as LoveDA's ``Train/``, ``Val/``) keeps that split; the others are assigned by a seeded
shuffle of the files (all chips of one file share its split).

**Scenes + label rasters** (:func:`plan_scenes`): each label raster's grid is cut into
``chip_size`` chips (whole chips only, never overlapping); blocks of ``k x k`` chips of every
label raster are pooled, shuffled with a seed and dealt to train/val/test by the split
fractions, so the splits are spatially disjoint. Scenes may overlap: each chip is a
first-valid composite of the scenes, newest first (by their ``datetime`` tag when every scene
has one, else in the given order), read onto the label grid. Pixels outside every scene are
invalid (label 255), whatever the scene order and whether or not a scene declares no-data.

Labels: a label raster's own no-data value is no label (255); a :class:`LabelCoding` maps raw
values to class ids (identity by default, LoveDA's ``value - 1``, or a user's remap file).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

import numpy as np
from affine import Affine

from depthseg.errors import InputError
from depthseg.io.catalog import Catalog, Scene, describe_scene, describe_scenes
from depthseg.io.storage import Storage, scheme_of
from depthseg.io.warp import read_pixels

SPLIT_NAMES = ("train", "val", "test")
IGNORE = 255
_PAIR_IMAGE = re.compile(r"^(?P<id>.+)_img\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class ChipRef:
    """One chip to cut.

    Attributes:
        index: Position in the chip store.
        split: 0 train, 1 val, 2 test.
        image: Image file (pairs) or ``""`` (scenes: the reader holds them).
        label: Label file (pairs) or the label raster whose grid the chip is on (scenes).
        row: First row of the chip in ``label``'s pixel grid.
        col: First column.
    """

    index: int
    split: int
    image: str
    label: str
    row: int
    col: int


@dataclass(frozen=True)
class ChipPixels:
    """Pixels of one chip: image (C,S,S), label (S,S) uint8, valid (S,S), height or None."""

    image: np.ndarray
    label: np.ndarray
    valid: np.ndarray
    height: np.ndarray | None


@dataclass(frozen=True)
class SourceInfo:
    """Facts about the source imagery that go into the chip store and the model bundle.

    Attributes:
        band_names: Name of each chosen band (its description, else ``band<i>``).
        band_indices: 1-based bands of the source imagery, in model channel order.
        dtype: Pixel dtype.
        band_descriptions: The source's descriptions of the chosen bands (``""`` where none).
        source_bands: Band count of the source imagery.
        gsd: Ground sample distance in metres, or None when the source has no CRS.
    """

    band_names: tuple[str, ...]
    band_indices: tuple[int, ...]
    dtype: str
    band_descriptions: tuple[str, ...] = ()
    source_bands: int = 0
    gsd: float | None = None


@dataclass(frozen=True)
class LabelCoding:
    """How raw label values become class ids (255 = ignore).

    Attributes:
        num_classes: Number of classes.
        table: ``(raw value, class id)`` pairs, or ``()`` for the identity (raw values are
            class ids, 255 = ignore).
        strict: Refuse raw values the table does not list (LoveDA); otherwise they are
            ignored (a user's remap file lists only the values it wants).
    """

    num_classes: int
    table: tuple[tuple[int, int], ...] = ()
    strict: bool = True

    def apply(self, raw: np.ndarray, valid: np.ndarray, where: str) -> np.ndarray:
        """(S,S) uint8 class ids, 255 where ``valid`` is false or the value is not a class."""
        raw = np.asarray(raw)
        out = np.full(raw.shape, IGNORE, np.uint8)
        if not self.table:
            bad = valid & (raw != IGNORE) & ((raw < 0) | (raw >= self.num_classes))
            if bad.any():
                raise InputError(f"label {where} holds value {raw[bad].max()}, expected class "
                                 f"ids 0..{self.num_classes - 1}, 255 (ignore) or the raster's "
                                 "no-data; recode the labels, pass the right --classes, or map "
                                 "raw values with --label-map")
            keep = valid & (raw != IGNORE)
            out[keep] = raw[keep].astype(np.uint8)
            return out
        listed = np.zeros(raw.shape, bool)
        for value, class_id in self.table:
            hit = valid & (raw == value)
            out[hit] = class_id
            listed |= hit
        if self.strict and (valid & ~listed).any():
            raise InputError(f"label {where} holds value {raw[valid & ~listed].max()}, which "
                             f"is not one of the {self.num_classes} classes' codes "
                             f"{[v for v, _ in self.table]}; pass the right --classes")
        return out


def loveda_coding(num_classes: int) -> LabelCoding:
    """LoveDA masks: class + 1, 0 = no data."""
    return LabelCoding(num_classes, ((0, IGNORE),) + tuple(
        (v + 1, v) for v in range(num_classes)), strict=True)


# ------------------------------------------------------------------------------------------
# Planning


def split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """How many of ``n`` items go to train/val/test; every non-zero fraction gets >= 1 item."""
    total = sum(fractions)
    if any(f < 0 for f in fractions) or total <= 0:
        raise InputError(f"split fractions {fractions} must be >= 0 with a positive sum, e.g. "
                         "0.7 0.15 0.15")
    wanted = [f / total * n for f in fractions]
    counts = [int(round(w)) for w in wanted]
    nonzero = [i for i, f in enumerate(fractions) if f > 0]
    if n >= len(nonzero):
        for i in nonzero:
            if counts[i] == 0:
                counts[i] = 1
    while sum(counts) > n:
        counts[int(np.argmax(counts))] -= 1
    while sum(counts) < n:
        counts[int(np.argmax(np.array(wanted) - counts))] += 1
    return counts[0], counts[1], counts[2]


def deal_splits(n: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """(n,) split ids: a seeded permutation of n items dealt by :func:`split_counts`."""
    counts = split_counts(n, fractions)
    order = np.random.default_rng(seed).permutation(n)
    splits = np.empty(n, np.uint8)
    start = 0
    for split, count in enumerate(counts):
        splits[order[start:start + count]] = split
        start += count
    return splits


def _listing(root: str, storage: Storage) -> list[str]:
    fs, path = storage.fs(root)
    if not fs.exists(path):
        raise InputError(f"chip folder {root!r} does not exist; give the folder or prefix that "
                         "holds the chip pairs")
    files = sorted(fs.find(path))
    if scheme_of(root) == "s3":
        return [f"s3://{f}" for f in files]
    return files


def _split_from_path(path: str) -> int | None:
    for part in path.replace("\\", "/").split("/")[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES.index(part.lower())
    return None


def find_pairs(root: str, storage: Storage) -> tuple[list[tuple[str, str]], str]:
    """(image, label) files under ``root`` and the layout (``pairs`` or ``loveda``)."""
    files = _listing(root, storage)
    present = set(files)
    pairs: list[tuple[str, str]] = []
    loveda: list[tuple[str, str]] = []
    for f in files:
        folder, name = posixpath.split(f)
        match = _PAIR_IMAGE.match(name)
        if match:
            label = posixpath.join(folder, f"{match['id']}_label{name[match.end('id') + 4:]}")
            if label not in present:
                raise InputError(f"image {f!r} has no label {label!r}; every <id>_img.tif needs "
                                 "an <id>_label.tif next to it")
            pairs.append((f, label))
        elif posixpath.basename(folder) == "images_png" and name.lower().endswith(".png"):
            mask = posixpath.join(posixpath.dirname(folder), "masks_png", name)
            if mask not in present:
                raise InputError(f"LoveDA image {f!r} has no mask {mask!r}; every "
                                 "images_png/<n>.png needs masks_png/<n>.png")
            loveda.append((f, mask))
    if pairs and loveda:
        raise InputError(f"{root!r} mixes *_img.tif pairs and LoveDA images_png/; prepare them "
                         "separately")
    if not pairs and not loveda:
        raise InputError(f"no chip pairs under {root!r}; expected <id>_img.tif + <id>_label.tif "
                         "or LoveDA images_png/ + masks_png/ (see docs/TRAINING.md)")
    return (loveda, "loveda") if loveda else (pairs, "pairs")


def source_info(scene: Scene, bands: tuple[int, ...] | None, uri: str,
                gsd: float | None = None) -> SourceInfo:
    """Band choice, dtype and ground resolution of the source imagery, checked."""
    count = scene.count
    chosen = tuple(bands) if bands else tuple(range(1, count + 1))
    if any(b < 1 or b > count for b in chosen):
        raise InputError(f"--bands {' '.join(map(str, chosen))} do not exist in {uri!r}, which "
                         f"has {count} bands; choose 1-based bands between 1 and {count}")
    if scene.dtype not in ("uint8", "uint16"):
        raise InputError(f"imagery {uri!r} has dtype {scene.dtype}; expected uint8 or uint16 "
                         "digital numbers (convert float reflectance to integers first, e.g. "
                         "gdal_translate -ot UInt16 -scale 0 1 0 10000)")
    described = scene.band_names or ("",) * count
    descriptions = tuple(described[b - 1] for b in chosen)
    names = tuple(d or f"band{b}" for d, b in zip(descriptions, chosen, strict=True))
    return SourceInfo(names, chosen, scene.dtype, descriptions, count,
                      gsd if gsd is not None else scene.gsd())


def plan_pairs(
    root: str,
    chip_size: int,
    fractions: tuple[float, float, float],
    seed: int,
    storage: Storage,
) -> tuple[list[ChipRef], str, Scene]:
    """Chips of every pair under ``root``: refs, the layout and the first image's header."""
    pairs, layout = find_pairs(root, storage)
    dealt = deal_splits(len(pairs), fractions, seed)
    headers = describe_scenes([u for pair in pairs for u in pair], storage, require_crs=False)
    first = headers[0]
    refs: list[ChipRef] = []
    for k, (image, _) in enumerate(pairs):
        head, lab = headers[2 * k], headers[2 * k + 1]
        if (head.height, head.width) != (lab.height, lab.width):
            raise InputError(f"image {image!r} is {head.height}x{head.width} px but its label "
                             f"is {lab.height}x{lab.width}; they must be the same size")
        if head.height < chip_size or head.width < chip_size:
            raise InputError(f"image {image!r} is {head.height}x{head.width} px, smaller than "
                             f"the chip size {chip_size}; pass a smaller --chip-size")
        if (head.count, head.dtype) != (first.count, first.dtype):
            raise InputError(f"image {image!r} has {head.count} {head.dtype} bands but the first "
                             f"has {first.count} {first.dtype}; use one kind of image")
        split = _split_from_path(image)
        split = int(dealt[k]) if split is None else split
        for r in range(head.height // chip_size):
            for c in range(head.width // chip_size):
                refs.append(ChipRef(len(refs), split, image, lab.uri, r * chip_size,
                                    c * chip_size))
    return refs, layout, first


def block_splits(
    chip_rows: int, chip_cols: int, block: int, fractions: tuple[float, float, float], seed: int
) -> np.ndarray:
    """(chip_rows, chip_cols) split ids: blocks of ``block`` x ``block`` chips share a split."""
    if block < 1:
        raise InputError(f"--block {block} must be >= 1 chips")
    block_rows, block_cols = -(-chip_rows // block), -(-chip_cols // block)
    per_block = deal_splits(block_rows * block_cols, fractions, seed).reshape(block_rows,
                                                                               block_cols)
    rows, cols = np.arange(chip_rows) // block, np.arange(chip_cols) // block
    return per_block[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class Grid:
    """A label raster's pixel grid: where its chips are cut."""

    crs: str
    transform: tuple[float, ...]
    height: int
    width: int

    @classmethod
    def of(cls, scene: Scene) -> Grid:
        """The pixel grid of a raster."""
        return cls(scene.crs, scene.transform, scene.height, scene.width)

    def window_transform(self, row: int, col: int) -> Affine:
        """Affine of the window whose top-left pixel is (row, col)."""
        return Affine(*self.transform[:6]) * Affine.translation(col, row)


def label_rasters(labels: tuple[str, ...], storage: Storage) -> list[Scene]:
    """Headers of the label rasters (files, folders or prefixes of ``*.tif``)."""
    from depthseg.io.catalog import _rasters_at

    uris = [u for part in labels for u in _rasters_at(part, storage)]
    scenes = describe_scenes(uris, storage)
    for scene in scenes:
        if scene.count != 1 or not np.issubdtype(np.dtype(scene.dtype), np.integer):
            raise InputError(f"label raster {scene.uri!r} has {scene.count} {scene.dtype} bands; "
                             "expected one band of integer class codes")
    gsds = [g for g in (s.gsd() for s in scenes) if g]
    if gsds and max(gsds) > 1.25 * min(gsds):
        raise InputError(f"label rasters have pixel sizes from {min(gsds):g} to {max(gsds):g} m; "
                         "chips of one store must share one ground resolution: resample the "
                         "labels to one resolution (gdalwarp -tr R R -r mode)")
    return scenes


def plan_scenes(
    labels: list[Scene],
    chip_size: int,
    block: int,
    fractions: tuple[float, float, float],
    seed: int,
    storage: Storage,
    coding: LabelCoding,
    min_labelled: float = 0.01,
) -> list[ChipRef]:
    """Chips on the label rasters' grids with at least ``min_labelled`` labelled pixels."""
    if block < 1:
        raise InputError(f"--block {block} must be >= 1 chips")
    candidates: list[tuple[int, int, int, int]] = []  # (raster, block id, row, col)
    blocks = 0
    for k, label in enumerate(labels):
        rows, cols = label.height // chip_size, label.width // chip_size
        if rows == 0 or cols == 0:
            raise InputError(f"label raster {label.uri!r} is {label.height}x{label.width} px, "
                             f"smaller than one chip of {chip_size}; pass a smaller --chip-size")
        block_cols = -(-cols // block)
        for r in range(rows):
            # One read per row of chips (not per chip, not the whole raster).
            raw, valid = read_pixels(label, storage, r * chip_size, 0, chip_size,
                                     cols * chip_size)
            classes = coding.apply(raw[0], valid, f"{label.uri!r} at row {r * chip_size}")
            for c in range(cols):
                labelled = float((classes[:, c * chip_size:(c + 1) * chip_size] != IGNORE)
                                 .mean())
                if labelled >= min_labelled and labelled > 0:
                    candidates.append((k, blocks + (r // block) * block_cols + c // block,
                                       r * chip_size, c * chip_size))
        blocks += -(-rows // block) * block_cols
    splits = deal_splits(blocks, fractions, seed)
    return [ChipRef(i, int(splits[b]), "", labels[k].uri, row, col)
            for i, (k, b, row, col) in enumerate(candidates)]


# ------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class PairReader:
    """Reads chips of chip pairs (picklable: travels to Ray workers)."""

    bands: tuple[int, ...]
    chip_size: int
    coding: LabelCoding
    storage: Storage
    headers: dict[str, Scene] = field(default_factory=dict)

    def _scene(self, uri: str) -> Scene:
        return self.headers.get(uri) or describe_scene(uri, self.storage, require_crs=False)

    def read(self, ref: ChipRef) -> ChipPixels:
        """Pixels of one chip; label pixels without image data become 255."""
        s = self.chip_size
        image, valid = read_pixels(self._scene(ref.image), self.storage, ref.row, ref.col, s, s,
                                   self.bands)
        raw, labelled = read_pixels(self._scene(ref.label), self.storage, ref.row, ref.col, s, s)
        label = self.coding.apply(raw[0], labelled & valid, repr(ref.label))
        return ChipPixels(image, label, valid, None)


@dataclass(frozen=True)
class SceneReader:
    """Reads chips composited from scenes on the label rasters' grids (picklable).

    Attributes:
        imagery: The scenes (composited first-valid, resampled as the catalog says).
        labels: The label rasters (read nearest).
        heights: DSM/nDSM rasters in metres (read bilinear), or None.
        grids: The pixel grid of each label raster, by URI.
        bands: 1-based imagery bands in model channel order.
        chip_size: Chip side in pixels.
        coding: Raw label values -> class ids.
    """

    imagery: Catalog
    labels: Catalog
    heights: Catalog | None
    grids: dict[str, Grid]
    bands: tuple[int, ...]
    chip_size: int
    coding: LabelCoding

    def read(self, ref: ChipRef) -> ChipPixels:
        """First-valid composite of the scenes, the label, and heights (NaN where missing)."""
        s, grid = self.chip_size, self.grids[ref.label]
        transform = grid.window_transform(ref.row, ref.col)
        image, valid = self.imagery.read(grid.crs, transform, s, s, self.bands)
        raw, labelled = self.labels.read(grid.crs, transform, s, s, (1,))
        label = self.coding.apply(raw[0], labelled & valid,
                                  f"{ref.label!r} at row {ref.row} col {ref.col}")
        height = None
        if self.heights is not None:
            h, ok = self.heights.read(grid.crs, transform, s, s, (1,))
            height = np.where(ok & valid, h[0].astype(np.float32), np.nan)
        return ChipPixels(image, label, valid, height)
