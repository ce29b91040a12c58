"""The LiuZhou land-cover classes (the paper's dataset): names and display colours.

The one source of the default class list: the synthetic regions label with it, chip
preparation defaults to it, and the benchmarks build their bundles with it. A user's own
classes come from their label map or chip store instead.
"""

from __future__ import annotations

#: Class names indexed by label value.
LIUZHOU_CLASSES: tuple[str, ...] = (
    "cropland",
    "forest",
    "building",
    "road",
    "impervious surface",
    "bare land",
    "water",
)

#: RGB display colour per class, indexed like :data:`LIUZHOU_CLASSES`.
LIUZHOU_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 211, 127),  # cropland: straw yellow
    (38, 115, 0),  # forest: dark green
    (230, 0, 0),  # building: red
    (89, 89, 89),  # road: dark grey
    (178, 178, 178),  # impervious surface: light grey
    (168, 112, 0),  # bare land: brown
    (0, 112, 255),  # water: blue
)
