"""Scheduled runs on the test S3 server, through the CLI, on a real local Ray.

One region (a 256 px synthetic region, 16 chunks of 64 px, 4 overlapping scenes) is mapped
by the scheduler at successive --now times:

1. the first run maps every chunk and moves latest.json;
2. one scene is rewritten with other pixels: --dry-run names it and the chunks it touches
   and changes nothing in the store; the next run recomputes exactly the chunks whose read
   window meets that scene, carries the others over, and its mosaic equals a fresh full
   map_region run on the changed imagery;
3. a scene replaced by bytes that are not a GeoTIFF fails the run: exit 1, latest.json stays
   on the previous complete run; the region stays due and the next run (scene repaired)
   completes.

The tests share the region and run in file order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from schedule_helpers import (
    contract_for,
    listing,
    load_job,
    mosaic_arrays,
    region_entry,
    upload_dir,
    write_regions,
    write_tiny_bundle,
)

from depthseg.io.catalog import open_catalog
from depthseg.io.storage import Storage
from depthseg.mapping import map_region

NOW_1 = "2026-11-27T02:30:00Z"
NOW_2 = "2026-11-28T02:30:00Z"
NOW_3 = "2026-11-29T02:30:00Z"
NOW_4 = "2026-11-30T02:30:00Z"
main = load_job("schedule").main


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, s3_bucket: str, s3_storage: Storage,
             s3_server: Any, ray_local: Any) -> Any:
    from depthseg.synthetic import make_region

    root = tmp_path_factory.mktemp("sched")
    region = make_region(root / "region", size=256, seed=0)
    prefix = f"{s3_bucket}/schedule-incremental"
    upload_dir(region.root / "scenes", f"{prefix}/scenes", s3_storage)
    bundle = write_tiny_bundle(root / "bundle", contract_for("uint16", (3, 2, 1)))
    entry = region_entry(region, "tile1", f"{prefix}/scenes", bundle, f"{prefix}/maps/tile1")
    regions = write_regions(root / "regions.yaml", entry)
    env = {"AWS_ENDPOINT_URL": s3_server.endpoint_url, "AWS_ACCESS_KEY_ID": s3_storage.s3.key,
           "AWS_SECRET_ACCESS_KEY": s3_storage.s3.secret, "AWS_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield {"region": region, "prefix": prefix, "bundle": bundle, "entry": entry,
               "regions": regions, "out": entry["out"], "root": root, "storage": s3_storage}


def _run(scenario: Any, now: str, *extra: str,
         capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["--regions", scenario["regions"], "--now", now, *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _latest(scenario: Any) -> dict[str, Any]:
    return json.loads(scenario["storage"].read_bytes(f"{scenario['out']}/latest.json"))


def _ledger(scenario: Any, run: str) -> dict[str, Any]:
    return json.loads(scenario["storage"].read_bytes(f"{scenario['out']}/runs/{run}/ledger.json"))


def _rewrite_scene(scenario: Any, name: str, shift: int) -> str:
    """Rewrite one scene (same grid and no-data, other pixels) and upload it over the old."""
    path = scenario["region"].root / "scenes" / name
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    changed = np.where(data == (profile.get("nodata") or 0), data,
                       np.clip(data.astype(np.int32) + shift, 1, 1023)).astype(data.dtype)
    out = scenario["root"] / f"changed_{shift}_{name}"
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(changed)
    uri = f"{scenario['prefix']}/scenes/{name}"
    scenario["storage"].upload(out, uri)
    return uri


def test_first_run_maps_everything_and_moves_latest(
        scenario: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(scenario, NOW_1, capsys=capsys)
    assert code == 0, err[-3000:]
    assert "tile1: due (fire 2026-11-27T02:00:00Z, run 20261127T020000Z" in out
    latest = _latest(scenario)
    assert latest["run"] == "20261127T020000Z"
    assert latest["scheduled_for"] == "2026-11-27T02:00:00Z"
    assert latest["uri"] == f"{scenario['out']}/runs/20261127T020000Z"
    ledger = _ledger(scenario, "20261127T020000Z")
    assert ledger["status"] == "complete" and ledger["format"] == "depthseg-run-ledger"
    planned = ledger["counts"]["planned"]
    assert planned == 16 and ledger["counts"]["recomputed"] == planned
    assert latest["counts"]["carried"] == 0
    assert all(c["state"] == "computed" and c["scenes"] for c in ledger["chunks"].values())
    assert all(s["fingerprint"].startswith("etag:") for c in ledger["chunks"].values()
               for s in c["scenes"])
    for name in ("plan.json", "run.json", "quicklook.png", "stac/collection.json"):
        assert scenario["storage"].exists(f"{latest['uri']}/{name}"), name
    # Same --now again: not due, nothing written.
    before = listing(scenario["out"], scenario["storage"])
    code, out, _ = _run(scenario, NOW_1, capsys=capsys)
    assert code == 0 and "tile1: not due (last fire 2026-11-27T02:00:00Z" in out
    assert listing(scenario["out"], scenario["storage"]) == before


def _touched(scenario: Any, scene_uri: str) -> set[str]:
    """Chunks whose read window meets the scene footprint (independent of the scheduler)."""
    from depthseg.mapping.plan import make_plan
    from depthseg.schedule.regions import parse_regions

    storage = scenario["storage"]
    [region] = parse_regions(Path(scenario["regions"]).read_text(), "r")
    request = region.request("unused")
    catalog = open_catalog(region.imagery, storage)
    plan = make_plan(request, catalog, contract_for("uint16", (3, 2, 1)))
    [scene] = [s for s in catalog.scenes if s.uri == scene_uri]
    footprint = shapely.box(*scene.bounds)  # scenes are in the grid's CRS
    return {c.key for c in plan.chunks
            if footprint.intersection(shapely.box(*plan.read_bounds(c))).area > 0}


def test_changed_scene_recomputes_only_its_chunks(
        scenario: Any, capsys: pytest.CaptureFixture[str]) -> None:
    storage = scenario["storage"]
    scene = _rewrite_scene(scenario, sorted(
        p.name for p in (scenario["region"].root / "scenes").iterdir())[0], shift=300)
    touched = _touched(scenario, scene)
    assert 0 < len(touched) < 16

    # Dry run: names the scene and the counts, writes nothing.
    before = listing(scenario["prefix"], storage)
    code, out, err = _run(scenario, NOW_2, "--dry-run", capsys=capsys)
    assert code == 0, err
    assert "tile1: due (fire 2026-11-28T02:00:00Z" in out
    assert (f"16 chunks: {len(touched)} to compute, {16 - len(touched)} carried over "
            "from run 20261127T020000Z") in out
    assert f"scenes changed: {scene}" in out
    assert listing(scenario["prefix"], storage) == before

    code, out, err = _run(scenario, NOW_2, capsys=capsys)
    assert code == 0, err[-3000:]
    assert (f"run 20261128T020000Z complete: 16 chunks, {len(touched)} recomputed, "
            f"{16 - len(touched)} carried over, 0 failed") in out
    ledger = _ledger(scenario, "20261128T020000Z")
    computed = {k for k, c in ledger["chunks"].items() if c["state"] == "computed"}
    carried = {k for k, c in ledger["chunks"].items() if c["state"] == "carried"}
    assert computed == touched and len(carried) == 16 - len(touched)
    assert {ledger["chunks"][k]["origin"] for k in carried} == {"20261127T020000Z"}
    assert ledger["scene_changes"] == {"changed": [scene], "new": [], "gone": []}
    assert _latest(scenario)["run"] == "20261128T020000Z"
    # The first run is untouched: its pointer target still holds its own outputs.
    assert _ledger(scenario, "20261127T020000Z")["status"] == "complete"

    # The incremental result equals a full run on the changed imagery.
    fresh = f"{scenario['prefix']}/fresh"
    [region] = __import__("depthseg.schedule.regions", fromlist=["x"]).parse_regions(
        Path(scenario["regions"]).read_text(), "r")
    report = map_region(replace(region.request(fresh), executor="ray"), storage,
                        log=lambda _: None)
    assert report.ok and report.done == 16
    incremental = mosaic_arrays(f"{scenario['out']}/runs/20261128T020000Z", storage)
    full = mosaic_arrays(fresh, storage)
    first = mosaic_arrays(f"{scenario['out']}/runs/20261127T020000Z", storage)
    for name in ("landcover", "confidence", "depth"):
        np.testing.assert_array_equal(incremental[name], full[name], err_msg=name)
    assert not all(np.array_equal(first[n], full[n], equal_nan=True) for n in first), \
        "the rewritten scene changed no output pixel"

    # Carried chunks' COG tiles were copied, not encoded again; every COG of the run equals
    # the full run's, byte for byte.
    run_json = json.loads(storage.read_bytes(
        f"{scenario['out']}/runs/20261128T020000Z/run.json"))
    assert run_json["cogs"] == {"encoded": len(touched), "reused": 16 - len(touched)}
    for layer in ("landcover", "confidence", "depth"):
        for key in sorted(touched | carried):
            name = f"cog/{layer}/{key}.tif"
            assert storage.read_bytes(f"{scenario['out']}/runs/20261128T020000Z/{name}") == \
                storage.read_bytes(f"{fresh}/{name}"), name
    # So are the overview COGs and the overview level, and every chunk has its STAC Item.
    for layer in ("landcover", "confidence", "depth"):
        name = f"cog/overview/{layer}.tif"
        assert storage.read_bytes(f"{scenario['out']}/runs/20261128T020000Z/{name}") == \
            storage.read_bytes(f"{fresh}/{name}"), name
    for key in sorted(touched | carried):
        item = json.loads(storage.read_bytes(
            f"{scenario['out']}/runs/20261128T020000Z/stac/items/{key}.json"))
        assert item["id"] == key and item["collection"] == "depthseg-landcover"


def test_failed_run_leaves_latest_and_is_retried(
        scenario: Any, capsys: pytest.CaptureFixture[str]) -> None:
    storage = scenario["storage"]
    name = sorted(p.name for p in (scenario["region"].root / "scenes").iterdir())[-1]
    uri = f"{scenario['prefix']}/scenes/{name}"
    good = storage.read_bytes(uri)
    # Header intact, pixel data cut off: planning works, the scene's chunks fail to read.
    storage.write_bytes_atomic(uri, good[:4096])
    code, out, err = _run(scenario, NOW_3, capsys=capsys)
    assert code == 1, out + err[-3000:]
    assert "latest left on 20261128T020000Z" in out
    assert _latest(scenario)["run"] == "20261128T020000Z"
    ledger = _ledger(scenario, "20261129T020000Z")
    assert ledger["status"] == "failed" and ledger["failed_chunks"]
    assert ledger["counts"]["failed"] == len(ledger["failed_chunks"]) > 0

    # Every chunk the bad scene meets fails alike: the run stops after 8 of them (any others
    # are "not run"), and says so.
    assert "chunks all failed the same way" in err
    not_done = {k for k, v in ledger["chunks"].items() if v["state"] in ("failed", "not run")}
    assert len(not_done) == ledger["counts"]["failed"] + ledger["counts"]["not_run"]

    # Still due for the same fire time. Same inputs: the attempt is resumed, only the chunks
    # not done are mapped again (and fail again).
    code, out, err = _run(scenario, NOW_3, capsys=capsys)
    assert code == 1 and "resuming run folder" in err, out + err[-3000:]
    assert f"{16 - len(not_done)} already done, {len(not_done)} to map" in err
    assert _latest(scenario)["run"] == "20261128T020000Z"

    # With the scene repaired its chunks' inputs differ: the folder starts clean and completes.
    storage.write_bytes_atomic(uri, good)
    code, out, err = _run(scenario, NOW_3, capsys=capsys)
    assert code == 0, err[-3000:]
    assert "holds an attempt with other inputs; starting it clean" in err
    assert "run 20261129T020000Z complete" in out
    assert _latest(scenario)["run"] == "20261129T020000Z"
    ledger = _ledger(scenario, "20261129T020000Z")
    assert ledger["status"] == "complete" and ledger["previous"] == "20261128T020000Z"


def test_dry_run_names_a_new_scene_and_the_chunks_it_meets(
        scenario: Any, capsys: pytest.CaptureFixture[str]) -> None:
    storage = scenario["storage"]
    name = sorted(p.name for p in (scenario["region"].root / "scenes").iterdir())[1]
    # A newer acquisition of the same footprint appears under a new name.
    new_uri = f"{scenario['prefix']}/scenes/zz_new_{name}"
    storage.write_bytes_atomic(new_uri, storage.read_bytes(
        f"{scenario['prefix']}/scenes/{name}"))
    touched = _touched(scenario, new_uri)
    assert 0 < len(touched) < 16
    before = listing(scenario["prefix"], storage)
    code, out, err = _run(scenario, NOW_4, "--dry-run", capsys=capsys)
    assert code == 0, err
    assert (f"16 chunks: {len(touched)} to compute, {16 - len(touched)} carried over "
            "from run 20261129T020000Z") in out
    assert f"scenes new: {new_uri}" in out and "scenes changed" not in out
    assert listing(scenario["prefix"], storage) == before


def test_a_run_folder_is_never_removed_on_a_read_error_or_while_in_use(scenario: Any) -> None:
    from datetime import datetime, timezone

    from depthseg.errors import DepthSegError, InputError
    from depthseg.io.lease import Lease
    from depthseg.schedule.incremental import execute_run, plan_run
    from depthseg.schedule.regions import parse_regions

    storage = scenario["storage"]
    [region] = parse_regions(Path(scenario["regions"]).read_text(), "r")
    # A fire time no other test of this module maps.
    run = plan_run(region, datetime(2027, 1, 15, 2, tzinfo=timezone.utc), storage,
                   executor="local")
    # A folder at this fire time with other inputs: normally removed and started clean...
    plan_uri = f"{run.run_uri}/plan.json"
    storage.write_bytes_atomic(plan_uri, b'{"another": "plan"}')
    # ...but not while a run holds its lease (it is mapping into it right now).
    with Lease(run.run_uri, storage).acquire():
        with pytest.raises(InputError, match="is in use by run"):
            execute_run(run, storage, log=lambda _: None)
    assert storage.read_bytes(plan_uri) == b'{"another": "plan"}'
    # A ledger that cannot be read is an error to fix, not a reason to delete the folder.
    storage.write_bytes_atomic(f"{run.run_uri}/ledger.json", b'{"format": "depthseg-ru')
    with pytest.raises(DepthSegError, match="is not JSON"):
        execute_run(run, storage, log=lambda _: None)
    assert storage.read_bytes(plan_uri) == b'{"another": "plan"}'
    fs, path = storage.fs(run.run_uri)
    fs.rm(path, recursive=True)  # leave the module's scenario as it was
