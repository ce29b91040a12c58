"""Benchmark mapping on a synthetic region: model-only, full pipeline and naive loop.

Example::

    python jobs/bench.py --preset tiny --region 512 --tile 126 --chunk 256

Prints tiles/s of each, the ratios, and the pipeline's peak memory on the region and on a
region 16x larger (see ``depthseg.mapping.bench``).

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


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=("tiny", "vits"), default="tiny")
    parser.add_argument("--region", type=int, default=512, help="region side in pixels")
    parser.add_argument("--tile", type=int, default=126)
    parser.add_argument("--overlap", type=int, default=28)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the pipeline's Ray")
    parser.add_argument("--no-grow", action="store_true", help="skip the 16x-region run")
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

    from depthseg.mapping.bench import BenchOptions, format_figures, run_benchmark

    with tempfile.TemporaryDirectory(prefix="depthseg-bench-") as tmp:
        options = BenchOptions(work_dir=args.work_dir or Path(tmp), preset=args.preset,
                               region_px=args.region, tile=args.tile, overlap=args.overlap,
                               chunk=args.chunk, batch_size=args.batch_size,
                               grow=not args.no_grow, num_cpus=args.num_cpus)
        figures = run_benchmark(options)
    print(format_figures(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
