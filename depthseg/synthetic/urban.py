"""The built-up area: streets, lots, buildings, yards, parking and urban trees.

The street grid and block table come from :mod:`.blocks`; this module works per pixel, but
only on the built-up pixels (a :class:`Subset`), with per-lot random properties looked up
by key, so the cost does not grow with the number of buildings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from depthseg.synthetic.blocks import (
    AVENUE_WIDTH,
    CONSTRUCTION,
    CORE,
    INDUSTRIAL,
    PARK,
    PLAZA,
    RESIDENTIAL,
    RURAL,
    SPECS,
    VILLAGE,
    Blocks,
    Grid,
    choose_material,
    make_blocks,
    make_grid,
    spec_column,
)
from depthseg.synthetic.canvas import Canvas, Subset
from depthseg.synthetic.classes import BARE_LAND, BUILDING, FOREST, IMPERVIOUS, ROAD
from depthseg.synthetic.noise import KeyTable, hash_keys
from depthseg.synthetic.spectra import VARIANTS, Mat, code


def make_city(
    canvas: Canvas,
    rng: np.random.Generator,
    table: KeyTable,
    intensity_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    village_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    keep_out_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
    centre: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Paint streets, blocks, buildings and yards onto ``canvas``.

    Args:
        canvas: The layout canvas (painted in place; urban trees go to its seeds).
        rng: Random generator.
        table: Per-key random table.
        intensity_fn: Urbanisation intensity at (x, y) metres; blocks above 0.45 are urban.
        village_fn: Village intensity at (x, y); rural blocks above 0.5 become villages.
        keep_out_fn: Distance in metres from (x, y) to water or a highway (negative on
            them); no building lot may reach closer.
        centre: City centre (x, y) in metres.

    Returns:
        Boolean (rows, cols) masks of the built-up area (urban blocks and their streets)
        and of the avenues between districts (which bridge the river).
    """
    grid = make_grid(canvas, rng, centre)
    blocks = make_blocks(grid, rng, intensity_fn, village_fn, keep_out_fn)
    d, iu, iv = grid.district, grid.i_u, grid.i_v
    n_e = grid.edges_u.shape[1]
    e0u = grid.edges_u.reshape(-1)[d * n_e + iu]
    w0u = grid.widths_u.reshape(-1)[d * n_e + iu]
    n_e = grid.edges_v.shape[1]
    e0v = grid.edges_v.reshape(-1)[d * n_e + iv]
    w0v = grid.widths_v.reshape(-1)[d * n_e + iv]
    a = grid.u - e0u - 0.5 * w0u  # metres into the block from its inner edge, along u
    b = grid.v - e0v - 0.5 * w0v
    del e0u, e0v, w0u, w0v
    block = grid.block_id(d, iu, iv)
    len_a, len_b = blocks.len_a[block], blocks.len_b[block]
    urban = blocks.kind[block] != RURAL
    # Streets lie on the grid lines; they exist where the block on either side is urban.
    near_u = np.where(a < 0.5 * len_a, iu - 1, iu + 1)
    near_v = np.where(b < 0.5 * len_b, iv - 1, iv + 1)
    urban_u = urban | (blocks.kind[grid.block_id(d, near_u, iv)] != RURAL)
    urban_v = urban | (blocks.kind[grid.block_id(d, iu, near_v)] != RURAL)
    street_u = ((a < 0) | (a > len_a)) & urban_u
    street_v = ((b < 0) | (b > len_b)) & urban_v
    del urban_u, urban_v
    del near_u, near_v, len_a, len_b
    avenue = (grid.border < 0.5 * AVENUE_WIDTH) & (urban | street_u | street_v)
    built_up = urban | street_u | street_v | avenue
    del urban

    sub = Subset(canvas, built_up)
    take = sub.take
    city = _CityPixels(grid=grid, blocks=blocks, block=take(block), a=take(a), b=take(b),
                       street_u=take(street_u), street_v=take(street_v), avenue=take(avenue))
    del block, a, b, street_u, street_v
    _paint_city(canvas, sub, city, rng, table, keep_out_fn)
    return built_up, avenue


@dataclass
class _CityPixels:
    """The built-up pixels as 1-D arrays aligned with a :class:`Subset`.

    Attributes:
        grid: The street grids.
        blocks: The block table.
        block: Block id per pixel.
        a: Metres into the block from its inner edge along u (negative on the street).
        b: The same along v.
        street_u: On a street that runs along v (a grid line of u).
        street_v: On a street that runs along u.
        avenue: On a district-border avenue.
    """

    grid: Grid
    blocks: Blocks
    block: np.ndarray
    a: np.ndarray
    b: np.ndarray
    street_u: np.ndarray
    street_v: np.ndarray
    avenue: np.ndarray


def _paint_city(
    canvas: Canvas,
    sub: Subset,
    city: _CityPixels,
    rng: np.random.Generator,
    table: KeyTable,
    keep_out_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> None:
    """Lots, buildings, yards, streets and urban trees on the built-up subset."""
    blocks, blk = city.blocks, city.block
    a, b = city.a, city.b
    kind = blocks.kind[blk]
    street = city.street_u | city.street_v | city.avenue
    urban = kind != RURAL

    # Lots: the block interior split into n x m equal lots; fu, fv run 0..1 across a lot.
    # Rows of lots (along v) get their own lot length and offset along u, so lot corners
    # do not line up across the block like a chessboard.
    lot_u, lot_v = blocks.lot_u[blk], blocks.lot_v[blk]
    j_v = np.clip(np.floor(b / lot_v), 0, blocks.n_lv[blk] - 1)
    row_key = hash_keys(blocks.key[blk], j_v.astype(np.int32), salt=5)
    irregular = (kind == VILLAGE) | (kind == INDUSTRIAL)
    lot_u = np.where(irregular, lot_u * (0.8 + 0.4 * table.uniform(row_key, 19)), lot_u)
    a_row = np.where(irregular, a + lot_u * table.uniform(row_key, 20), a)
    j_u = np.floor(a_row / lot_u)
    j_u = np.where(irregular, j_u, np.clip(j_u, 0, blocks.n_lu[blk] - 1))
    fu, fv = a_row / lot_u - j_u, b / lot_v - j_v
    del row_key, a_row
    lot_key = hash_keys(blocks.key[blk], j_u.astype(np.int32), j_v.astype(np.int32), salt=7)
    del j_u, j_v

    # Buildings: a setback rectangle in the lot, sometimes with an L-shaped notch.
    mu, mv = blocks.margin_u[blk], blocks.margin_v[blk]
    mu0 = mu[:, 0] + (mu[:, 1] - mu[:, 0]) * table.uniform(lot_key, 3)
    mu1 = mu[:, 0] + (mu[:, 1] - mu[:, 0]) * table.uniform(lot_key, 4)
    mv0 = mv[:, 0] + (mv[:, 1] - mv[:, 0]) * table.uniform(lot_key, 5)
    mv1 = mv[:, 0] + (mv[:, 1] - mv[:, 0]) * table.uniform(lot_key, 6)
    del mu, mv
    building = urban & ~street & (fu > mu0) & (fu < 1 - mu1) & (fv > mv0) & (fv < 1 - mv1)
    building &= table.uniform(lot_key, 10) < spec_column("p_building")[kind]
    notch = (table.uniform(lot_key, 7) < 0.25) & (fu > 0.55 + 0.2 * table.uniform(lot_key, 8))
    building &= ~(notch & (fv > 0.5 + 0.2 * table.uniform(lot_key, 9)))
    del notch
    _clear_lots(building, sub, city, fu, fv, lot_u, lot_v, keep_out_fn)

    # Materials: mostly one roof material per block (estates are uniform), some per lot.
    # Urban villages are patchy: each house has its own roof.
    uniform_share = np.where(kind == VILLAGE, 0.25, 0.8)
    pick = np.where(table.uniform(lot_key, 15) < uniform_share, table.uniform(blocks.key[blk], 13),
                    table.uniform(lot_key, 14))
    del uniform_share
    roof_mat = choose_material(spec_column("roofs"), kind, pick)
    ground_mat = choose_material(spec_column("grounds"), kind, table.uniform(lot_key, 13))
    del pick
    roof_code = (roof_mat * VARIANTS + (lot_key >> np.uint32(20)) % np.uint32(VARIANTS))
    yard_variant = (blocks.key[blk] >> np.uint32(20)) % np.uint32(VARIANTS)
    ground_code = (ground_mat * VARIANTS + yard_variant).astype(np.uint8)
    del yard_variant

    # Heights: 3 m floors plus a parapet; towers grow towards the core.
    h_range = spec_column("height")[kind]
    boost = np.where(kind == CORE, np.clip(blocks.intensity[blk], 0.45, 1.2), 1.0)
    spread = (h_range[:, 1] - h_range[:, 0]) * table.uniform(lot_key, 11) ** 1.5
    h_raw = h_range[:, 0] + spread * boost
    height = (3.0 * np.maximum(1, np.round(h_raw / 3.0)) + 1.0).astype(np.float32)
    del h_range, boost, h_raw, spread
    roof_u = (fu - mu0) * lot_u  # metres from the footprint corner
    roof_v = (fv - mv0) * lot_v
    size_u = (1 - mu0 - mu1) * lot_u
    size_v = (1 - mv0 - mv1) * lot_v
    edge_m = np.minimum(np.minimum(roof_u, size_u - roof_u), np.minimum(roof_v, size_v - roof_v))
    # Tiled roofs of houses and low slabs are pitched: a ridge along the long side (the
    # renderer shades the two faces differently).
    pitched = (roof_mat == Mat.TILE_RED) & np.isin(kind, [VILLAGE, RESIDENTIAL, PARK])
    # Rooftop plant rooms on tall buildings; small units (water heaters, AC) on most roofs.
    ru = size_u * (0.25 + 0.35 * table.uniform(lot_key, 12))
    plant = (height > 15) & ~pitched & (roof_u > ru) & (roof_u < ru + 6)
    plant &= np.abs(roof_v - 0.5 * size_v) < 4
    height[plant] += 3.5
    cell_u, cell_v = np.floor(roof_u / 3.2), np.floor(roof_v / 3.2)
    unit_key = hash_keys(lot_key, cell_u.astype(np.int32), cell_v.astype(np.int32), salt=13)
    unit = (table.uniform(unit_key, 18) < 0.18) & (edge_m > 1.5) & ~plant
    unit &= (roof_u - 3.2 * cell_u > 0.6) & (roof_u - 3.2 * cell_u < 2.2)
    unit &= (roof_v - 3.2 * cell_v > 0.8) & (roof_v - 3.2 * cell_v < 2.0)
    parapet = (edge_m < 0.9).astype(np.float32) - 0.6 * plant
    short_u = size_u < size_v
    across = np.where(short_u, roof_u / np.maximum(size_u, 0.1), roof_v / np.maximum(size_v, 0.1))
    rise = np.minimum(0.3 * np.minimum(size_u, size_v), 4.0)
    ridge = np.clip(1.0 - np.abs(2.0 * across - 1.0), 0.0, 1.0) * rise
    height = np.where(pitched, height - 1.0 + ridge, height).astype(np.float32)
    parapet[pitched] = 0.0
    unit &= ~pitched
    del mu0, mu1, mv0, mv1, roof_u, roof_v, size_u, size_v, ru, cell_u, cell_v, edge_m
    del pitched, short_u, across, rise, ridge, roof_mat

    yard = urban & ~street & ~building
    site = yard & (kind == CONSTRUCTION)
    # Paving joints on concrete and tile yards (asphalt is laid seamless).
    paving = ((np.mod(fu * lot_u, 6.0) < 0.4) | (np.mod(fv * lot_v, 6.0) < 0.4))
    paving = (paving & (ground_mat != Mat.ASPHALT)).astype(np.float32)
    canvas.paint_at(sub, yard & ~site, IMPERVIOUS, ground_code, 0.0, lot_key, paving)
    canvas.paint_at(sub, site, BARE_LAND, code(Mat.SOIL, 1), 0.0, lot_key, paving)
    del ground_code, paving
    parking = yard & (ground_mat == Mat.ASPHALT) & (table.uniform(lot_key, 17) < 0.6)
    parking &= np.isin(kind, [CORE, PLAZA, INDUSTRIAL, RESIDENTIAL])
    _parking(canvas, sub, parking, a, b, lot_key, table)
    del parking

    _paint_streets(canvas, sub, city, rng, table)
    canvas.paint_at(sub, building, BUILDING, roof_code.astype(np.uint8), height, lot_key, parapet)
    canvas.paint_at(sub, building & unit, BUILDING, code(Mat.METAL_WHITE, 1), height + 1.2,
                    unit_key, 0.0)
    del roof_code, parapet, height, unit, unit_key

    # Trees scattered in yards and parks; parks have a dark understorey between crowns.
    density = np.array([SPECS[t].tree_density if t in SPECS else 0 for t in range(8)], np.float32)
    p_tree = density[kind] * np.float32(canvas.res**2 / 100.0)
    seeds = yard & ~site & (sub.take(canvas.seed_uniform) < p_tree) & (ground_mat != Mat.ASPHALT)
    canvas.trees.add_at(sub.index[seeds], canvas.cols, (5, 16), (2.0, 4.5), rng)
    park_floor = yard & (kind == PARK) & (ground_mat != Mat.CONCRETE_LIGHT)
    canvas.paint_at(sub, park_floor, FOREST, code(Mat.FOREST_FLOOR, 0), 0.3, lot_key, 0.0)


def _clear_lots(
    building: np.ndarray,
    sub: Subset,
    city: _CityPixels,
    fu: np.ndarray,
    fv: np.ndarray,
    lot_u: np.ndarray,
    lot_v: np.ndarray,
    keep_out_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> None:
    """Remove (in place) buildings whose lot reaches water, a highway or a district avenue.

    Tested at the lot centre, so a building is kept or dropped whole rather than cut.
    """
    grid = city.grid
    cand = np.flatnonzero(building)
    flat = sub.index[cand]
    c_d = grid.district.reshape(-1)[flat]
    c_u = grid.u.reshape(-1)[flat] + (0.5 - fu[cand]) * lot_u[cand]
    c_v = grid.v.reshape(-1)[flat] + (0.5 - fv[cand]) * lot_v[cand]
    cos_a, sin_a = np.cos(grid.angles)[c_d], np.sin(grid.angles)[c_d]
    c_x = grid.seeds[c_d, 0] + c_u * cos_a - c_v * sin_a
    c_y = grid.seeds[c_d, 1] + c_u * sin_a + c_v * cos_a
    half_diag = 0.5 * np.hypot(lot_u[cand], lot_v[cand])
    clear = keep_out_fn(c_x, c_y) > half_diag + 2.0
    dist2 = np.stack([(c_x - sx) ** 2 + (c_y - sy) ** 2 for sx, sy in grid.seeds])
    own = dist2[c_d, np.arange(cand.size)]
    for j, (sx, sy) in enumerate(grid.seeds):
        between = np.hypot(grid.seeds[c_d, 0] - sx, grid.seeds[c_d, 1] - sy)
        gap = (dist2[j] - own) / (2 * between + 1e-6)
        clear &= (c_d == j) | (gap > half_diag + 0.5 * AVENUE_WIDTH)
    building[cand[~clear]] = False


def _paint_streets(
    canvas: Canvas, sub: Subset, city: _CityPixels, rng: np.random.Generator, table: KeyTable
) -> None:
    """Asphalt carriageways, paved sidewalks, dashed centre lines and kerbside trees."""
    grid, blocks, blk = city.grid, city.blocks, city.block
    a, b = city.a, city.b
    len_a, len_b = blocks.len_a[blk], blocks.len_b[blk]
    d = sub.take(grid.district)
    iu, iv = sub.take(grid.i_u), sub.take(grid.i_v)
    n_eu, n_ev = grid.edges_u.shape[1], grid.edges_v.shape[1]
    # Width of the street a pixel is on, and its distance from the street's centre line.
    w_u = np.where(a < 0.5 * len_a, grid.widths_u.reshape(-1)[d * n_eu + iu],
                   grid.widths_u.reshape(-1)[d * n_eu + iu + 1])
    w_v = np.where(b < 0.5 * len_b, grid.widths_v.reshape(-1)[d * n_ev + iv],
                   grid.widths_v.reshape(-1)[d * n_ev + iv + 1])
    off_u = np.where(a < 0.5 * len_a, a + 0.5 * w_u, len_a + 0.5 * w_u - a)
    off_v = np.where(b < 0.5 * len_b, b + 0.5 * w_v, len_b + 0.5 * w_v - b)
    on_u = city.street_u & (~city.street_v | (off_u < off_v))
    width = np.where(on_u, w_u, w_v)
    to_line = np.where(on_u, off_u, off_v)
    along = np.where(on_u, sub.take(grid.v), sub.take(grid.u))
    avenue = city.avenue
    width = np.where(avenue, AVENUE_WIDTH, width)
    to_line = np.where(avenue, np.abs(sub.take(grid.border)), to_line)
    # Which side of the centre line (for two-way traffic): the block or district it borders.
    side = np.where(avenue, d, np.where(on_u, a < 0.5 * len_a, b < 0.5 * len_b))
    del w_u, w_v, off_u, off_v, on_u
    street = city.street_u | city.street_v | avenue
    sidewalk = (to_line > 0.5 * width - 2.0) & (width >= 12)
    marking = ((to_line < 0.35) & (width > 11) & (np.mod(along, 10.0) < 5.0)).astype(np.float32)
    key = hash_keys(d, salt=21)
    canvas.paint_at(sub, street & ~sidewalk, ROAD, code(Mat.ASPHALT, 0), 0.0, key, marking)
    canvas.paint_at(sub, street & sidewalk, ROAD, code(Mat.CONCRETE, 1), 0.0, key, 0.0)
    # Traffic: cars centred in 3.5 m lanes, one direction on each side of the centre line.
    lane = np.floor(to_line / 3.5)
    in_lane = np.abs(to_line - 3.5 * (lane + 0.5)) < 0.9
    slot = np.floor(along / 9.0)
    car_key = hash_keys(key, side.astype(np.int32), lane.astype(np.int32), slot.astype(np.int32))
    busy = np.where(np.isin(blocks.kind[blk], [CORE, RESIDENTIAL]), 0.22, 0.1)
    car = street & ~sidewalk & in_lane & (np.mod(along, 9.0) < 4.5) & (to_line > 0.6)
    car &= (to_line < 0.5 * width - 0.5) & (table.uniform(car_key, 21) < busy)
    variant = ((car_key >> np.uint32(24)) % np.uint32(VARIANTS)).astype(np.uint8)
    canvas.paint_at(sub, car, ROAD, code(Mat.CAR, 0) + variant, 1.5, car_key, 0.0)
    del side, lane, in_lane, slot, car_key, busy, car, variant
    kerb = street & ~avenue & (width >= 10) & (to_line > 0.5 * width - 2.4)
    kerb &= (to_line < 0.5 * width - 1.4) & (np.mod(along, 7.0) < canvas.res)
    kerb &= np.isin(blocks.kind[blk], [CORE, RESIDENTIAL, PARK])
    canvas.trees.add_at(sub.index[kerb], canvas.cols, (6, 12), (2.2, 3.4), rng)


def _parking(
    canvas: Canvas,
    sub: Subset,
    area: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    lot_key: np.ndarray,
    table: KeyTable,
) -> None:
    """Parked cars in rows of 2.6 m x 5 m stalls on asphalt yards (1.5 m tall)."""
    idx = np.flatnonzero(area)
    a, b, lot_key = a[idx], b[idx], lot_key[idx]
    module = np.mod(b, 16.0)
    depth = np.where(module < 8.0, module - 1.0, 15.0 - module)
    in_row = (depth > 0.2) & (depth < 4.6)
    across = np.mod(a, 2.6)
    car_key = hash_keys(lot_key, np.floor(a / 2.6).astype(np.int32),
                        np.floor(b / 8.0).astype(np.int32), salt=17)
    cars = in_row & (across > 0.4) & (across < 2.2) & (table.uniform(car_key, 16) < 0.6)
    variant = ((car_key >> np.uint32(24)) % np.uint32(VARIANTS)).astype(np.uint8)
    sel = np.zeros(area.shape, bool)
    sel[idx] = cars
    full = np.zeros(area.shape, np.uint32)
    full[idx] = car_key
    mat = np.zeros(area.shape, np.uint8)
    mat[idx] = code(Mat.CAR, 0) + variant
    canvas.paint_at(sub, sel, IMPERVIOUS, mat, 1.5, full, 0.0)
    sel[idx] = in_row & ~cars & (across < 0.3)
    canvas.paint_at(sub, sel, IMPERVIOUS, code(Mat.PAINT, 0), 0.0, None, 0.0)
