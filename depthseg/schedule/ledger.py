"""Run ledgers, the ``latest`` pointer and the fingerprints they hold.

Layout under a region's ``out``::

    latest.json                 the last complete run (moved only after a run completes)
    runs/<run id>/              one complete map_region output per scheduled run
    runs/<run id>/ledger.json   what each chunk of that run was computed from

Fingerprints are cheap metadata, never pixels: an object's ETag (S3) or size + mtime (local
files), from one fsspec ``info`` call. A Zarr mosaic used as imagery is fingerprinted by the
listing of all its objects.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

from depthseg.errors import StorageError
from depthseg.io.catalog import Scene
from depthseg.io.storage import (
    Storage,
    info_fingerprint,
    join,
    object_fingerprint,
    scheme_of,
    with_retries,
)
from depthseg.mapping.plan import Plan

LEDGER = "ledger.json"
LATEST = "latest.json"
LEDGER_FORMAT = "depthseg-run-ledger"
LATEST_FORMAT = "depthseg-latest-run"
VERSION = 1


def _digest(parts: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(parts).encode()).hexdigest()


def tree_fingerprint(uri: str, storage: Storage, skip: tuple[str, ...] = ()) -> str:
    """One fingerprint of every object under ``uri`` (names + their fingerprints)."""
    fs, path = storage.fs(uri)
    local = scheme_of(uri) in ("", "file")
    fs.invalidate_cache(path)
    found = with_retries(lambda: fs.find(path, detail=True))
    parts = [f"{name[len(path):]}={info_fingerprint(info, local)}"
             for name, info in sorted(found.items())
             if name.rsplit("/", 1)[-1] not in skip and ".tmp-" not in name]
    return _digest(parts)


def scene_fingerprint(scene: Scene, storage: Storage) -> str:
    """The fingerprint of one catalog scene (a Zarr mosaic: of all its objects)."""
    if scene.variable is not None:
        return tree_fingerprint(scene.uri, storage)
    return object_fingerprint(scene.uri, storage)


def scene_fingerprints(scenes: list[Scene], storage: Storage,
                       threads: int = 16) -> dict[str, str]:
    """Fingerprint of each scene by URI (metadata requests in parallel)."""
    unique = list({s.uri: s for s in scenes}.values())
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(unique)))) as pool:
        prints = list(pool.map(lambda s: scene_fingerprint(s, storage), unique))
    return {s.uri: p for s, p in zip(unique, prints, strict=True)}


def model_fingerprint(model: str, storage: Storage) -> str:
    """Hash of the bundle's ``bundle.json`` bytes and the fingerprints of its other files."""
    manifest = storage.read_bytes(join(model, "bundle.json"))
    files = tree_fingerprint(model, storage, skip=("bundle.json",))
    return _digest([hashlib.sha256(manifest).hexdigest(), files])


def plan_fingerprint(plan: Plan) -> str:
    """Hash of what makes chunks comparable between runs: grid, tiles, bands, resampling.

    Not the chunk list: new imagery at the edge adds chunks without invalidating the others.
    """
    data = plan.to_dict()
    kept = {k: data[k] for k in ("grid", "transform", "tiles", "bands")}
    if data.get("resampling", "nearest") != "nearest":  # runs from before the option hash alike
        kept["resampling"] = data["resampling"]
    return _digest([json.dumps(kept, sort_keys=True)])


def now_text() -> str:
    """The current UTC time as ISO text."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _read_json(uri: str, storage: Storage, what: str) -> dict[str, Any] | None:
    fs, path = storage.fs(uri)
    fs.invalidate_cache(path)  # written by other processes (Ray jobs) since the last listing
    if not storage.exists(uri):
        return None
    try:
        data = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as err:
        raise StorageError(f"{what} {uri!r} is not JSON ({err}); remove it or restore it") from err
    if not isinstance(data, dict):
        raise StorageError(f"{what} {uri!r} is not a JSON object; remove it or restore it")
    return data


def _read_document(uri: str, storage: Storage, fmt: str, what: str) -> dict[str, Any] | None:
    """A JSON document of format ``fmt`` (latest pointer, ledger), or None if absent."""
    data = _read_json(uri, storage, what)
    if data is not None and data.get("format") != fmt:
        raise StorageError(f"{uri!r} has format {data.get('format')!r}; expected {fmt!r}; "
                           "is 'out' another tool's folder?")
    return data


def _write_document(uri: str, storage: Storage, fmt: str, fields: dict[str, Any]) -> None:
    """Write a JSON document of format ``fmt`` in one atomic write."""
    data = {"format": fmt, "version": VERSION, **fields}
    storage.write_bytes_atomic(uri, json.dumps(data, indent=1, sort_keys=True).encode())


def read_latest(out: str, storage: Storage) -> dict[str, Any] | None:
    """The region's ``latest.json``, or None before its first complete run."""
    return _read_document(join(out, LATEST), storage, LATEST_FORMAT, "latest pointer")


def write_latest(out: str, storage: Storage, pointer: dict[str, Any]) -> None:
    """Move ``latest.json`` (one atomic write)."""
    _write_document(join(out, LATEST), storage, LATEST_FORMAT, pointer)


def read_ledger(run_uri: str, storage: Storage) -> dict[str, Any] | None:
    """The ledger of the run in ``run_uri``, or None if it has none."""
    return _read_document(join(run_uri, LEDGER), storage, LEDGER_FORMAT, "run ledger")


def write_ledger(run_uri: str, storage: Storage, ledger: dict[str, Any]) -> None:
    """Write the ledger of a run (atomically)."""
    _write_document(join(run_uri, LEDGER), storage, LEDGER_FORMAT, ledger)
