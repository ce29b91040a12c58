"""The same Ray run writing to local disk and to S3: the same bytes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rioxarray  # noqa: F401 - registers .rio
import xarray as xr
from mapping_helpers import region_request

from depthseg.io.s3server import FaultProxy
from depthseg.io.storage import Storage, open_zarr_store
from depthseg.mapping import map_region


def _local_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and (p.parts[-3:-1] != ("mosaic.zarr",) or "c" in p.parts)}


def _s3_files(uri: str, storage: Storage) -> dict[str, bytes]:
    fs, path = storage.fs(uri)
    return {key[len(path) + 1:]: fs.cat_file(key) for key in fs.find(path)}


@pytest.mark.slow
def test_local_and_s3_runs_give_identical_bytes(
        synthetic_region: Any, bundle_uint16: str, tmp_path: Path, s3_prefix: str,
        s3_storage: Storage, ray_local: Any) -> None:
    half = synthetic_region.size * synthetic_region.resolution / 2
    x0, y0 = synthetic_region.transform.c, synthetic_region.transform.f
    bbox = (x0 - 50, y0 - half, x0 + half, y0 + 50)
    local = replace(region_request(synthetic_region, tmp_path / "run", bundle_uint16), bbox=bbox,
                    executor="ray")
    remote = replace(local, out=f"{s3_prefix}/run")
    local_report = map_region(local)
    lines: list[str] = []
    remote_report = map_region(remote, storage=s3_storage, log=lines.append)
    assert local_report.ok and remote_report.ok and remote_report.done == local_report.done
    # The S3 secret reaches no output object, no log line and no file of Ray's session
    # (the Storage value travelled to every worker).
    secret = str(s3_storage.s3.secret).encode()
    assert secret not in "\n".join(lines).encode()
    assert [k for k, v in _s3_files(remote.out, s3_storage).items() if secret in v] == []
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    leaked = [p for p in session.rglob("*") if p.is_file() and not p.is_symlink()
              and p.stat().st_size < 50 * 2**20 and secret in p.read_bytes()]
    assert leaked == []

    local_files = _local_files(tmp_path / "run")
    remote_files = _s3_files(remote.out, s3_storage)
    compared = [k for k in local_files if k.startswith(("mosaic.zarr/", "cog/"))
                and not k.endswith(".vrt")]
    assert any("/c/" in k for k in compared) and any(k.endswith(".tif") for k in compared)
    for key in compared:
        assert remote_files.get(key) == local_files[key], key
    assert sorted(k for k in remote_files if k.startswith("done/")) == sorted(
        k for k in local_files if k.startswith("done/"))
    assert json.loads(remote_files["run.json"])["chunks"]["done"] == local_report.done

    remote_mosaic = xr.open_zarr(open_zarr_store(f"{remote.out}/mosaic.zarr", s3_storage,
                                                 read_only=True), consolidated=False)
    local_mosaic = xr.open_zarr(tmp_path / "run" / "mosaic.zarr", consolidated=False)
    assert remote_mosaic.rio.crs == local_mosaic.rio.crs
    for name in ("landcover", "confidence", "depth"):
        np.testing.assert_array_equal(remote_mosaic[name].values, local_mosaic[name].values)


def test_a_run_through_a_flaky_store_gives_identical_bytes(
        synthetic_region: Any, bundle_uint16: str, s3_server: Any, s3_prefix: str,
        s3_storage: Storage) -> None:
    # Scenes and outputs on S3; one run reaches it directly, one through a proxy that fails
    # 5 % of all requests: 503s, dropped connections and GETs cut off mid-body.
    fs, path = s3_storage.fs(s3_prefix)
    fs.put(str(synthetic_region.root / "scenes"), f"{path}/scenes", recursive=True)
    half = synthetic_region.size * synthetic_region.resolution / 2
    x0, y0 = synthetic_region.transform.c, synthetic_region.transform.f
    request = replace(region_request(synthetic_region, f"{s3_prefix}/clean", bundle_uint16),
                      imagery=f"{s3_prefix}/scenes/", bbox=(x0, y0 - half, x0 + half, y0))
    clean = map_region(request, storage=s3_storage, log=lambda _: None)
    assert clean.ok and clean.retries == 0
    with FaultProxy(s3_server.port, fail=0.02, drop=0.015, cut=0.015, seed=7) as proxy:
        flaky = map_region(replace(request, out=f"{s3_prefix}/flaky"), storage=proxy.storage(),
                           log=lambda _: None)
        assert proxy.counts["cut"] and proxy.counts["drop"] and proxy.counts["fail"], \
            proxy.counts
    assert flaky.ok, flaky.failed
    assert flaky.retries > 0  # counted in run.json
    run = json.loads(s3_storage.read_bytes(f"{s3_prefix}/flaky/run.json"))
    assert run["retries"] == flaky.retries and run["ok"]
    clean_files = _s3_files(f"{s3_prefix}/clean", s3_storage)
    flaky_files = _s3_files(f"{s3_prefix}/flaky", s3_storage)
    compared = [k for k in clean_files if k.startswith(("mosaic.zarr/", "cog/"))
                and not k.endswith((".vrt", "zarr.json"))]
    assert any("/c/" in k for k in compared) and any(k.endswith(".tif") for k in compared)
    assert [k for k in compared if flaky_files.get(k) != clean_files[k]] == []
