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
from depthseg.mapping.request import add_arguments, request_from_args

# run.json's start-up figures count from here: the heavy imports (torch, Ray) come later.
COMMAND_START = time.time()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: every :class:`~depthseg.mapping.request.MapRequest` option, and Ray's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
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
    from depthseg.io.storage import Storage, absolute
    from depthseg.mapping import map_region
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
        # Ray workers do not run in this directory: local paths are made absolute here.
        request = request_from_args(args, executor="local" if args.local else "ray",
                                    imagery=absolute(args.imagery), model=absolute(args.model),
                                    out=absolute(args.out))
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
