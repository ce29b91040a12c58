"""Map a region with a DepthSeg model bundle: land cover, confidence and depth mosaics.

Example::

    python jobs/map_region.py --bbox 109.2 24.1 109.6 24.5 --imagery s3://bucket/gf2/ \
        --model s3://bucket/models/vitb/ --out s3://bucket/maps/liuzhou/

Exit codes: 0 all chunks mapped; 1 some chunks failed (listed in run.json) or the run stopped
on an error after it started (run.json says why; --resume continues it); 2 bad input or an
output another run holds, found before any work.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from depthseg.errors import DepthSegError, LeaseLostError, RunError

# run.json's start-up figures count from here: the heavy imports (torch, Ray) come later.
COMMAND_START = time.time()


def _resolution(text: str) -> float | str:
    if text == "native":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of metres or 'native'") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bbox", type=float, nargs=4, required=True,
                        metavar=("MINX", "MINY", "MAXX", "MAXY"))
    parser.add_argument("--imagery", required=True,
                        help="folder/prefix/glob of GeoTIFFs, STAC ItemCollection .json, .zarr")
    parser.add_argument("--model", required=True, help="model bundle folder or s3:// prefix")
    parser.add_argument("--out", required=True, help="output folder or s3:// prefix")
    parser.add_argument("--bbox-crs", default="EPSG:4326")
    parser.add_argument("--crs", default="auto",
                        help="auto (imagery's metric CRS, else UTM) or EPSG:n")
    parser.add_argument("--resolution", type=_resolution, default=None,
                        help="output pixel size in metres, or 'native' (default: the "
                             "imagery's, or the model's training resolution when the imagery "
                             "differs from it by more than 25%%)")
    parser.add_argument("--bands", nargs="+", default=None,
                        help="imagery bands for the model's channels, in order: 1-based indices "
                             "or band names (default: by the bundle's band names, else its "
                             "band indices)")
    parser.add_argument("--scale", type=float, default=None,
                        help="multiply pixels by this before the model (e.g. 10000 for 0-1 "
                             "float reflectance into a bundle trained on integers)")
    parser.add_argument("--offset", type=float, default=0.0, help="add this after --scale")
    parser.add_argument("--chunk", type=int, default=None,
                        help="chunk side in pixels (default: a multiple of the tile stride near "
                             "2048, e.g. 1816 for 518 px tiles with 64 px overlap, so that no "
                             "tile is computed twice)")
    parser.add_argument("--tile", type=int, default=None,
                        help="model tile side in pixels (default: the bundle's)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="tile overlap in pixels (default: about 64, at most tile/4, so that "
                             "the stride is a multiple of 64: 70 for 518 px tiles)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs to use, one predict actor each (default: all Ray sees)")
    parser.add_argument("--cpu-actors", type=int, default=1,
                        help="predict actors when there is no GPU")
    parser.add_argument("--stac-asset", default="image", help="asset key of STAC items")
    parser.add_argument("--resampling", default=None,
                        help="warping of scenes not on the output grid: nearest, bilinear, "
                             "cubic, cubic_spline, lanczos, average (default: what the "
                             "bundle's training used)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model in each predict actor (long GPU runs)")
    parser.add_argument("--write-stage", choices=("auto", "separate", "actor"), default="auto",
                        help="where chunks are written: separate Ray Data tasks (default with "
                             "GPUs) or the predict actor (default on CPU)")
    parser.add_argument("--resume", action="store_true", help="continue a run in --out")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write every class's probability: cog/probabilities/<chunk>.tif "
                             "(uint8, one band per class, round(254 x p), 255 = no data) and "
                             "cog/probabilities.vrt")
    parser.add_argument("--polygons", action="store_true",
                        help="also write the land cover as polygons: a GeoParquet dataset in "
                             "vector/landcover/ (class, class_name, pixels, area_m2, mean "
                             "confidence), each polygon whole across chunk borders")
    parser.add_argument("--zarr-format", type=int, choices=(2, 3), default=3,
                        help="Zarr format of mosaic.zarr: 3 (default; zarr-python 3, xarray) "
                             "or 2 (also opened by GDAL and QGIS)")
    parser.add_argument("--lease-timeout", type=float, default=300.0,
                        help="seconds without a heartbeat after which another run's lease on "
                             "--out counts as stale and is taken over (a run holds the lease "
                             "while it writes; one whose process is gone on this host is "
                             "stale at once)")
    parser.add_argument("--local", action="store_true",
                        help="run the stages in this process, without Ray (debugging)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own INFO messages (hidden by default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = parse_args(argv)
    # GDAL settings are chosen here, explicitly: COG-friendly reads for every worker too.
    gdal_env = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_CACHEMAX": "256",
                "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.vrt,.json,.zarr"}
    os.environ.update(gdal_env)
    from depthseg.io.storage import Storage
    from depthseg.mapping import MapRequest, map_region
    from depthseg.progress import quiet_ray

    def start_ray() -> int | None:
        """Start or join Ray once the inputs are checked; the GPUs to use if not given."""
        import ray

        quiet = quiet_ray(args.verbose)
        ray.init(address=args.ray_address, num_cpus=args.num_cpus,
                 runtime_env={"env_vars": {**gdal_env, **quiet.pop("runtime_env")["env_vars"]}},
                 log_to_driver=False, include_dashboard=False, **quiet)
        if args.gpus is not None:
            return None
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus == 0 and (args.ray_address or os.environ.get("RAY_ADDRESS")):
            # An autoscaling cluster may start with no GPU node; --gpus N scales up.
            print("note: the cluster has no GPU now, so the model runs on CPU actors; "
                  "pass --gpus N to use (and scale up) N GPUs", file=sys.stderr)
        return gpus

    try:
        storage = Storage.from_env()
        request = MapRequest(
            bbox=tuple(args.bbox), imagery=args.imagery, model=args.model, out=args.out,
            bbox_crs=args.bbox_crs, crs=args.crs, resolution=args.resolution,
            chunk_size=args.chunk, tile=args.tile, overlap=args.overlap,
            batch_size=args.batch_size, gpus=args.gpus or 0, cpu_actors=args.cpu_actors,
            resume=args.resume, stac_asset=args.stac_asset, resampling=args.resampling,
            compile=args.compile, write_stage=args.write_stage,
            executor="local" if args.local else "ray",
            bands=tuple(args.bands) if args.bands else None, scale=args.scale,
            offset=args.offset, lease_timeout_s=args.lease_timeout,
            zarr_format=args.zarr_format, probabilities=args.probabilities,
            polygons=args.polygons)
        report = map_region(request, storage, start_ray=start_ray,
                            command_start=COMMAND_START)
    except (RunError, LeaseLostError) as err:  # it had started: work is kept, run.json says why
        print(f"error: {err}", file=sys.stderr)
        return 1
    except DepthSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
