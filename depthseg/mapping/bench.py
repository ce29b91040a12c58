"""Mapping benchmark: the pipeline against a plain loop and model-only, and peak memory.

Three ways to map the same synthetic region with the same model and batch size:

- **model only**: tiles already in memory, cycled through ``ChunkPredictor.predict_tiles``
  (device transfer, normalise, forward, softmax; bf16 on CUDA);
- **plain loop** (:mod:`depthseg.mapping.plainloop`): what a TorchGeo user writes: one
  region-wide sliding-window sampler, a ``Dataset`` merging the GeoTIFFs that meet each window,
  a ``DataLoader`` (``--plain-workers`` workers), logits averaged into a region-sized array
  and one GeoTIFF written;
- **pipeline**: ``jobs/map_region.py``, run as ``python -m depthseg.mapping.cli`` (plan, Ray
  Data read -> predict -> write, finalise).

The plain loop and the pipeline each run in a subprocess, timed from ``Popen`` to exit (so end
to end includes interpreter start, imports, model load and writing the outputs), with the peak
summed RSS of the process tree sampled from ``/proc``. Every throughput counts the same tiles:
``cover``, the plain loop's window count over the region (the minimal cover of one sliding
window). Steady-state rates leave out the first batch (plain loop) or the first chunk
(pipeline, from run.json's ``tiles`` and ``timeline`` when it has them), which pay start-up
once. The pipeline and the plain loop are measured again on a region 16x larger (4x per side):
throughput, and the pipeline's peak memory, which chunking keeps bounded by chunk size x
concurrency rather than region size.
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
import torch

from depthseg.classes import LIUZHOU_CLASSES, LIUZHOU_PALETTE
from depthseg.config import load_config
from depthseg.geo import TileSpec
from depthseg.io.bundle import Contract, load_bundle, save_bundle
from depthseg.mapping.plainloop import RegionWindows, window_offsets
from depthseg.mapping.predict import ChunkPredictor
from depthseg.model import build_model

# (figure, target ratio, the setting the target was set for)
TARGETS = (
    ("pipeline_over_plain", 1.0, "end to end vs plain loop (vits, 4096 px)"),
    ("pipeline_steady_over_plain_steady", 1.15, "steady vs plain loop steady (vits, 4096 px)"),
    ("pipeline_steady_over_model", 0.9, "steady vs model-only (vits, 4096 px)"),
    ("grown_pipeline_over_plain", 1.2, "16x region vs plain loop (tiny)"),
)


@dataclass(frozen=True)
class BenchOptions:
    """What to benchmark.

    Attributes:
        work_dir: Scratch folder (regions, bundle, outputs).
        preset: ``tiny`` or ``vits`` (random weights either way).
        region_px: Side of the synthetic region in pixels.
        tile: Tile side.
        overlap: Tile overlap.
        chunk: Chunk side of the pipeline; None: the pipeline's default.
        batch_size: Tiles per forward pass (pipeline, plain loop and model-only).
        grow: Also measure a 4x-per-side (16x area) region.
        num_cpus: CPUs of the pipeline's local Ray.
        plain_workers: DataLoader workers of the plain loop.
        plain_batch_size: Batch size of the plain loop (default: ``batch_size``); the
            pipeline on the CPU splits its batches into passes of about a megapixel
            (:func:`~depthseg.mapping.predict.cpu_micro_batch`), which the plain loop as
            users write it does not: give it the same pass size to compare forward passes
            alike.
        precision: The model's arithmetic in all three (``--precision`` of map_region).
        executor: ``--executor`` of map_region: ``auto`` (what a user gets: in this
            process on a machine without a GPU or a cluster), ``ray`` or ``local``.
    """

    work_dir: Path
    preset: str = "tiny"
    region_px: int = 512
    tile: int = 126
    overlap: int = 28
    chunk: int | None = 256
    batch_size: int = 8
    grow: bool = True
    num_cpus: int = 2
    plain_workers: int = 1
    plain_batch_size: int | None = None
    precision: str = "auto"
    executor: str = "auto"


def _bundle(options: BenchOptions) -> str:
    config = load_config(options.preset).model
    bands = (3, 2, 1, 4)[: config.in_channels]
    contract = Contract(band_indices=bands, band_names=("red", "green", "blue", "nir")[
        : len(bands)], input_dtype="uint16", value_range=(0, 1023), mean=(300.0,) * len(bands),
        std=(100.0,) * len(bands), class_names=LIUZHOU_CLASSES, palette=LIUZHOU_PALETTE,
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


def cover_tiles(size: int, tile: int, overlap: int) -> int:
    """The plain loop's window count over a ``size`` x ``size`` region (the minimal cover).

    Every throughput of the benchmark is counted in these tiles.
    """
    return len(window_offsets(size, tile, tile - overlap)) ** 2


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


def _run_measured(command: list[str], what: str) -> tuple[float, int]:
    """Run ``command``; returns (wall seconds from Popen to exit, peak RSS of its tree)."""
    start = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss_bytes(process.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, stderr = process.communicate()
    wall = time.time() - start
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed ({process.returncode}): {stderr[-2000:]}")
    return wall, peak[0]


def run_pipeline_subprocess(options: BenchOptions, imagery: Path, bbox: tuple[float, ...],
                            crs: str, bundle: str, out: Path) -> dict[str, Any]:
    """Run ``jobs/map_region.py``; returns its run.json, ``wall_s`` and ``peak_rss_bytes``.

    ``wall_s`` runs from ``Popen`` to exit; the peak RSS is summed over the process tree.
    """
    command = [sys.executable, "-m", "depthseg.mapping.cli",
               "--bbox", *map(str, bbox), "--bbox-crs", crs, "--imagery", str(imagery),
               "--model", bundle, "--out", str(out),
               "--tile", str(options.tile), "--overlap", str(options.overlap),
               "--batch-size", str(options.batch_size), "--precision", options.precision,
               "--executor", options.executor]
    if options.executor == "ray":
        command += ["--num-cpus", str(options.num_cpus)]
    if options.chunk:
        command += ["--chunk", str(options.chunk)]
    wall, peak = _run_measured(command, "map_region")
    report: dict[str, Any] = json.loads((out / "run.json").read_text())
    report["wall_s"], report["peak_rss_bytes"] = wall, peak
    return report


def run_plain_subprocess(options: BenchOptions, imagery: Path, bbox: tuple[float, ...],
                         bundle: str, out: Path) -> dict[str, Any]:
    """Run the plain loop (:mod:`depthseg.mapping.plainloop`), writing the GeoTIFF ``out``.

    Returns its times JSON plus ``wall_s`` (``Popen`` to exit) and ``peak_rss_bytes``.
    """
    times_path = out.with_suffix(".json")
    command = [sys.executable, "-m", "depthseg.mapping.plainloop", "--imagery", str(imagery),
               "--model", bundle, "--bounds", *map(str, bbox), "--tile", str(options.tile),
               "--overlap", str(options.overlap),
               "--batch-size", str(options.plain_batch_size or options.batch_size),
               "--num-workers", str(options.plain_workers), "--out", str(out),
               "--precision", options.precision,
               "--json", str(times_path)]
    wall, peak = _run_measured(command, "plain loop")
    times: dict[str, Any] = json.loads(times_path.read_text())
    times["wall_s"], times["peak_rss_bytes"] = wall, peak
    return times


def _plain_figures(plain: dict[str, Any], cover: int, prefix: str) -> dict[str, Any]:
    figures: dict[str, Any] = {
        f"{prefix}tiles_per_s": cover / plain["wall_s"],
        f"{prefix}wall_s": plain["wall_s"],
        f"{prefix}first_batch_s": plain["first_batch_done"] - plain["start"],
        f"{prefix}peak_rss_mb": plain["peak_rss_bytes"] / 2**20,
    }
    steady_s = plain["last_batch_done"] - plain["first_batch_done"]
    if plain["tiles"] > plain["first_batch_tiles"] and steady_s > 0:
        figures[f"{prefix}steady_tiles_per_s"] = (
            (plain["tiles"] - plain["first_batch_tiles"]) / steady_s)
    return figures


def _pipeline_figures(run: dict[str, Any], cover: int, prefix: str) -> dict[str, Any]:
    seconds = run.get("seconds", {})
    figures: dict[str, Any] = {
        f"{prefix}tiles_per_s": cover / run["wall_s"],
        f"{prefix}wall_s": run["wall_s"],
        f"{prefix}total_s": seconds.get("total"),
        f"{prefix}map_s": seconds.get("map"),
        f"{prefix}first_tile_s": seconds.get("first_tile"),
        f"{prefix}startup_s": seconds.get("first_chunk"),
        f"{prefix}chunks": run.get("chunks", {}).get("done"),
    }
    tiles = run.get("tiles") or {}
    timeline = run.get("timeline") or {}
    # In whole tiles: a tile trimmed at the bbox's edge counts by the pixels it ran on.
    computed = tiles.get("full_equivalent", tiles.get("computed"))
    first = tiles.get("first_chunk_full_equivalent", tiles.get("first_chunk"))
    if tiles.get("computed"):
        figures[f"{prefix}tiles_run"] = tiles["computed"]
    if computed:
        figures[f"{prefix}tiles_computed"] = computed
        figures[f"{prefix}tiles_over_cover"] = computed / cover
    t0, t1 = timeline.get("first_chunk_done"), timeline.get("last_chunk_done")
    if computed and first is not None and t0 is not None and t1 is not None:
        if computed > first and t1 > t0:
            figures[f"{prefix}steady_tiles_per_s"] = (
                cover * (computed - first) / computed / (t1 - t0))
    return {key: value for key, value in figures.items() if value is not None}


def _ratio(figures: dict[str, Any], name: str, numerator: str, denominator: str) -> None:
    if figures.get(numerator) and figures.get(denominator):
        figures[name] = figures[numerator] / figures[denominator]


def run_benchmark(options: BenchOptions) -> dict[str, Any]:
    """Measure everything; returns the figures (also printed by ``jobs/bench.py``)."""
    options.work_dir.mkdir(parents=True, exist_ok=True)
    bundle_uri = _bundle(options)
    bundle = load_bundle(bundle_uri)
    imagery, bbox, crs = _region(options, options.region_px)
    cover = cover_tiles(options.region_px, options.tile, options.overlap)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # 1. Model only: the region's first windows, already in memory, cycled to ``cover`` tiles.
    windows = RegionWindows(str(imagery), bbox, options.tile, options.tile - options.overlap,
                            bundle.contract.band_indices)
    in_memory = np.stack([windows[i].numpy()
                          for i in range(min(cover, 2 * options.batch_size))])
    predictor = ChunkPredictor(bundle.model, bundle.contract,
                               TileSpec(options.tile, options.overlap), options.batch_size,
                               device=device, precision=options.precision)
    # Warm up on both batch shapes timed below (a full batch and the remainder).
    for count in {options.batch_size, cover % options.batch_size or options.batch_size}:
        predictor.predict_tiles(in_memory[np.arange(count) % len(in_memory)])
    start = time.perf_counter()
    for first in range(0, cover, options.batch_size):
        count = min(options.batch_size, cover - first)
        predictor.predict_tiles(in_memory[np.arange(first, first + count) % len(in_memory)])
    model_s = time.perf_counter() - start
    cpu_pass = predictor.micro_batch if device == "cpu" else None
    del windows, in_memory, predictor

    figures: dict[str, Any] = {
        "preset": options.preset, "tile": options.tile, "overlap": options.overlap,
        "chunk": options.chunk, "batch_size": options.batch_size,
        "plain_workers": options.plain_workers,
        "plain_batch_size": options.plain_batch_size or options.batch_size,
        "cpu_pass_tiles": cpu_pass, "precision": options.precision,
        "executor": options.executor,
        "device": device,
        "torch_threads": torch.get_num_threads(), "region_px": options.region_px,
        "cover_tiles": cover, "model_tiles_per_s": cover / model_s,
    }

    # 2. The plain loop, then 3. the pipeline, each in its own subprocess.
    plain = run_plain_subprocess(options, imagery, bbox, bundle_uri,
                                 options.work_dir / f"plain_{options.region_px}.tif")
    figures.update(_plain_figures(plain, cover, "plain_"))
    run = run_pipeline_subprocess(options, imagery, bbox, crs, bundle_uri,
                                  options.work_dir / f"out_{options.region_px}")
    figures.update(_pipeline_figures(run, cover, "pipeline_"))
    figures["peak_rss_mb"] = run["peak_rss_bytes"] / 2**20
    _ratio(figures, "pipeline_over_plain", "pipeline_tiles_per_s", "plain_tiles_per_s")
    _ratio(figures, "pipeline_steady_over_plain_steady", "pipeline_steady_tiles_per_s",
           "plain_steady_tiles_per_s")
    _ratio(figures, "pipeline_steady_over_model", "pipeline_steady_tiles_per_s",
           "model_tiles_per_s")
    _ratio(figures, "pipeline_over_model", "pipeline_tiles_per_s", "model_tiles_per_s")

    # 4. Both again on a region 16x larger (4x per side).
    if options.grow:
        big = options.region_px * 4
        imagery_big, bbox_big, _ = _region(options, big)
        cover_big = cover_tiles(big, options.tile, options.overlap)
        figures["grown_region_px"] = big
        figures["grown_cover_tiles"] = cover_big
        plain_big = run_plain_subprocess(options, imagery_big, bbox_big, bundle_uri,
                                         options.work_dir / f"plain_{big}.tif")
        figures.update(_plain_figures(plain_big, cover_big, "grown_plain_"))
        run_big = run_pipeline_subprocess(options, imagery_big, bbox_big, crs, bundle_uri,
                                          options.work_dir / f"out_{big}")
        figures.update(_pipeline_figures(run_big, cover_big, "grown_pipeline_"))
        figures["grown_chunks"] = figures.pop("grown_pipeline_chunks", None)
        figures["grown_peak_rss_mb"] = run_big["peak_rss_bytes"] / 2**20
        figures["grown_peak_rss_growth"] = (figures["grown_peak_rss_mb"]
                                            / figures["peak_rss_mb"] - 1)
        _ratio(figures, "grown_pipeline_over_plain", "grown_pipeline_tiles_per_s",
               "grown_plain_tiles_per_s")
        _ratio(figures, "grown_pipeline_steady_over_plain_steady",
               "grown_pipeline_steady_tiles_per_s", "grown_plain_steady_tiles_per_s")
    return figures


def format_figures(figures: dict[str, Any]) -> str:
    """Human-readable table of the figures, then the targets: measured ratio, PASS/MISS."""
    lines = [f"{key:36s} {value:.3f}" if isinstance(value, float) else f"{key:36s} {value}"
             for key, value in figures.items()]
    grown = f", grown {figures['grown_region_px']} px" if "grown_region_px" in figures else ""
    lines += ["", f"targets (this run: {figures.get('preset')}, {figures.get('region_px')} px"
              f"{grown}, device {figures.get('device')})"]
    for name, target, setting in TARGETS:
        value = figures.get(name)
        verdict = "n/a " if value is None else ("PASS" if value >= target else "MISS")
        shown = "-" if value is None else f"{value:.3f}"
        lines.append(f"  {verdict}  {name:36s} {shown:>7s} >= {target:.2f}  {setting}")
    return "\n".join(lines)
