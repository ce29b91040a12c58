"""Sun geometry: cast shadows from a height map and relief shading of tree crowns.

Azimuth is in degrees clockwise from north, elevation in degrees above the horizon. On the
raster, north is towards row 0 and east towards increasing column.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def cast_shadows(
    height: np.ndarray,
    resolution: float,
    sun_azimuth: float,
    sun_elevation: float,
    tolerance: float = 0.3,
) -> np.ndarray:
    """Pixels that cannot see the sun because something between them and the sun is taller.

    For each pixel, march towards the sun one pixel at a time: at horizontal distance ``d``
    the sun ray has risen ``d * tan(elevation)``; the pixel is shadowed if the surface there
    is higher than the ray. Vectorised as a running maximum over shifted copies of the
    height map, so the cost is one array operation per step and the number of steps is the
    longest possible shadow (tallest object / tan(elevation) / resolution).

    Args:
        height: (rows, cols) height above ground in metres.
        resolution: Pixel size in metres.
        sun_azimuth: Degrees clockwise from north.
        sun_elevation: Degrees above the horizon (0 < elevation <= 90).
        tolerance: Metres the obstacle must exceed the ray by (ignores crop-row ripples).

    Returns:
        Boolean (rows, cols), True in shadow.
    """
    if not 0 < sun_elevation <= 90:
        raise ValueError(f"sun_elevation {sun_elevation} must be in (0, 90] degrees")
    rows, cols = height.shape
    rise_per_m = float(np.tan(np.radians(sun_elevation)))
    relief = float(height.max() - height.min())
    if relief <= tolerance or sun_elevation >= 89.9:
        return np.zeros(height.shape, bool)
    n_steps = min(int(np.ceil(relief / (rise_per_m * resolution))) + 1, 2 * max(rows, cols))
    # Unit step towards the sun in (row, col): north is -row, east is +col.
    step_row = -np.cos(np.radians(sun_azimuth))
    step_col = np.sin(np.radians(sun_azimuth))
    horizon = np.full(height.shape, -np.inf, np.float32)
    seen: set[tuple[int, int]] = set()
    for t in range(1, n_steps + 1):
        d_row, d_col = int(round(t * step_row)), int(round(t * step_col))
        if (d_row, d_col) in seen or abs(d_row) >= rows or abs(d_col) >= cols:
            continue
        seen.add((d_row, d_col))
        drop = np.float32(np.hypot(d_row, d_col) * resolution * rise_per_m)
        # Target pixels p and the pixels p + offset they look at.
        r0, r1 = max(0, -d_row), rows - max(0, d_row)
        c0, c1 = max(0, -d_col), cols - max(0, d_col)
        target = horizon[r0:r1, c0:c1]
        np.maximum(target, height[r0 + d_row : r1 + d_row, c0 + d_col : c1 + d_col] - drop,
                   out=target)
    return horizon > height + np.float32(tolerance)


def relief_shading(
    height: np.ndarray,
    mask: np.ndarray,
    resolution: float,
    sun_azimuth: float,
    sun_elevation: float,
) -> np.ndarray:
    """Direct-light factor of sloping surfaces relative to flat ground (1.0 = flat).

    Used for tree crowns: the sun-facing side of a crown is brighter, the far side darker,
    which gives canopies their lumpy look. Flat roofs and ground (``mask`` False) get 1.

    Args:
        height: (rows, cols) heights in metres.
        mask: Where to apply slope shading (crowns).
        resolution: Pixel size in metres.
        sun_azimuth: Degrees clockwise from north.
        sun_elevation: Degrees above the horizon.

    Returns:
        float32 (rows, cols) factor in [0, 1.8].
    """
    surface = ndi.gaussian_filter(np.where(mask, height, 0).astype(np.float32), 0.7)
    d_south, d_east = np.gradient(surface, resolution)
    az, el = np.radians(sun_azimuth), np.radians(sun_elevation)
    sun_east, sun_north, sun_up = np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)
    d_north = -d_south
    # Surface normal (-dz/dx_east, -dz/dy_north, 1), normalised, dotted with the sun vector.
    cos_inc = (-d_east * sun_east - d_north * sun_north + sun_up) / np.sqrt(
        d_east * d_east + d_north * d_north + 1
    )
    factor = np.clip(cos_inc / sun_up, 0.0, 1.8).astype(np.float32)
    return np.where(mask, factor, np.float32(1.0))
