"""Incremental runs: recompute only the chunks whose scenes changed, carry the rest over.

A chunk's result depends only on the model, the plan's grid/tiles/bands and the scenes that
meet its read window (chunk + halo), in composite order. :func:`plan_run` fingerprints those
for every planned chunk and compares them with the ledger of the last complete run (from
``latest.json``); :func:`execute_run` copies the unchanged chunks' three mosaic layers from
that run (and their COG tiles, so they are not encoded again), then lets
:func:`~depthseg.mapping.map_region` (``resume=True``) compute the others and finalise the
whole run folder (COGs of the recomputed chunks, VRT, STAC, quicklook, run.json).

A run folder left by a crashed or failed attempt at the same fire time is resumed when its
ledger was started from the same model, plan and per-chunk scenes (done chunks are kept, the
rest is computed); otherwise it is removed and the run starts clean.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from depthseg.errors import InputError, StorageError
from depthseg.geo import ChunkId
from depthseg.io import lease
from depthseg.io.bundle import Bundle, Contract, read_manifest
from depthseg.io.catalog import Catalog, open_catalog
from depthseg.io.storage import Storage, join, with_retries
from depthseg.mapping import products
from depthseg.mapping.pipeline import PLAN, SameFailure, map_region, open_output
from depthseg.mapping.plan import Plan, make_plan
from depthseg.mapping.report import RunReport
from depthseg.mapping.request import Executor, MapRequest
from depthseg.mapping.stages import ChunkContext, write_products
from depthseg.mapping.write import Mosaic
from depthseg.schedule.cadence import format_time, run_id
from depthseg.schedule.ledger import (
    model_fingerprint,
    now_text,
    plan_fingerprint,
    read_latest,
    read_ledger,
    scene_fingerprints,
    write_latest,
    write_ledger,
)
from depthseg.schedule.regions import Region

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class RunPlan:
    """What one scheduled run of a region will do (computed without writing anything).

    Attributes:
        region: The region.
        run_id: Run id (from the fire time).
        scheduled_for: The fire time, ISO text.
        run_uri: ``<out>/runs/<run id>``.
        request: The map_region request of the run (``resume=True``).
        plan: The mapping plan.
        model_fp: Model fingerprint.
        plan_fp: Plan fingerprint.
        scenes: chunk key -> scenes its read window meets: ``{uri, fingerprint, acquired}``
            in composite order.
        carry: Chunks carried over from the previous complete run.
        compute: Chunks to compute.
        previous: The previous complete run's ``latest.json``, or None.
        origin: chunk key -> run id that computed a carried chunk.
        reason: Why nothing can be carried (no previous run, model or plan changed), or "".
        changed: Scenes that changed / appeared / disappeared since the previous run.
    """

    region: Region
    run_id: str
    scheduled_for: str
    run_uri: str
    request: MapRequest
    plan: Plan
    model_fp: str
    plan_fp: str
    scenes: dict[str, list[dict[str, Any]]]
    carry: list[ChunkId]
    compute: list[ChunkId]
    previous: dict[str, Any] | None
    origin: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    changed: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: counts and the reason."""
        base = (f"{len(self.plan.chunks)} chunks: {len(self.compute)} to compute, "
                f"{len(self.carry)} carried over")
        return base + (f" ({self.reason})" if self.reason else
                       f" from run {self.previous['run']}" if self.previous else "")


def chunk_scenes(catalog: Catalog, plan: Plan, storage: Storage
                 ) -> dict[str, list[dict[str, Any]]]:
    """For every planned chunk, the scenes meeting its read window, with fingerprints."""
    hits = catalog.scenes_meeting([plan.read_bounds(c) for c in plan.chunks], plan.grid.crs)
    meeting = {c.key: [catalog.scenes[i] for i in idx]
               for c, idx in zip(plan.chunks, hits, strict=True)}
    prints = scene_fingerprints([s for scenes in meeting.values() for s in scenes], storage)
    return {key: [{"uri": s.uri, "fingerprint": prints[s.uri], "acquired": s.acquired}
                  for s in scenes] for key, scenes in meeting.items()}


def _scene_changes(before: dict[str, Any], now: dict[str, list[dict[str, Any]]]
                   ) -> dict[str, list[str]]:
    old = {s["uri"]: s["fingerprint"] for c in before.values() for s in c.get("scenes", [])}
    new = {s["uri"]: s["fingerprint"] for c in now.values() for s in c}
    return {"changed": sorted(u for u in new if u in old and old[u] != new[u]),
            "new": sorted(u for u in new if u not in old),
            "gone": sorted(u for u in old if u not in new)}


def plan_run(region: Region, fire: datetime, storage: Storage, gpus: int = 0,
             executor: Executor = "ray") -> RunPlan:
    """Plan the run of ``region`` for fire time ``fire``; reads only, writes nothing.

    Raises:
        InputError: Bad region inputs (model, imagery, bbox).
        StorageError: Unreadable inputs or ledgers.
    """
    rid = run_id(fire)
    run_uri = join(region.runs_uri(), rid)
    request = replace(region.request(run_uri, gpus=gpus, executor=executor), resume=True)
    contract = read_manifest(region.model, storage)[1]
    catalog = open_catalog(region.imagery, storage, asset=request.stac_asset)
    plan = make_plan(request, catalog, contract)
    model_fp = model_fingerprint(region.model, storage)
    plan_fp = plan_fingerprint(plan)
    scenes = chunk_scenes(catalog, plan, storage)
    previous = read_latest(region.out, storage)
    run = RunPlan(region=region, run_id=rid, scheduled_for=format_time(fire), run_uri=run_uri,
                  request=request, plan=plan, model_fp=model_fp, plan_fp=plan_fp,
                  scenes=scenes, carry=[], compute=list(plan.chunks), previous=previous)
    if previous is None:
        run.reason = "no previous complete run"
        return run
    ledger = read_ledger(str(previous["uri"]), storage)
    if ledger is None:
        run.reason = f"previous run {previous['uri']!r} has no ledger"
        return run
    run.changed = _scene_changes(ledger.get("chunks", {}), scenes)
    if ledger.get("model", {}).get("fingerprint") != model_fp:
        run.reason = "model changed"
        return run
    if ledger.get("plan", {}).get("fingerprint") != plan_fp:
        run.reason = "plan changed (grid, chunks, tiles, bands, resampling or precision)"
        return run
    done = Mosaic(str(previous["uri"]), storage).done_chunks()
    carry, compute = [], []
    for chunk in plan.chunks:
        before = ledger.get("chunks", {}).get(chunk.key)
        if before is not None and chunk in done and before.get("scenes") == scenes[chunk.key]:
            carry.append(chunk)
            run.origin[chunk.key] = str(before.get("origin") or ledger.get("run"))
        else:
            compute.append(chunk)
    run.carry, run.compute = carry, compute
    return run


def _ledger(run: RunPlan, status: str, states: dict[str, str] | None = None,
            report: RunReport | None = None, started_at: str | None = None) -> dict[str, Any]:
    carried = {c.key for c in run.carry}
    chunks = {}
    for chunk in run.plan.chunks:
        key = chunk.key
        state = (states or {}).get(key, "carried" if key in carried else "planned")
        chunks[key] = {"scenes": run.scenes[key], "state": state,
                       "origin": run.origin.get(key, run.run_id) if key in carried
                       else run.run_id}
    counts = {"planned": len(run.plan.chunks), "carried": len(run.carry),
              "recomputed": len(run.compute)}
    if states is not None:
        counts.update(done=sum(s in ("carried", "computed") for s in states.values()),
                      failed=sum(s == "failed" for s in states.values()),
                      not_run=sum(s == "not run" for s in states.values()))
    return {"region": run.region.name, "run": run.run_id, "scheduled_for": run.scheduled_for,
            "status": status, "started_at": started_at or now_text(),
            "completed_at": now_text() if status in ("complete", "failed") else None,
            "previous": run.previous["run"] if run.previous else None,
            "reason": run.reason, "scene_changes": run.changed,
            "model": {"uri": run.region.model, "fingerprint": run.model_fp},
            "plan": {"uri": join(run.run_uri, PLAN), "fingerprint": run.plan_fp},
            "counts": counts, "chunks": chunks,
            "failed_chunks": dict(sorted(report.failed.items())) if report else {}}


def _can_resume(run: RunPlan, storage: Storage) -> bool:
    """Whether an existing run folder was started from exactly this run plan.

    A ledger or plan that cannot be read (a storage error, a corrupt file) is an error, not
    a reason to start clean: removing the folder would lose every chunk it holds.
    """
    ledger = read_ledger(run.run_uri, storage)
    stored_plan = storage.read_bytes(join(run.run_uri, PLAN))
    if ledger is None or stored_plan != run.plan.to_json():
        return False
    stored = {k: v.get("scenes") for k, v in ledger.get("chunks", {}).items()}
    return (ledger.get("model", {}).get("fingerprint") == run.model_fp
            and ledger.get("plan", {}).get("fingerprint") == run.plan_fp
            and stored == run.scenes
            and sorted(k for k, v in ledger["chunks"].items() if v.get("state") == "carried")
            == sorted(c.key for c in run.carry))


def _remove(uri: str, storage: Storage) -> None:
    """Remove a run folder, unless a run holds its lease (a live run is mapping into it)."""
    holder = lease.current(uri, storage)
    if holder is not None and lease.is_fresh(holder, lease.STALE_S):
        raise InputError(f"run folder {uri!r} is in use by {holder.describe(time.time())}; "
                         "not removing it: wait for that run, or remove its lease if it is dead")
    storage.remove_tree(uri)


def carry_over(run: RunPlan, storage: Storage, contract: Contract,
               cogs_ready: set[ChunkId] = frozenset(), threads: int = 4) -> int:  # type: ignore[assignment]
    """Write the carried chunks from the previous run's mosaic; returns how many were copied.

    Each carried chunk gets every product a mapped chunk gets (layers, overview blocks,
    STAC Item, done marker last); its COG tiles are encoded only when
    :func:`copy_cogs` could not copy them (``cogs_ready``).
    """
    if not run.carry:
        return 0
    assert run.previous is not None
    source = Mosaic(str(run.previous["uri"]), storage)
    target = Mosaic(run.run_uri, storage)
    have = target.done_chunks()
    todo = [c for c in run.carry if c not in have]
    grid = run.plan.grid
    ctx = ChunkContext(grid=grid, tiles=run.plan.tiles, bands=run.plan.bands, out=run.run_uri,
                       storage=storage, contract=contract,
                       factor=products.overview_factor(grid), created=products.now_text(),
                       polygons=run.plan.polygons)
    _ = source.group, target.group  # open both once, before the threads share them

    def copy(chunk: ChunkId) -> None:
        acquired = products.acquisition_range([s["acquired"] for s in run.scenes[chunk.key]])
        write_products(ctx, target, chunk, source.read_chunk(grid, chunk), acquired,
                       cogs=chunk not in cogs_ready)

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(todo)))) as pool:
        list(pool.map(copy, todo))
    return len(todo)


COG_LAYERS = ("landcover", "confidence", "depth")


def copy_cogs(run: RunPlan, storage: Storage, threads: int = 8) -> set[ChunkId]:
    """Copy the carried chunks' COG tiles from the previous run (server-side on S3).

    Returns the chunks whose three COGs are now in the new run folder; the finaliser skips
    encoding them. A chunk missing a COG in the previous run is simply encoded again.
    """
    if not run.carry or run.previous is None:
        return set()
    source, target = str(run.previous["uri"]), run.run_uri
    fs, _ = storage.fs(target)

    def copy(chunk: ChunkId) -> ChunkId | None:
        pairs = [(storage.fs(join(source, "cog", layer, f"{chunk.key}.tif"))[1],
                  storage.fs(join(target, "cog", layer, f"{chunk.key}.tif"))[1])
                 for layer in COG_LAYERS]
        def present() -> bool:
            return all(fs.exists(src) for src, _ in pairs)

        def copy_all() -> None:
            for src, dst in pairs:
                fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
                fs.copy(src, dst)

        if not with_retries(present):
            return None
        with_retries(copy_all)
        return chunk

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(run.carry)))) as pool:
        return {c for c in pool.map(copy, run.carry) if c is not None}


@dataclass
class RunResult:
    """What one executed run did."""

    run: RunPlan
    report: RunReport
    ok: bool
    copied: int

    def counts(self) -> dict[str, int]:
        """Planned / carried / recomputed / failed chunk counts."""
        return {"planned": len(self.run.plan.chunks), "carried": len(self.run.carry),
                "recomputed": len(self.run.compute), "failed": len(self.report.failed)}


def execute_run(run: RunPlan, storage: Storage, bundle: Bundle | None = None,
                log: Log | None = None) -> RunResult:
    """Carry chunks over, map the rest into the run folder, then move ``latest`` if complete.

    Args:
        run: From :func:`plan_run`.
        storage: Storage settings.
        bundle: A loaded bundle instead of ``region.model`` (tests).
        log: Progress lines (default: stderr).
    """
    log = log or _stderr
    contract = bundle.contract if bundle is not None else read_manifest(run.region.model,
                                                                         storage)[1]
    if run.previous is not None and str(run.previous["uri"]).rstrip("/") == run.run_uri:
        raise StorageError(f"{run.run_uri!r} is the run latest.json points at; refusing to "
                           "map into it again (is latest.json's scheduled_for wrong?)")
    if storage.exists(join(run.run_uri, PLAN)):
        if _can_resume(run, storage):
            log(f"{run.region.name}: resuming run folder {run.run_uri}")
        else:
            log(f"{run.region.name}: run folder {run.run_uri} holds an attempt with other "
                "inputs; starting it clean")
            _remove(run.run_uri, storage)
    elif storage.exists(run.run_uri):
        _remove(run.run_uri, storage)  # debris without a plan
    previous_ledger = read_ledger(run.run_uri, storage) if storage.exists(
        join(run.run_uri, PLAN)) else None
    started_at = (previous_ledger or {}).get("started_at") or now_text()
    open_output(run.request, run.plan, contract, storage)
    write_ledger(run.run_uri, storage, _ledger(run, "running", started_at=started_at))
    cogs = copy_cogs(run, storage)
    copied = carry_over(run, storage, contract, cogs)
    log(f"{run.region.name}: run {run.run_id}: {run.summary()}; copied {copied} chunks")
    try:
        report = map_region(run.request, storage, bundle=bundle, log=log, cogs_ready=cogs)
    except SameFailure as err:  # every chunk failed alike: a failed run, retried next time
        if err.report is None:
            raise
        log(f"{run.region.name}: {err}")
        report = err.report
    done = {c.key for c in Mosaic(run.run_uri, storage).done_chunks()}
    carried = {c.key for c in run.carry}
    # A run stopped early (every chunk failing alike) leaves chunks it never tried: "not run".
    states = {c.key: ("carried" if c.key in carried else "computed") if c.key in done
              else "failed" if c.key in report.failed else "not run" for c in run.plan.chunks}
    ok = report.ok and all(s in ("carried", "computed") for s in states.values())
    ledger = _ledger(run, "complete" if ok else "failed", states, report, started_at)
    write_ledger(run.run_uri, storage, ledger)
    if ok:
        write_latest(run.region.out, storage, {
            "region": run.region.name, "run": run.run_id, "uri": run.run_uri,
            "scheduled_for": run.scheduled_for, "completed_at": ledger["completed_at"],
            "counts": ledger["counts"]})
    return RunResult(run=run, report=report, ok=ok, copied=copied)


def describe(run: RunPlan) -> list[str]:
    """Lines for ``--dry-run``: counts, reason, scene changes."""
    lines = [f"  would write {run.run_uri}: {run.summary()}"]
    for kind in ("changed", "new", "gone"):
        names = run.changed.get(kind, [])
        if names:
            shown = ", ".join(names[:10]) + (f" (+{len(names) - 10} more)" if len(names) > 10
                                             else "")
            lines.append(f"  scenes {kind}: {shown}")
    if run.compute and run.carry:
        keys = [c.key for c in run.compute]
        lines.append("  chunks to compute: " + ", ".join(keys[:20])
                     + (f" (+{len(keys) - 20} more)" if len(keys) > 20 else ""))
    return lines


def ledger_json(run_uri: str, storage: Storage) -> str:
    """The ledger of a run as indented JSON text (for messages and debugging)."""
    return json.dumps(read_ledger(run_uri, storage), indent=2)
