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

from depthseg.io.chips import open_zarr_store
from depthseg.io.storage import Storage
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
    remote_report = map_region(remote, storage=s3_storage)
    assert local_report.ok and remote_report.ok and remote_report.done == local_report.done

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
