"""Pure grid maths for mapping: output grid, chunks, halos, tiles, blending weights. No I/O."""

from depthseg.geo.blend import Blender, BlendKind, blend_weights, crop_halo
from depthseg.geo.grid import (
    DEFAULT_CHUNK_SIZE,
    Bounds,
    ChunkId,
    OutputGrid,
    PixelWindow,
    auto_crs,
    parse_crs,
    plan_grid,
    reproject_geometry,
)
from depthseg.geo.tiles import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    VIT_PATCH,
    TileLayout,
    TileOffset,
    TileSpec,
    axis_offsets,
    chunk_read_window,
    round_to_patch,
    tile_windows,
)

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
    "reproject_geometry",
    "auto_crs",
    "axis_offsets",
    "blend_weights",
    "chunk_read_window",
    "crop_halo",
    "parse_crs",
    "plan_grid",
    "round_to_patch",
    "tile_windows",
]
