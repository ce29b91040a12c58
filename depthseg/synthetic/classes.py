"""Land-cover classes of the synthetic regions (LiuZhou order) and their display palette."""

from __future__ import annotations

from depthseg.classes import LIUZHOU_CLASSES, LIUZHOU_PALETTE

CROPLAND = 0
FOREST = 1
BUILDING = 2
ROAD = 3
IMPERVIOUS = 4
BARE_LAND = 5
WATER = 6
#: Label value for "no data / ignore"; never used inside a synthetic region.
NODATA_LABEL = 255

#: Class names indexed by label value (the LiuZhou dataset's order; one source for them all).
CLASS_NAMES: tuple[str, ...] = LIUZHOU_CLASSES

#: RGB display colour per class, indexed like :data:`CLASS_NAMES`.
PALETTE: tuple[tuple[int, int, int], ...] = LIUZHOU_PALETTE
