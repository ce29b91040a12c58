"""Where training chips come from: chip-pair folders, or scenes cut on a label raster's grid.

Two sources, one output: a list of :class:`ChipRef` (what to cut, which split) and a reader
that turns one ref into pixels (:class:`ChipPixels`).

**Chip pairs** (:func:`plan_pairs`), found recursively under a folder or ``s3://`` prefix:

* ``<id>_img.tif`` + ``<id>_label.tif`` (same folder): labels are class ids, 255 = ignore;
* LoveDA: ``.../images_png/<n>.png`` + ``.../masks_png/<n>.png``: masks hold class + 1 and
  0 = no data (the LoveDA encoding), so label = mask - 1 and 0 becomes 255.

A pair larger than the chip size is cut into whole, non-overlapping chips (edge remainders
are dropped). A pair whose path has a folder named ``train``, ``val`` or ``test`` (any case,
as LoveDA's ``Train/``, ``Val/``) keeps that split; the others are assigned by a seeded
shuffle of the files (all chips of one file share its split).

**Scenes + label raster** (:func:`plan_scenes`): the label raster's grid is cut into
``chip_size`` chips (whole chips only, never overlapping); blocks of ``k x k`` chips are
shuffled with a seed and dealt to train/val/test by the split fractions, so the splits are
spatially disjoint. Scenes may overlap: each chip is a first-valid composite of the scenes,
newest first (by their ``datetime`` tag when every scene has one, else in the given order).
A scene or height raster on another grid is warped onto the label grid (``WarpedVRT``).
"""

from __future__ import annotations

import posixpath
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from depthseg.errors import InputError, StorageError
from depthseg.io.storage import Storage, scheme_of

SPLIT_NAMES = ("train", "val", "test")
_PAIR_IMAGE = re.compile(r"^(?P<id>.+)_img\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class ChipRef:
    """One chip to cut.

    Attributes:
        index: Position in the chip store.
        split: 0 train, 1 val, 2 test.
        image: Image file (pairs) or ``""`` (scenes: the reader holds them).
        label: Label file (pairs) or the label raster.
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
    """Facts about the source imagery that go into the chip store."""

    band_names: tuple[str, ...]
    band_indices: tuple[int, ...]
    dtype: str


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


def _header(uri: str, storage: Storage) -> dict[str, Any]:
    with storage.gdal_env(), warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        try:
            src = rasterio.open(storage.gdal_path(uri))
        except rasterio.errors.RasterioIOError as err:
            raise StorageError(f"cannot open raster {uri!r} ({err}); check the path") from err
        with src:
            tags = src.tags()
            return {
                "height": src.height, "width": src.width, "count": src.count,
                "dtype": src.dtypes[0], "crs": src.crs, "transform": src.transform,
                "names": tuple(d or "" for d in src.descriptions),
                "datetime": tags.get("datetime") or tags.get("TIFFTAG_DATETIME"),
            }


def source_info(header: dict[str, Any], bands: tuple[int, ...] | None, uri: str) -> SourceInfo:
    """Band choice and dtype of a source raster, checked."""
    count = header["count"]
    chosen = tuple(bands) if bands else tuple(range(1, count + 1))
    if any(b < 1 or b > count for b in chosen):
        raise InputError(f"--bands {' '.join(map(str, chosen))} do not exist in {uri!r}, which "
                         f"has {count} bands; choose 1-based bands between 1 and {count}")
    if header["dtype"] not in ("uint8", "uint16"):
        raise InputError(f"imagery {uri!r} has dtype {header['dtype']}; expected uint8 or uint16 "
                         "digital numbers")
    names = tuple(header["names"][b - 1] or f"band{b}" for b in chosen)
    return SourceInfo(names, chosen, header["dtype"])


def plan_pairs(
    root: str,
    chip_size: int,
    fractions: tuple[float, float, float],
    seed: int,
    storage: Storage,
) -> tuple[list[ChipRef], str, dict[str, Any]]:
    """Chips of every pair under ``root``: refs, the layout and the first image's header."""
    pairs, layout = find_pairs(root, storage)
    dealt = deal_splits(len(pairs), fractions, seed)
    refs: list[ChipRef] = []
    first: dict[str, Any] = {}
    for k, (image, label) in enumerate(pairs):
        head = _header(image, storage)
        lab = _header(label, storage)
        first = first or head
        if (head["height"], head["width"]) != (lab["height"], lab["width"]):
            raise InputError(f"image {image!r} is {head['height']}x{head['width']} px but its "
                             f"label is {lab['height']}x{lab['width']}; they must be the same "
                             "size")
        if head["height"] < chip_size or head["width"] < chip_size:
            raise InputError(f"image {image!r} is {head['height']}x{head['width']} px, smaller "
                             f"than the chip size {chip_size}; pass a smaller --chip-size")
        if head["count"] != first["count"] or head["dtype"] != first["dtype"]:
            raise InputError(f"image {image!r} has {head['count']} {head['dtype']} bands but the "
                             f"first has {first['count']} {first['dtype']}; use one kind of image")
        split = _split_from_path(image)
        split = int(dealt[k]) if split is None else split
        for r in range(head["height"] // chip_size):
            for c in range(head["width"] // chip_size):
                refs.append(ChipRef(len(refs), split, image, label, r * chip_size, c * chip_size))
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
    """The label raster's pixel grid."""

    crs: CRS
    transform: Affine
    height: int
    width: int


def plan_scenes(
    label: str,
    chip_size: int,
    block: int,
    fractions: tuple[float, float, float],
    seed: int,
    storage: Storage,
    min_labelled: float = 0.01,
) -> tuple[list[ChipRef], Grid]:
    """Chips on the label raster's grid with at least ``min_labelled`` labelled pixels."""
    head = _header(label, storage)
    grid = Grid(head["crs"], head["transform"], head["height"], head["width"])
    rows, cols = grid.height // chip_size, grid.width // chip_size
    if rows == 0 or cols == 0:
        raise InputError(f"label raster {label!r} is {grid.height}x{grid.width} px, smaller than "
                         f"one chip of {chip_size}; pass a smaller --chip-size")
    splits = block_splits(rows, cols, block, fractions, seed)
    refs: list[ChipRef] = []
    with storage.gdal_env(), rasterio.open(storage.gdal_path(label)) as src:
        for r in range(rows):
            for c in range(cols):
                window = Window(c * chip_size, r * chip_size, chip_size, chip_size)
                labelled = float((src.read(1, window=window) != 255).mean())
                if labelled >= min_labelled and labelled > 0:
                    refs.append(ChipRef(len(refs), int(splits[r, c]), "", label,
                                        r * chip_size, c * chip_size))
    return refs, grid


# ------------------------------------------------------------------------------------------
# Reading


def check_labels(label: np.ndarray, num_classes: int, where: str) -> None:
    """Refuse label values that are neither a class id nor 255 (ignore)."""
    bad = label[(label >= num_classes) & (label != 255)]
    if bad.size:
        raise InputError(f"label {where} holds value {int(bad.max())}, expected class ids "
                         f"0..{num_classes - 1} or 255 (ignore); recode the labels or pass the "
                         "right --classes")


@dataclass(frozen=True)
class PairReader:
    """Reads chips of chip pairs (picklable: travels to Ray workers)."""

    bands: tuple[int, ...]
    chip_size: int
    num_classes: int
    layout: str
    storage: Storage

    def read(self, ref: ChipRef) -> ChipPixels:
        """Pixels of one chip; label pixels without image data become 255."""
        s = self.chip_size
        with self.storage.gdal_env(), warnings.catch_warnings():
            # PNG chips (LoveDA) carry no georeferencing, and need none.
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(self.storage.gdal_path(ref.image)) as src:
                window = Window(ref.col, ref.row, s, s)
                image = src.read(list(self.bands), window=window)
                valid = src.dataset_mask(window=window) > 0
            with rasterio.open(self.storage.gdal_path(ref.label)) as src:
                label = src.read(1, window=Window(ref.col, ref.row, s, s))
        if self.layout == "loveda":
            check_labels(np.where(label == 0, 255, label - 1), self.num_classes, ref.label)
            label = np.where(label == 0, 255, label.astype(np.int16) - 1).astype(np.uint8)
        else:
            check_labels(label, self.num_classes, repr(ref.label))
        label = np.where(valid, label, 255).astype(np.uint8)
        return ChipPixels(image, label, valid, None)


@dataclass(frozen=True)
class SceneReader:
    """Reads chips composited from scenes on the label grid (picklable)."""

    scenes: tuple[str, ...]
    height: str | None
    grid: Grid
    bands: tuple[int, ...]
    dtype: str
    chip_size: int
    num_classes: int
    storage: Storage

    def read(self, ref: ChipRef) -> ChipPixels:
        """First-valid composite of the scenes, the label, and heights (NaN where missing)."""
        s, c = self.chip_size, len(self.bands)
        image = np.zeros((c, s, s), self.dtype)
        valid = np.zeros((s, s), bool)
        with self.storage.gdal_env():
            for scene in self.scenes:
                pixels, ok = read_on_grid(scene, self.grid, ref.row, ref.col, s, self.bands,
                                          self.storage, Resampling.bilinear)
                take = ok & ~valid
                image[:, take] = pixels[:, take]
                valid |= take
                if valid.all():
                    break
            with rasterio.open(self.storage.gdal_path(ref.label)) as src:
                label = src.read(1, window=Window(ref.col, ref.row, s, s))
            height = None
            if self.height is not None:
                h, ok = read_on_grid(self.height, self.grid, ref.row, ref.col, s, (1,),
                                     self.storage, Resampling.bilinear)
                height = np.where(ok & valid, h[0].astype(np.float32), np.nan)
        check_labels(label, self.num_classes, f"{ref.label!r} at row {ref.row} col {ref.col}")
        label = np.where(valid, label, 255).astype(np.uint8)
        return ChipPixels(image, label, valid, height)


def read_on_grid(
    uri: str,
    grid: Grid,
    row: int,
    col: int,
    size: int,
    bands: tuple[int, ...],
    storage: Storage,
    resampling: Resampling,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window of ``grid`` read from ``uri`` (inside ``gdal_env``).

    Rasters on the same grid (same CRS and pixel size, whole-pixel offset) are read directly;
    others through a ``WarpedVRT`` onto ``grid``.
    """
    with rasterio.open(storage.gdal_path(uri)) as src:
        offset = _aligned_offset(src.crs, src.transform, grid)
        if offset is not None:
            window = Window(col - offset[1], row - offset[0], size, size)
            pixels = src.read(list(bands), window=window, boundless=True, fill_value=0)
            mask = src.dataset_mask(window=window, boundless=True) > 0
            return pixels, mask
        with WarpedVRT(src, crs=grid.crs, transform=grid.transform, width=grid.width,
                       height=grid.height, resampling=resampling) as vrt:
            window = Window(col, row, size, size)
            return vrt.read(list(bands), window=window), vrt.dataset_mask(window=window) > 0


def _aligned_offset(crs: CRS, transform: Affine, grid: Grid) -> tuple[int, int] | None:
    """(row, col) of the raster's origin in ``grid`` pixels if it shares the grid, else None."""
    if crs != grid.crs or not np.allclose(
        [transform.a, transform.b, transform.d, transform.e],
        [grid.transform.a, grid.transform.b, grid.transform.d, grid.transform.e],
    ):
        return None
    col, row = ~grid.transform * (transform.c, transform.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def newest_first(scenes: list[str], storage: Storage) -> tuple[list[str], dict[str, Any]]:
    """Scenes ordered newest first when all carry a ``datetime`` tag; and the first header."""
    headers = [_header(s, storage) for s in scenes]
    first = headers[0]
    for s, h in zip(scenes, headers, strict=True):
        if (h["count"], h["dtype"]) != (first["count"], first["dtype"]):
            raise InputError(f"scene {s!r} has {h['count']} {h['dtype']} bands but {scenes[0]!r} "
                             f"has {first['count']} {first['dtype']}; use scenes of one sensor")
    if all(h["datetime"] for h in headers):
        order = sorted(range(len(scenes)), key=lambda i: str(headers[i]["datetime"]),
                       reverse=True)
        scenes = [scenes[i] for i in order]
    return scenes, first
