"""Plane geometry on the layout canvas: rotated frames, irregular grids, distances to lines.

Coordinates are metres on the region: ``x`` grows east along columns, ``y`` grows south
along rows (row/col order, like the rasters). Arrays broadcast: ``x`` is (1, cols) and ``y``
is (rows, 1), so a rotated coordinate costs one full-size array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def rotated(
    x: np.ndarray, y: np.ndarray, angle_rad: float, origin_x: float, origin_y: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (along, across) of points in a frame turned by ``angle_rad``.

    Args:
        x: East coordinates in metres (broadcastable with ``y``).
        y: South coordinates in metres.
        angle_rad: Frame rotation (counter-clockwise from the x axis on the map).
        origin_x: Frame origin, east metres.
        origin_y: Frame origin, south metres.

    Returns:
        (along, across) float32 arrays.
    """
    cos_a, sin_a = np.float32(np.cos(angle_rad)), np.float32(np.sin(angle_rad))
    dx = x - np.float32(origin_x)
    dy = y - np.float32(origin_y)
    along = dx * cos_a + dy * sin_a
    across = dy * cos_a - dx * sin_a
    return along.astype(np.float32, copy=False), across.astype(np.float32, copy=False)


@dataclass(frozen=True)
class IrregularAxis:
    """Grid lines at irregular spacing along one axis, with a fast cell lookup.

    Attributes:
        edges: (n + 1,) line positions in metres, increasing.
        widths: (n + 1,) width in metres of the strip (street, bund) centred on each line.
        lut: Cell index per ``bin_m`` bin from ``start``; replaces a slow searchsorted.
        start: Position of the first lookup bin.
        bin_m: Lookup bin size in metres.
    """

    edges: np.ndarray
    widths: np.ndarray
    lut: np.ndarray
    start: float
    bin_m: float

    @property
    def n_cells(self) -> int:
        """Number of cells between the lines."""
        return int(self.edges.size - 1)

    def locate(self, coord: np.ndarray) -> np.ndarray:
        """Cell index (int32) of each coordinate; clipped to the first/last cell."""
        bins = ((coord - np.float32(self.start)) * np.float32(1.0 / self.bin_m)).astype(np.int32)
        np.clip(bins, 0, self.lut.size - 1, out=bins)
        return self.lut[bins]


def irregular_axis(
    half_length: float,
    spacing: tuple[float, float],
    width: tuple[float, float],
    rng: np.random.Generator,
    wide_chance: float = 0.0,
    wide_width: tuple[float, float] = (0.0, 0.0),
    bin_m: float = 0.1,
) -> IrregularAxis:
    """Grid lines covering ``[-half_length, half_length]`` with random spacing and widths.

    Args:
        half_length: Half the span to cover, metres.
        spacing: (min, max) distance between consecutive lines, metres.
        width: (min, max) strip width on an ordinary line, metres.
        rng: Random generator.
        wide_chance: Probability that a line is a wide one (an avenue).
        wide_width: (min, max) width of a wide line.
        bin_m: Lookup resolution in metres.

    Returns:
        The axis.
    """
    mean = 0.5 * (spacing[0] + spacing[1])
    count = int(np.ceil(2 * half_length / spacing[0])) + 2
    steps = rng.uniform(spacing[0], spacing[1], count)
    edges = -half_length - rng.uniform(0, mean) + np.concatenate([[0.0], np.cumsum(steps)])
    edges = edges[: int(np.searchsorted(edges, half_length)) + 2]
    widths = rng.uniform(width[0], width[1], edges.size)
    if wide_chance > 0:
        wide = rng.random(edges.size) < wide_chance
        widths[wide] = rng.uniform(wide_width[0], wide_width[1], int(wide.sum()))
    start = float(edges[0])
    bins = start + bin_m * (np.arange(int(np.ceil((edges[-1] - start) / bin_m)) + 1) + 0.5)
    lut = np.clip(np.searchsorted(edges, bins, side="right") - 1, 0, edges.size - 2)
    return IrregularAxis(
        edges=edges.astype(np.float32),
        widths=widths.astype(np.float32),
        lut=lut.astype(np.int32),
        start=start,
        bin_m=bin_m,
    )


def wavy_line_distance(
    x: np.ndarray,
    y: np.ndarray,
    angle_rad: float,
    origin: tuple[float, float],
    amplitudes: np.ndarray,
    wavelengths: np.ndarray,
    phases: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate distance to a line bent by a sum of sinusoids (rivers, country roads).

    The bend is ``offset(t) = sum(a_i sin(2 pi t / l_i + p_i))`` across the line at along-line
    position ``t``; dividing by ``sqrt(1 + offset'(t)^2)`` turns the vertical gap into a
    distance, exact for gentle bends.

    Returns:
        (distance, along) float32 arrays in metres.
    """
    along, across = rotated(x, y, angle_rad, origin[0], origin[1])
    offset = np.zeros_like(along)
    slope = np.zeros_like(along)
    for amp, wavelength, phase in zip(amplitudes, wavelengths, phases, strict=True):
        arg = along * np.float32(2 * np.pi / wavelength) + np.float32(phase)
        offset += np.float32(amp) * np.sin(arg)
        slope += np.float32(amp * 2 * np.pi / wavelength) * np.cos(arg)
    dist = np.abs(across - offset) / np.sqrt(1 + slope * slope)
    return dist.astype(np.float32, copy=False), along
