"""Storage failures keep the exit-code contract and leave no partial files (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mapping_helpers import load_job

from depthseg.io.s3server import LocalS3Server
from depthseg.io.storage import sweep_temp_dirs, temp_dir

main = load_job("map_region").main


def _argv(region: Any, bundle: str, out: Path | str, *extra: str) -> list[str]:
    size = region.size * region.resolution / 2  # 4 chunks of 128 px
    x0, y0 = region.transform.c, region.transform.f
    return ["--bbox", str(x0), str(y0 - size), str(x0 + size), str(y0),
            "--bbox-crs", region.crs, "--imagery", str(region.root / "scenes"),
            "--model", bundle, "--out", str(out), "--chunk", "256", "--tile", "70",
            "--overlap", "14", "--batch-size", "4", "--local", *extra]


def _stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def test_a_bucket_that_does_not_exist_fails_before_work(
        synthetic_region: Any, bundle_uint16: str, s3_server: LocalS3Server,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    options = s3_server.storage.s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", str(options.key))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", str(options.secret))
    assert main(_argv(synthetic_region, bundle_uint16, "s3://no-such-bucket/maps")) == 2
    last = _stderr_lines(capsys)[-1]
    assert last.startswith("error: ") and "bucket 'no-such-bucket' does not exist" in last


def test_a_failure_while_finalising_exits_1_with_run_json_and_resume_finishes(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    # Something already sits where the land-cover VRT goes: every chunk maps, the VRT fails.
    blocker = out / "cog" / "landcover.vrt"
    blocker.mkdir(parents=True)
    assert main(_argv(synthetic_region, bundle_uint16, out)) == 1
    last = _stderr_lines(capsys)[-1]
    assert last.startswith("error: the run stopped while finalising: ") and "--resume" in last
    run = json.loads((out / "run.json").read_text())
    assert run["ok"] is False and "landcover.vrt" in run["error"]
    assert run["chunks"]["done"] == 0 and len(list((out / "done").iterdir())) == 4
    assert not [p for p in out.rglob("*") if ".tmp-" in p.name], "a partial file stayed"
    blocker.rmdir()
    assert main(_argv(synthetic_region, bundle_uint16, out, "--resume")) == 0
    assert any("4 already done, 0 to map" in line for line in _stderr_lines(capsys))
    assert json.loads((out / "run.json").read_text())["ok"] is True
    assert (out / "cog" / "landcover.vrt").is_file()


def test_resume_removes_partial_files_a_killed_writer_left(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_argv(synthetic_region, bundle_uint16, out)) == 0
    cog = next((out / "cog" / "landcover").glob("*.tif"))
    partial = [cog.with_name(cog.name + ".tmp-4242-0badf00d"),
               out / "done" / "0_0.tmp-4242-00c0ffee"]
    for path in partial:
        path.write_bytes(b"half a file")
    capsys.readouterr()
    assert main(_argv(synthetic_region, bundle_uint16, out, "--resume")) == 0
    assert any("removed 2 partial files" in line for line in _stderr_lines(capsys))
    assert not any(path.exists() for path in partial)


def test_temporary_folders_of_killed_processes_are_swept(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    left = tmp_path / f"depthseg-cog-{dead.stdout.strip()}-abc123"
    (left / "landcover.tif").parent.mkdir()
    (left / "landcover.tif").write_bytes(b"x")
    ours = tmp_path / f"depthseg-ckpt-{os.getpid()}-def456"
    ours.mkdir()
    other = tmp_path / "someone-elses-folder"
    other.mkdir()
    assert sweep_temp_dirs(tmp_path) == 1
    assert not left.exists() and ours.exists() and other.exists()
    # temp_dir removes its folder on errors too.
    with pytest.raises(RuntimeError), temp_dir("cog") as made:
        raise RuntimeError(str(made))
    assert not made.exists()
