"""Evaluate a model bundle on a chip store split: Table I metrics, per-class scores, a figure.

    python jobs/evaluate.py --model runs/tiny-demo/best --chips chips/demo --split test \
        --out reports/tiny-demo

Prints the markdown table; with --out also writes metrics.md, metrics.json, confusion.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from depthseg.errors import DepthSegError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model bundle folder or s3:// prefix")
    p.add_argument("--chips", required=True, help="chip store")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", default=None, help="folder or s3:// prefix for the reports")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    args = p.parse_args(argv)
    from depthseg.io.storage import Storage  # after parsing: --help needs no torch
    from depthseg.train.evaluate import evaluate

    try:
        result = evaluate(args.model, args.chips, args.split, args.out, Storage.from_env(),
                          args.batch_size, args.device)
    except DepthSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(result.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
