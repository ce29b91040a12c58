"""The chip store: training chips (image, label, teacher depth, split) in one Zarr group.

Layout of ``<uri>`` (a local folder or ``s3://`` prefix; Zarr format 3)::

    image       (N, C, S, S) uint8|uint16   chunks (1, C, S, S)   0 where no data
    label       (N, S, S)    uint8          chunks (1, S, S)      255 = ignore / no data
    depth       (N, S, S)    float16        chunks (1, S, S)      normalised [0, 1], NaN invalid
    split       (N,)         uint8          chunks (1,)           0 train, 1 val, 2 test
    done        (N,)         bool           chunks (1,)           written after the chip's data
    band_sum    (N, C)       float64        chunks (1, C)         per-chip sums over valid pixels
    band_sumsq  (N, C)       float64        chunks (1, C)
    band_count  (N,)         int64          chunks (1,)           valid pixels of the chip
    attrs: format, version, band_names, band_indices, input_dtype, value_range, chip_size,
           class_names, palette, depth_source, stats {mean, std} (once finalised)

One chip = one chunk of every array, so parallel writers never share a chunk, and ``done[i]``
is set only after chip ``i``'s image, label, depth and statistics are in place: a rerun
continues with the chips that are not done. Band statistics are sums per chip, so they are
exact whatever order chips were written in, and exclude no-data pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zarr

from depthseg.errors import InputError
from depthseg.io.storage import Storage, open_zarr_store

CHIPS_FORMAT = "depthseg-chips"
CHIPS_VERSION = 1
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ChipSchema:
    """What every chip of a store looks like.

    Attributes:
        num_chips: N.
        chip_size: S (chips are square).
        band_names: One name per stored band (C of them), in model channel order.
        band_indices: 1-based bands of the source imagery the stored bands came from.
        input_dtype: ``uint8`` or ``uint16``.
        value_range: (min, max) valid pixel values.
        class_names: Class names in label order.
        palette: One (r, g, b) per class.
        depth_source: ``teacher``, ``height`` or ``none``.
        band_descriptions: The source imagery's descriptions of the stored bands (``""``
            where it had none): what mapping compares the imagery's descriptions with.
        source_bands: Band count of the source imagery.
        gsd: Ground sample distance of the chips in metres (None when unknown).
        resampling: How source scenes off the label grid were resampled.
    """

    num_chips: int
    chip_size: int
    band_names: tuple[str, ...]
    band_indices: tuple[int, ...]
    input_dtype: str
    value_range: tuple[float, float]
    class_names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] = field(default=())
    depth_source: str = "teacher"
    band_descriptions: tuple[str, ...] = ()
    source_bands: int = 0
    gsd: float | None = None
    resampling: str = "nearest"

    def __post_init__(self) -> None:
        if self.num_chips < 1:
            raise InputError(
                f"a chip store needs at least one chip, got num_chips={self.num_chips}"
            )
        if self.input_dtype not in ("uint8", "uint16"):
            raise InputError(
                f"chip input_dtype {self.input_dtype!r} is not supported; expected uint8 or uint16"
            )
        if len(self.band_names) != len(self.band_indices):
            raise InputError(
                f"{len(self.band_names)} band names for {len(self.band_indices)} band indices; "
                "give one name per band"
            )
        if self.depth_source not in ("teacher", "height", "none"):
            raise InputError(
                f"depth_source {self.depth_source!r} is not one of teacher, height, none"
            )

    @property
    def bands(self) -> int:
        """C."""
        return len(self.band_names)


class ChipStore:
    """Read and write a chip store (see the module docstring for the layout)."""

    def __init__(self, group: zarr.Group, uri: str) -> None:
        self.group = group
        self.uri = uri
        attrs: dict[str, Any] = dict(group.attrs)  # JSON values, typed loosely by zarr
        if attrs.get("format") != CHIPS_FORMAT:
            raise InputError(
                f"{uri!r} is not a chip store (format {attrs.get('format')!r}); create one with "
                "jobs/prepare.py"
            )
        self.schema = ChipSchema(
            num_chips=int(self.array("done").shape[0]),
            chip_size=int(attrs["chip_size"]),
            band_names=tuple(attrs["band_names"]),
            band_indices=tuple(int(b) for b in attrs["band_indices"]),
            input_dtype=str(attrs["input_dtype"]),
            value_range=(float(attrs["value_range"][0]), float(attrs["value_range"][1])),
            class_names=tuple(attrs["class_names"]),
            palette=tuple((int(c[0]), int(c[1]), int(c[2])) for c in attrs.get("palette", [])),
            depth_source=str(attrs.get("depth_source", "teacher")),
            band_descriptions=tuple(str(d) for d in attrs.get("band_descriptions", ())),
            source_bands=int(attrs.get("source_bands", 0)),
            gsd=None if attrs.get("gsd") is None else float(attrs["gsd"]),
            resampling=str(attrs.get("resampling", "nearest")),
        )

    @classmethod
    def create(
        cls, uri: str, schema: ChipSchema, storage: Storage | None = None
    ) -> ChipStore:
        """Create an empty store at ``uri``; open the existing one if it has the same schema."""
        storage = storage or Storage()
        store = open_zarr_store(uri, storage)
        try:
            existing = cls.open(uri, storage, mode="r+")
        except InputError:
            existing = None
        if existing is not None:
            if existing.schema != schema:
                raise InputError(
                    f"chip store {uri!r} exists with a different layout ({existing.schema}); "
                    "choose a new --out or delete the old store"
                )
            return existing
        n, c, s = schema.num_chips, schema.bands, schema.chip_size
        attrs = {k: v for k, v in asdict(schema).items() if k != "num_chips"}
        attrs.update(format=CHIPS_FORMAT, version=CHIPS_VERSION, stats=None)
        group = zarr.open_group(store, mode="w", attributes=_jsonable(attrs))
        group.create_array("image", shape=(n, c, s, s), dtype=schema.input_dtype,
                           chunks=(1, c, s, s), fill_value=0)
        group.create_array("label", shape=(n, s, s), dtype="uint8", chunks=(1, s, s),
                           fill_value=255)
        group.create_array("depth", shape=(n, s, s), dtype="float16", chunks=(1, s, s),
                           fill_value=float("nan"))
        group.create_array("split", shape=(n,), dtype="uint8", chunks=(1,), fill_value=0)
        group.create_array("done", shape=(n,), dtype="bool", chunks=(1,), fill_value=False)
        group.create_array("band_sum", shape=(n, c), dtype="float64", chunks=(1, c),
                           fill_value=0.0)
        group.create_array("band_sumsq", shape=(n, c), dtype="float64", chunks=(1, c),
                           fill_value=0.0)
        group.create_array("band_count", shape=(n,), dtype="int64", chunks=(1,), fill_value=0)
        return cls(group, uri)

    @classmethod
    def open(cls, uri: str, storage: Storage | None = None, mode: str = "r") -> ChipStore:
        """Open an existing store (``mode`` ``r`` or ``r+``)."""
        storage = storage or Storage()
        store = open_zarr_store(uri, storage, read_only=mode == "r")
        try:
            group = zarr.open_group(store, mode=mode)  # type: ignore[arg-type]
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
            raise InputError(
                f"no chip store at {uri!r}; create one with jobs/prepare.py --out {uri}"
            ) from err
        return cls(group, uri)

    def array(self, name: str) -> Any:
        """The Zarr array ``name`` (``image``, ``label``, ...), typed loosely as zarr is."""
        return self.group[name]

    def write_chip(
        self,
        index: int,
        image: np.ndarray,
        label: np.ndarray,
        depth: np.ndarray | None,
        split: int,
        valid: np.ndarray | None = None,
    ) -> None:
        """Write chip ``index`` (image (C,S,S), label (S,S), depth (S,S)); mark it done last.

        ``valid`` (S,S) marks pixels with image data (default: label != 255); statistics
        count only those.
        """
        c, s = self.schema.bands, self.schema.chip_size
        if image.shape != (c, s, s) or label.shape != (s, s):
            raise InputError(
                f"chip {index}: image {image.shape} / label {label.shape} do not match the store's "
                f"({c}, {s}, {s}) / ({s}, {s}); cut chips of the store's size"
            )
        if split not in range(len(SPLITS)):
            raise InputError(f"chip {index}: split {split} is not 0 (train), 1 (val) or 2 (test)")
        mask = (label != 255) if valid is None else valid.astype(bool)
        values = image.reshape(c, -1)[:, mask.reshape(-1)].astype(np.float64)
        self.array("image")[index] = image.astype(self.schema.input_dtype, copy=False)
        self.array("label")[index] = label.astype(np.uint8, copy=False)
        if depth is not None:
            self.array("depth")[index] = depth.astype(np.float16)
        self.array("split")[index] = split
        self.array("band_sum")[index] = values.sum(axis=1)
        self.array("band_sumsq")[index] = (values**2).sum(axis=1)
        self.array("band_count")[index] = int(mask.sum())
        self.array("done")[index] = True

    def done(self) -> np.ndarray:
        """(N,) bool: which chips are complete."""
        return np.asarray(self.array("done")[:])

    def indices(self, split: str) -> np.ndarray:
        """Indices of the complete chips of ``split`` (``train``, ``val`` or ``test``)."""
        if split not in SPLITS:
            raise InputError(f"split {split!r} is not one of {SPLITS}")
        splits = np.asarray(self.array("split")[:])
        return np.flatnonzero(self.done() & (splits == SPLITS.index(split)))

    def read(self, indices: np.ndarray | list[int]) -> dict[str, np.ndarray]:
        """Image (B,C,S,S), label (B,S,S) and depth (B,S,S) float32 of some chips."""
        idx = np.asarray(indices, dtype=np.int64)
        return {
            "image": np.stack([self.array("image")[int(i)] for i in idx]),
            "label": np.stack([self.array("label")[int(i)] for i in idx]),
            "depth": np.stack([self.array("depth")[int(i)] for i in idx]).astype(np.float32),
        }

    def finalize_stats(self) -> dict[str, list[float]]:
        """Per-band mean/std over the valid pixels of the done training chips; saved in attrs."""
        train = self.indices("train")
        use = train if train.size else np.flatnonzero(self.done())
        count = float(np.asarray(self.array("band_count")[:])[use].sum())
        if count == 0:
            raise InputError(f"chip store {self.uri!r} has no valid pixels to compute statistics")
        total = np.asarray(self.array("band_sum")[:])[use].sum(axis=0)
        total_sq = np.asarray(self.array("band_sumsq")[:])[use].sum(axis=0)
        mean = total / count
        std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
        flat = [k for k, s in enumerate(std) if not s > 1e-3]
        if flat:
            names = [self.schema.band_names[k] for k in flat]
            raise InputError(
                f"chip store {self.uri!r} has degenerate band statistics: band(s) {names} are "
                f"constant ({[round(float(mean[k]), 3) for k in flat]}) over {int(count)} valid "
                "pixels, so the chips hold no image (e.g. all black); check that the scenes "
                "cover the labels and declare their no-data, then prepare a new store")
        stats = {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
        self.group.attrs["stats"] = stats
        return stats

    @property
    def stats(self) -> dict[str, list[float]] | None:
        """Band statistics saved by :meth:`finalize_stats`, or None."""
        value: Any = self.group.attrs.get("stats")  # JSON attrs: typed loosely by zarr
        if value is None:
            return None
        return {"mean": [float(v) for v in value["mean"]], "std": [float(v) for v in value["std"]]}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
