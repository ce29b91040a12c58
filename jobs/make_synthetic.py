"""Write a synthetic georeferenced region (COG scenes, labels, heights, preview, manifest).

Example:
    python jobs/make_synthetic.py --out demo-out/region --size 2048 --seed 0 \
        --chips demo-out/chips
"""

from __future__ import annotations

import argparse
import sys
import time

from depthseg.errors import InputError
from depthseg.synthetic import make_region, write_chip_pairs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder of the region")
    parser.add_argument("--size", type=int, default=1024, help="pixels per side (default 1024)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--resolution", type=float, default=0.8,
                        help="pixel size in CRS units (default 0.8)")
    parser.add_argument("--crs", default="EPSG:32649", help="projected CRS (default EPSG:32649)")
    parser.add_argument("--dtype", choices=("uint16", "uint8"), default="uint16",
                        help="uint16: 4-band 10-bit B,G,R,NIR; uint8: 3-band R,G,B")
    parser.add_argument("--scenes", type=int, default=4, help="number of overlapping scenes")
    parser.add_argument("--chips", default=None, help="also cut labelled chips into this folder")
    parser.add_argument("--chip-size", type=int, default=512, help="chip side (default 512)")
    parser.add_argument("--chip-layout", choices=("pairs", "loveda"), default="pairs",
                        help="pairs: <id>_img.tif + <id>_label.tif; loveda: images_png/ + "
                        "masks_png/")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        region = make_region(args.out, size=args.size, seed=args.seed,
                             resolution=args.resolution, crs=args.crs, dtype=args.dtype,
                             n_scenes=args.scenes)
        print(f"region: {region.root} ({len(region.scenes)} scenes, {region.size} px, "
              f"{time.perf_counter() - start:.1f} s)")
        if args.chips:
            chips = write_chip_pairs(region, args.chips, chip_size=args.chip_size,
                                     layout=args.chip_layout)
            print(f"chips: {len(chips)} in {args.chips}")
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
