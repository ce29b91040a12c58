"""Benchmark mapping on a synthetic region: model-only, full pipeline and naive loop.

Example::

    python jobs/bench.py --preset tiny --region 512 --tile 126 --chunk 256

Prints tiles/s of each, the ratios, and the pipeline's peak memory on the region and on a
region 16x larger (see ``depthseg.mapping.bench``).
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
    args = parser.parse_args(argv)

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
