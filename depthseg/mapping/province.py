"""A province on one machine, and a projection of a Guangxi run on 8 GPUs.

The real planning, listing, mapping and finalising code paths run at province counts, and the
projection is made from their measured costs.

Four measurements (``python jobs/bench.py --province``):

1. **STAC planning**: a synthetic ItemCollection of 1 km orthophoto Items (metadata only:
   ``proj:code``, ``proj:transform``, ``proj:shape``, ``bands``) over a ~300 x 300 km box,
   planned for a Guangxi-sized bbox exactly as ``map_region`` plans (catalog, plan, the rows
   of the stream, ``plan.json``), in a child process whose peak RSS is read.
2. **S3 folder**: small COGs on the embedded S3 server, reached through a proxy that adds
   latency to every request; the folder is listed and its headers read as ``map_region``
   opens imagery.
3. **End to end**: ``jobs/map_region.py`` (Ray, the tiny preset) over thousands of small
   chunks, and the 256-chunk run of the issue; ``run.json`` gives plan, map and finalise
   seconds and the driver's CPU seconds and peak RSS.
4. **Write cost** of one 2048 px chunk (every product: Zarr, overview blocks, three COGs, an
   Item), the CPU work the write stage spends per chunk.
5. **Per-run files at province counts**: the VRT and the GeoParquet Item index of 100,000
   chunks, built, written and opened; the three overview COGs of an 8192 px level.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine

#: Guangxi (lon/lat), about 237,600 km2 of land in a ~750 x 600 km box.
GUANGXI_BBOX = (104.45, 20.9, 112.07, 26.4)
GUANGXI_KM2 = 237_600
UTM49 = "EPSG:32649"
#: H100 ViT-L/14 anchor at 518 px, bf16 (DESIGN section 8 / issue 10); per GPU.
VITL_TILES_PER_S = 340.0


@dataclass(frozen=True)
class ProvinceOptions:
    """What to run.

    Attributes:
        work_dir: Scratch folder.
        items: STAC Items of the planning benchmark (1 km each).
        cogs: COGs in the S3 folder.
        latency_s: Latency the proxy adds to every request.
        region_px: Side of the end-to-end region.
        chunk: Chunk side of the end-to-end run (``region_px / chunk`` squared chunks).
        num_cpus: CPUs of the local Ray.
        skip: Measurements to skip (``stac``, ``s3``, ``e2e``, ``256``, ``write``,
            ``index``, ``overview``).
    """

    work_dir: Path
    items: int = 57_600
    cogs: int = 2_000
    latency_s: float = 0.03
    region_px: int = 4096
    chunk: int = 64
    num_cpus: int = 2
    skip: tuple[str, ...] = ()


def _contract(gsd: float = 0.8) -> Any:
    from depthseg.io.bundle import Contract

    return Contract(band_indices=(1, 2, 3), band_names=("red", "green", "blue"),
                    input_dtype="uint8", value_range=(0, 255), mean=(100.0,) * 3,
                    std=(30.0,) * 3, class_names=tuple(f"c{k}" for k in range(7)),
                    palette=tuple((20 * k, 20 * k, 20 * k) for k in range(7)), tile_size=518,
                    gsd=gsd, source_bands=3)


# ------------------------------------------------------------------------------------------
# 1. STAC planning


def write_item_collection(path: Path, items: int, tile_m: float = 1000.0,
                          resolution: float = 0.8) -> tuple[float, float, float, float]:
    """A metadata-only ItemCollection of ``items`` square scenes; returns its UTM bounds."""
    side = math.ceil(math.sqrt(items))
    x0, y0 = 400_000.0, 2_900_000.0  # UTM 49N, inside Guangxi
    shape = int(round(tile_m / resolution))
    features: list[dict[str, Any]] = []
    for k in range(items):
        row, col = divmod(k, side)
        left, top = x0 + col * tile_m, y0 - row * tile_m
        features.append({
            "type": "Feature", "stac_version": "1.1.0", "id": f"ortho_{row:04d}_{col:04d}",
            "geometry": None, "links": [],
            "properties": {"datetime": f"2024-{1 + k % 12:02d}-01T03:00:00Z",
                           "proj:code": UTM49, "proj:shape": [shape, shape],
                           "proj:transform": [resolution, 0, left, 0, -resolution, top]},
            "assets": {"image": {"href": f"s3://ortho/{row:04d}/{col:04d}.tif",
                                 "type": "image/tiff; application=geotiff",
                                 "bands": [{"name": n, "data_type": "uint8", "nodata": 0}
                                           for n in ("red", "green", "blue")]}}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    rows = math.ceil(items / side)
    return x0, y0 - rows * tile_m, x0 + side * tile_m, y0


def plan_stac(path: str) -> dict[str, Any]:
    """Plan a Guangxi bbox over the ItemCollection at ``path`` as ``map_region`` does."""
    import resource

    from depthseg.io.catalog import open_catalog
    from depthseg.mapping.pipeline import chunk_rows
    from depthseg.mapping.plan import make_plan
    from depthseg.mapping.request import MapRequest

    times: dict[str, float] = {}
    start = time.perf_counter()
    catalog = open_catalog(path)
    times["open_catalog_s"] = time.perf_counter() - start
    request = MapRequest(bbox=GUANGXI_BBOX, imagery=path, model="m", out="o")
    start = time.perf_counter()
    plan = make_plan(request, catalog, _contract())
    times["make_plan_s"] = time.perf_counter() - start
    start = time.perf_counter()
    rows, _ = chunk_rows(catalog, plan, plan.chunks)
    times["chunk_rows_s"] = time.perf_counter() - start
    start = time.perf_counter()
    plan_json = plan.to_json()
    times["plan_json_s"] = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {**times, "plan_total_s": sum(times.values()), "scenes": len(catalog.scenes),
            "chunks": len(plan.chunks), "grid_shape": list(plan.grid.shape),
            "plan_json_mb": len(plan_json) / 2**20,
            "rows_mb": sum(len(r["scenes"]) for r in rows) / 2**20,
            "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def bench_stac(options: ProvinceOptions) -> dict[str, Any]:
    """Measurement 1, in a child process (its peak RSS is the planner's alone)."""
    path = options.work_dir / "province-items.json"
    write_item_collection(path, options.items)
    out = subprocess.run([sys.executable, "-m", "depthseg.mapping.province", "plan-stac",
                          str(path)], capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["items"] = options.items
    result["collection_mb"] = path.stat().st_size / 2**20
    return result


# ------------------------------------------------------------------------------------------
# 2. S3 folder behind latency


def _small_cog(path: Path, k: int) -> None:
    data = np.full((3, 32, 32), 1 + k % 250, np.uint8)
    transform = Affine(0.8, 0, 400_000 + (k % 100) * 25.6, 0, -0.8, 2_900_000 - (k // 100) * 25.6)
    with rasterio.open(path, "w", driver="COG", width=32, height=32, count=3, dtype="uint8",
                       crs=UTM49, transform=transform, nodata=0) as dst:
        dst.write(data)


def bench_s3(options: ProvinceOptions) -> dict[str, Any]:
    """Measurement 2: list and describe a folder of COGs behind added latency."""
    from depthseg.io.catalog import open_catalog
    from depthseg.io.s3server import LatencyProxy, LocalS3Server

    local = options.work_dir / "cogs"
    local.mkdir(parents=True, exist_ok=True)
    for k in range(options.cogs):
        _small_cog(local / f"tile_{k:05d}.tif", k)
    with LocalS3Server() as server:
        bucket = server.make_bucket("province")
        fs, _ = server.storage.fs(bucket)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: fs.put_file(str(p), f"province/cogs/{p.name}"),
                          sorted(local.glob("*.tif"))))
        with LatencyProxy(server.port, options.latency_s) as proxy:
            start = time.perf_counter()
            catalog = open_catalog(f"{bucket}/cogs/", proxy.storage())
            seconds = time.perf_counter() - start
            requests = proxy.requests
    return {"cogs": options.cogs, "latency_ms": options.latency_s * 1000,
            "open_s": seconds, "scenes": len(catalog.scenes), "requests": requests}


# ------------------------------------------------------------------------------------------
# 3. End to end


def _region(path: Path, size: int) -> tuple[float, float, float, float]:
    """A uint8 RGB scene of ``size`` px at 0.8 m with a no-data border; returns its bounds."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(20, 230, (3, size // 16 + 1, size // 16 + 1)).astype(np.uint8)
    data = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :size, :size]
    data[:, :, :8] = 0
    transform = Affine(0.8, 0, 400_000.0, 0, -0.8, 2_900_000.0)
    with rasterio.open(path, "w", driver="COG", width=size, height=size, count=3,
                       dtype="uint8", crs=UTM49, transform=transform, nodata=0,
                       compress="zstd") as dst:
        dst.write(data)
    return tuple(rasterio.transform.array_bounds(size, size, transform))  # type: ignore[return-value]


def _tiny_bundle(path: Path) -> str:
    import torch

    from depthseg.config import load_config
    from depthseg.io.bundle import save_bundle
    from depthseg.model import build_model

    torch.manual_seed(0)
    config = load_config("tiny").model
    contract = _contract()
    return save_bundle(str(path), build_model(config), config, contract)


def run_map(options: ProvinceOptions, imagery: Path, bbox: tuple[float, ...], bundle: str,
            out: Path, chunk: int, tile: int, overlap: int) -> dict[str, Any]:
    """``jobs/map_region.py`` as a user runs it; returns its ``run.json`` and output sizes."""
    command = [sys.executable, "-m", "depthseg.mapping.cli",
               "--bbox", *map(str, bbox), "--bbox-crs", UTM49, "--imagery", str(imagery),
               "--model", bundle, "--out", str(out), "--chunk", str(chunk), "--tile", str(tile),
               "--overlap", str(overlap), "--batch-size", "8",
               "--num-cpus", str(options.num_cpus)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    run: dict[str, Any] = json.loads((out / "run.json").read_text())
    run["wall_s"] = wall
    run["plan_json_kb"] = (out / "plan.json").stat().st_size / 1024
    with rasterio.open(out / "cog" / "overview" / "landcover.tif") as level:
        run["level_px"] = level.width * level.height
    run["vrt_kb"] = (out / "cog" / "landcover.vrt").stat().st_size / 1024
    start = time.perf_counter()
    with rasterio.open(out / "cog" / "landcover.vrt") as vrt:
        vrt.read(1, out_shape=(256, 256))  # zoomed out: the overview
    run["vrt_open_overview_read_s"] = time.perf_counter() - start
    return run


def _e2e_figures(run: dict[str, Any]) -> dict[str, Any]:
    seconds, chunks = run["seconds"], run["chunks"]["done"]
    after_map = seconds["total"] - seconds["plan"] - seconds["map"]
    return {"chunks": chunks, "plan_s": seconds["plan"], "map_s": seconds["map"],
            "finalise_s": seconds["finalise"], "total_s": seconds["total"],
            "wall_s": run["wall_s"], "after_last_chunk_fraction": after_map / seconds["total"],
            "finalise_steps_s": run.get("finalise_seconds", {}),
            "driver_cpu_s": run["driver"]["cpu_s"],
            "driver_ms_per_chunk": run["driver"]["map_ms_per_chunk"],
            "driver_cpu_outside_map_s": run["driver"]["cpu_s"] - run["driver"]["map_cpu_s"],
            "driver_peak_rss_mb": run["driver"]["peak_rss_mb"],
            "plan_json_kb": run["plan_json_kb"], "vrt_kb": run["vrt_kb"],
            "vrt_open_overview_read_s": run["vrt_open_overview_read_s"],
            "write_s_per_chunk": seconds["write"] / max(chunks, 1),
            "level_px": run["level_px"]}


# ------------------------------------------------------------------------------------------
# 4. Write cost of a 2048 px chunk


def bench_write(options: ProvinceOptions, size: int = 2048, repeats: int = 3) -> dict[str, Any]:
    """CPU seconds of every product of one ``size`` px chunk, written to local disk."""
    from depthseg.geo import ChunkId, TileSpec, plan_grid
    from depthseg.io.storage import Storage
    from depthseg.mapping import products
    from depthseg.mapping.layers import ChunkPrediction
    from depthseg.mapping.stages import ChunkContext, write_products
    from depthseg.mapping.write import Mosaic

    grid = plan_grid((400_000, 2_890_000, 400_000 + size * 0.8 * repeats, 2_890_000 + 1),
                     UTM49, UTM49, 0.8, size)
    out = options.work_dir / "write-cost"
    storage = Storage()
    factor = products.overview_factor(grid)
    Mosaic(str(out), storage).create(grid, {}, factor)
    ctx = ChunkContext(grid, TileSpec(518, 64), (1, 2, 3), str(out), storage,
                       contract=_contract(), factor=factor, created=products.now_text())
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 7, (size // 32, size // 32)).astype(np.uint8)
    landcover = np.kron(coarse, np.ones((32, 32), np.uint8))
    prediction = ChunkPrediction(landcover, (120 + landcover * 15).astype(np.uint8),
                                 (landcover / 7).astype(np.float16))
    times, reads = [], []
    mosaic = Mosaic(str(out), storage)
    for chunk in grid.chunks()[:repeats]:
        start = time.process_time()
        write_products(ctx, mosaic, ChunkId(chunk.row, chunk.col), prediction, None)
        times.append(time.process_time() - start)
        # What the finaliser's strip readers spend per chunk: its four level blocks.
        window = grid.chunk_window(chunk)
        rows = slice(window.row_off // factor, (window.row_off + size) // factor)
        cols = slice(window.col_off // factor, (window.col_off + size) // factor)
        start = time.perf_counter()
        for name in (*products.RESAMPLING, "valid_count"):
            np.asarray(mosaic.level(factor)[name][rows, cols])
        reads.append(time.perf_counter() - start)
    return {"chunk_px": size, "cpu_s_per_chunk": float(np.median(times)),
            "level_read_s_per_chunk": float(np.median(reads))}


def bench_overview_encode(options: ProvinceOptions, side: int = 8192) -> dict[str, Any]:
    """The driver's serial part of finalising a province: three overview COGs.

    Each from a strip-written ``side`` x ``side`` level (the largest a level gets).
    """
    from depthseg.geo import plan_grid
    from depthseg.mapping import products

    grid = plan_grid((400_000, 2_890_000, 400_000 + side * 0.8, 2_890_000 + side * 0.8),
                     UTM49, UTM49, 0.8, 1024)
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 7, (side // 16, side // 16)).astype(np.uint8)
    seconds = {}
    folder = options.work_dir / "overview-encode"
    folder.mkdir(parents=True, exist_ok=True)
    for layer in products.RESAMPLING:
        path = folder / f"{layer}-level.tif"
        profile = {"driver": "GTiff", "height": side, "width": side, "count": 1,
                   "dtype": products.COG_DTYPE[layer], "crs": UTM49,
                   "transform": grid.transform, "nodata": products.NODATA[layer],
                   "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "ZSTD"}
        with rasterio.open(path, "w", **profile) as dst:
            for top in range(0, side, 1024):
                band = np.repeat(np.repeat(coarse[top // 16:(top + 1024) // 16], 16, 0), 16, 1)
                data = band if layer == "landcover" else (
                    (100 + band * 20) if layer == "confidence" else band / 7)
                dst.write(data.astype(products.COG_DTYPE[layer]), 1,
                          window=rasterio.windows.Window(0, top, side, 1024))
        start = time.perf_counter()
        with rasterio.open(path) as src:
            products.translate_cog(src, layer, _contract(), None, folder / f"{layer}.tif", 512,
                                   in_memory=False)
        seconds[layer] = time.perf_counter() - start
    return {"side_px": side, "cog_s": sum(seconds.values()), "per_layer_s": seconds}


# ------------------------------------------------------------------------------------------
# 5. Per-run files at province counts


def bench_index(options: ProvinceOptions, chunks: int = 100_000) -> dict[str, Any]:
    """The VRT and the STAC Item index of ``chunks`` chunks: build, write, open."""
    from types import SimpleNamespace

    from depthseg.geo import PixelWindow, plan_grid
    from depthseg.mapping.finalize import _item_index, _vrt

    side = math.ceil(math.sqrt(chunks))
    span = 2048 * 0.8
    grid = plan_grid((400_000, 2_900_000 - side * span, 400_000 + side * span, 2_900_000),
                     UTM49, UTM49, 0.8, 2048)
    plan = SimpleNamespace(grid=grid)
    keys = grid.chunks()[:chunks]
    start = time.perf_counter()
    text = _vrt("landcover", grid, PixelWindow(0, 0, grid.height, grid.width), keys,
                _contract(), 64)
    vrt_build = time.perf_counter() - start
    path = options.work_dir / "cog" / "landcover.vrt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text)
    start = time.perf_counter()
    with rasterio.open(path) as vrt:
        _ = vrt.shape, vrt.crs, vrt.colormap(1)
    vrt_open = time.perf_counter() - start
    start = time.perf_counter()
    index = _item_index(plan, keys, "2026-01-01T00:00:00+00:00")  # type: ignore[arg-type]
    index_build = time.perf_counter() - start
    return {"chunks": len(keys), "vrt_build_s": vrt_build, "vrt_mb": len(text) / 2**20,
            "vrt_open_s": vrt_open, "item_index_build_s": index_build,
            "item_index_mb": len(index) / 2**20}


# ------------------------------------------------------------------------------------------
# Projection


def project_guangxi(figures: dict[str, Any], gpus: int = 8, chunk: int = 1792,
                    resolution: float = 0.8, tile: int = 518, overlap: int = 70,
                    tiles_per_s: float = VITL_TILES_PER_S, scenes: int = GUANGXI_KM2,
                    cluster_cpus: int = 64) -> dict[str, Any]:
    """Wall time of Guangxi on ``gpus`` GPUs, stage by stage, from the measured costs.

    Serial driver stages add up with the GPU-bound map stage; the driver's streaming work
    and the distributed work (writes, overview strip reads) run alongside it and are given
    as the capacity they need. ``scenes``: 1 km orthophoto tiles of the province.
    """
    from depthseg.geo import TileSpec, lattice_halo

    chunk_km2 = (chunk * resolution / 1000) ** 2
    chunks = math.ceil(GUANGXI_KM2 / chunk_km2)
    # The planner's default chunk (1792 px = 4 x 4 lattice tiles of 518 px at stride 448).
    layout = TileSpec(tile, overlap, lattice_halo(chunk, tile, overlap)).layout(chunk, chunk)
    tiles = chunks * len(layout)
    gpu_s = tiles / (gpus * tiles_per_s)
    stac, e2e = figures.get("stac", {}), figures.get("e2e", {})
    # Planning: opening the catalog scales with its Items, the plan and rows with chunks.
    plan_s = (stac.get("open_catalog_s", 0.0) / max(stac.get("scenes", 1), 1) * scenes
              + (stac.get("make_plan_s", 0.0) + stac.get("chunk_rows_s", 0.0)
                 + stac.get("plan_json_s", 0.0)) / max(stac.get("chunks", 1), 1) * chunks)
    chunk_rate = chunks / gpu_s if gpu_s else 0.0
    driver_busy = e2e.get("driver_ms_per_chunk", 0.0) / 1000 * chunk_rate
    index = figures.get("index", {})
    per_chunk_final = ((3 * index.get("vrt_build_s", 0.0) + index.get("item_index_build_s", 0.0))
                       / max(index.get("chunks", 1), 1))
    write = figures.get("write", {})
    strips_s = write.get("level_read_s_per_chunk", 0.0) * chunks / cluster_cpus
    overview_s = figures.get("overview", {}).get("cog_s", 0.0)
    finalise_s = per_chunk_final * chunks + strips_s + overview_s + e2e.get(
        "finalise_steps_s", {}).get("quicklook", 0.0)
    # Write cost was measured on 2048 px chunks; it scales with the chunk's pixels.
    write_cpu = write.get("cpu_s_per_chunk", 0.0) * (chunk / 2048) ** 2 * chunks
    total_s = plan_s + gpu_s + finalise_s
    return {"chunks": chunks, "scenes": scenes, "tiles_per_chunk": len(layout), "tiles": tiles,
            "gpus": gpus, "gpu_tiles_per_s": tiles_per_s, "plan_s": plan_s,
            "map_gpu_bound_s": gpu_s, "chunks_per_s": chunk_rate,
            "driver_busy_fraction_while_mapping": driver_busy,
            "finalise_s": finalise_s, "finalise_vrt_index_s": per_chunk_final * chunks,
            "finalise_overview_cog_s": overview_s, "finalise_strip_reads_s": strips_s,
            "total_s": total_s, "write_cpu_core_s": write_cpu,
            "write_cores_to_keep_up": write_cpu / gpu_s if gpu_s else 0.0,
            "largest_driver_stage_fraction": max(plan_s, finalise_s) / total_s}


def run_province(options: ProvinceOptions, log: Any = print) -> dict[str, Any]:
    """Every measurement, then the projection."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {}
    if "stac" not in options.skip:
        log(f"province: planning {options.items} STAC Items for a Guangxi bbox ...")
        figures["stac"] = bench_stac(options)
    if "s3" not in options.skip:
        log(f"province: opening {options.cogs} COGs on S3 behind "
            f"{options.latency_s * 1000:.0f} ms ...")
        figures["s3"] = bench_s3(options)
    if "e2e" not in options.skip or "256" not in options.skip:
        bundle = _tiny_bundle(options.work_dir / "bundle")
        imagery = options.work_dir / "region.tif"
        bbox = _region(imagery, options.region_px)
        if "e2e" not in options.skip:
            log(f"province: mapping {(options.region_px // options.chunk) ** 2} chunks ...")
            run = run_map(options, imagery, bbox, bundle, options.work_dir / "map-e2e",
                          options.chunk, 28, 6)
            figures["e2e"] = _e2e_figures(run)
        if "256" not in options.skip:
            log("province: mapping 256 chunks of 256 px ...")
            run = run_map(options, imagery, bbox, bundle, options.work_dir / "map-256",
                          256, 126, 28)
            figures["run_256"] = _e2e_figures(run)
    if "write" not in options.skip:
        log("province: writing 2048 px chunks ...")
        figures["write"] = bench_write(options)
    if "index" not in options.skip:
        log("province: VRT and Item index of 100,000 chunks ...")
        figures["index"] = bench_index(options)
    if "overview" not in options.skip:
        log("province: overview COGs of an 8192 px level ...")
        figures["overview"] = bench_overview_encode(options)
    figures["guangxi_8_gpus"] = project_guangxi(figures)
    return figures


def format_province(figures: dict[str, Any]) -> str:
    """Markdown-ish lines of the figures and the targets."""
    lines = []
    for section, values in figures.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
            lines.append(f"  {key:32s} {shown}")
    stac, s3 = figures.get("stac", {}), figures.get("s3", {})
    e2e, small, guangxi = figures.get("e2e", {}), figures.get("run_256", {}), \
        figures.get("guangxi_8_gpus", {})
    checks = [("STAC plan <= 60 s", stac.get("plan_total_s"), 60, "le"),
              ("STAC plan RSS <= 2048 MB", stac.get("peak_rss_mb"), 2048, "le"),
              ("S3 folder open <= 20 s", s3.get("open_s"), 20, "le"),
              ("driver ms per chunk <= 5", e2e.get("driver_ms_per_chunk"), 5, "le"),
              ("driver busy <= 100 % while mapping Guangxi",
               guangxi.get("driver_busy_fraction_while_mapping"), 1.0, "le"),
              ("256-chunk run: after last chunk <= 5 %",
               small.get("after_last_chunk_fraction"), 0.05, "le"),
              ("Guangxi total <= 30 min", guangxi.get("total_s"), 1800, "le"),
              ("no driver stage > 5 % of Guangxi", guangxi.get("largest_driver_stage_fraction"),
               0.05, "le")]
    lines.append("[targets]")
    for name, value, limit, _ in checks:
        if value is None:
            continue
        lines.append(f"  {'met ' if value <= limit else 'MISS'} {name}: {value:.4g}")
    return "\n".join(lines)


def _main(argv: list[str]) -> int:
    if argv[:1] == ["plan-stac"]:
        print(json.dumps(plan_stac(argv[1])))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        print(format_province(run_province(ProvinceOptions(Path(tmp)))))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
