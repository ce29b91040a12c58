"""Helpers of the scheduling tests: regions files, S3 uploads, store listings, mosaics."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from depthseg.io.storage import Storage, open_zarr_store

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "tests" / "mapping"))

from mapping_helpers import contract_for, load_job, write_tiny_bundle  # noqa: E402

__all__ = ["contract_for", "load_job", "write_tiny_bundle"]

# 64 px chunks (51.2 m at 0.8 m), 4 tiles of 56 px per chunk + 14 px halo: fast on 2 CPUs.
FAST = {"chunk": 64, "tile": 56, "overlap": 14, "batch_size": 4}


def region_entry(region: Any, name: str, imagery: str, model: str, out: str,
                 schedule: str = "0 2 * * *", **extra: Any) -> dict[str, Any]:
    """One regions-file entry over a synthetic region's whole extent, in its CRS."""
    size = region.size * region.resolution
    x0, y0 = region.transform.c, region.transform.f
    return {"name": name, "bbox": [x0, y0 - size, x0 + size, y0], "bbox_crs": region.crs,
            "imagery": imagery, "model": model, "out": out, "schedule": schedule,
            **FAST, **extra}


def write_regions(path: Path, *entries: dict[str, Any]) -> str:
    """Write a regions file; returns its path."""
    path.write_text(yaml.safe_dump({"regions": list(entries)}, sort_keys=False))
    return str(path)


def upload_dir(local: Path, uri: str, storage: Storage) -> None:
    """Copy every file under ``local`` to ``uri``."""
    for file in sorted(local.rglob("*")):
        if file.is_file():
            storage.upload(file, f"{uri}/{file.relative_to(local).as_posix()}")


def listing(uri: str, storage: Storage) -> dict[str, tuple[Any, Any]]:
    """key -> (size, ETag) of every object under ``uri`` (a store snapshot)."""
    fs, path = storage.fs(uri)
    fs.invalidate_cache()
    found = fs.find(path, detail=True)
    return {k: (v.get("size"), v.get("ETag")) for k, v in found.items()}


def mosaic_arrays(run_uri: str, storage: Storage) -> dict[str, np.ndarray]:
    """The three layers of a run's mosaic, whole."""
    import zarr

    group = zarr.open_group(open_zarr_store(f"{run_uri}/mosaic.zarr", storage, read_only=True),
                            mode="r")
    return {name: np.asarray(group[name][:]) for name in ("landcover", "confidence", "depth")}
