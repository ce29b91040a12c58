"""Build a training chip store (Zarr, local or s3://) from chip pairs or scenes + labels.

Chip pairs (LoveDA images_png/ + masks_png/, or <id>_img.tif + <id>_label.tif)::

    python jobs/prepare.py --out s3://bucket/chips/loveda --pairs data/loveda --bands 1 2 3 \
        --teacher s3://bucket/weights/depth-anything-v2-small

Scenes + a label raster (+ an nDSM instead of the teacher)::

    python jobs/prepare.py --out chips/liuzhou --scenes gf2/ --label labels.tif \
        --height ndsm.tif --bands 3 2 1 4 --value-range 0 1023

Re-running the same command continues where a stopped run left off. See docs/TRAINING.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from depthseg.classes import LIUZHOU_CLASSES  # noqa: E402
from depthseg.errors import DepthSegError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="chip store: local folder or s3://bucket/prefix")
    src = p.add_argument_group("sources (pairs, or scenes + label)")
    src.add_argument("--pairs", help="folder/prefix of chip pairs")
    src.add_argument("--scenes", nargs="+", default=[], help="scene files or folders of *.tif")
    src.add_argument("--label", nargs="+", action="extend", default=[],
                     help="label raster(s) or folder(s) of them (e.g. one per scene); integer "
                          "class codes, the raster's no-data and 255 = no label; each raster's "
                          "grid is cut into chips")
    src.add_argument("--label-map", help="YAML file mapping raw label values to class names "
                     "(others ignored), e.g. '1: building' per line; see docs/TRAINING.md")
    depth = p.add_argument_group("depth (one of)")
    depth.add_argument("--teacher", help="Depth Anything: a Hugging Face folder, or an official "
                       "depth_anything_v2_vit{s,b,l}.pth file (path or s3://)")
    depth.add_argument("--height", help="DSM/nDSM raster in metres")
    depth.add_argument("--no-depth", action="store_true", help="store no depth")
    p.add_argument("--bands", nargs="+", type=int,
                   help="1-based source bands in model order, R,G,B first (GF-2: 3 2 1 4)")
    p.add_argument("--chip-size", type=int, default=512)
    p.add_argument("--block", type=int, default=4, help="split block side, in chips (scenes)")
    p.add_argument("--fractions", nargs=3, type=float, default=[0.7, 0.15, 0.15],
                   metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", nargs="+", default=None,
                   help="class names in label order (default: the --label-map's names, else "
                        "the 7 LiuZhou classes: " + ", ".join(LIUZHOU_CLASSES) + ")")
    p.add_argument("--gsd", type=float, default=None,
                   help="ground sample distance in metres, for imagery without a CRS (PNG pairs)")
    p.add_argument("--resampling", default="nearest",
                   help="resampling of scenes off the label grid: nearest (default), bilinear, "
                        "cubic, cubic_spline, lanczos, average; recorded in the model bundle, "
                        "and map_region uses it by default")
    p.add_argument("--value-range", nargs=2, type=float, metavar=("MIN", "MAX"),
                   help="valid pixel range (default: the dtype's; GF-2 10-bit: 0 1023)")
    p.add_argument("--min-labelled", type=float, default=0.01,
                   help="smallest labelled fraction of a scene chip to keep it")
    p.add_argument("--teacher-batch", type=int, default=8)
    p.add_argument("--teacher-actors", type=int, default=1)
    p.add_argument("--gpu", action="store_true", help="one GPU per teacher actor")
    p.add_argument("--threads", type=int, default=4, help="reader threads (no teacher)")
    p.add_argument("--verbose", action="store_true",
                   help="show Ray's own INFO messages (hidden by default)")
    p.add_argument("--ray-address", default=None, help="Ray cluster for the teacher (default: "
                   "RAY_ADDRESS or a local Ray)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from depthseg.io.storage import Storage, absolute  # after parsing: --help needs no torch
    from depthseg.train.prepare import PrepareOptions, prepare_chips

    def path(uri: str | None) -> str | None:  # Ray workers do not run in this directory
        return None if uri is None else absolute(uri)

    opts = PrepareOptions(
        out=absolute(args.out), pairs=path(args.pairs),
        scenes=tuple(map(absolute, args.scenes)), labels=tuple(map(absolute, args.label)),
        label_map=args.label_map, gsd=args.gsd, resampling=args.resampling,
        height=path(args.height), teacher=path(args.teacher), no_depth=args.no_depth,
        bands=tuple(args.bands) if args.bands else None, chip_size=args.chip_size,
        block=args.block, fractions=tuple(args.fractions), seed=args.seed,
        classes=tuple(args.classes) if args.classes else None,
        value_range=tuple(args.value_range) if args.value_range else None,
        min_labelled=args.min_labelled, teacher_batch=args.teacher_batch,
        teacher_actors=args.teacher_actors, gpu=args.gpu, threads=args.threads,
    )
    def start_ray() -> None:
        """Start or join Ray for the teacher, once the inputs are checked."""
        import ray

        from depthseg.progress import quiet_ray

        ray.init(address=args.ray_address or os.environ.get("RAY_ADDRESS"),
                 log_to_driver=False, configure_logging=False, **quiet_ray(args.verbose))

    try:
        opts.check()
        prepare_chips(opts, Storage.from_env(), start_ray=start_ray)
    except DepthSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
