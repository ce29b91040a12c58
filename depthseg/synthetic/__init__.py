"""Synthetic georeferenced regions: GaoFen-2-like scenes with labels and heights.

Scenes are simulated from physical rules (a street/block/field layout, material spectra,
sun shadows, a sensor model), not painted from label colours, so that imagery, land cover
and height agree the way they do in real data::

    from depthseg.synthetic import make_region, write_chip_pairs
    region = make_region("out/", size=1024, seed=0)
    write_chip_pairs(region, "out/chips", chip_size=512)

Submodules: :mod:`.scene` (in-memory physics), :mod:`.writer` (files), :mod:`.chips`. Names
are imported on first use (the package convention, :mod:`depthseg._lazy`).
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.synthetic.chips import write_chip_pairs
    from depthseg.synthetic.classes import CLASS_NAMES, NODATA_LABEL, PALETTE
    from depthseg.synthetic.scene import BAND_NAMES, SceneArrays, simulate
    from depthseg.synthetic.writer import Region, make_region

_WHERE = {
    "write_chip_pairs": "chips",
    "CLASS_NAMES": "classes", "NODATA_LABEL": "classes", "PALETTE": "classes",
    "BAND_NAMES": "scene", "SceneArrays": "scene", "simulate": "scene",
    "Region": "writer", "make_region": "writer",
}

__all__ = [
    "BAND_NAMES",
    "CLASS_NAMES",
    "NODATA_LABEL",
    "PALETTE",
    "Region",
    "SceneArrays",
    "make_region",
    "simulate",
    "write_chip_pairs",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
