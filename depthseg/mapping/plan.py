"""Planning a mapping run: what to map, on which grid, in which chunks, with which tiles.

The plan is pure bookkeeping on headers (no pixels): it opens the catalog, checks the
imagery against the bundle's contract, snaps the output grid to the global chunk grid and
keeps the chunks whose interior meets a scene footprint.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import shapely
from pyproj import CRS as ProjCRS

from depthseg.errors import InputError
from depthseg.geo import (
    ChunkId,
    OutputGrid,
    PixelWindow,
    TileSpec,
    bbox_ring,
    chunk_read_window,
    lattice_chunk_size,
    lattice_halo,
    lattice_overlap,
    pixel_phase,
    plan_grid,
)
from depthseg.io.bundle import Contract
from depthseg.io.catalog import Catalog
from depthseg.io.warp import same_crs
from depthseg.mapping.request import MapRequest, Precision, resolved_precision

PLAN_FORMAT = "depthseg-map-plan"
#: Imagery within this factor of the bundle's ground resolution is mapped at its own.
MAX_GSD_RATIO = 1.25
#: Beyond this factor the default refuses to resample (the user can still ask for it).
MAX_RESAMPLE_RATIO = 4.0


@dataclass
class Plan:
    """The grid and the chunks of one run.

    Attributes:
        grid: The output grid.
        chunks: Chunks that hold imagery, row-major.
        skipped: Chunks of the grid without imagery (not mapped).
        tiles: Tile size, overlap and halo.
        bands: 1-based imagery bands in model channel order.
        bbox: The request's bbox and its CRS.
        resampling: How scenes are warped onto the grid.
        scale: ``(scale, offset)`` applied to pixels before the model, or None.
        notes: What the planner decided for the user (band matching, resolution, phase).
        zarr_format: The mosaic's Zarr format (2 or 3).
        probabilities: Per-class probability COGs are written too.
        polygons: Land-cover polygons (GeoParquet) are written too.
        precision: The model's arithmetic, ``fp32`` or ``bf16`` (``auto`` resolved for the
            run's devices: :func:`~depthseg.mapping.request.resolved_precision`), so a resume
            on other devices cannot mix precisions in one mosaic.
    """

    grid: OutputGrid
    chunks: list[ChunkId]
    skipped: int
    tiles: TileSpec
    bands: tuple[int, ...]
    bbox: dict[str, Any] = field(default_factory=dict)
    resampling: str = "nearest"
    scale: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)
    zarr_format: int = 3
    probabilities: bool = False
    polygons: bool = False
    precision: Precision = "fp32"

    def clip_ring(self) -> list[tuple[float, float]]:
        """The bbox in the output CRS, edges densified: pixels outside it are no data."""
        return bbox_ring(self.bbox["bbox"], self.bbox["crs"], self.grid.crs)

    def bbox_window(self) -> PixelWindow:
        """The grid pixels the bbox touches (the extent of the VRTs and overview COGs)."""
        xs, ys = zip(*self.clip_ring(), strict=True)
        return self.grid.pixel_window((min(xs), min(ys), max(xs), max(ys)))

    def read_bounds(self, chunk: ChunkId) -> tuple[float, float, float, float]:
        """Bounds (output CRS) of the chunk's read window: chunk + halo, as it is read."""
        window = chunk_read_window(self.grid.chunk_window(chunk), self.tiles.halo_px)
        return self.grid.window_bounds(window)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, written to ``plan.json``."""
        grid = asdict(self.grid)
        if not (self.grid.phase_x or self.grid.phase_y):  # plans from before phases hash alike
            grid.pop("phase_x")
            grid.pop("phase_y")
        data = {"format": PLAN_FORMAT, "grid": grid,
                "transform": list(self.grid.transform)[:6], "bbox": self.bbox,
                "tiles": asdict(self.tiles), "bands": list(self.bands),
                "chunks": [c.key for c in self.chunks], "skipped": self.skipped,
                "resampling": self.resampling}
        if self.scale is not None:
            data["scale"] = list(self.scale)
        if self.zarr_format != 3:  # plans of the default format hash as before
            data["zarr_format"] = self.zarr_format
        if self.probabilities:
            data["probabilities"] = True
        if self.polygons:
            data["polygons"] = True
        if self.precision != "fp32":  # CPU plans from before the option hash as before
            data["precision"] = self.precision
        return data

    def to_json(self) -> bytes:
        """Deterministic JSON bytes (a resumed run compares them with the stored plan)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True).encode()


def output_crs(request: MapRequest, catalog: Catalog) -> str:
    """The output CRS: as asked, or for ``auto`` the imagery's own metric CRS if it has one."""
    if request.crs != "auto":
        return request.crs
    crss = {s.crs for s in catalog.scenes}
    if len(crss) == 1:
        crs = ProjCRS.from_user_input(next(iter(crss)))
        if crs.is_projected and crs.axis_info[0].unit_name in ("metre", "meter"):
            epsg = crs.to_epsg()
            return f"EPSG:{epsg}" if epsg else crs.to_wkt()
    return "auto"


def _ratio(a: float, b: float) -> float:
    return max(a, b) / min(a, b)


def native_resolution(catalog: Catalog, crs: str) -> float:
    """The finest scene pixel in metres: exact in the output CRS, else measured on the ground."""
    exact = [s.resolution for s in catalog.scenes if same_crs(s.crs, crs)]
    if exact:
        return round(min(exact), 6)
    sizes = [g for g in (s.gsd() for s in catalog.scenes) if g]
    if not sizes:
        raise InputError(f"the resolution of imagery {catalog.source!r} in metres is unknown; "
                         "pass --resolution R")
    return round(min(sizes), 3)


def output_resolution(request: MapRequest, catalog: Catalog, crs: str, contract: Contract,
                      notes: list[str]) -> float:
    """The output pixel size in metres (see :attr:`MapRequest.resolution`)."""
    if isinstance(request.resolution, (int, float)):
        resolution = float(request.resolution)
        if contract.gsd and _ratio(resolution, contract.gsd) > MAX_GSD_RATIO:
            notes.append(f"warning: mapping at {resolution:g} m, but the model was trained at "
                         f"{contract.gsd:g} m: objects will look {contract.gsd / resolution:.2g}x"
                         " their trained size")
        return resolution
    native = native_resolution(catalog, crs)
    if contract.gsd is None:
        notes.append(f"resolution: {native:g} m (the imagery's; the model bundle does not record "
                     "the ground resolution it was trained at)")
        return native
    ratio = _ratio(native, contract.gsd)
    if request.resolution == "native" or ratio <= MAX_GSD_RATIO:
        if ratio > MAX_GSD_RATIO:
            notes.append(f"warning: mapping at the imagery's {native:g} m (--resolution native), "
                         f"but the model was trained at {contract.gsd:g} m: objects will look "
                         f"{contract.gsd / native:.2g}x their trained size")
        return native
    if ratio > MAX_RESAMPLE_RATIO:
        raise InputError(
            f"imagery {catalog.source!r} is {native:g} m per pixel but the model was trained at "
            f"{contract.gsd:g} m ({ratio:.0f}x apart): resampling cannot add or keep that "
            "detail; use a model trained near this resolution, or pass --resolution native (or "
            "--resolution R) to map anyway")
    method = request.resampling or contract.resampling
    notes.append(f"resolution: {contract.gsd:g} m, the model's training resolution (the imagery "
                 f"is {native:g} m, {ratio:.2g}x apart; resampled {method}; --resolution native "
                 f"keeps {native:g} m)")
    return float(contract.gsd)


def grid_phase(catalog: Catalog, crs: str, resolution: float, notes: list[str],
               ) -> tuple[float, float]:
    """The pixel phase of the imagery on the output grid (most scenes' phase), or (0, 0)."""
    phases: dict[tuple[float, float], int] = {}
    for scene in catalog.scenes:
        a, b, _, d, e, _ = scene.transform[:6]
        if b or d or not math.isclose(a, resolution, rel_tol=1e-9) or not math.isclose(
                -e, resolution, rel_tol=1e-9):
            continue
        if not same_crs(scene.crs, crs):
            continue
        phase = pixel_phase(scene.transform, resolution)
        phases[phase] = phases.get(phase, 0) + 1
    if not phases:
        return 0.0, 0.0
    chosen = max(phases, key=lambda p: phases[p])
    if len(phases) > 1:
        notes.append(f"warning: the scenes sit on {len(phases)} different pixel phases; the grid "
                     f"follows the most common ({chosen[0]:g}, {chosen[1]:g}) m and the others "
                     "are resampled")
    return chosen


def _band_key(name: str) -> str:
    return name.strip().lower()


def resolve_bands(request: MapRequest, catalog: Catalog, contract: Contract,
                  notes: list[str]) -> tuple[int, ...]:
    """Which imagery bands feed the model's channels, by meaning where the files say it.

    - ``--bands`` given: each token is a 1-based index or a band name (the imagery's
      description, case-insensitive); the user's choice stands.
    - Otherwise, when the imagery and the bundle both describe their bands: by name; a band
      the imagery does not have is an error that names both lists.
    - Otherwise by position (the bundle's band indices), and only when the imagery has as
      many bands as the training imagery had.
    """
    described = catalog.band_names
    channels = contract.band_names
    wanted = contract.band_descriptions or ("",) * len(channels)
    if request.bands is not None:
        if len(request.bands) != len(channels):
            raise InputError(f"--bands {' '.join(request.bands)} names {len(request.bands)} bands "
                             f"but the model takes {len(channels)} ({', '.join(channels)}); give "
                             "one imagery band per model channel, in that order")
        chosen = []
        for token in request.bands:
            if token.isdigit():
                index = int(token)
                if not 1 <= index <= catalog.count:
                    raise InputError(f"--bands {token}: the imagery has bands 1..{catalog.count}")
                chosen.append(index)
                continue
            hits = [k + 1 for k, d in enumerate(described) if d and _band_key(d) ==
                    _band_key(token)]
            if len(hits) != 1:
                raise InputError(f"--bands {token!r} is not {'one' if hits else 'a'} band name "
                                 f"of the imagery (its bands: {list(described)}); give a "
                                 "1-based index or one of those names")
            chosen.append(hits[0])
        bands = tuple(chosen)
        notes.append("bands: " + ", ".join(
            f"imagery band {b}{f' ({described[b - 1]})' if described[b - 1] else ''} -> "
            f"{c}" for b, c in zip(bands, channels, strict=True)))
        return bands
    if any(described) and all(wanted):
        keys = [_band_key(d) for d in described]
        missing = [w for w in wanted if keys.count(_band_key(w)) != 1]
        if missing:
            raise InputError(
                f"imagery {catalog.source!r} describes its bands as {list(described)} but the "
                f"model reads {list(wanted)} (its training bands {list(contract.band_indices)});"
                f" {missing} not found; pass --bands to say which imagery bands feed "
                f"{', '.join(channels)}, e.g. --bands {' '.join(map(str, contract.band_indices))}")
        bands = tuple(keys.index(_band_key(w)) + 1 for w in wanted)
        if bands != contract.band_indices:
            notes.append(f"bands: by name, imagery bands {list(bands)} -> "
                         f"{', '.join(channels)}")
        return bands
    if contract.source_bands and catalog.count != contract.source_bands:
        raise InputError(
            f"imagery {catalog.source!r} has {catalog.count} bands but the model was trained on "
            f"{contract.source_bands}-band imagery, reading bands "
            f"{list(contract.band_indices)} as {', '.join(channels)}, and the bands carry no "
            "names to match; pass --bands with the imagery bands that hold "
            f"{', '.join(channels)}, in that order")
    bands = tuple(contract.band_indices)
    if max(bands) > catalog.count:
        raise InputError(
            f"imagery {catalog.source!r} has {catalog.count} bands but the model bundle reads "
            f"bands {list(bands)} ({', '.join(channels)}); give imagery with at least "
            f"{max(bands)} bands, or --bands")
    return bands


def pixel_scaling(request: MapRequest, catalog: Catalog, contract: Contract,
                  ) -> tuple[float, float] | None:
    """``(scale, offset)`` to apply before the model, refusing silent dtype changes."""
    if request.scale is not None:
        return float(request.scale), float(request.offset)
    if request.offset:
        return 1.0, float(request.offset)
    if catalog.dtype != contract.input_dtype:
        hint = (" (e.g. --scale 10000 for 0-1 reflectance)" if "float" in catalog.dtype else "")
        raise InputError(
            f"imagery {catalog.source!r} is {catalog.dtype} but the model bundle was trained on "
            f"{contract.input_dtype} values {contract.value_range[0]:g}.."
            f"{contract.value_range[1]:g}; give {contract.input_dtype} imagery, or pass --scale "
            f"and --offset to convert (value * scale + offset){hint}")
    return None


def tile_spec(request: MapRequest, contract: Contract, notes: list[str]) -> TileSpec:
    """Tile size (the bundle's by default) and overlap, with a sanity check of the overlap.

    The halo is what the chunk's lattice tiles reach into (see :func:`chunk_size`).
    """
    tile = request.tile or contract.tile_size
    overlap = request.overlap if request.overlap is not None else lattice_overlap(tile)
    spec = TileSpec(tile=tile, overlap=overlap)
    factor = (tile / spec.stride) ** 2
    if 2 * overlap > tile:
        raise InputError(f"--overlap {overlap} is more than half the tile {tile}: every pixel "
                         f"would be predicted about {factor:.0f} times; give an overlap of at most "
                         f"a quarter tile, e.g. --overlap {lattice_overlap(tile)}")
    if 4 * overlap > tile:
        notes.append(f"warning: --overlap {overlap} with --tile {tile} predicts every pixel "
                     f"about {factor:.1f} times; a quarter tile or less is usually enough")
    if request.tile and contract.tile_size and request.tile != contract.tile_size:
        notes.append(f"tile: {request.tile} px (the model was trained on "
                     f"{contract.tile_size} px chips)")
    chunk = chunk_size(request, spec, notes)
    return TileSpec(tile=tile, overlap=overlap, halo=lattice_halo(chunk, tile, overlap))


def chunk_size(request: MapRequest, tiles: TileSpec, notes: list[str]) -> int:
    """The chunk side: the request's, or a multiple of the tile stride (no tile twice)."""
    stride = tiles.stride
    if request.chunk_size is None:
        chunk = lattice_chunk_size(tiles.tile, tiles.overlap, request.batch_size)
        per_axis = chunk // stride
        notes.append(f"chunks: {chunk} px = {per_axis} x {per_axis} tiles of {tiles.tile} px "
                     f"at stride {stride} (a multiple of the stride: no tile is computed "
                     "twice); --chunk sets another size")
        return chunk
    chunk = request.chunk_size
    if chunk % stride:
        per_axis = math.ceil(chunk / stride)
        better = lattice_chunk_size(tiles.tile, tiles.overlap, request.batch_size, chunk)
        extra = (per_axis * stride / chunk) ** 2
        notes.append(f"warning: --chunk {chunk} is not a multiple of the tile stride {stride} "
                     f"(tile {tiles.tile} - overlap {tiles.overlap}): its {per_axis} x "
                     f"{per_axis} tiles overlap more than needed ({extra:.2f}x the tiles of one "
                     f"lattice); --chunk {better} avoids that")
    return chunk


def make_plan(request: MapRequest, catalog: Catalog, contract: Contract) -> Plan:
    """Check the inputs and derive grid, chunks, bands, tiles and pixel scaling.

    Raises:
        InputError: A bad bbox, imagery that breaks the contract, or a bbox without imagery.
    """
    notes: list[str] = []
    bands = resolve_bands(request, catalog, contract, notes)
    scale = pixel_scaling(request, catalog, contract)
    tiles = tile_spec(request, contract, notes)
    size = chunk_size(request, tiles, [])
    resampling = request.resampling or contract.resampling
    crs = output_crs(request, catalog)
    if crs == "auto":
        grid = plan_grid(request.bbox, request.bbox_crs, "auto", 1.0, size)
        crs = grid.crs
    resolution = output_resolution(request, catalog, crs, contract, notes)
    phase = grid_phase(catalog, crs, resolution, notes)
    grid = plan_grid(request.bbox, request.bbox_crs, crs, resolution, size, phase)
    # Chunks with imagery inside the bbox: the grid is whole chunks around the bbox, and the
    # bbox (a curved quadrilateral in the output CRS) need not reach every one of them.
    inside = shapely.intersection(
        np.asarray(catalog.footprints(grid.crs), dtype=object),
        shapely.Polygon(bbox_ring(request.bbox, request.bbox_crs, grid.crs)))
    chunks = grid.chunks_intersecting([g for g in inside if not g.is_empty])
    if not chunks:
        bounds = _union_bounds(catalog, grid.crs)
        raise InputError(
            f"bbox {tuple(request.bbox)} ({request.bbox_crs}) does not meet the imagery of "
            f"{catalog.source!r} (its bounds in {grid.crs}: {bounds}); give a bbox that "
            "overlaps the imagery")
    return Plan(grid=grid, chunks=chunks, skipped=len(grid.chunks()) - len(chunks), tiles=tiles,
                bands=bands, bbox={"bbox": list(request.bbox), "crs": request.bbox_crs},
                resampling=resampling, scale=scale, notes=notes,
                zarr_format=request.zarr_format, probabilities=request.probabilities,
                polygons=request.polygons, precision=resolved_precision(request))


def _union_bounds(catalog: Catalog, crs: str) -> tuple[float, ...]:
    import shapely

    minx, miny, maxx, maxy = shapely.union_all(catalog.footprints(crs)).bounds
    return tuple(round(v, 2) for v in (minx, miny, maxx, maxy))
