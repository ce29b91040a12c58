"""`ray job submit --working-dir .` against a `ray start --head` cluster of its own.

The cluster gets its own temp dir and free ports, so it never meets the session's
``ray_local`` instance (not requested here). Teardown ends exactly the processes started
for this cluster (found by its temp dir), not every Ray process of the machine as
``ray stop`` would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from train_helpers import REPO, scene_store

from depthseg.io.bundle import load_bundle

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process (from /proc; no psutil here)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        out[int(entry.name)] = (ppid, cmdline)
    return out


def _end_cluster(temp_dir: str) -> None:
    """Terminate the processes of the cluster in ``temp_dir`` and their descendants."""
    procs = _processes()
    mine = {pid for pid, (_, cmd) in procs.items() if temp_dir in cmd}
    grew = True
    while grew:
        children = {pid for pid, (ppid, _) in procs.items() if ppid in mine} - mine
        mine |= children
        grew = bool(children)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in mine:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in mine):
            time.sleep(0.2)


@pytest.fixture()
def head_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rjs", dir="/tmp")  # short: Ray's socket paths
    names = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
             "runtime-env-agent-port", "node-manager-port", "object-manager-port",
             "ray-client-server-port")
    while True:
        # Every fixed default port (agent 52365, metrics, runtime-env agent...) may be taken
        # by another Ray on this machine: give each its own free one, none of them inside
        # the worker port range (Ray refuses a component port that the range holds).
        port, dashboard, low = _free_port(), _free_port(), _free_port()
        chosen = [_free_port() for _ in names]
        every = (port, dashboard, *chosen)
        # Distinct too: a port freed after its check can be handed out twice, and Ray
        # refuses two components on one port.
        if len(set(every)) == len(every) and all(not low <= p <= low + 200 for p in every):
            break
    ports = [f"--{name}={p}" for name, p in zip(names, chosen, strict=True)]
    ports += [f"--min-worker-port={low}", f"--max-worker-port={low + 200}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # The job's `python` must be this venv's: the raylet passes its PATH to the job driver.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    # A private throwaway cluster on 127.0.0.1: no token auth (Ray would otherwise turn it on
    # because ~/.ray/auth_token exists, and its CLI would then not find the token).
    env["RAY_AUTH_MODE"] = "disabled"
    start = subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2",
         f"--dashboard-port={dashboard}", "--include-dashboard=true",
         "--dashboard-host=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
         *ports],
        env=env, capture_output=True, text=True, timeout=180)
    try:
        assert start.returncode == 0, start.stdout + start.stderr
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        _end_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_ray_job_submit_trains_and_exports_a_bundle(tmp_path, head_cluster):
    address, env = head_cluster
    chips = scene_store(tmp_path, str(tmp_path / "store"), 256, 64, (0.75, 0.25, 0.0))
    runs = tmp_path / "runs"
    command = [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
               "--", "python", "jobs/train.py", "--config", "tiny",
               "--chips", chips, "--storage", str(runs), "--name", "submitted", "--epochs", "1"]
    for _ in range(15):  # the dashboard's job agent comes up a little after `ray start`
        job = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=420)
        log = job.stdout + job.stderr
        if "No available agent" not in log:
            break
        time.sleep(2)
    assert job.returncode == 0, log[-4000:]
    assert "succeeded" in log, log[-4000:]
    # The useful lines are not buried: Ray's own INFO chatter is hidden (--verbose shows it).
    assert "epoch 1/1 step" in log
    for chatter in ("Reporting training result", "Starting execution of Dataset",
                    "Requesting resources"):
        assert chatter not in log, chatter
    bundle = load_bundle(str(runs / "submitted" / "best"))
    assert bundle.contract.band_names == ("band1", "band2", "band3")
    assert (runs / "submitted" / "metrics.jsonl").exists()
