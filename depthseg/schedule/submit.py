"""Submitting due regions as Ray jobs through the dashboard's job API.

One job per due region. Its entrypoint runs the scheduler itself on that one region and fire
time: ``python jobs/schedule.py --regions env:DEPTHSEG_REGIONS_YAML --only NAME --now FIRE``.
The regions file's text travels in the job's ``runtime_env`` as that environment variable, and
the job's ``working_dir`` is the repository (``jobs/`` and ``depthseg/``), uploaded like
``ray job submit --working-dir .`` does (``.gitignore``d paths stay behind). S3 credentials
are not forwarded: the cluster's nodes must have their own (instance role, IRSA, Secret).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthseg.errors import InputError

REGIONS_ENV = "DEPTHSEG_REGIONS_YAML"
_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


@dataclass(frozen=True)
class Submitted:
    """One submitted (or already running) job."""

    region: str
    run_id: str
    submission_id: str
    already_running: bool = False


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise InputError(f"--submit {address!r}: cannot reach the Ray dashboard ({first}); give "
                         "the dashboard address, e.g. http://HEAD:8265") from err


def running_job(client: Any, region: str, rid: str) -> str | None:
    """The submission id of an unfinished job of this region and run, if any."""
    for job in client.list_jobs():
        meta = job.metadata or {}
        status = str(getattr(job.status, "value", job.status))
        if (meta.get("depthseg_region") == region and meta.get("depthseg_run") == rid
                and status not in _TERMINAL):
            return str(job.submission_id)
    return None


def submit_region(address: str, regions_text: str, region: str, fire_iso: str, rid: str,
                  working_dir: Path, extra_args: tuple[str, ...] = (),
                  client: Any = None) -> Submitted:
    """Submit the run of one due region (skipped when one is still running)."""
    client = client or _client(address)
    running = running_job(client, region, rid)
    if running:
        return Submitted(region, rid, running, already_running=True)
    submission_id = f"depthseg-{region}-{rid}-{uuid.uuid4().hex[:6]}".lower()
    entrypoint = " ".join(["python", "jobs/schedule.py", "--regions", f"env:{REGIONS_ENV}",
                           "--only", region, "--now", fire_iso, *extra_args])
    for attempt in range(15):
        try:
            client.submit_job(
                entrypoint=entrypoint, submission_id=submission_id,
                runtime_env={"working_dir": str(working_dir),
                             "env_vars": {REGIONS_ENV: regions_text, "PYTHONUNBUFFERED": "1"}},
                metadata={"depthseg_region": region, "depthseg_run": rid})
            break
        except RuntimeError as err:
            # A freshly started head takes a few seconds before its job agent answers.
            if "No available agent" not in str(err) or attempt == 14:
                raise
            time.sleep(2)
    return Submitted(region, rid, submission_id)


def wait_for(address: str, submission_ids: list[str], timeout_s: float = 86400.0,
             poll_s: float = 2.0) -> dict[str, str]:
    """Wait until the jobs finish; returns submission id -> final status."""
    client = _client(address)
    deadline = time.monotonic() + timeout_s
    statuses: dict[str, str] = {}
    while True:
        for sid in submission_ids:
            statuses[sid] = str(getattr(client.get_job_status(sid), "value",
                                        client.get_job_status(sid)))
        if all(s in _TERMINAL for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        time.sleep(poll_s)


def job_logs(address: str, submission_id: str) -> str:
    """The driver log of a job."""
    return str(_client(address).get_job_logs(submission_id))
