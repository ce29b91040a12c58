"""Scheduled, incremental regional mapping: run (or submit) the regions that are due.

    python jobs/schedule.py --regions regions.yaml [--now 2026-11-28T02:00:00Z] [--dry-run]
    python jobs/schedule.py --regions regions.yaml --submit http://HEAD:8265 [--wait]

A region is due when its cron cadence (UTC) fired after its last complete run. Each run lands
in <out>/runs/<run id>/ with a ledger of the scenes every chunk read; chunks whose scenes,
model and plan are unchanged since the last complete run are carried over, the rest is
mapped; <out>/latest.json moves only once a run completed. See docs/SCHEDULING.md.

Exit codes: 0 every due region ran (or was submitted) cleanly; 1 a run failed (chunks
failed, storage errors, a submitted job failed with --wait); 2 bad input (regions file,
arguments, or a region's model/imagery/bbox refused).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from depthseg.errors import DepthSegError, InputError  # noqa: E402
from depthseg.io.storage import Storage  # noqa: E402
from depthseg.schedule.cadence import format_time, is_due, parse_time  # noqa: E402

if TYPE_CHECKING:
    from depthseg.schedule.regions import Region

GDAL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_CACHEMAX": "256",
            "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.vrt,.json,.zarr"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--regions", required=True,
                   help="regions YAML: path, s3:// URI, or env:VARIABLE holding its text")
    p.add_argument("--now", default=None,
                   help="ISO time to decide what is due at (default: current UTC time)")
    p.add_argument("--only", action="append", default=None, metavar="NAME",
                   help="only this region (repeatable)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what is due and what would be recomputed; write nothing")
    p.add_argument("--submit", default=None, metavar="http://HEAD:8265",
                   help="submit one Ray job per due region to this dashboard instead of "
                        "running inline")
    p.add_argument("--wait", action="store_true",
                   help="with --submit: wait for the jobs and exit 1 if one failed")
    p.add_argument("--working-dir", default=str(REPO_ROOT),
                   help="with --submit: the job's working_dir (default: this repository)")
    p.add_argument("--local", action="store_true",
                   help="inline runs without Ray, in this process (debugging)")
    p.add_argument("--ray-address", default=None,
                   help="Ray cluster for inline runs (default: RAY_ADDRESS, else a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local Ray")
    return p.parse_args(argv)


def _now(args: argparse.Namespace) -> datetime:
    return parse_time(args.now) if args.now else datetime.now(timezone.utc)


def _select(regions: list[Region], only: list[str] | None, source: str) -> list[Region]:
    if not only:
        return regions
    names = {r.name for r in regions}
    for name in only:
        if name not in names:
            raise InputError(f"--only {name!r}: no such region in {source} (regions: "
                             f"{', '.join(sorted(names))}); give one of those names")
    return [r for r in regions if r.name in only]


def _ray_gpus(args: argparse.Namespace) -> int:
    """Start or join Ray for inline runs; returns the GPUs it sees."""
    import ray

    if not ray.is_initialized():
        ray.init(address=args.ray_address, num_cpus=args.num_cpus,
                 runtime_env={"env_vars": GDAL_ENV}, log_to_driver=False,
                 include_dashboard=False)
    return int(ray.cluster_resources().get("GPU", 0))


def _say(line: str) -> None:
    print(line, flush=True)


def _error(region: str, err: BaseException) -> None:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    if not isinstance(err, DepthSegError):
        text = f"{type(err).__name__}: {text}"
    print(f"error: region {region!r}: {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, storage: Storage) -> int:
    """Decide, then dry-run, submit or run each due region; returns the exit code."""
    # Imported here, not above: they load the mapping plan and torch; --help needs neither.
    from depthseg.schedule.incremental import describe, execute_run, plan_run
    from depthseg.schedule.ledger import read_latest
    from depthseg.schedule.regions import parse_regions, read_regions_text
    from depthseg.schedule.submit import submit_region, wait_for

    text = read_regions_text(args.regions, storage)
    regions = _select(parse_regions(text, args.regions), args.only, args.regions)
    now = _now(args)
    code = 0
    submitted: list[str] = []
    gpus: int | None = None
    for region in regions:
        try:
            latest = read_latest(region.out, storage)
            last = parse_time(str(latest["scheduled_for"])) if latest else None
            due = is_due(region.schedule, last, now)
            fired = format_time(due.fire)
            previous = f"last complete run {latest['run']}" if latest else "no complete run yet"
            if not due.due:
                _say(f"{region.name}: not due (last fire {fired}, {previous})")
                continue
            _say(f"{region.name}: due (fire {fired}, run {due.run_id}; {previous})")
            if args.dry_run:
                for line in describe(plan_run(region, due.fire, storage)):
                    _say(line)
                continue
            if args.submit:
                job = submit_region(args.submit, text, region.name, fired, due.run_id,
                                    Path(args.working_dir))
                state = "already running as" if job.already_running else "submitted as"
                _say(f"{region.name}: {state} {job.submission_id}")
                submitted.append(job.submission_id)
                continue
            if gpus is None:
                gpus = 0 if args.local else _ray_gpus(args)
            planned = plan_run(region, due.fire, storage, gpus=gpus,
                               executor="local" if args.local else "ray")
            result = execute_run(planned, storage)
            counts = result.counts()
            state = "complete" if result.ok else "FAILED"
            _say(f"{region.name}: run {due.run_id} {state}: {counts['planned']} chunks, "
                 f"{counts['recomputed']} recomputed, {counts['carried']} carried over, "
                 f"{counts['failed']} failed; "
                 + (f"latest -> {planned.run_uri}" if result.ok else
                    "latest left on " + (latest["run"] if latest else "nothing")))
            if not result.ok:
                code = max(code, 1)
        except InputError as err:
            _error(region.name, err)
            code = 2
        except Exception as err:  # noqa: BLE001 - one region's failure does not stop the rest
            _error(region.name, err)
            if not isinstance(err, DepthSegError):
                traceback.print_exc(file=sys.stderr)
            code = max(code, 1)
    if submitted and args.wait:
        statuses = wait_for(args.submit, submitted)
        for sid, status in statuses.items():
            _say(f"job {sid}: {status}")
        if any(s != "SUCCEEDED" for s in statuses.values()):
            code = max(code, 1)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    args = parse_args(argv)
    os.environ.update(GDAL_ENV)
    if args.wait and not args.submit:
        print("error: --wait needs --submit", file=sys.stderr)
        return 2
    if args.dry_run and args.submit:
        print("error: give --dry-run or --submit, not both", file=sys.stderr)
        return 2
    try:
        return run(args, Storage.from_env())
    except DepthSegError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
