"""Mapping benchmark: model-only vs full pipeline vs a naive per-tile loop, and peak memory.

All three throughputs count the same tiles: the tile layout of every planned chunk
(chunk + halo cut into overlapping tiles). The pipeline runs ``jobs/map_region.py`` in a
subprocess so that its peak memory (driver + Ray processes, summed RSS of the process tree,
sampled from ``/proc``) is measured cleanly; it is measured again on a region 16x larger
(4x per side) to show that memory is bounded by chunk size x concurrency, not region size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch

from depthseg.config import load_config
from depthseg.geo import TileSpec
from depthseg.io.bundle import Contract, load_bundle, save_bundle
from depthseg.io.catalog import open_catalog
from depthseg.mapping.plan import MapRequest, make_plan
from depthseg.mapping.predict import ChunkPredictor
from depthseg.mapping.stages import ChunkContext, read_chunk
from depthseg.model import build_model

REPO_ROOT = Path(__file__).resolve().parents[2]
_CLASSES = ("cropland", "forest", "building", "road", "impervious", "bare", "water")
_PALETTE = ((250, 230, 100), (30, 130, 40), (200, 40, 40), (120, 120, 120), (190, 190, 190),
            (160, 120, 70), (40, 90, 220))


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark.

    Attributes:
        work_dir: Scratch folder (regions, bundle, outputs).
        preset: ``tiny`` or ``vits`` (random weights either way).
        region_px: Side of the synthetic region in pixels.
        tile: Tile side.
        overlap: Tile overlap (= halo).
        chunk: Chunk side.
        batch_size: Tiles per forward pass.
        grow: Also measure peak memory on a 4x-per-side (16x area) region.
        num_cpus: CPUs of the pipeline's local Ray.
    """

    work_dir: Path
    preset: str = "tiny"
    region_px: int = 512
    tile: int = 126
    overlap: int = 28
    chunk: int = 256
    batch_size: int = 8
    grow: bool = True
    num_cpus: int = 2


def _bundle(options: BenchOptions) -> str:
    config = load_config(REPO_ROOT / "configs" / f"{options.preset}.yaml").model
    bands = (3, 2, 1, 4)[: config.in_channels]
    contract = Contract(band_indices=bands, band_names=("red", "green", "blue", "nir")[
        : len(bands)], input_dtype="uint16", value_range=(0, 1023), mean=(300.0,) * len(bands),
        std=(100.0,) * len(bands), class_names=_CLASSES, palette=_PALETTE,
        tile_size=options.tile)
    torch.manual_seed(0)
    uri = str(options.work_dir / f"bundle_{options.preset}")
    return save_bundle(uri, build_model(config), config, contract)


def _region(options: BenchOptions, size: int
            ) -> tuple[Path, tuple[float, float, float, float], str]:
    from depthseg.synthetic import make_region

    region = make_region(options.work_dir / f"region_{size}", size=size, seed=0)
    side = size * region.resolution
    x0, y0 = region.transform.c, region.transform.f
    return region.root / "scenes", (x0, y0 - side, x0 + side, y0), region.crs


def _tree_rss_bytes(root: int) -> int:
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry)] = int(fields.get("PPid", "0").strip())
        rss[int(entry)] = int(fields.get("VmRSS", "0 kB").split()[0]) * 1024
    total = 0
    for pid in rss:
        node = pid
        while node not in (0, 1) and node != root:
            node = parents.get(node, 0)
        total += rss[pid] if node == root else 0
    return total


def run_pipeline_subprocess(options: BenchOptions, imagery: Path, bbox: tuple[float, ...],
                            crs: str, bundle: str, out: Path) -> dict[str, Any]:
    """Run ``jobs/map_region.py``; returns its run.json plus the peak tree RSS."""
    command = [sys.executable, str(REPO_ROOT / "jobs" / "map_region.py"),
               "--bbox", *map(str, bbox), "--bbox-crs", crs, "--imagery", str(imagery),
               "--model", bundle, "--out", str(out), "--chunk", str(options.chunk),
               "--tile", str(options.tile), "--overlap", str(options.overlap),
               "--batch-size", str(options.batch_size), "--num-cpus", str(options.num_cpus)]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"map_region failed ({process.returncode}): {stderr[-2000:]}")
    report = json.loads((out / "run.json").read_text())
    report["peak_rss_bytes"] = peak[0]
    return report


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Measure everything; returns the figures (also printed by ``jobs/bench.py``)."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    bundle_uri = _bundle(options)
    bundle = load_bundle(bundle_uri)
    imagery, bbox, crs = _region(options, options.region_px)
    request = MapRequest(bbox=bbox, bbox_crs=crs, imagery=str(imagery), model=bundle_uri,
                         out=str(options.work_dir / "unused"), chunk_size=options.chunk,
                         tile=options.tile, overlap=options.overlap)
    catalog = open_catalog(str(imagery))
    plan = make_plan(request, catalog, bundle.contract)
    tiles = TileSpec(options.tile, options.overlap)
    layout = tiles.layout(options.chunk, options.chunk)
    n_tiles = len(layout) * len(plan.chunks)
    ctx = ChunkContext(plan.grid, tiles, plan.bands, request.out, catalog.storage,
                       source_dtype=catalog.dtype)
    predictor = ChunkPredictor(bundle.model, bundle.contract, tiles, options.batch_size)

    # 1. Model only: the first chunk's tiles, already in memory, cycled to n_tiles.
    first_scenes = [catalog.scenes[i] for i in catalog.scenes_meeting(
        [plan.read_bounds(plan.chunks[0])], plan.grid.crs)[0]]
    pixels, _ = read_chunk(ctx, plan.chunks[0], first_scenes)
    in_memory = np.stack([pixels[:, r:r + options.tile, c:c + options.tile]
                          for r, c in layout.offsets])
    predictor.predict_tiles(in_memory[:1])  # warm-up
    start = time.perf_counter()
    for first in range(0, n_tiles, options.batch_size):
        count = min(options.batch_size, n_tiles - first)
        predictor.predict_tiles(in_memory[np.arange(first, first + count) % len(in_memory)])
    model_s = time.perf_counter() - start

    # 2. Naive loop: per tile, open + read the scene window, run the model, write the tile.
    naive_s = _naive_loop(options, ctx, plan, layout, predictor, catalog.scenes[-1].uri)

    # 3. The pipeline (Ray Data, subprocess), then the same on a 16x larger region.
    run = run_pipeline_subprocess(options, imagery, bbox, crs, bundle_uri,
                                  options.work_dir / f"out_{options.region_px}")
    figures: dict[str, Any] = {
        "preset": options.preset, "tile": options.tile, "overlap": options.overlap,
        "chunk": options.chunk, "batch_size": options.batch_size,
        "region_px": options.region_px, "chunks": len(plan.chunks), "tiles": n_tiles,
        "model_tiles_per_s": n_tiles / model_s,
        "pipeline_tiles_per_s": n_tiles / run["seconds"]["map"],
        "pipeline_total_s": run["seconds"]["total"],
        "naive_tiles_per_s": n_tiles / naive_s,
        "peak_rss_mb": run["peak_rss_bytes"] / 2**20,
        "torch_threads": torch.get_num_threads(),
    }
    # Steady state: after the first chunk's result (worker start, model load, first read),
    # which a province-sized run pays once.
    steady_s = run["seconds"]["map"] - run["seconds"].get("first_chunk", 0.0)
    if len(plan.chunks) > 1 and steady_s > 0:
        figures["pipeline_steady_tiles_per_s"] = len(layout) * (len(plan.chunks) - 1) / steady_s
        figures["pipeline_startup_s"] = run["seconds"]["first_chunk"]
        figures["steady_over_model"] = (figures["pipeline_steady_tiles_per_s"]
                                        / figures["model_tiles_per_s"])
    figures["pipeline_over_model"] = figures["pipeline_tiles_per_s"] / figures["model_tiles_per_s"]
    figures["pipeline_over_naive"] = figures["pipeline_tiles_per_s"] / figures["naive_tiles_per_s"]
    if options.grow:
        big = options.region_px * 4
        imagery_big, bbox_big, _ = _region(options, big)
        run_big = run_pipeline_subprocess(options, imagery_big, bbox_big, crs, bundle_uri,
                                          options.work_dir / f"out_{big}")
        figures["grown_region_px"] = big
        figures["grown_chunks"] = run_big["chunks"]["done"]
        figures["grown_peak_rss_mb"] = run_big["peak_rss_bytes"] / 2**20
        figures["grown_pipeline_tiles_per_s"] = (
            len(layout) * run_big["chunks"]["done"] / run_big["seconds"]["map"])
    return figures


def _naive_loop(options: BenchOptions, ctx: ChunkContext, plan: Any, layout: Any,
                predictor: ChunkPredictor, scene: str) -> float:
    # ``scene``: the oldest scene, a plain single-file read.
    out_path = options.work_dir / "naive.tif"
    grid = plan.grid
    profile = {"driver": "GTiff", "height": grid.height, "width": grid.width, "count": 1,
               "dtype": "uint8", "crs": grid.crs, "transform": grid.transform, "tiled": True}
    halo = ctx.tiles.halo_px
    start = time.perf_counter()
    with rasterio.open(out_path, "w", **profile) as dst:
        for chunk in plan.chunks:
            window = grid.chunk_window(chunk)
            for row_off, col_off in layout.offsets:
                top, left = window.row_off - halo + row_off, window.col_off - halo + col_off
                bounds = grid.window_bounds(type(window)(top, left, options.tile, options.tile))
                with rasterio.open(scene) as src:  # per tile, as a naive script does
                    read_window = rasterio.windows.from_bounds(*bounds, transform=src.transform)
                    pixels = src.read(list(ctx.bands), window=read_window, boundless=True,
                                      fill_value=0, out_shape=(len(ctx.bands), options.tile,
                                                               options.tile))
                probs, _ = predictor.predict_tiles(pixels[None])
                labels = probs[0].argmax(0).numpy().astype(np.uint8)
                rows = slice(max(top, 0), min(top + options.tile, grid.height))
                cols = slice(max(left, 0), min(left + options.tile, grid.width))
                dst.write(labels[rows.start - top:rows.stop - top,
                                 cols.start - left:cols.stop - left], 1,
                          window=((rows.start, rows.stop), (cols.start, cols.stop)))
    return time.perf_counter() - start


def format_figures(figures: dict[str, Any]) -> str:
    """Human-readable table of the figures."""
    lines = [f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}"
             for key, value in figures.items()]
    return "\n".join(lines)
