"""Land-cover classes of the synthetic regions (LiuZhou order) and their display palette."""

from __future__ import annotations

CROPLAND = 0
FOREST = 1
BUILDING = 2
ROAD = 3
IMPERVIOUS = 4
BARE_LAND = 5
WATER = 6
#: Label value for "no data / ignore"; never used inside a synthetic region.
NODATA_LABEL = 255

#: Class names indexed by label value (the LiuZhou dataset's order).
CLASS_NAMES: tuple[str, ...] = (
    "cropland",
    "forest",
    "building",
    "road",
    "impervious surface",
    "bare land",
    "water",
)

#: RGB display colour per class, indexed like :data:`CLASS_NAMES`.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 211, 127),  # cropland: straw yellow
    (38, 115, 0),  # forest: dark green
    (230, 0, 0),  # building: red
    (89, 89, 89),  # road: dark grey
    (178, 178, 178),  # impervious surface: light grey
    (168, 112, 0),  # bare land: brown
    (0, 112, 255),  # water: blue
)
