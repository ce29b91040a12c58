"""Benchmark mapping on a synthetic region: the pipeline against a plain loop and model-only.

Examples (the issue's two settings)::

    python jobs/bench.py --preset vits --region 4096 --tile 518 --no-grow
    python jobs/bench.py --preset tiny --region 1024 --tile 126

The plain loop (``depthseg.mapping.plainloop``) is what a TorchGeo user writes: one
sliding-window sampler over the region, a DataLoader (``--plain-workers``), the same model and
batch size, logits averaged into one region-sized raster. It and the pipeline
(``jobs/map_region.py``) run in subprocesses, timed from start to exit; model-only runs tiles
already in memory. Every tiles/s counts the same tiles: the plain loop's window count over the
region. Prints end-to-end and steady tiles/s of each, the ratios, peak memory on the region
and on a region 16x larger, and the targets with PASS/MISS (see ``depthseg.mapping.bench``).

``--province`` runs the province simulation instead (``depthseg.mapping.province``): STAC
planning of tens of thousands of Items, an S3 folder behind added latency, thousands of
chunks end to end, per-chunk write cost, the per-run files at 100,000 chunks, and a
projection of Guangxi on 8 GPUs::

    python jobs/bench.py --province [--items 57600] [--cogs 2000] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from depthseg.mapping.request import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "vits"), default="tiny")
    parser.add_argument("--region", type=int, default=512, help="region side in pixels")
    parser.add_argument("--tile", type=int, default=126)
    parser.add_argument("--overlap", type=int, default=None,
                        help="tile overlap of both loops (default: the pipeline's default for "
                             "the tile, e.g. 70 for 518 px)")
    parser.add_argument("--chunk", type=int, default=0,
                        help="pipeline chunk side in pixels (default 0: the pipeline's "
                             "default, a multiple of the tile stride)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="tiles per forward pass (pipeline, plain loop, model-only)")
    parser.add_argument("--plain-workers", type=int, default=1,
                        help="DataLoader workers of the plain loop")
    parser.add_argument("--plain-batch-size", type=int, default=None,
                        help="batch size of the plain loop (default: --batch-size; on the "
                             "CPU the pipeline runs its batches in passes of about a "
                             "megapixel, e.g. 3 tiles of 518 px: give 3 to compare alike)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="the model's arithmetic in all three (auto: bf16 on CUDA, fp32 "
                             "on the CPU)")
    parser.add_argument("--num-cpus", type=int, default=2,
                        help="CPUs of the pipeline's Ray (with --executor ray)")
    parser.add_argument("--executor", choices=("auto", "ray", "local"), default="auto",
                        help="map_region's --executor (auto: what a user gets on this "
                             "machine; without a GPU or a cluster that is this process)")
    parser.add_argument("--no-grow", action="store_true",
                        help="skip the 16x-region runs (pipeline and plain loop)")
    parser.add_argument("--work-dir", type=Path, default=None, help="scratch (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write figures here")
    parser.add_argument("--province", action="store_true",
                        help="the province simulation and the Guangxi projection instead")
    parser.add_argument("--items", type=int, default=57_600, help="province: STAC Items")
    parser.add_argument("--cogs", type=int, default=2_000, help="province: COGs on S3")
    parser.add_argument("--latency-ms", type=float, default=30.0,
                        help="province: latency added to every S3 request")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="province: measurements to skip (stac s3 e2e 256 write index)")
    args = parser.parse_args(argv)

    if args.province:
        from depthseg.mapping.province import ProvinceOptions, format_province, run_province

        with tempfile.TemporaryDirectory(prefix="depthseg-province-") as tmp:
            figures = run_province(ProvinceOptions(
                work_dir=args.work_dir or Path(tmp), items=args.items, cogs=args.cogs,
                latency_s=args.latency_ms / 1000, region_px=4096, chunk=64,
                num_cpus=args.num_cpus, skip=tuple(args.skip)),
                log=lambda line: print(line, file=sys.stderr, flush=True))
        print(format_province(figures))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
        return 0

    from depthseg.geo import lattice_overlap
    from depthseg.mapping.bench import BenchOptions, format_figures, run_benchmark

    with tempfile.TemporaryDirectory(prefix="depthseg-bench-") as tmp:
        options = BenchOptions(work_dir=args.work_dir or Path(tmp), preset=args.preset,
                               region_px=args.region, tile=args.tile,
                               overlap=(lattice_overlap(args.tile) if args.overlap is None
                                        else args.overlap),
                               chunk=args.chunk or None, batch_size=args.batch_size,
                               grow=not args.no_grow, num_cpus=args.num_cpus,
                               plain_workers=args.plain_workers,
                               plain_batch_size=args.plain_batch_size,
                               precision=args.precision, executor=args.executor)
        figures = run_benchmark(options)
    print(format_figures(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
