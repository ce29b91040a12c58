"""``--submit``: one Ray job per due region, on a ``ray start --head`` cluster of its own.

The cluster fixture is the one of ``tests/train/test_train_job_submit.py`` (own temp dir and
free ports; teardown ends exactly that cluster's processes). The region's imagery, bundle
and output are local folders the cluster's processes share with the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from schedule_helpers import (
    REPO_ROOT,
    contract_for,
    load_job,
    region_entry,
    write_regions,
    write_tiny_bundle,
)

sys.path.insert(0, str(REPO_ROOT / "tests" / "train"))
from test_train_job_submit import head_cluster  # noqa: E402, F401 - the fixture

NOW = "2026-11-28T02:10:00Z"


@pytest.mark.slow
def test_submit_runs_the_due_region_as_a_ray_job(
        tmp_path: Path, head_cluster: Any, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    from depthseg.synthetic import make_region

    address, _env = head_cluster
    region = make_region(tmp_path / "region", size=128, seed=2)
    bundle = write_tiny_bundle(tmp_path / "bundle", contract_for("uint16", (3, 2, 1)))
    out = tmp_path / "maps" / "small"
    regions = write_regions(tmp_path / "regions.yaml",
                            region_entry(region, "small", str(region.root / "scenes"), bundle,
                                         str(out), schedule="*/10 * * * *"))
    main = load_job("schedule").main
    code = main(["--regions", regions, "--now", NOW, "--submit", address, "--wait"])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    assert "small: due (fire 2026-11-28T02:10:00Z, run 20261128T021000Z" in captured.out
    [submitted] = [line for line in captured.out.splitlines() if "submitted as" in line]
    submission_id = submitted.rsplit(" ", 1)[-1]
    assert submission_id.startswith("depthseg-small-20261128t021000z-")
    assert f"job {submission_id}: SUCCEEDED" in captured.out
    latest = json.loads((out / "latest.json").read_text())
    assert latest["run"] == "20261128T021000Z" and latest["counts"]["recomputed"] == 4
    assert (out / "runs" / "20261128T021000Z" / "cog").is_dir()

    # Done for this fire time: nothing is submitted again.
    assert main(["--regions", regions, "--now", NOW, "--submit", address]) == 0
    captured = capsys.readouterr()
    assert "small: not due" in captured.out and "submitted" not in captured.out
