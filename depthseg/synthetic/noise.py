"""Random fields and per-object random tables used by the scene generator.

Everything takes a :class:`numpy.random.Generator` so a seed reproduces a scene bit for bit.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: Size of the per-object random tables (a power of two so a hash can be masked into it).
TABLE_SIZE = 1 << 16


def smooth_noise(
    shape: tuple[int, int], scale_px: float, rng: np.random.Generator, order: int = 1
) -> np.ndarray:
    """Band-limited noise with structures about ``scale_px`` pixels across.

    White noise on a coarse lattice is interpolated up, which costs one zoom instead of a
    large Gaussian filter over the full grid.

    Args:
        shape: Output (rows, cols).
        scale_px: Lattice spacing in pixels (>= 1).
        rng: Random generator.
        order: Spline order of the interpolation (1 is fast, 3 is smoother).

    Returns:
        float32 array of ``shape`` with zero mean and unit standard deviation.
    """
    rows, cols = shape
    scale = max(float(scale_px), 1.0)
    if scale <= 1.0:
        field = rng.standard_normal(shape, dtype=np.float32)
    else:
        lat_rows = int(np.ceil(rows / scale)) + 3
        lat_cols = int(np.ceil(cols / scale)) + 3
        lattice = rng.standard_normal((lat_rows, lat_cols), dtype=np.float32)
        field = ndi.zoom(lattice, scale, order=order, prefilter=False, grid_mode=False)
        # Random sub-lattice offset so lattice nodes do not line up with the pixel grid.
        off_row = int(rng.integers(0, max(1, field.shape[0] - rows)))
        off_col = int(rng.integers(0, max(1, field.shape[1] - cols)))
        field = field[off_row : off_row + rows, off_col : off_col + cols]
    field = field - field.mean()
    std = float(field.std())
    return (field / (std if std > 0 else 1.0)).astype(np.float32, copy=False)


def fine_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float = 0.7) -> np.ndarray:
    """Pixel-scale grain (white noise softened by a small Gaussian), unit standard deviation."""
    field = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return (field / max(float(field.std()), 1e-6)).astype(np.float32, copy=False)


def hash_keys(*parts: np.ndarray | int, salt: int = 0) -> np.ndarray:
    """Combine integer arrays (block id, lot row, lot column...) into one uint32 object key.

    An FNV-style multiplicative hash: cheap, vectorised, and neighbouring objects get
    unrelated keys, so adjacent lots do not share random properties.
    """
    with np.errstate(over="ignore"):
        key = np.asarray(np.uint32(2166136261) ^ np.uint32(salt), dtype=np.uint32)
        for part in parts:
            key = (key ^ np.asarray(part).astype(np.uint32)) * np.uint32(16777619)
            key = key ^ (key >> np.uint32(15))
        key = key * np.uint32(2246822519)
        key = key ^ (key >> np.uint32(13))
    return np.asarray(key, dtype=np.uint32)


class KeyTable:
    """Uniform random values looked up by object key: ``table.uniform(keys, column)``.

    Stored column-major so each lookup is one contiguous gather.
    """

    def __init__(self, rng: np.random.Generator, columns: int) -> None:
        self.values = rng.random((columns, TABLE_SIZE), dtype=np.float32)

    def uniform(self, keys: np.ndarray, column: int) -> np.ndarray:
        """Uniform [0, 1) value per key for one column (property) of the table."""
        return self.values[column][keys & np.uint32(TABLE_SIZE - 1)]
