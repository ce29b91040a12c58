"""Footprints of the overlapping scenes that together cover a region.

Scenes form an ``r x c`` arrangement (the most square factorisation of the scene count),
each a window of the region grid that overlaps its neighbours. Like real scenes, some carry
a no-data wedge (the satellite footprint is not aligned with the grid); a wedge only ever
lies where the right-hand neighbour has valid pixels, so the union still covers the region.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SceneWindow:
    """One scene's window of the region grid.

    Attributes:
        index: Position in acquisition order (0 = oldest).
        row_off: First row in the region grid.
        col_off: First column.
        height: Rows.
        width: Columns.
        valid: (height, width) bool, False in the no-data wedge.
        acquired: Acquisition time (UTC).
    """

    index: int
    row_off: int
    col_off: int
    height: int
    width: int
    valid: np.ndarray
    acquired: dt.datetime

    @property
    def file_name(self) -> str:
        """File name, e.g. ``scene_00_20230412.tif``."""
        return f"scene_{self.index:02d}_{self.acquired:%Y%m%d}.tif"


def _factor(n: int) -> tuple[int, int]:
    """(rows, cols) with rows * cols == n and rows <= cols, as square as possible."""
    rows = int(np.sqrt(n))
    while n % rows:
        rows -= 1
    return rows, n // rows


def plan_scenes(size: int, n_scenes: int, rng: np.random.Generator) -> list[SceneWindow]:
    """Windows of ``n_scenes`` overlapping scenes covering a ``size`` x ``size`` region.

    Args:
        size: Region side in pixels.
        n_scenes: Number of scenes (>= 1).
        rng: Random generator (overlaps, wedges, dates).

    Returns:
        Scene windows, oldest acquisition first.
    """
    n_rows, n_cols = _factor(n_scenes)
    # Overlap per internal grid line, shared by the scenes on both sides of it, so that
    # scenes in one row band have identical row extents (the wedge argument needs it).
    row_lines = np.linspace(0, size, n_rows + 1).round().astype(int)
    col_lines = np.linspace(0, size, n_cols + 1).round().astype(int)
    base_overlap = max(8, size // (6 * max(n_rows, n_cols)))
    over_r = rng.integers(base_overlap, 2 * base_overlap + 1, n_rows + 1)
    over_c = rng.integers(base_overlap, 2 * base_overlap + 1, n_cols + 1)
    over_r[[0, -1]] = 0
    over_c[[0, -1]] = 0
    start = dt.datetime(2022, 1, 1, 3, 0, tzinfo=dt.timezone.utc)
    days = np.sort(rng.choice(np.arange(0, 3 * 365), n_scenes, replace=False))
    minutes = rng.integers(0, 40, n_scenes)
    order = rng.permutation(n_scenes)  # acquisition order is not the spatial order

    windows = []
    for tile in range(n_scenes):
        i, j = divmod(tile, n_cols)
        r0 = max(0, row_lines[i] - over_r[i])
        r1 = min(size, row_lines[i + 1] + over_r[i + 1])
        c0 = max(0, col_lines[j] - over_c[j])
        c1 = min(size, col_lines[j + 1] + over_c[j + 1])
        height, width = r1 - r0, c1 - c0
        valid = np.ones((height, width), bool)
        if j < n_cols - 1:
            # Triangle at the bottom-right corner; its columns stay inside the overlap with
            # the right-hand neighbour, which has the same rows and no wedge there.
            leg_c = int(rng.uniform(0.5, 0.95) * 2 * over_c[j + 1])
            leg_r = int(rng.uniform(0.4, 0.8) * height)
            if leg_c > 1 and leg_r > 1:
                rr = np.arange(height)[:, None] - (height - leg_r)
                cc = np.arange(width)[None, :] - (width - leg_c)
                valid &= ~((rr >= 0) & (cc >= 0) & (rr / leg_r + cc / leg_c > 1.0))
        index = int(order[tile])
        acquired = start + dt.timedelta(days=int(days[index]), minutes=int(minutes[index]))
        windows.append(SceneWindow(index=index, row_off=int(r0), col_off=int(c0),
                                   height=int(height), width=int(width), valid=valid,
                                   acquired=acquired))
    return sorted(windows, key=lambda w: w.index)
