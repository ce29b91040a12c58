"""A run killed with SIGKILL and resumed equals an uninterrupted run, byte for byte."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mapping_helpers import REPO_ROOT


def _command(region: Any, bundle: str, out: Path, *extra: str) -> list[str]:
    size = region.size * region.resolution / 2  # 16 chunks of 128 px
    x0, y0 = region.transform.c, region.transform.f
    return [sys.executable, str(REPO_ROOT / "jobs" / "map_region.py"),
            "--bbox", str(x0), str(y0 - size), str(x0 + size), str(y0),
            "--bbox-crs", region.crs, "--imagery", str(region.root / "scenes"),
            "--model", bundle, "--out", str(out), "--chunk", "128", "--tile", "70",
            "--overlap", "14", "--batch-size", "4", "--num-cpus", "2", *extra]


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300,
                          cwd=REPO_ROOT, start_new_session=True)


def _outputs(root: Path) -> dict[str, bytes]:
    keep = ("mosaic.zarr/landcover/c", "mosaic.zarr/confidence/c", "mosaic.zarr/depth/c",
            "mosaic.zarr/levels/", "cog/")
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and str(p.relative_to(root)).startswith(keep)}


@pytest.mark.slow
def test_killed_then_resumed_run_equals_a_clean_run(synthetic_region: Any, bundle_uint16: str,
                                                    tmp_path: Path) -> None:
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    first = _run(_command(synthetic_region, bundle_uint16, clean))
    assert first.returncode == 0, first.stderr[-2000:]
    total = len(list((clean / "done").iterdir()))

    # Start the same run and SIGKILL its whole process group (driver + local Ray) midway.
    process = subprocess.Popen(_command(synthetic_region, bundle_uint16, resumed),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=REPO_ROOT, start_new_session=True)
    deadline = time.monotonic() + 240
    done_dir = resumed / "done"
    while time.monotonic() < deadline and process.poll() is None:
        if done_dir.is_dir() and len(list(done_dir.iterdir())) >= 3:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    killed_at = len(list(done_dir.iterdir()))
    assert 3 <= killed_at < total, "the kill must land between chunks done and chunks to do"
    assert not (resumed / "run.json").exists()
    killed_run = json.loads(next((resumed / "lease").glob("*.json")).read_text())["run_id"]

    # Resume at once: Ray workers of the killed run (they live in their own process groups)
    # may still be finishing a chunk. The dead run's lease is taken over; its late writers
    # can no longer mark chunks done, and what they write equals what the resume writes.
    again = _run(_command(synthetic_region, bundle_uint16, resumed, "--resume"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "taking over the lease" in again.stderr and "its process is gone" in again.stderr
    assert re.search(r"(\d+) already done, (\d+) to map", again.stderr)
    run = json.loads((resumed / "run.json").read_text())
    assert run["ok"] and run["chunks"]["done"] == total
    time.sleep(3)  # let any late writer land before comparing
    markers = {json.loads(p.read_text())["run_id"] for p in done_dir.iterdir()}
    assert markers <= {killed_run, run["lease"]["run_id"]} and len(list(done_dir.iterdir())) \
        == total
    assert not list((resumed / "lease").iterdir()), "the resume released its lease"
    refused = _run(_command(synthetic_region, bundle_uint16, resumed))
    assert refused.returncode == 2 and "--resume" in refused.stderr
    clean_files, resumed_files = _outputs(clean), _outputs(resumed)
    assert len(clean_files) > 3 * total
    assert clean_files.keys() == resumed_files.keys()
    different = [k for k in clean_files if clean_files[k] != resumed_files[k]]
    assert different == []
    assert not [p for p in resumed.rglob("*") if ".tmp-" in p.name]
