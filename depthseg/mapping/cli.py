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
import gc
import os
import sys
import time
from typing import NoReturn

from depthseg.errors import DepthSegError, LeaseLostError, RunError
from depthseg.mapping.request import add_arguments, request_from_args

# run.json's start-up figures count from here: the heavy imports (torch, Ray) come later.
COMMAND_START = time.time()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line: every :class:`~depthseg.mapping.request.MapRequest` option, and Ray's."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--executor", choices=("auto", "ray", "local"), default="auto",
                        dest="executor_choice",
                        help="where the stages run: Ray (actors and tasks, on this machine or "
                             "the cluster of --ray-address / RAY_ADDRESS) or this process "
                             "(one model, reads and writes on threads). auto: this process "
                             "when there is no cluster to join, no GPU and one CPU actor "
                             "(Ray would run the one model anyway and add its start-up and "
                             "its own processes), else Ray")
    parser.add_argument("--local", action="store_true", help="the same as --executor local")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    parser.add_argument("--verbose", action="store_true",
                        help="show Ray's own INFO messages (hidden by default)")
    return parser.parse_args(argv)


def choose_executor(args: argparse.Namespace) -> tuple[str, str]:
    """``(executor, why)`` for ``--executor auto`` (and the explicit choices)."""
    if args.local or args.executor_choice == "local":
        return "local", "asked for"
    if args.executor_choice == "ray":
        return "ray", "asked for"
    if args.ray_address or os.environ.get("RAY_ADDRESS"):
        return "ray", "a Ray cluster to join"
    if args.num_cpus is not None:
        return "ray", "--num-cpus sets a local Ray"
    if args.gpus:
        return "ray", f"--gpus {args.gpus}"
    if (args.cpu_actors or 1) > 1:
        return "ray", f"--cpu-actors {args.cpu_actors}"
    if args.write_stage == "separate":
        return "ray", "--write-stage separate"
    import torch

    if args.gpus is None and torch.cuda.is_available():
        return "ray", "a GPU on this machine"
    return "local", ("no Ray cluster, no GPU and one CPU actor; --executor ray runs the "
                     "same stages on a local Ray")


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
        executor, why = choose_executor(args)
        print(f"executor: {'this process' if executor == 'local' else 'Ray'} ({why})",
              file=sys.stderr)
        request = request_from_args(args, executor=executor,
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


def run() -> NoReturn:
    """The command: :func:`main`, then exit without the interpreter's last full collection.

    At exit Python collects every object once more (torch's and timm's included), which took
    1.2 s after a run's last write on the 2-core machine; nothing is left to free then, so
    the objects are frozen out of it. atexit handlers (Ray's shutdown) still run.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
