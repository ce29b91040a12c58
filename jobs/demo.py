"""The end-to-end demo on embedded defaults: `make demo`.

Everything comes from this repository: no weights, no datasets, no services downloaded.

1. synthetic regions: a 0.8 m GaoFen-2-like 4-band uint16 region (+ 512 px chip pairs) and a
   uint8 RGB region whose bands and dtype match the real WorldView-3 sample;
2. the embedded S3 server (moto on 127.0.0.1): scenes uploaded and read back through GDAL's
   /vsis3/ and s3fs, every pixel compared;
3. jobs/prepare.py: chips with nDSM depth and spatially disjoint splits from the RGB region;
4. jobs/train.py: the tiny preset on a local Ray (CPU worker) for a few epochs;
5. jobs/evaluate.py: the paper's Table I columns on the test split;
6. jobs/map_region.py: the trained bundle maps the synthetic region and the real WorldView-3
   sample in ../shared/data/real/ (land cover, confidence, depth; Zarr, COGs, STAC, quicklook).

Each job runs as the command a user would type; the commands are printed.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
# The chip split's seed is the region's + 2: on the default region it deals val and test
# blocks that both hold buildings (5-6 % of their pixels). With + 0 the val split had 0.8 %
# building, so the best-by-val-mIoU bundle could ignore buildings (test IoU 0.15 in one run).
SPLIT_SEED_OFFSET = 2
sys.path.insert(0, str(REPO_ROOT))

from depthseg.config import load_config  # noqa: E402
from depthseg.io.catalog import describe_scene  # noqa: E402
from depthseg.io.s3server import LocalS3Server  # noqa: E402
from depthseg.io.storage import Storage, join  # noqa: E402
from depthseg.io.warp import read_pixels  # noqa: E402
from depthseg.synthetic import make_region, write_chip_pairs  # noqa: E402


def _step(message: str) -> float:
    print(f"==> {message}", flush=True)
    return time.perf_counter()


def _verify_s3_copy(local_scene: Path, uri: str, storage: Storage) -> None:
    """Read a whole scene back through /vsis3/ and compare it with the local file."""
    info = describe_scene(uri, storage)
    local, local_valid = read_pixels(describe_scene(str(local_scene), Storage()), Storage(), 0, 0,
                                     info.height, info.width)
    remote, remote_valid = read_pixels(info, storage, 0, 0, info.height, info.width)
    if not (np.array_equal(local, remote) and np.array_equal(local_valid, remote_valid)):
        raise SystemExit(f"demo failed: {uri} differs from {local_scene} after the S3 round trip")


def _run(args: list[str]) -> None:
    """Run a job the way a user would, printing the command; stop the demo if it fails."""
    command = [sys.executable, *args]
    print("    $ python " + " ".join(args), flush=True)
    result = subprocess.run(command, cwd=REPO_ROOT)
    if result.returncode != 0:
        raise SystemExit(f"demo failed: `python {' '.join(args)}` exited {result.returncode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "demo-out", help="output folder")
    parser.add_argument("--size", type=int, default=2048, help="region size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: configs/demo.yaml's, the tiny model with "
                             "its encoder trained)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    t0 = _step(f"synthetic GaoFen-2-like region ({args.size} px, 4-band uint16) -> {out}/region")
    region = make_region(out / "region", size=args.size, seed=args.seed)
    chips = write_chip_pairs(region, out / "chip-pairs", chip_size=512)
    print(f"    {len(region.scenes)} scenes, {len(chips)} chip pairs, "
          f"{time.perf_counter() - t0:.1f} s")

    t0 = _step(f"synthetic uint8 RGB region like the WorldView-3 sample -> {out}/region-rgb")
    rgb = make_region(out / "region-rgb", size=args.size, seed=args.seed + 1, dtype="uint8")
    print(f"    {len(rgb.scenes)} scenes, {time.perf_counter() - t0:.1f} s")

    t0 = _step("embedded S3 server: upload the scenes, read them back via /vsis3/ and s3fs")
    with LocalS3Server() as server:
        bucket = server.make_bucket("demo")
        storage = server.storage
        for scene in region.scenes:
            uri = join(bucket, "region", "scenes", scene.name)
            storage.upload(scene, uri)
            if storage.read_bytes(uri) != scene.read_bytes():
                raise SystemExit(f"demo failed: s3fs read back different bytes for {uri}")
            _verify_s3_copy(scene, uri, storage)
        print(f"    {len(region.scenes)} scenes identical through s3fs and /vsis3/ on "
              f"{server.endpoint_url}, {time.perf_counter() - t0:.1f} s")

    chip_store = out / "chips.zarr"
    runs = out / "runs"
    bundle = runs / "demo" / "best"
    for path in (chip_store, runs, out / "eval", out / "map", out / "map-real"):
        shutil.rmtree(path, ignore_errors=True)  # the demo always starts its jobs afresh

    _step("prepare: 256 px chips of the RGB region, nDSM depth, disjoint train/val/test blocks")
    _run(["jobs/prepare.py", "--out", str(chip_store), "--scenes", str(rgb.scenes[0].parent),
          "--label", str(rgb.labels), "--height", str(rgb.height), "--bands", "1", "2", "3",
          "--chip-size", "256", "--block", "2", "--seed", str(args.seed + SPLIT_SEED_OFFSET)])

    epochs = args.epochs or load_config("demo").train.epochs
    _step(f"train: the tiny model with its encoder trained (configs/demo.yaml), {epochs} "
          "epochs on a local Ray (1 worker, all CPUs)")
    t0 = time.perf_counter()
    _run(["jobs/train.py", "--config", "demo", "--chips", str(chip_store),
          "--storage", str(runs), "--name", "demo", "--epochs", str(epochs),
          "--num-workers", "1"])
    print(f"    trained in {time.perf_counter() - t0:.0f} s")

    _step("evaluate: the best bundle on the test split")
    _run(["jobs/evaluate.py", "--model", str(bundle), "--chips", str(chip_store),
          "--split", "test", "--out", str(out / "eval")])

    _step("map: the synthetic RGB region with the trained bundle, on a local Ray (Ray Data)")
    minx, miny, maxx, maxy = rasterio_bounds(rgb.labels)
    _run(["jobs/map_region.py", "--bbox", *map(str, (minx, miny, maxx, maxy)),
          "--bbox-crs", rgb.crs, "--crs", rgb.crs, "--imagery", str(rgb.scenes[0].parent),
          "--model", str(bundle), "--out", str(out / "map"), "--chunk", "896",
          "--tile", "252", "--overlap", "28", "--executor", "ray"])

    real = REPO_ROOT.parent / "shared" / "data" / "real" / "worldview3_lasvegas_rgb_0.27m.tif"
    if real.is_file():
        _step("map: the real WorldView-3 sample (Las Vegas, 0.27 m, EPSG:26911), in this process")
        info = describe_scene(str(real), Storage())
        minx, miny, maxx, maxy = info.bounds
        _run(["jobs/map_region.py", "--bbox", *map(str, (minx, miny, maxx, maxy)),
              "--bbox-crs", info.crs, "--imagery", str(real), "--model", str(bundle),
              "--out", str(out / "map-real"), "--chunk", "896", "--tile", "252",
              "--overlap", "28"])
    else:
        print(f"    skipped: {real} not found (the real samples live in ../shared/data/real/)")

    print()
    print(f"Demo finished in {time.perf_counter() - started:.0f} s. Outputs under {out}/:")
    print(f"  region (4-band uint16):  {region.preview} (+ scenes/, labels.tif, height.tif)")
    print(f"  chip pairs (512 px):     {out / 'chip-pairs'}/ ({len(chips)} pairs)")
    print(f"  region (uint8 RGB):      {rgb.preview}")
    print(f"  chip store:              {chip_store}")
    print(f"  model bundle:            {bundle}")
    print(f"  training curves:         {runs / 'demo' / 'curves.png'}")
    print(f"  evaluation:              {out / 'eval'}/")
    print(f"  map (synthetic):         {out / 'map'}/ (mosaic.zarr, cog/, stac/, quicklook.png, "
          "run.json)")
    print(f"  map (WorldView-3):       {out / 'map-real'}/quicklook.png")
    return 0


def rasterio_bounds(path: Path) -> tuple[float, float, float, float]:
    """(minx, miny, maxx, maxy) of a raster in its own CRS."""
    minx, miny, maxx, maxy = describe_scene(str(path), Storage()).bounds
    return minx, miny, maxx, maxy


if __name__ == "__main__":
    raise SystemExit(main())
