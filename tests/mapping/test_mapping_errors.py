"""Bad input: one-line ``error: ...`` messages, exit code 2, and nothing that looks complete."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from mapping_helpers import load_job

main = load_job("map_region").main

FAST_ARGS = ["--chunk", "256", "--tile", "126", "--overlap", "28", "--batch-size", "4", "--local"]


def _args(region: Any, bundle: str, out: Path, bbox: tuple[float, ...] | None = None,
          imagery: str | None = None) -> list[str]:
    size = region.size * region.resolution
    x0, y0 = region.transform.c, region.transform.f
    bbox = bbox or (x0, y0 - size / 2, x0 + size / 2, y0)
    return ["--bbox", *map(str, bbox), "--bbox-crs", region.crs,
            "--imagery", imagery or str(region.root / "scenes"), "--model", bundle,
            "--out", str(out), *FAST_ARGS]


def _fails_cleanly(argv: list[str], out: Path, capsys: pytest.CaptureFixture[str],
                   match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and match in err[-1], err
    assert not (out / "plan.json").exists() and not (out / "run.json").exists()


def test_bbox_outside_the_imagery(synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    x0, y0 = synthetic_region.transform.c, synthetic_region.transform.f
    far = (x0 + 50_000, y0 + 50_000, x0 + 50_500, y0 + 50_500)
    _fails_cleanly(_args(synthetic_region, bundle_uint16, tmp_path / "o", bbox=far),
                   tmp_path / "o", capsys, "does not meet the imagery")


def test_bbox_min_above_max(synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    x0, y0 = synthetic_region.transform.c, synthetic_region.transform.f
    _fails_cleanly(_args(synthetic_region, bundle_uint16, tmp_path / "o",
                         bbox=(x0 + 100, y0 - 100, x0, y0)), tmp_path / "o", capsys, "min x")


def test_imagery_with_fewer_bands_than_the_contract(
        synthetic_region_rgb: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        tmp_path_factory: pytest.TempPathFactory) -> None:
    from mapping_helpers import contract_for, write_tiny_bundle

    # A uint8 bundle reading band 4 (NIR) of 3-band RGB imagery.
    bundle = write_tiny_bundle(tmp_path / "b", contract_for("uint8", (4, 2, 1)))
    _fails_cleanly(_args(synthetic_region_rgb, bundle, tmp_path / "o"), tmp_path / "o", capsys,
                   "has 3 bands")


def test_imagery_of_the_wrong_dtype(synthetic_region_rgb: Any, bundle_uint16: str,
                                    tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(_args(synthetic_region_rgb, bundle_uint16, tmp_path / "o"), tmp_path / "o",
                   capsys, "trained on uint16")


def test_imagery_without_crs(synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    with rasterio.open(scenes / "nocrs.tif", "w", driver="GTiff", height=64, width=64, count=4,
                       dtype="uint16", transform=Affine(0.8, 0, 0, 0, -0.8, 0)) as dst:
        dst.write(np.ones((4, 64, 64), dtype=np.uint16))
    _fails_cleanly(_args(synthetic_region, bundle_uint16, tmp_path / "o", imagery=str(scenes)),
                   tmp_path / "o", capsys, "has no CRS")


def test_model_that_is_not_a_bundle(synthetic_region: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(_args(synthetic_region, str(tmp_path), tmp_path / "o"), tmp_path / "o",
                   capsys, "is not a model bundle")


def test_imagery_that_does_not_exist(synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _fails_cleanly(_args(synthetic_region, bundle_uint16, tmp_path / "o",
                         imagery=str(tmp_path / "nothing")), tmp_path / "o", capsys,
                   "does not exist")


def test_unreadable_scene_fails_its_chunks_not_the_run(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    scenes = tmp_path / "scenes"
    shutil.copytree(synthetic_region.root / "scenes", scenes)
    # Keep the header (the plan reads it), truncate the pixel data: reads fail later.
    victim = sorted(scenes.glob("*.tif"))[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 8])
    args = _args(synthetic_region, bundle_uint16, tmp_path / "o", imagery=str(scenes))
    out = tmp_path / "o"
    assert main(args) == 1
    run = json.loads((out / "run.json").read_text())
    assert run["chunks"]["failed"] >= 1 and not run["ok"]
    assert run["chunks"]["done"] + run["chunks"]["failed"] == run["chunks"]["planned"]
    assert all(victim.name in f["error"] for f in run["failed_chunks"])
    assert run["chunks"]["done"] >= 1, "chunks away from the bad scene must still be mapped"
    failed = {f["chunk"] for f in run["failed_chunks"]}
    assert failed.isdisjoint(p.name for p in (out / "done").iterdir())
    assert "FAILED" in capsys.readouterr().err

    # Once the scene is repaired, --resume maps exactly the failed chunks.
    victim.write_bytes(data)
    assert main([*args, "--resume"]) == 0
    rerun = json.loads((out / "run.json").read_text())
    assert rerun["chunks"]["mapped_this_run"] == len(failed) and rerun["ok"]


def test_a_run_whose_chunks_all_fail_the_same_way_stops_early(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    scenes = tmp_path / "scenes"
    shutil.copytree(synthetic_region.root / "scenes", scenes)
    for scene in scenes.glob("*.tif"):  # headers stay (the plan reads them), pixels go
        data = scene.read_bytes()
        scene.write_bytes(data[: len(data) // 8])
    size = synthetic_region.size * synthetic_region.resolution
    x0, y0 = synthetic_region.transform.c, synthetic_region.transform.f
    out = tmp_path / "o"
    args = _args(synthetic_region, bundle_uint16, out, bbox=(x0, y0 - size, x0 + size, y0),
                 imagery=str(scenes))
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert "chunks all failed the same way" in err[-1] and "--resume" in err[-1]
    run = json.loads((out / "run.json").read_text())
    planned, failed = run["chunks"]["planned"], run["chunks"]["failed"]
    assert planned >= 16 and failed == 8 < planned  # stopped, not every chunk tried
    assert "SameFailure" in run["error"] and not run["ok"]
