"""Surface materials: reflectance per band (B, G, R, NIR), variation and texture.

Roofs and impervious ground deliberately share the same materials (concrete, asphalt,
metal, tile): on a nadir image only the height tells a roof from a plaza. Likewise crops
and tree crowns have overlapping colours; height and texture separate them.

A material code on the layout is ``material * VARIANTS + variant``; variants are shades of
one material (asphalt new/old, car colours, crop states).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

from depthseg.synthetic.noise import TABLE_SIZE

VARIANTS = 8
#: Internal band order of the simulation.
BANDS: tuple[str, ...] = ("blue", "green", "red", "nir")


class Mat(IntEnum):
    """Surface materials."""

    CONCRETE = 0
    CONCRETE_LIGHT = 1
    ASPHALT = 2
    METAL_BLUE = 3
    METAL_WHITE = 4
    TILE_RED = 5
    TREE = 6
    FOREST_FLOOR = 7
    CROP = 8
    SOIL = 9
    SAND = 10
    WATER = 11
    CAR = 12
    PAINT = 13


def code(material: Mat, variant: int | np.ndarray = 0) -> np.ndarray | int:
    """Material code ``material * VARIANTS + variant`` as stored in the layout."""
    return int(material) * VARIANTS + variant


#: Crop variants (set by the field layout, because they also set crop height).
CROP_GREEN, CROP_LUSH, CROP_YELLOW, CROP_YOUNG, CROP_FALLOW, CROP_CANE, CROP_VEG, CROP_PADDY = (
    range(8)
)

# Surface reflectance (0..1) per variant and band B, G, R, NIR. Rows with fewer than
# VARIANTS entries are cycled. Values follow the usual spectral-library shapes: vegetation
# has a green peak and a high NIR plateau, water absorbs NIR, concrete is bright and flat,
# asphalt dark and flat, red tile and laterite soil rise towards red and NIR.
_REFLECTANCE: dict[Mat, list[list[float]]] = {
    Mat.CONCRETE: [
        [0.20, 0.21, 0.22, 0.24],
        [0.17, 0.18, 0.19, 0.21],
        [0.23, 0.24, 0.25, 0.27],
        [0.14, 0.15, 0.16, 0.18],
        [0.17, 0.18, 0.20, 0.23],
        [0.21, 0.22, 0.22, 0.24],
    ],
    Mat.CONCRETE_LIGHT: [
        [0.31, 0.33, 0.34, 0.36],
        [0.36, 0.38, 0.39, 0.40],
        [0.28, 0.30, 0.31, 0.33],
        [0.40, 0.42, 0.43, 0.44],
    ],
    Mat.ASPHALT: [
        [0.070, 0.078, 0.085, 0.100],
        [0.090, 0.098, 0.105, 0.120],
        [0.110, 0.120, 0.130, 0.150],
        [0.060, 0.066, 0.072, 0.085],
    ],
    Mat.METAL_BLUE: [
        [0.24, 0.22, 0.16, 0.18],
        [0.30, 0.29, 0.23, 0.25],
        [0.22, 0.23, 0.19, 0.21],
        [0.19, 0.17, 0.13, 0.15],
    ],
    Mat.METAL_WHITE: [[0.46, 0.48, 0.48, 0.48], [0.40, 0.42, 0.43, 0.44], [0.50, 0.52, 0.52, 0.51]],
    Mat.TILE_RED: [
        [0.09, 0.10, 0.20, 0.27],
        [0.11, 0.12, 0.18, 0.24],
        [0.10, 0.09, 0.16, 0.22],
        [0.13, 0.14, 0.22, 0.28],
    ],
    Mat.TREE: [
        [0.036, 0.072, 0.042, 0.34],
        [0.030, 0.060, 0.036, 0.29],
        [0.042, 0.085, 0.052, 0.38],
        [0.038, 0.076, 0.048, 0.36],
    ],
    Mat.FOREST_FLOOR: [[0.040, 0.060, 0.055, 0.20], [0.050, 0.065, 0.070, 0.18]],
    Mat.CROP: [
        [0.036, 0.070, 0.045, 0.36],  # green
        [0.030, 0.064, 0.036, 0.42],  # lush
        [0.070, 0.110, 0.120, 0.30],  # yellow, ripening
        [0.060, 0.090, 0.090, 0.24],  # young: green over soil
        [0.085, 0.100, 0.118, 0.17],  # fallow, tilled soil
        [0.034, 0.066, 0.040, 0.38],  # sugarcane
        [0.045, 0.090, 0.060, 0.34],  # vegetables
        [0.050, 0.070, 0.050, 0.10],  # flooded paddy
    ],
    Mat.SOIL: [
        [0.10, 0.13, 0.21, 0.27],  # red laterite
        [0.12, 0.14, 0.17, 0.22],  # brown
        [0.16, 0.20, 0.25, 0.29],  # yellow clay
        [0.15, 0.16, 0.17, 0.20],  # grey fill
    ],
    Mat.SAND: [[0.22, 0.25, 0.28, 0.31], [0.19, 0.21, 0.24, 0.27]],
    Mat.WATER: [
        [0.070, 0.090, 0.070, 0.030],  # turbid river
        [0.050, 0.080, 0.050, 0.030],  # green pond
        [0.040, 0.050, 0.035, 0.020],  # deep, dark
        [0.050, 0.090, 0.055, 0.060],  # algae
    ],
    Mat.CAR: [
        [0.48, 0.48, 0.48, 0.48],  # white
        [0.04, 0.04, 0.04, 0.05],  # black
        [0.30, 0.30, 0.30, 0.31],  # silver
        [0.08, 0.07, 0.22, 0.30],  # red
        [0.16, 0.11, 0.08, 0.15],  # blue
        [0.15, 0.15, 0.15, 0.16],  # grey
        [0.42, 0.43, 0.43, 0.44],  # white
        [0.06, 0.06, 0.06, 0.07],  # dark
    ],
    Mat.PAINT: [[0.50, 0.50, 0.50, 0.50], [0.45, 0.42, 0.20, 0.40]],
}

# (per-object brightness sd, per-object colour sd, grain, medium texture ~3 m,
# coarse texture ~40 m, structured pattern amplitude)
_TEXTURE: dict[Mat, tuple[float, float, float, float, float, float]] = {
    Mat.CONCRETE: (0.12, 0.025, 0.05, 0.05, 0.06, 0.10),
    Mat.CONCRETE_LIGHT: (0.10, 0.020, 0.04, 0.04, 0.05, 0.10),
    Mat.ASPHALT: (0.12, 0.020, 0.06, 0.06, 0.10, 0.80),
    Mat.METAL_BLUE: (0.08, 0.030, 0.02, 0.02, 0.03, 0.06),
    Mat.METAL_WHITE: (0.06, 0.020, 0.02, 0.02, 0.03, 0.06),
    Mat.TILE_RED: (0.10, 0.040, 0.07, 0.05, 0.04, 0.08),
    Mat.TREE: (0.12, 0.050, 0.14, 0.10, 0.08, 0.0),
    Mat.FOREST_FLOOR: (0.10, 0.050, 0.15, 0.12, 0.10, 0.0),
    Mat.CROP: (0.10, 0.050, 0.04, 0.05, 0.10, 0.16),
    Mat.SOIL: (0.10, 0.050, 0.08, 0.10, 0.12, 0.10),
    Mat.SAND: (0.06, 0.030, 0.04, 0.05, 0.08, 0.05),
    Mat.WATER: (0.08, 0.030, 0.01, 0.02, 0.04, 0.0),
    Mat.CAR: (0.04, 0.020, 0.02, 0.0, 0.0, 0.0),
    Mat.PAINT: (0.04, 0.010, 0.02, 0.0, 0.0, 0.0),
}


def reflectance_table() -> np.ndarray:
    """(n_codes, 4) float32 reflectance per material code."""
    n_mat = len(Mat)
    table = np.zeros((n_mat * VARIANTS, len(BANDS)), np.float32)
    for mat, rows in _REFLECTANCE.items():
        for variant in range(VARIANTS):
            table[int(mat) * VARIANTS + variant] = rows[variant % len(rows)]
    return table


def texture_table() -> np.ndarray:
    """(n_codes, 6) float32 texture amplitudes per material code (see ``_TEXTURE``)."""
    n_mat = len(Mat)
    table = np.zeros((n_mat * VARIANTS, 6), np.float32)
    for mat, amps in _TEXTURE.items():
        table[int(mat) * VARIANTS : (int(mat) + 1) * VARIANTS] = amps
    return table


def surface_reflectance(
    material: np.ndarray,
    keys: np.ndarray,
    pattern: np.ndarray,
    noises: tuple[np.ndarray, np.ndarray, np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    """Reflectance image (bands, rows, cols) from the material layout.

    Args:
        material: (rows, cols) uint8 material codes.
        keys: (rows, cols) uint32 object keys; one key per building, lot, parcel, crown.
        pattern: (rows, cols) float32 structured texture in [-1, 1] (crop rows, markings).
        noises: Unit-variance fields (grain, medium, coarse), each (rows, cols).
        rng: Random generator (per-object variation tables).

    Returns:
        float32 array (4, rows, cols).
    """
    base = reflectance_table()
    tex = texture_table()
    slot = keys & np.uint32(TABLE_SIZE - 1)
    # One brightness factor and one colour jitter per band and object: objects of the same
    # material differ (weathering, paint) while pixels of one object stay coherent.
    bright_tab = rng.standard_normal(TABLE_SIZE).astype(np.float32)
    colour_tab = rng.standard_normal((len(BANDS), TABLE_SIZE)).astype(np.float32)
    grain, medium, coarse = noises
    factor = (1.0 + tex[:, 0][material] * bright_tab[slot]).astype(np.float32)
    factor += tex[:, 2][material] * grain
    factor += tex[:, 3][material] * medium
    factor += tex[:, 4][material] * coarse
    factor += tex[:, 5][material] * pattern
    colour_sd = tex[:, 1][material]
    out = np.empty((len(BANDS), *material.shape), np.float32)
    for band in range(len(BANDS)):
        out[band] = base[:, band][material] * factor * (1.0 + colour_sd * colour_tab[band][slot])
    np.clip(out, 0.003, 0.9, out=out)
    return out
