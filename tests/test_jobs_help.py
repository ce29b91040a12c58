"""Every job's ``--help`` answers without importing torch or Ray (it used to take ~4-10 s)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
JOBS = ("map_region", "train", "prepare", "evaluate", "schedule", "ablate", "bench", "demo",
        "make_synthetic", "bench_model", "model_stats")
HEAVY = ("torch", "ray", "timm", "transformers")  # seconds each; GDAL, zarr take tenths


@pytest.mark.parametrize("job", JOBS)
def test_help_imports_nothing_heavy(job: str) -> None:
    done = subprocess.run([sys.executable, "-X", "importtime", f"jobs/{job}.py", "--help"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert imported, "no import trace: -X importtime changed?"
    assert not imported & set(HEAVY), f"{job} --help imports {sorted(imported & set(HEAVY))}"
