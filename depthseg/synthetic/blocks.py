"""Street grids and city blocks: districts, block types and per-block parameters.

A city is two or three districts, each with its own street-grid orientation; the border
between two districts is a main avenue. Grid lines are irregularly spaced; every cell
between them is a block whose type (towers, residential slabs, urban village, industry,
park, plaza, construction site, or rural) follows the urbanisation intensity at its
centre. Per-block values live in small tables, gathered per pixel by block id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from depthseg.synthetic.canvas import Canvas
from depthseg.synthetic.geometry import irregular_axis
from depthseg.synthetic.noise import hash_keys
from depthseg.synthetic.spectra import Mat

RURAL, CORE, RESIDENTIAL, VILLAGE, INDUSTRIAL, PARK, PLAZA, CONSTRUCTION = range(8)
N_TYPES = 8
AVENUE_WIDTH = 26.0

#: Roofs and yards draw from the same materials on purpose (see spectra.py).
SHARED = np.array([Mat.CONCRETE, Mat.CONCRETE_LIGHT, Mat.ASPHALT, Mat.METAL_BLUE,
                   Mat.METAL_WHITE, Mat.TILE_RED], np.int32)


@dataclass(frozen=True)
class BlockSpec:
    """Lot and building parameters of one block type (lengths in metres)."""

    lot_long: tuple[float, float]
    lot_short: tuple[float, float]
    margin_long: tuple[float, float]  # setback per side, fraction of the lot
    margin_short: tuple[float, float]
    p_building: float
    height: tuple[float, float]
    roofs: tuple[float, ...]  # probabilities over SHARED
    grounds: tuple[float, ...]  # probabilities over SHARED
    tree_density: float  # trees per 100 m2 of yard


SPECS: dict[int, BlockSpec] = {
    CORE: BlockSpec((40, 70), (36, 60), (0.12, 0.3), (0.12, 0.3), 0.85, (24, 60),
                    (0.5, 0.2, 0.15, 0.03, 0.07, 0.05), (0.5, 0.2, 0.25, 0, 0, 0.05), 0.3),
    RESIDENTIAL: BlockSpec((45, 70), (26, 38), (0.04, 0.12), (0.26, 0.36), 0.92, (12, 36),
                           (0.55, 0.15, 0.1, 0.0, 0.03, 0.17), (0.6, 0.15, 0.15, 0, 0, 0.1), 0.6),
    VILLAGE: BlockSpec((10, 16), (9, 14), (0.02, 0.16), (0.02, 0.16), 0.9, (5, 15),
                       (0.6, 0.1, 0.08, 0.07, 0.0, 0.15), (0.75, 0.1, 0.1, 0, 0, 0.05), 0.3),
    INDUSTRIAL: BlockSpec((60, 110), (40, 80), (0.08, 0.2), (0.08, 0.2), 0.8, (7, 16),
                          (0.35, 0.1, 0.1, 0.3, 0.15, 0.0), (0.6, 0.1, 0.3, 0, 0, 0), 0.05),
    PARK: BlockSpec((30, 60), (30, 60), (0.38, 0.45), (0.38, 0.45), 0.15, (4, 7),
                    (0.3, 0.2, 0, 0, 0, 0.5), (0.5, 0.3, 0, 0, 0, 0.2), 1.6),
    PLAZA: BlockSpec((30, 60), (30, 60), (0.3, 0.4), (0.3, 0.4), 0.0, (4, 6),
                     (1, 0, 0, 0, 0, 0), (0.35, 0.15, 0.45, 0, 0, 0.05), 0.3),
    CONSTRUCTION: BlockSpec((40, 80), (40, 80), (0.2, 0.35), (0.2, 0.35), 0.2, (6, 30),
                            (1, 0, 0, 0, 0, 0), (1, 0, 0, 0, 0, 0), 0.0),
}


def spec_column(name: str) -> np.ndarray:
    """One BlockSpec field for all types as an (N_TYPES, ...) float32 array (RURAL = 0)."""
    sample = np.atleast_1d(np.asarray(getattr(SPECS[CORE], name), np.float32))
    out = np.zeros((N_TYPES, *sample.shape), np.float32)
    if name in ("roofs", "grounds"):
        out[RURAL, 0] = 1.0
    if name.startswith("lot"):
        out[RURAL] = 50.0
    for kind, spec in SPECS.items():
        out[kind] = getattr(spec, name)
    return out if sample.size > 1 or name in ("roofs", "grounds") else out[:, 0]


def _type_probabilities(intensity: np.ndarray) -> np.ndarray:
    """(n_blocks, N_TYPES) probability of each block type given urbanisation intensity."""
    core = np.array([0, .45, .35, .02, .0, .06, .09, .03])
    inner = np.array([0, .08, .6, .1, .06, .05, .06, .05])
    outer = np.array([0, .0, .32, .22, .26, .03, .07, .10])
    w_core = np.clip((intensity[:, None] - 0.8) / 0.2, 0, 1)
    w_outer = np.clip((0.7 - intensity[:, None]) / 0.2, 0, 1)
    probs = w_core * core + w_outer * outer + (1 - w_core - w_outer).clip(0) * inner
    return probs / probs.sum(axis=1, keepdims=True)


@dataclass
class Grid:
    """Street grids of all districts evaluated on the canvas (full rasters, float32/int32).

    Attributes:
        seeds: (n_districts, 2) district centres (x, y) in metres.
        angles: (n_districts,) grid orientation in radians.
        district: Nearest district per pixel.
        border: Distance in metres to the nearest other district (the avenue line).
        u: Along-grid coordinate in metres.
        v: Across-grid coordinate in metres.
        i_u: Grid cell along u.
        i_v: Grid cell along v.
        edges_u: (n_districts, n_u + 2) line positions, padded.
        edges_v: (n_districts, n_v + 2) line positions, padded.
        widths_u: Street widths per line, like ``edges_u``.
        widths_v: Street widths per line, like ``edges_v``.
    """

    seeds: np.ndarray
    angles: np.ndarray
    district: np.ndarray
    border: np.ndarray
    u: np.ndarray
    v: np.ndarray
    i_u: np.ndarray
    i_v: np.ndarray
    edges_u: np.ndarray
    edges_v: np.ndarray
    widths_u: np.ndarray
    widths_v: np.ndarray

    @property
    def n_u(self) -> int:
        """Cells along u (the same for every district, padded)."""
        return self.edges_u.shape[1] - 2

    @property
    def n_v(self) -> int:
        """Cells along v."""
        return self.edges_v.shape[1] - 2

    def block_id(self, district: np.ndarray, i_u: np.ndarray, i_v: np.ndarray) -> np.ndarray:
        """Block id from district and grid cell (clipped to the table)."""
        i_u = np.clip(i_u, 0, self.n_u - 1)
        i_v = np.clip(i_v, 0, self.n_v - 1)
        return (district * self.n_u + i_u) * self.n_v + i_v


def make_grid(canvas: Canvas, rng: np.random.Generator, centre: tuple[float, float]) -> Grid:
    """Districts around ``centre`` and their street grids, evaluated for every pixel."""
    n_districts = int(rng.integers(2, 4))
    spread = 0.3 * canvas.extent
    seeds = np.array(centre) + rng.uniform(-spread, spread, (n_districts, 2))
    base = rng.uniform(0, np.pi / 2)
    angles = np.array([base + (0 if i == 0 else rng.uniform(0.25, 0.7) * rng.choice([-1, 1]))
                       for i in range(n_districts)])
    corners = np.array([[0, 0], [canvas.cols, 0], [0, canvas.rows], [canvas.cols, canvas.rows]])
    corners = corners * canvas.res
    axes_u, axes_v = [], []
    for index in range(n_districts):
        half = float(np.max(np.hypot(*(corners - seeds[index]).T))) + 200.0
        axes_u.append(irregular_axis(half, (70, 170), (8, 14), rng, 0.15, (20, 30)))
        axes_v.append(irregular_axis(half, (70, 170), (8, 14), rng, 0.15, (20, 30)))

    # Nearest district seed (Voronoi); distance to the cell border is linear in position.
    dist2 = [(canvas.x - sx) ** 2 + (canvas.y - sy) ** 2 for sx, sy in seeds]
    district = np.zeros(canvas.shape, np.int32)
    own = dist2[0].copy()
    for index in range(1, n_districts):
        closer = dist2[index] < own
        district[closer] = index
        np.minimum(own, dist2[index], out=own)
    gaps = np.hypot(*(seeds[:, None, :] - seeds[None, :, :]).transpose(2, 0, 1))
    border = np.full(canvas.shape, np.inf, np.float32)
    for index in range(n_districts):
        gap = (dist2[index] - own) / (2 * gaps[district, index] + 1e-6)
        np.minimum(border, np.where(district == index, np.inf, gap), out=border)
    del dist2, own

    cos_d = np.cos(angles).astype(np.float32)[district]
    sin_d = np.sin(angles).astype(np.float32)[district]
    dx = canvas.x - seeds[:, 0].astype(np.float32)[district]
    dy = canvas.y - seeds[:, 1].astype(np.float32)[district]
    u = dx * cos_d + dy * sin_d
    v = dy * cos_d - dx * sin_d
    del dx, dy, cos_d, sin_d
    i_u = _locate(axes_u, district, u)
    i_v = _locate(axes_v, district, v)
    return Grid(seeds=seeds, angles=angles, district=district, border=border, u=u, v=v,
                i_u=i_u, i_v=i_v, edges_u=_pad([a.edges for a in axes_u], 1e7),
                edges_v=_pad([a.edges for a in axes_v], 1e7),
                widths_u=_pad([a.widths for a in axes_u], 0.0),
                widths_v=_pad([a.widths for a in axes_v], 0.0))


def _pad(rows: list[np.ndarray], fill: float) -> np.ndarray:
    """Stack 1-D arrays of different lengths, padding with ``fill`` (one extra column)."""
    out = np.full((len(rows), max(r.size for r in rows) + 1), fill, np.float32)
    for index, row in enumerate(rows):
        out[index, : row.size] = row
    return out


def _locate(axes: list, district: np.ndarray, coord: np.ndarray) -> np.ndarray:
    """Grid cell of each pixel in its own district's axis (one combined lookup table)."""
    length = max(a.lut.size for a in axes)
    lut = np.stack([np.pad(a.lut, (0, length - a.lut.size), mode="edge") for a in axes])
    start = np.array([a.start for a in axes], np.float32)[district]
    bins = ((coord - start) * np.float32(1.0 / axes[0].bin_m)).astype(np.int32)
    np.clip(bins, 0, length - 1, out=bins)
    return lut.reshape(-1)[district * length + bins]


@dataclass
class Blocks:
    """Per-block tables, indexed by :meth:`Grid.block_id`.

    Attributes:
        kind: Block type.
        intensity: Urbanisation intensity at the block centre.
        key: Object key of the block.
        len_a: Inner length along u (between the street edges), metres.
        len_b: Inner length along v.
        lot_u: Lot length along u.
        lot_v: Lot length along v.
        n_lu: Lots along u.
        n_lv: Lots along v.
        margin_u: (n, 2) setback range along u (fraction of the lot).
        margin_v: (n, 2) setback range along v.
    """

    kind: np.ndarray
    intensity: np.ndarray
    key: np.ndarray
    len_a: np.ndarray
    len_b: np.ndarray
    lot_u: np.ndarray
    lot_v: np.ndarray
    n_lu: np.ndarray
    n_lv: np.ndarray
    margin_u: np.ndarray
    margin_v: np.ndarray


def make_blocks(
    grid: Grid,
    rng: np.random.Generator,
    intensity_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    village_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    keep_out_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> Blocks:
    """Type and lot subdivision of every block of every district."""
    n_districts = grid.seeds.shape[0]
    bd, bu, bv = (a.ravel() for a in np.meshgrid(
        np.arange(n_districts), np.arange(grid.n_u), np.arange(grid.n_v), indexing="ij"))
    e0u, e1u = grid.edges_u[bd, bu], grid.edges_u[bd, bu + 1]
    e0v, e1v = grid.edges_v[bd, bv], grid.edges_v[bd, bv + 1]
    len_a = e1u - e0u - 0.5 * (grid.widths_u[bd, bu] + grid.widths_u[bd, bu + 1])
    len_b = e1v - e0v - 0.5 * (grid.widths_v[bd, bv] + grid.widths_v[bd, bv + 1])
    cu, cv = 0.5 * (e0u + e1u), 0.5 * (e0v + e1v)
    angle = grid.angles[bd]
    cx = grid.seeds[bd, 0] + cu * np.cos(angle) - cv * np.sin(angle)
    cy = grid.seeds[bd, 1] + cu * np.sin(angle) + cv * np.cos(angle)
    intensity = intensity_fn(cx, cy)
    probs = np.cumsum(_type_probabilities(intensity), axis=1)
    kind = (rng.random(bd.size)[:, None] > probs).sum(axis=1)
    kind = np.where(intensity > 0.45, kind, RURAL)
    kind = np.where((kind == RURAL) & (village_fn(cx, cy) > 0.5), VILLAGE, kind)
    calm = np.where(rng.random(bd.size) < 0.7, PARK, PLAZA)
    kind = np.where((keep_out_fn(cx, cy) < 0) & (kind != RURAL), calm, kind).astype(np.int32)

    # Lots: long side along the longer block side (mostly), sizes from the type's ranges.
    long_is_u = rng.random(bd.size) < np.where(len_a >= len_b, 0.8, 0.2)
    lot_long = _lerp(spec_column("lot_long")[kind], rng.random(bd.size))
    lot_short = _lerp(spec_column("lot_short")[kind], rng.random(bd.size))
    n_lu = np.maximum(1, np.round(len_a / np.where(long_is_u, lot_long, lot_short)))
    n_lv = np.maximum(1, np.round(len_b / np.where(long_is_u, lot_short, lot_long)))
    m_long, m_short = spec_column("margin_long")[kind], spec_column("margin_short")[kind]
    return Blocks(
        kind=kind,
        intensity=intensity.astype(np.float32),
        key=hash_keys(np.arange(bd.size), salt=3),
        len_a=len_a.astype(np.float32),
        len_b=len_b.astype(np.float32),
        lot_u=(len_a / n_lu).astype(np.float32),
        lot_v=(len_b / n_lv).astype(np.float32),
        n_lu=n_lu.astype(np.float32),
        n_lv=n_lv.astype(np.float32),
        margin_u=np.where(long_is_u[:, None], m_long, m_short).astype(np.float32),
        margin_v=np.where(long_is_u[:, None], m_short, m_long).astype(np.float32),
    )


def _lerp(bounds: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``lo + (hi - lo) * t`` with ``bounds[..., 0] = lo`` and ``bounds[..., 1] = hi``."""
    return (bounds[..., 0] + (bounds[..., 1] - bounds[..., 0]) * t).astype(np.float32)


def choose_material(probs: np.ndarray, kind: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """Material from :data:`SHARED` drawn with ``probs[kind]`` by the uniform ``pick``.

    Args:
        probs: (N_TYPES, len(SHARED)) probabilities per block type.
        kind: Block type per pixel.
        pick: Uniform [0, 1) per pixel.
    """
    cumulative = np.cumsum(probs, axis=-1).astype(np.float32)
    choice = np.zeros(kind.shape, np.int32)
    for column in range(cumulative.shape[1] - 1):
        choice += pick > cumulative[:, column][kind]
    return SHARED[choice]

