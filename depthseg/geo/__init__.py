"""Pure grid maths for mapping: output grid, chunks, halos, tiles, blending weights. No I/O.

Names are imported on first use (PEP 562): tiles and blending need only numpy, so the predict
stage loads without pyproj/shapely (which the output grid needs) on a bare GPU box.
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.geo.blend import Blender, BlendKind, blend_weights, crop_halo
    from depthseg.geo.grid import (
        Bounds,
        ChunkId,
        OutputGrid,
        PixelWindow,
        auto_crs,
        bbox_ring,
        parse_crs,
        pixel_phase,
        plan_grid,
        reproject_geometry,
    )
    from depthseg.geo.tiles import (
        DEFAULT_CHUNK_SIZE,
        DEFAULT_OVERLAP,
        DEFAULT_TILE,
        VIT_PATCH,
        TileLayout,
        TileOffset,
        TileSpec,
        TileWindow,
        axis_offsets,
        chunk_read_window,
        lattice_chunk_size,
        lattice_halo,
        lattice_offsets,
        lattice_overlap,
        select_tiles,
        tile_windows,
        trim_tiles,
    )

_WHERE = {
    "Blender": "blend",
    "BlendKind": "blend",
    "blend_weights": "blend",
    "crop_halo": "blend",
    "DEFAULT_CHUNK_SIZE": "tiles",
    "Bounds": "grid",
    "ChunkId": "grid",
    "OutputGrid": "grid",
    "PixelWindow": "grid",
    "auto_crs": "grid",
    "bbox_ring": "grid",
    "parse_crs": "grid",
    "pixel_phase": "grid",
    "plan_grid": "grid",
    "reproject_geometry": "grid",
    "DEFAULT_OVERLAP": "tiles",
    "DEFAULT_TILE": "tiles",
    "VIT_PATCH": "tiles",
    "TileLayout": "tiles",
    "TileOffset": "tiles",
    "TileSpec": "tiles",
    "TileWindow": "tiles",
    "axis_offsets": "tiles",
    "chunk_read_window": "tiles",
    "lattice_chunk_size": "tiles",
    "lattice_halo": "tiles",
    "lattice_offsets": "tiles",
    "lattice_overlap": "tiles",
    "select_tiles": "tiles",
    "tile_windows": "tiles",
    "trim_tiles": "tiles",
}

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_OVERLAP",
    "DEFAULT_TILE",
    "VIT_PATCH",
    "BlendKind",
    "Blender",
    "Bounds",
    "ChunkId",
    "OutputGrid",
    "PixelWindow",
    "TileLayout",
    "TileOffset",
    "TileSpec",
    "TileWindow",
    "reproject_geometry",
    "auto_crs",
    "bbox_ring",
    "axis_offsets",
    "blend_weights",
    "chunk_read_window",
    "crop_halo",
    "lattice_chunk_size",
    "lattice_halo",
    "lattice_offsets",
    "lattice_overlap",
    "parse_crs",
    "pixel_phase",
    "plan_grid",
    "select_tiles",
    "tile_windows",
    "trim_tiles",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
