"""What runs on a bare GPU box (torch, timm, transformers, numpy only): model and predict stage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
IO_STACK = ("ray", "rasterio", "zarr", "s3fs", "pyproj", "shapely", "odc", "xarray", "pystac")


def test_model_and_predict_stage_import_without_the_io_stack() -> None:
    code = ("import sys, depthseg.model, depthseg.mapping.predict; "
            f"print([m for m in {IO_STACK!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]", out.stdout


def test_bench_model_times_the_predict_stage(tmp_path: Path) -> None:
    result = tmp_path / "bench.json"
    subprocess.run([sys.executable, "jobs/bench_model.py", "--presets", "tiny", "--skip-train",
                    "--infer-batch", "4", "--infer-size", "126", "--steps", "1",
                    "--predict-stage", "--chunk", "256", "--overlap", "28",
                    "--json", str(result)], check=True, cwd=REPO_ROOT, capture_output=True)
    stage = json.loads(result.read_text())["results"]["tiny"]["predict_stage"]
    assert stage["tiles_per_chunk"] == 9 and stage["predict_eager_tiles_per_s"] > 0
    assert 0 < stage["over_encoder_eager"] < 2


def test_planning_and_mapping_stages_do_not_need_odc_geo() -> None:
    """odc-geo is optional interop (``depthseg[odc]``): the pipeline never imports it."""
    code = ("import sys, depthseg.geo.grid, depthseg.mapping.plan, depthseg.mapping.stages, "
            "depthseg.mapping.pipeline, depthseg.schedule.incremental; "
            "print([m for m in sys.modules if m == 'odc' or m.startswith('odc.')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]", out.stdout
