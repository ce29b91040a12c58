"""Planning a mapping run: what to map, on which grid, in which chunks, with which tiles.

The plan is pure bookkeeping on headers (no pixels): it opens the catalog, checks the
imagery against the bundle's contract, snaps the output grid to the global chunk grid and
keeps the chunks whose interior meets a scene footprint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from pyproj import CRS as ProjCRS

from depthseg.errors import InputError
from depthseg.geo import ChunkId, OutputGrid, TileSpec, plan_grid
from depthseg.io.bundle import Contract
from depthseg.io.catalog import RESAMPLING, Catalog

PLAN_FORMAT = "depthseg-map-plan"


@dataclass(frozen=True)
class MapRequest:
    """Everything a user asks of one mapping run (the CLI's options).

    Attributes:
        bbox: (minx, miny, maxx, maxy) in ``bbox_crs``.
        imagery: Catalog URI (folder, prefix, glob, STAC ``.json``, ``.zarr``).
        model: Model bundle URI.
        out: Output folder or ``s3://`` prefix.
        bbox_crs: CRS of the bbox.
        crs: Output CRS, or ``"auto"``: the imagery's CRS when it is one projected metric CRS,
            else the UTM zone of the bbox centre.
        resolution: Output pixel size in metres; None takes the imagery's finest.
        chunk_size: Chunk side in pixels.
        tile: Model tile side in pixels.
        overlap: Tile overlap in pixels (also the halo).
        batch_size: Tiles per forward pass.
        gpus: GPUs to use (one predict actor each); 0 runs CPU actors.
        cpu_actors: Predict actors when there is no GPU.
        resume: Continue an interrupted run in ``out``.
        stac_asset: Asset key of STAC items.
        executor: ``"ray"`` (Ray Data stream) or ``"local"`` (one process, for debugging).
        resampling: How scenes in another CRS or resolution are warped onto the output grid
            (``nearest``, ``bilinear``, ``cubic``, ``cubic_spline``, ``lanczos``,
            ``average``); scenes already on the grid are copied as they are.
        compile: ``torch.compile`` the model in every predict actor.
        write_stage: Where chunks are written: ``"separate"`` (Ray Data write tasks after the
            predict actors), ``"actor"`` (by the predict actor), or ``"auto"``: separate with
            GPUs, in the actor on CPU-only runs.
    """

    bbox: tuple[float, float, float, float]
    imagery: str
    model: str
    out: str
    bbox_crs: str = "EPSG:4326"
    crs: str = "auto"
    resolution: float | None = None
    chunk_size: int = 2048
    tile: int = 518
    overlap: int = 64
    batch_size: int = 8
    gpus: int = 0
    cpu_actors: int = 1
    resume: bool = False
    stac_asset: str = "image"
    executor: str = "ray"
    resampling: str = "nearest"
    compile: bool = False
    write_stage: str = "auto"

    def __post_init__(self) -> None:
        if self.write_stage not in ("auto", "separate", "actor"):
            raise InputError(f"write stage {self.write_stage!r} is not known; give 'auto', "
                             "'separate' or 'actor'")
        if self.resampling not in RESAMPLING:
            raise InputError(f"resampling {self.resampling!r} is not known; give one of "
                             f"{', '.join(RESAMPLING)}")
        if self.executor not in ("ray", "local"):
            raise InputError(f"executor {self.executor!r} is not known; give 'ray' or 'local'")
        if self.gpus < 0 or self.cpu_actors < 1:
            raise InputError(f"gpus {self.gpus} / cpu_actors {self.cpu_actors} invalid; give "
                             "gpus >= 0 and cpu_actors >= 1")


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
    """

    grid: OutputGrid
    chunks: list[ChunkId]
    skipped: int
    tiles: TileSpec
    bands: tuple[int, ...]
    bbox: dict[str, Any] = field(default_factory=dict)
    resampling: str = "nearest"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, written to ``plan.json``."""
        return {"format": PLAN_FORMAT, "grid": asdict(self.grid),
                "transform": list(self.grid.transform)[:6], "bbox": self.bbox,
                "tiles": asdict(self.tiles), "bands": list(self.bands),
                "chunks": [c.key for c in self.chunks], "skipped": self.skipped,
                "resampling": self.resampling}

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


def output_resolution(request: MapRequest, catalog: Catalog, crs: str) -> float:
    """The output pixel size: as asked, else the finest scene pixel in a metric CRS."""
    if request.resolution is not None:
        return float(request.resolution)
    sizes = [abs(s.transform[0]) for s in catalog.scenes
             if ProjCRS.from_user_input(s.crs).is_projected]
    if not sizes:
        raise InputError(f"imagery {catalog.source!r} is not in a projected CRS, so its "
                         "resolution in metres is unknown; pass --resolution R")
    return round(min(sizes), 6)


def check_contract(catalog: Catalog, contract: Contract) -> None:
    """Refuse imagery that breaks the bundle's contract (bands, dtype)."""
    needed = max(contract.band_indices)
    if catalog.count < needed:
        raise InputError(
            f"imagery {catalog.source!r} has {catalog.count} bands but the model bundle reads "
            f"bands {contract.band_indices} ({', '.join(contract.band_names)}); give imagery "
            f"with at least {needed} bands or a bundle trained on {catalog.count}-band input")
    if catalog.dtype != contract.input_dtype:
        raise InputError(
            f"imagery {catalog.source!r} is {catalog.dtype} but the model bundle expects "
            f"{contract.input_dtype}; give {contract.input_dtype} imagery or a matching bundle")


def make_plan(request: MapRequest, catalog: Catalog, contract: Contract) -> Plan:
    """Check the inputs and derive grid and chunks.

    Raises:
        InputError: A bad bbox, imagery that breaks the contract, or a bbox without imagery.
    """
    check_contract(catalog, contract)
    crs = output_crs(request, catalog)
    if crs == "auto":
        grid = plan_grid(request.bbox, request.bbox_crs, "auto", 1.0, request.chunk_size)
        crs = grid.crs
    resolution = output_resolution(request, catalog, crs)
    grid = plan_grid(request.bbox, request.bbox_crs, crs, resolution, request.chunk_size)
    tiles = TileSpec(tile=request.tile, overlap=request.overlap)
    chunks = grid.chunks_intersecting(catalog.footprints(grid.crs))
    if not chunks:
        bounds = _union_bounds(catalog, grid.crs)
        raise InputError(
            f"bbox {tuple(request.bbox)} ({request.bbox_crs}) does not meet the imagery of "
            f"{catalog.source!r} (its bounds in {grid.crs}: {bounds}); give a bbox that "
            "overlaps the imagery")
    return Plan(grid=grid, chunks=chunks, skipped=len(grid.chunks()) - len(chunks), tiles=tiles,
                bands=tuple(contract.band_indices),
                bbox={"bbox": list(request.bbox), "crs": request.bbox_crs},
                resampling=request.resampling)


def _union_bounds(catalog: Catalog, crs: str) -> tuple[float, ...]:
    import shapely

    minx, miny, maxx, maxy = shapely.union_all(catalog.footprints(crs)).bounds
    return tuple(round(v, 2) for v in (minx, miny, maxx, maxy))
