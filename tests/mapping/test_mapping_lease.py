"""One run at a time per output: the lease, raced and taken over by real processes (issue 16)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mapping_helpers import REPO_ROOT, region_request

from depthseg.errors import InputError, LeaseLostError
from depthseg.geo import ChunkId
from depthseg.io import lease as lease_mod
from depthseg.io.lease import Lease
from depthseg.io.s3server import LocalS3Server
from depthseg.io.storage import Storage
from depthseg.mapping import map_region
from depthseg.mapping.layers import ChunkPrediction
from depthseg.mapping.plan import MapRequest
from depthseg.mapping.stages import ChunkContext, write_products
from depthseg.mapping.write import Mosaic

HOLDER = Path(__file__).with_name("lease_holder.py")


def _env(server: LocalS3Server | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if server is not None:
        options = server.storage.s3
        env.update(AWS_ENDPOINT_URL=server.endpoint_url, AWS_ACCESS_KEY_ID=str(options.key),
                   AWS_SECRET_ACCESS_KEY=str(options.secret))
    return env


def _holder(out: str, env: dict[str, str], stale_s: float = 60, heartbeat_s: float = 0.2,
            hold_s: float = 3.0, start_at: float = 0.0) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HOLDER), out, str(stale_s), str(heartbeat_s), str(hold_s),
         str(start_at)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _first_line(process: subprocess.Popen[str]) -> str:
    assert process.stdout is not None
    return process.stdout.readline().strip()


@pytest.mark.parametrize("where", ["local", "s3"])
def test_racing_runs_get_the_lease_once(where: str, tmp_path: Path, s3_server: LocalS3Server,
                                        s3_prefix: str) -> None:
    out = str(tmp_path / "out") if where == "local" else f"{s3_prefix}/out"
    env = _env(s3_server if where == "s3" else None)
    start_at = time.time() + 4.0  # all four try in the same millisecond
    racers = [_holder(out, env, hold_s=2.0, start_at=start_at) for _ in range(4)]
    results = [(r.wait(timeout=60), r.stdout.read() if r.stdout else "") for r in racers]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2, 2, 2], results
    refused = [text for code, text in results if code == 2]
    assert all("is in use by run" in text and "heartbeat" in text for text in refused)
    # The winner released it: the output holds no lease, and a new run takes it at once.
    assert lease_mod.current(out, s3_server.storage if where == "s3" else Storage()) is None


def test_a_fresh_lease_refuses_a_second_run_and_a_stale_one_is_taken_over(tmp_path: Path,
                                                                        ) -> None:
    out = str(tmp_path / "out")
    first = _holder(out, _env(None), stale_s=2.0, heartbeat_s=0.2, hold_s=30)
    assert _first_line(first).startswith("held ")
    try:
        with pytest.raises(InputError, match=r"is in use by run \w+ \(pid \d+ on .*heartbeat"):
            Lease(out, Storage(), stale_s=2.0).acquire()
        # The first run hangs (stopped, still alive): no heartbeat for 2 s makes it stale.
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(2.5)
        lines: list[str] = []
        second = Lease(out, Storage(), stale_s=2.0, heartbeat_s=0.2).acquire(log=lines.append)
        assert len(lines) == 1 and lines[0].startswith("warning: taking over the lease")
        assert "no heartbeat for" in lines[0]
        assert lease_mod.holds(out, Storage(), second.run_id)
        # The first run wakes up: its next heartbeat finds the lease gone and it stops.
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=30) == 3
        assert first.stdout is not None and "lost the lease" in first.stdout.read()
        assert lease_mod.holds(out, Storage(), second.run_id)  # it did not write over ours
        second.release()
        assert lease_mod.current(out, Storage()) is None
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()


def test_the_lease_of_a_killed_run_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    first = _holder(out, _env(None), stale_s=600, hold_s=60)
    assert _first_line(first).startswith("held ")
    first.kill()
    first.wait()
    lines: list[str] = []
    with Lease(out, Storage(), stale_s=600).acquire(log=lines.append) as second:
        assert "its process is gone" in lines[0]
        assert lease_mod.holds(out, Storage(), second.run_id)


def test_mapping_into_an_output_in_use_is_refused_before_anything_is_written(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = _holder(str(out), _env(None), hold_s=60)
    assert _first_line(holder).startswith("held ")
    try:
        request = region_request(synthetic_region, out, bundle_uint16, chunk_size=512)
        with pytest.raises(InputError, match="is in use by run"):
            map_region(request, log=lambda _: None)
        assert sorted(p.name for p in out.iterdir()) == ["lease"]
    finally:
        holder.kill()
        holder.wait()
    # Once that run is gone, mapping takes the output, and releases it when done.
    report = map_region(region_request(synthetic_region, out, bundle_uint16, chunk_size=512),
                        log=lambda _: None)
    assert report.ok and not list((out / "lease").iterdir())
    run = json.loads((out / "run.json").read_text())
    markers = [json.loads(p.read_text()) for p in (out / "done").iterdir()]
    assert markers and {m["run_id"] for m in markers} == {run["lease"]["run_id"]}


def test_a_writer_without_the_lease_does_not_mark_its_chunk_done(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path) -> None:
    # A run whose driver was killed leaves workers that may still finish a chunk: once
    # another run holds the output, their chunk is not marked done (that run maps it).
    out = tmp_path / "out"
    request: MapRequest = region_request(synthetic_region, out, bundle_uint16, chunk_size=512)
    report = map_region(request, log=lambda _: None)
    assert report.ok and report.plan is not None
    plan = report.plan
    chunk: ChunkId = plan.chunks[0]
    done = out / "done" / chunk.key
    done.unlink()
    from depthseg.io.bundle import load_bundle

    contract = load_bundle(bundle_uint16).contract
    ctx = ChunkContext(grid=plan.grid, tiles=plan.tiles, bands=plan.bands, out=str(out),
                       storage=Storage(), contract=contract, factor=2, run_id="old-run",
                       created="2026-12-03T00:00:00+00:00")
    size = plan.grid.chunk_size
    prediction = ChunkPrediction(np.zeros((size, size), np.uint8),
                                 np.full((size, size), 200, np.uint8),
                                 np.zeros((size, size), np.float16))
    with Lease(str(out), Storage()).acquire():
        with pytest.raises(LeaseLostError, match="no longer holds the lease"):
            write_products(ctx, Mosaic(str(out), Storage()), chunk, prediction, None)
        assert not done.exists()
        # The holder's own writes are marked done.
    with Lease(str(out), Storage(), run_id="new-run").acquire():
        write_products(replace(ctx, run_id="new-run"), Mosaic(str(out), Storage()), chunk,
                       prediction, None)
        assert json.loads(done.read_text())["run_id"] == "new-run"
