"""jobs/ablate.py: the Table II grid on disjoint synthetic regions, resumable, summarised."""

from __future__ import annotations

import json

import pytest
from train_helpers import load_job

from depthseg.io.chips import ChipStore

ablate = load_job("ablate")


@pytest.mark.slow
def test_ablation_grid_resumes_and_summarises(tmp_path, capsys):
    out = tmp_path / "ablation"
    argv = ["--out", str(out), "--rows", "both", "--epochs", "1",
            "--region-size", "192", "--chip-size", "64"]
    assert ablate.main([*argv, "--seeds", "0"]) == 0
    # Train, val and test are different regions: each store holds one split only.
    for split in ("train", "val", "test"):
        store = ChipStore.open(str(out / "chips" / "ndsm" / split))
        assert {s: len(store.indices(s)) > 0 for s in ("train", "val", "test")} == {
            s: s == split for s in ("train", "val", "test")}
    first = out / "runs" / "ndsm" / "both" / "seed0" / "eval" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    # Resumed with one more seed: the finished run is reused, only seed 1 trains.
    assert ablate.main([*argv, "--seeds", "0", "1"]) == 0
    assert first.stat().st_mtime_ns == stamp
    doc = json.loads((out / "ablation.json").read_text())
    assert doc["seeds"] == [0, 1] and list(doc["summary"]["ndsm"]) == ["both"]
    stats = doc["summary"]["ndsm"]["both"]
    assert stats["mIoU"]["n"] == 2 and stats["mIoU"]["std"] >= 0
    runs = doc["runs"]["ndsm"]["both"]
    mean = sum(100 * r["mIoU"] for r in runs) / 2
    assert stats["mIoU"]["mean"] == pytest.approx(mean)
    assert {"IoU building", "IoU impervious surface", "IoU forest", "IoU cropland"} <= set(stats)
    table = (out / "ablation.md").read_text()
    assert "| + adapter + depth prompter (DepthSeg) |" in table and "+-" in table
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert "done:" in capsys.readouterr().out
    # The folder holds this benchmark and preset: other settings are refused, not mixed in.
    other = [a if a != "1" else "2" for a in argv]  # --epochs 2
    assert ablate.main([*other, "--seeds", "0"]) == 2
    assert "holds an ablation with" in capsys.readouterr().err


def test_unknown_rows_and_random_paper_encoders_are_refused(tmp_path, capsys):
    assert ablate.main(["--out", str(tmp_path), "--preset", "vits"]) == 2
    assert "encoder.weights is null" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablate.main(["--out", str(tmp_path), "--rows", "everything"])
