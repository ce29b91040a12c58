"""The layout canvas: label, height, material, object-key and pattern rasters painted in layers.

Each layer (fields, forest, city, river, roads, trees) paints over what lies below, so the
final rasters describe the top surface seen from above, which is what a label map and an
nDSM record.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class TreeSeeds:
    """Tree positions collected by the layers, grown into crowns at the end.

    Attributes:
        rows: Pixel row of each tree top.
        cols: Pixel column of each tree top.
        heights: Tree height in metres.
        radii: Crown radius in metres.
    """

    rows: list[np.ndarray] = field(default_factory=list)
    cols: list[np.ndarray] = field(default_factory=list)
    heights: list[np.ndarray] = field(default_factory=list)
    radii: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        mask: np.ndarray,
        height: tuple[float, float],
        radius: tuple[float, float],
        rng: np.random.Generator,
    ) -> None:
        """Add a tree at every True pixel of ``mask`` with uniform random height and radius."""
        rows, cols = np.nonzero(mask)
        self.rows.append(rows.astype(np.int32))
        self.cols.append(cols.astype(np.int32))
        self.heights.append(rng.uniform(height[0], height[1], rows.size).astype(np.float32))
        self.radii.append(rng.uniform(radius[0], radius[1], rows.size).astype(np.float32))

    def add_at(
        self,
        flat_index: np.ndarray,
        n_cols: int,
        height: tuple[float, float],
        radius: tuple[float, float],
        rng: np.random.Generator,
    ) -> None:
        """Like :meth:`add` for flat pixel indices (``row * n_cols + col``)."""
        rows, cols = np.divmod(flat_index.astype(np.int64), n_cols)
        self.rows.append(rows.astype(np.int32))
        self.cols.append(cols.astype(np.int32))
        self.heights.append(rng.uniform(height[0], height[1], rows.size).astype(np.float32))
        self.radii.append(rng.uniform(radius[0], radius[1], rows.size).astype(np.float32))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, heights, radii), concatenated."""
        if not self.rows:
            empty_i, empty_f = np.zeros(0, np.int32), np.zeros(0, np.float32)
            return empty_i, empty_i, empty_f, empty_f
        return (
            np.concatenate(self.rows),
            np.concatenate(self.cols),
            np.concatenate(self.heights),
            np.concatenate(self.radii),
        )


@dataclass
class Canvas:
    """Rasters of one region being laid out, plus its metric coordinates.

    Attributes:
        rows: Height in pixels.
        cols: Width in pixels.
        res: Pixel size in metres.
        x: (1, cols) east coordinate of pixel centres in metres from the west edge.
        y: (rows, 1) south coordinate of pixel centres in metres from the north edge.
        labels: (rows, cols) uint8 class.
        height: (rows, cols) float32 height above ground in metres.
        material: (rows, cols) uint8 material code (see :mod:`.spectra`).
        keys: (rows, cols) uint32 object key (per-object colour variation).
        pattern: (rows, cols) float32 structured texture in [-1, 1].
        seed_uniform: (rows, cols) float32 uniform [0, 1) field for scattering point objects.
        trees: Tree seeds collected so far.
    """

    rows: int
    cols: int
    res: float
    x: np.ndarray
    y: np.ndarray
    labels: np.ndarray
    height: np.ndarray
    material: np.ndarray
    keys: np.ndarray
    pattern: np.ndarray
    seed_uniform: np.ndarray
    trees: TreeSeeds

    @classmethod
    def empty(cls, rows: int, cols: int, res: float, rng: np.random.Generator) -> Canvas:
        """A blank canvas (label 0, height 0, material 0)."""
        shape = (rows, cols)
        return cls(
            rows=rows,
            cols=cols,
            res=res,
            x=((np.arange(cols, dtype=np.float32) + 0.5) * np.float32(res))[None, :],
            y=((np.arange(rows, dtype=np.float32) + 0.5) * np.float32(res))[:, None],
            labels=np.zeros(shape, np.uint8),
            height=np.zeros(shape, np.float32),
            material=np.zeros(shape, np.uint8),
            keys=np.zeros(shape, np.uint32),
            pattern=np.zeros(shape, np.float32),
            seed_uniform=rng.random(shape, dtype=np.float32),
            trees=TreeSeeds(),
        )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols)."""
        return (self.rows, self.cols)

    @property
    def extent(self) -> float:
        """The longer side in metres."""
        return max(self.rows, self.cols) * self.res

    def paint_at(
        self,
        subset: Subset,
        where: np.ndarray,
        label: int,
        material: int | np.ndarray,
        height: float | np.ndarray = 0.0,
        keys: int | np.ndarray | None = None,
        pattern: float | np.ndarray | None = 0.0,
    ) -> None:
        """Like :meth:`paint` on the pixels of ``subset`` where the 1-D ``where`` is True.

        Array arguments are 1-D, aligned with the subset.
        """
        flat = subset.index[where]
        self.labels.reshape(-1)[flat] = label
        self.material.reshape(-1)[flat] = _at(material, where)
        self.height.reshape(-1)[flat] = _at(height, where)
        if keys is not None:
            self.keys.reshape(-1)[flat] = _at(keys, where)
        if pattern is not None:
            self.pattern.reshape(-1)[flat] = _at(pattern, where)

    def paint(
        self,
        mask: np.ndarray,
        label: int,
        material: int | np.ndarray,
        height: float | np.ndarray = 0.0,
        keys: int | np.ndarray | None = None,
        pattern: float | np.ndarray | None = 0.0,
    ) -> None:
        """Overwrite every layer where ``mask`` is True.

        Array arguments are full-size rasters and are sampled at the mask; ``keys=None``
        keeps the current object keys and ``pattern=None`` the current pattern.
        """
        self.labels[mask] = label
        self.material[mask] = _at(material, mask)
        self.height[mask] = _at(height, mask)
        if keys is not None:
            self.keys[mask] = _at(keys, mask)
        if pattern is not None:
            self.pattern[mask] = _at(pattern, mask)


class Subset:
    """A set of canvas pixels as flat indices, so a layer can work on 1-D arrays.

    Layers that only touch part of the region (the city, the farmland) gather their inputs
    here, compute on the compact arrays and paint back with :meth:`Canvas.paint_at`.
    """

    def __init__(self, canvas: Canvas, mask: np.ndarray) -> None:
        self.index = np.flatnonzero(mask)
        rows, cols = np.divmod(self.index, canvas.cols)
        self.x = ((cols + 0.5) * canvas.res).astype(np.float32)
        self.y = ((rows + 0.5) * canvas.res).astype(np.float32)

    @property
    def size(self) -> int:
        """Number of pixels."""
        return int(self.index.size)

    def take(self, full: np.ndarray) -> np.ndarray:
        """The subset's values of a full (rows, cols) raster, as a 1-D array."""
        return full.reshape(-1)[self.index]


def _at(value: float | int | np.ndarray, mask: np.ndarray) -> float | int | np.ndarray:
    """``value`` itself if it is a scalar (or 0-d array), else its pixels under ``mask``."""
    return value if np.ndim(value) == 0 else np.asarray(value)[mask]
