"""Farmland parcels, forest stands and tree crowns.

Crops and trees share colours on purpose (see spectra.py); what separates them is height
(crops stay below about 1 m, crowns are 5-25 m) and texture (crop rows versus lumpy crowns
with dark gaps and self-shadowing).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from depthseg.synthetic import spectra as sp
from depthseg.synthetic.canvas import Canvas, Subset
from depthseg.synthetic.classes import BARE_LAND, BUILDING, CROPLAND, FOREST, WATER
from depthseg.synthetic.geometry import irregular_axis, rotated
from depthseg.synthetic.noise import KeyTable, hash_keys
from depthseg.synthetic.spectra import Mat, code

# Parcel uses: crop variants, then ponds, orchards and bare plots.
_POND, _ORCHARD, _BARE = 8, 9, 10
_USE_PROBS = np.array(
    [0.22, 0.08, 0.10, 0.09, 0.09, 0.10, 0.10, 0.04, 0.06, 0.08, 0.04], np.float32
)
# Crop height range (m) per crop variant (green, lush, yellow, young, fallow, cane, veg, paddy).
_CROP_HEIGHT = np.array(
    [[0.4, 0.8], [0.6, 1.0], [0.5, 0.9], [0.1, 0.3], [0.0, 0.05], [0.8, 1.0], [0.2, 0.4],
     [0.05, 0.2], [0, 0], [0, 0], [0, 0]], np.float32
)
# Row-texture strength per use: clear rows in young crops and furrows, none in ponds.
_ROW_AMP = np.array([0.6, 0.4, 0.5, 1.0, 0.8, 0.5, 1.0, 0.2, 0, 0, 0.3], np.float32)


def make_fields(
    canvas: Canvas, rng: np.random.Generator, table: KeyTable, angle: float, area: np.ndarray
) -> None:
    """Paint farmland parcels with bunds, crop rows, fish ponds, orchards and bare plots.

    Args:
        canvas: Layout canvas.
        rng: Random generator.
        table: Per-key random table.
        angle: Orientation of the parcel grid in radians (parcels follow a road).
        area: Boolean (rows, cols) where farmland may be painted (outside the city).
    """
    sub = Subset(canvas, area)
    half = 0.75 * canvas.extent + 200
    axis_u = irregular_axis(half, (30, 110), (0.6, 1.4), rng)
    axis_v = irregular_axis(half, (14, 50), (0.6, 1.4), rng)
    origin = (0.5 * canvas.cols * canvas.res, 0.5 * canvas.rows * canvas.res)
    u, v = rotated(sub.x, sub.y, angle, *origin)
    i_u, i_v = axis_u.locate(u), axis_v.locate(v)
    a = u - axis_u.edges[i_u]
    b = v - axis_v.edges[i_v]
    size_u = axis_u.edges[i_u + 1] - axis_u.edges[i_u]
    size_v = axis_v.edges[i_v + 1] - axis_v.edges[i_v]
    to_edge = np.minimum(
        np.minimum(a - 0.5 * axis_u.widths[i_u], size_u - 0.5 * axis_u.widths[i_u + 1] - a),
        np.minimum(b - 0.5 * axis_v.widths[i_v], size_v - 0.5 * axis_v.widths[i_v + 1] - b),
    )
    del size_u, size_v
    key = hash_keys(i_u, i_v, salt=31)
    cumulative = np.cumsum(_USE_PROBS / _USE_PROBS.sum()).astype(np.float32)
    pick = table.uniform(key, 0)
    use = np.zeros(sub.size, np.int32)
    for threshold in cumulative[:-1]:
        use += pick > threshold
    del pick

    # Rows run along one side of the parcel, with a per-parcel spacing and phase.
    along_u = table.uniform(key, 1) < 0.5
    period = 1.8 + 2.6 * table.uniform(key, 2)
    phase = np.float32(2 * np.pi) * table.uniform(key, 3)
    rows_wave = np.sin(np.where(along_u, b, a) * (np.float32(2 * np.pi) / period) + phase)
    del a, b, along_u, period, phase
    pattern = (_ROW_AMP[use] * rows_wave).astype(np.float32)
    lo, hi = _CROP_HEIGHT[:, 0][use], _CROP_HEIGHT[:, 1][use]
    height = lo + (hi - lo) * table.uniform(key, 4)
    height = np.maximum(height * (1 + 0.25 * rows_wave), 0).astype(np.float32)
    del rows_wave, lo, hi

    crop = use < _POND
    variant = np.minimum(use, sp.VARIANTS - 1).astype(np.uint8)
    canvas.paint_at(sub, crop, CROPLAND, code(Mat.CROP, 0) + variant, height, key, pattern)
    del variant, height
    pond = use == _POND
    water_code = code(Mat.WATER, 1) + 2 * (table.uniform(key, 5) < 0.4).astype(np.uint8)
    canvas.paint_at(sub, pond & (to_edge > 1.0), WATER, water_code, 0.0, key, 0.0)
    # Pond dykes: grassy earth walls, mapped with the farmland.
    canvas.paint_at(sub, pond & (to_edge <= 1.0), CROPLAND, code(Mat.CROP, sp.CROP_YOUNG), 0.3,
                    key, 0.0)
    orchard = use == _ORCHARD
    canvas.paint_at(sub, orchard, FOREST, code(Mat.CROP, sp.CROP_YOUNG), 0.2, key, 0.0)
    spacing = 4.0 + 2.0 * table.uniform(key, 6)
    grid_hit = (np.mod(u, spacing) < canvas.res) & (np.mod(v, spacing) < canvas.res)
    planted = orchard & grid_hit & (to_edge > 1.5)
    canvas.trees.add_at(sub.index[planted], canvas.cols, (3, 5), (1.4, 2.0), rng)
    del grid_hit, spacing, u, v
    bare = use == _BARE
    canvas.paint_at(sub, bare, BARE_LAND, code(Mat.SOIL, 0) + (key % 3).astype(np.uint8), 0.0,
                    key, 0.0)
    # Bunds and field paths: grassy strips between parcels, a few trees along them.
    bund = (to_edge < 0) & ~pond
    canvas.paint_at(sub, bund, CROPLAND, code(Mat.CROP, sp.CROP_YOUNG), 0.15, 5, 0.0)
    lonely = bund & (sub.take(canvas.seed_uniform) < 0.004)
    canvas.trees.add_at(sub.index[lonely], canvas.cols, (5, 12), (2.0, 3.5), rng)


def make_forest(canvas: Canvas, mask: np.ndarray, rng: np.random.Generator,
                tallness: np.ndarray) -> None:
    """Forest stands: a dark understorey with crowns seeded on a jittered 4.5-6.5 m grid.

    Args:
        canvas: Layout canvas.
        mask: Boolean forest area.
        rng: Random generator.
        tallness: Smooth field in [0, 1] scaling tree height (taller stands in the valleys).
    """
    canvas.paint(mask, FOREST, code(Mat.FOREST_FLOOR, 0), 0.5, 77, 0.0)
    spacing_px = rng.uniform(4.5, 6.5) / canvas.res
    n_rows = int(np.ceil(canvas.rows / spacing_px))
    n_cols = int(np.ceil(canvas.cols / spacing_px))
    grid_r, grid_c = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows = ((grid_r + rng.random(grid_r.shape)) * spacing_px).astype(np.int32).ravel()
    cols = ((grid_c + rng.random(grid_c.shape)) * spacing_px).astype(np.int32).ravel()
    keep = (rows < canvas.rows) & (cols < canvas.cols)
    rows, cols = rows[keep], cols[keep]
    keep = mask[rows, cols]
    rows, cols = rows[keep], cols[keep]
    scale = tallness[rows, cols]
    canvas.trees.rows.append(rows)
    canvas.trees.cols.append(cols)
    heights = 8 + 15 * scale + rng.uniform(-3, 3, rows.size)
    radii = rng.uniform(2.6, 4.2, rows.size) * (0.8 + 0.4 * scale)
    canvas.trees.heights.append(heights.astype(np.float32))
    canvas.trees.radii.append(radii.astype(np.float32))


def grow_crowns(canvas: Canvas, rng: np.random.Generator, grain: np.ndarray) -> None:
    """Grow every collected tree seed into a crown and paint it where it tops the surface.

    Each pixel belongs to its nearest tree top (one Euclidean distance transform for all
    trees, instead of a loop over thousands of crowns); within the crown radius the
    surface is a half-ellipsoid cap, so touching crowns meet in dark, shadowed valleys.

    Args:
        canvas: Layout canvas with ``canvas.trees`` filled.
        rng: Random generator.
        grain: Unit-variance fine noise (leaf clumps on the crown surface).
    """
    rows, cols, heights, radii = canvas.trees.arrays()
    if rows.size == 0:
        return
    # No trees rooted in water or on roofs.
    ok = ~np.isin(canvas.labels[rows, cols], [WATER, BUILDING])
    rows, cols, heights, radii = rows[ok], cols[ok], heights[ok], radii[ok]
    if rows.size == 0:
        return
    seed_img = np.zeros(canvas.shape, np.int32)
    seed_img[rows, cols] = np.arange(1, rows.size + 1, dtype=np.int32)
    dist, (near_r, near_c) = ndi.distance_transform_edt(
        seed_img == 0, sampling=canvas.res, return_indices=True
    )
    tree = seed_img[near_r, near_c] - 1
    del near_r, near_c, seed_img
    dist = dist.astype(np.float32)
    radius = radii[tree]
    top = heights[tree]
    inside = dist < radius
    cap = np.sqrt(np.clip(1 - (dist / radius) ** 2, 0, 1))
    crown = top * (0.55 + 0.45 * cap) + 0.6 * grain
    del dist, radius, cap, top
    visible = inside & (crown > canvas.height + 0.5)
    tree_key = hash_keys(tree, salt=41)
    variant = ((tree_key >> 20) % 4).astype(np.uint8)
    canvas.paint(visible, FOREST, code(Mat.TREE, 0) + variant, crown.astype(np.float32),
                 tree_key, 0.0)
