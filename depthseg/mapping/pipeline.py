"""``map_region``: plan -> Ray Data stream (read tasks -> predict/write actors) -> finalise.

Resume semantics: ``<out>/plan.json`` marks an output folder as a run's. Without ``resume``
an output that already holds a plan is refused (nothing is overwritten by accident); with
``resume`` the stored plan must equal the new one (same grid, chunks, tiles, bands), the
model bundle and the imagery must be the ones the output was started with (``inputs.json``:
their fingerprints), and only chunks without a done marker are computed. Chunk writes are
idempotent, so a chunk that was half-written when the run was killed is simply written again.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from depthseg.errors import InputError, LeaseLostError, RunError
from depthseg.geo import ChunkId
from depthseg.io.bundle import Bundle, Contract, bundle_fingerprint, verify_bundle
from depthseg.io.catalog import Catalog, open_catalog
from depthseg.io.lease import Lease
from depthseg.io.storage import (
    Storage,
    join,
    remove_partial_files,
    scheme_of,
    sweep_temp_dirs,
)
from depthseg.mapping import products
from depthseg.mapping.finalize import finalize
from depthseg.mapping.plan import Plan, make_plan
from depthseg.mapping.report import RunReport
from depthseg.mapping.request import MapRequest, resolved_precision
from depthseg.mapping.stages import (
    ChunkContext,
    ChunkPredictActor,
    read_batch,
    run_local,
    scenes_text,
    write_batch,
)
from depthseg.mapping.write import Mosaic
from depthseg.progress import Progress

PLAN = "plan.json"
INPUTS = "inputs.json"


def run_inputs(request: MapRequest, catalog: Catalog, bundle: Bundle | None,
               storage: Storage) -> dict[str, Any]:
    """What a run was made from: the model bundle's and the imagery catalog's fingerprints.

    The catalog's is the hash of every scene's header (URI, grid, bands, dtype, no-data,
    date): a scene added, removed, moved or re-gridded changes it, with no request per scene.
    """
    on_storage = scheme_of(request.model) in ("", "file", "s3")
    if bundle is not None and not (on_storage and storage.exists(join(request.model,
                                                                      "bundle.json"))):
        model = "memory:" + hashlib.sha256(json.dumps(
            bundle.contract.to_dict(), sort_keys=True).encode()).hexdigest()
    else:
        model = bundle_fingerprint(request.model, storage)
    imagery = "sha256:" + hashlib.sha256(scenes_text(catalog.scenes).encode()).hexdigest()
    return {"model": {"uri": request.model, "fingerprint": model},
            "imagery": {"uri": request.imagery, "scenes": len(catalog.scenes),
                        "fingerprint": imagery}}


def _check_inputs(out: str, stored: dict[str, Any], inputs: dict[str, Any]) -> None:
    for what, name in (("model", "the model bundle"), ("imagery", "the imagery")):
        before, now = stored.get(what, {}), inputs[what]
        if before.get("fingerprint") != now["fingerprint"]:
            detail = (f"{before.get('uri')!r} -> {now['uri']!r}" if before.get("uri") !=
                      now["uri"] else f"{now['uri']!r} changed since")
            if what == "imagery" and before.get("scenes") != now["scenes"]:
                detail += f" ({before.get('scenes')} -> {now['scenes']} scenes)"
            raise InputError(f"output {out!r} was started with other inputs: {name} differs "
                             f"({detail}); resume with the original {what}, or map into a new "
                             "--out")


def _start_output(request: MapRequest, plan: Plan, storage: Storage, mosaic: Mosaic,
                  attrs: dict[str, Any], inputs: dict[str, Any] | None = None,
                  ) -> set[ChunkId]:
    """Create or reopen the output; returns the chunks already done.

    ``inputs`` (:func:`run_inputs`) are recorded in ``inputs.json`` and in the mosaic's
    attributes on a fresh start; a resume with other inputs is refused, naming what changed.
    """
    plan_uri, inputs_uri = join(request.out, PLAN), join(request.out, INPUTS)
    if storage.exists(plan_uri):
        if not request.resume:
            raise InputError(f"output {request.out!r} already holds a mapping run ({PLAN}); "
                             "pass --resume to continue it, or give a new --out")
        if inputs is not None and storage.exists(inputs_uri):
            _check_inputs(request.out, json.loads(storage.read_bytes(inputs_uri)), inputs)
        if storage.read_bytes(plan_uri) != plan.to_json():
            raise InputError(f"output {request.out!r} holds a different plan (grid, chunks, "
                             "tiles, bands or precision changed); rerun with the original "
                             "options or a new --out")
        return mosaic.done_chunks() & set(plan.chunks)
    # The mosaic skeleton first, the plan last: a plan implies a usable mosaic.
    if inputs is not None:
        attrs = {**attrs, "depthseg_inputs": inputs}
    mosaic.create(plan.grid, attrs, products.overview_factor(plan.grid), plan.zarr_format)
    if inputs is not None:
        storage.write_bytes_atomic(inputs_uri, json.dumps(inputs, indent=2).encode())
    storage.write_bytes_atomic(plan_uri, plan.to_json())
    return set()


def mosaic_attrs(request: MapRequest, contract: Contract) -> dict[str, Any]:
    """The attributes of a run's Zarr mosaic group."""
    return {"depthseg_mapping": {"model": request.model, "imagery": request.imagery,
                                 "class_names": list(contract.class_names),
                                 "palette": [list(c) for c in contract.palette],
                                 "nodata": {"landcover": 255, "confidence": 0, "depth": "NaN"}}}


def open_output(request: MapRequest, plan: Plan, contract: Contract,
                storage: Storage) -> set[ChunkId]:
    """Create a run's output without mapping, or reopen it; returns the chunks already done.

    Writes the mosaic skeleton, then ``plan.json``, as ``map_region`` does; an output that
    holds the same plan is reopened.

    ``map_region`` with ``resume=True`` then continues it (the scheduler uses this to carry
    chunks of an earlier run over before mapping the rest).

    Raises:
        InputError: The output holds a different plan.
    """
    return _start_output(replace(request, resume=True), plan, storage,
                         Mosaic(request.out, storage), mosaic_attrs(request, contract))


def chunk_rows(catalog: Catalog, plan: Plan, todo: Collection[ChunkId],
               ) -> tuple[list[dict[str, str]], tuple[str, str] | None]:
    """The rows of the stream for the ``todo`` chunks, and the imagery's time extent.

    A row holds the chunk key, the scenes under its read window (composite order, as JSON)
    and their acquisition range (the chunk's STAC times). The extent is the oldest and newest
    acquisition of the scenes every planned chunk reads (the STAC Collection's), if all are
    dated. One bulk query of the footprint index answers both; a read task then gets only
    its chunk's scenes, never the catalog.
    """
    hits = catalog.scenes_meeting([plan.read_bounds(c) for c in plan.chunks], plan.grid.crs)
    used = sorted({i for idx in hits for i in idx})
    dated = bool(used) and all(catalog.scenes[i].acquired for i in used)
    times = {i: products.parse_time(str(catalog.scenes[i].acquired)).isoformat()
             for i in used} if dated else {}
    extent = (min(times.values()), max(times.values())) if dated else None
    wanted = set(todo)
    encoded: dict[int, str] = {}  # each scene encoded once (a scene meets ~4-9 chunks)
    rows = []
    for chunk, idx in zip(plan.chunks, hits, strict=True):
        if chunk not in wanted:
            continue
        for i in idx:
            if i not in encoded:
                encoded[i] = scenes_text([catalog.scenes[i]])[1:-1]
        # ISO times of one zone sort as text: the range needs no parsing per chunk.
        span = sorted(times[i] for i in idx) if dated and idx else []
        rows.append({"chunk": chunk.key, "scenes": "[" + ",".join(encoded[i] for i in idx) + "]",
                     "acquired": f"{span[0]}|{span[-1]}" if span else ""})
    return rows, extent


#: Pixels of a block of chunk rows read in one task (chunk + halo, all bands).
BLOCK_BYTES = 64 * 2**20
MAX_CHUNKS_PER_BLOCK = 16


def chunks_per_block(ctx: ChunkContext, chunks: int, workers: int) -> int:
    """How many chunks share one Ray Data block (and so one task per stage).

    At most 64 MB of pixels and 16 chunks per block, and at least four blocks per worker so
    that small runs still stream.
    """
    side = ctx.grid.chunk_size + 2 * ctx.tiles.halo_px
    chunk_bytes = len(ctx.bands) * side * side * np.dtype(ctx.source_dtype).itemsize
    return max(1, min(MAX_CHUNKS_PER_BLOCK, BLOCK_BYTES // chunk_bytes,
                      chunks // (4 * max(workers, 1))))


#: A run stops early once this many chunks failed, none succeeded, all in the same way.
SAME_FAILURE_LIMIT = 8


class SameFailure(RunError):
    """Every chunk so far failed in the same way: the run stops instead of failing them all.

    ``report`` is the stopped run's report (its failed chunks), once the run recorded it.
    """

    report: RunReport | None = None


def failure_signature(error: str) -> str:
    """An error line with its numbers blanked.

    Chunk keys, scene names and byte offsets differ between chunks failing for one reason.
    """
    import re

    return re.sub(r"\d+", "N", error)


def check_same_failure(report: RunReport, limit: int = SAME_FAILURE_LIMIT) -> None:
    """Raise :class:`SameFailure` when the run's first ``limit`` results failed alike."""
    # Checked once, at the limit-th result: later results never re-scan the failures (a
    # province of 100,000 failing chunks would otherwise cost O(n^2) on the driver).
    if report.finished != limit or len(report.failed) != limit:
        return
    signatures = {failure_signature(e) for e in report.failed.values()}
    if len(signatures) == 1:
        chunk, error = next(iter(report.failed.items()))
        raise SameFailure(
            f"the first {len(report.failed)} chunks all failed the same way (e.g. chunk {chunk}:"
            f" {error}); the run stopped instead of failing every chunk; fix the cause and "
            "rerun with --resume")


def _ray_stream(ctx: ChunkContext, rows: list[dict[str, str]], request: MapRequest,
                bundle: Bundle | None, on_result: Callable[[dict[str, Any]], None]) -> None:
    import ray
    import ray.data
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    if not ray.is_initialized():
        ray.init()
    data_context = ray.data.DataContext.get_current()
    data_context.enable_progress_bars = False  # one progress line per chunk is printed instead
    actors = request.gpus if request.gpus > 0 else request.cpu_actors
    node_cpus = int(ray.available_resources().get("CPU", 1))
    read_tasks = max(1, node_cpus - actors)
    # CPU actors share the CPUs between them (reads are short and mostly wait on I/O).
    cpu_threads = None if request.gpus > 0 else max(1, node_cpus // actors)
    separate_writes = (request.write_stage == "separate"
                       or (request.write_stage == "auto" and request.gpus > 0))
    # Rows travel in blocks of a few chunks: Ray Data's driver-side cost is per task (one
    # per block and stage), so small chunks share a task; large ones keep one per block so
    # a block of pixels stays small (<= 64 MB) and the stream stays fine-grained.
    per_block = chunks_per_block(ctx, len(rows), read_tasks + actors)
    ds: Any = ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / per_block))
    # Read tasks may run up to one chunk ahead of each actor; the rest is Ray's backpressure.
    ds = ds.map_batches(read_batch, batch_size=1, fn_kwargs={"ctx": ctx}, num_cpus=1,
                        compute=TaskPoolStrategy(size=read_tasks))
    # The one place the actor pool is declared (its arguments changed across Ray releases).
    ds = ds.map_batches(
        ChunkPredictActor, batch_size=1, compute=ActorPoolStrategy(size=actors),
        fn_constructor_kwargs={"ctx": ctx, "model_uri": request.model, "bundle": bundle,
                               "gpus": request.gpus, "batch_size": request.batch_size,
                               "cpu_threads": cpu_threads, "compile_model": request.compile,
                               "write": not separate_writes, "precision": request.precision},
        num_gpus=1 if request.gpus > 0 else 0, num_cpus=1)
    if separate_writes:
        # GPU actors hand the encoded chunk to write tasks (Zarr encoding, uploads; a quarter
        # CPU each, as they mostly wait on storage), so the GPU never waits on them. CPU
        # actors write themselves: there the write shares the cores with the model anyway.
        ds = ds.map_batches(write_batch, batch_size=1, fn_kwargs={"ctx": ctx}, num_cpus=0.25,
                            compute=TaskPoolStrategy(size=max(2, read_tasks)))
    for row in ds.iter_rows():
        on_result(dict(row))


def check_output(out: str, storage: Storage) -> None:
    """Refuse an output location that cannot hold a run, before any work starts."""
    if scheme_of(out) in ("", "file"):
        path = Path(out.removeprefix("file://"))
        if path.exists() and not path.is_dir():
            raise InputError(f"--out {out!r} is a file; give a folder (it is created if missing)")
        parent = path
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise InputError(f"--out {out!r} lies under {str(parent)!r}, which is a file; give a "
                             "folder path")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"--out {out!r}: {str(parent)!r} is not writable; give a folder "
                             "you can write to")
        return
    fs, key = storage.fs(out)
    bucket = key.split("/", 1)[0]
    try:
        found = fs.exists(bucket)
    except (OSError, PermissionError) as err:
        raise InputError(f"--out {out!r}: cannot reach bucket {bucket!r} ({err}); check the "
                         "endpoint and credentials") from err
    if not found:
        raise InputError(f"--out {out!r}: bucket {bucket!r} does not exist (or these credentials "
                         "cannot see it); create it or fix --out")


def map_region(request: MapRequest, storage: Storage | None = None,
               bundle: Bundle | None = None, log: Callable[[str], None] | None = None,
               cogs_ready: Collection[ChunkId] = (),
               start_ray: Callable[[], int | None] | None = None,
               command_start: float | None = None) -> RunReport:
    """Map a region: plan, predict every chunk with imagery, write the mosaics, finalise.

    Every input is checked before a worker starts or anything is written (Ray itself starts
    while the imagery is checked and the run planned): the bundle (manifest and
    weights header), the output location, the imagery against the bundle's contract, the
    bbox, bands, resolution and tiles.

    Args:
        request: The run's options.
        storage: Storage settings (local paths and ``s3://``).
        bundle: A loaded bundle to use instead of loading ``request.model`` (tests, bench).
        log: Where progress lines go (default: stderr).
        cogs_ready: Done chunks whose COGs an incremental run copied in rather than encoded
            (counted as reused in ``run.json``).
        start_ray: Starts or joins Ray (the CLI's), called once the bundle and the output are
            checked, while the imagery is opened and the run planned in a thread; it may
            return the number of GPUs to use (for ``--gpus`` unset).
        command_start: Epoch seconds when the command started (``seconds.first_tile`` in
            ``run.json`` counts from it; default: from the start of the map stage).

    Returns:
        The run report (also written to ``<out>/run.json``); ``report.failed`` lists chunks
        that could not be mapped.

    Raises:
        InputError: Bad request or input; nothing that looks complete is left behind.
    """
    storage = storage or Storage()
    own_log = log
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.perf_counter()
    contract = bundle.contract if bundle is not None else verify_bundle(request.model,
                                                                        storage)[1]
    check_output(request.out, storage)
    sweep_temp_dirs()  # what killed runs left in this machine's temporary folder

    def plan_run() -> tuple[Catalog, Plan]:
        catalog = open_catalog(request.imagery, storage, asset=request.stac_asset)
        return catalog, make_plan(request, catalog, contract)

    if start_ray is not None and request.executor == "ray":
        # Ray starts (or joins its cluster) while the catalog is opened and the run planned,
        # off the critical path; a bad imagery/bbox error still stops the run before any
        # worker starts or anything is written.
        with ThreadPoolExecutor(1, thread_name_prefix="depthseg-plan") as pool:
            planned = pool.submit(plan_run)
            try:
                gpus = start_ray()
            finally:
                catalog, plan = planned.result()
        if gpus is not None:
            request = replace(request, gpus=gpus)
            plan = replace(plan, precision=resolved_precision(request))
    else:
        catalog, plan = plan_run()
    # The actors run what the plan records (auto resolved for the run's devices).
    request = replace(request, precision=plan.precision)
    catalog.resampling = plan.resampling
    for note in plan.notes:
        log(note)
    report = RunReport(request=request, notes=list(plan.notes))
    inputs = run_inputs(request, catalog, bundle, storage)
    report.inputs = inputs
    if command_start is not None:
        report.timeline["command"] = command_start
    # One run at a time writes an output: the lease is taken before anything is created or
    # compared, so two fresh starts (or resumes) cannot interleave.
    lease = Lease(request.out, storage, stale_s=request.lease_timeout_s).acquire(log)
    report.lease = lease.to_dict()
    try:
        return _map_with_lease(request, storage, bundle, log, cogs_ready, contract, catalog,
                               plan, report, lease, started, own_log is None)
    finally:
        lease.release()


def _map_with_lease(request: MapRequest, storage: Storage, bundle: Bundle | None,
                    log: Callable[[str], None], cogs_ready: Collection[ChunkId],
                    contract: Contract, catalog: Catalog, plan: Plan, report: RunReport,
                    lease: Lease, started: float, to_stderr: bool = False) -> RunReport:
    """:func:`map_region` once the output's lease is held."""
    mosaic = Mosaic(request.out, storage)
    if request.resume:
        partial = remove_partial_files(request.out)
        if partial:
            log(f"removed {partial} partial files a killed run left in {request.out!r}")
    already = _start_output(request, plan, storage, mosaic, mosaic_attrs(request, contract),
                            report.inputs)
    todo = [c for c in plan.chunks if c not in already]
    report.start(plan, already=len(already), todo=len(todo))
    log(f"plan: grid {plan.grid.shape[0]}x{plan.grid.shape[1]} px in {plan.grid.crs} at "
        f"{plan.grid.resolution} m; {len(plan.chunks)} chunks with imagery, {plan.skipped} "
        f"without, {len(already)} already done, {len(todo)} to map")

    factor = products.overview_factor(plan.grid)
    ctx = ChunkContext(grid=plan.grid, tiles=plan.tiles, bands=plan.bands, out=request.out,
                       storage=storage, source_dtype=catalog.dtype, resampling=plan.resampling,
                       scale=plan.scale, dtype=contract.input_dtype,
                       value_range=contract.value_range, contract=contract, factor=factor,
                       created=report.started_at, run_id=lease.run_id,
                       clip=tuple(plan.clip_ring()), probabilities=plan.probabilities,
                       polygons=plan.polygons)
    rows, extent = chunk_rows(catalog, plan, todo)
    report.seconds["plan"] = time.perf_counter() - started
    shown: set[str] = set()
    # A bar with an ETA on a terminal; in a log, a line every 10 s. Failed chunks always get
    # their own line.
    progress = Progress(len(todo), "map", "chunks", log=None if to_stderr else log)

    def on_result(row: dict[str, Any]) -> None:
        report.add_chunk(row)
        check_same_failure(report)
        retried = f", {report.retries} retries" if report.retries else ""
        progress.update(1, status=(f"{len(report.failed)} failed" if report.failed else "ok")
                        + retried)
        if row["error"]:
            progress.write(f"chunk {row['chunk']} FAILED ({row['error']}) (read "
                           f"{row['read_s']:.1f}s, predict {row['predict_s']:.1f}s)")
        if row.get("detail") and row["error"] not in shown:  # a bug: its traceback, once
            shown.add(str(row["error"]))
            progress.write(str(row["detail"]))

    map_start, map_cpu = time.perf_counter(), time.process_time()
    report.timeline["map"] = time.time()
    try:
        if todo:
            if request.executor == "ray":
                _ray_stream(ctx, rows, request, bundle, on_result)
            else:
                predictor = ChunkPredictActor(ctx, request.model, bundle, request.gpus,
                                              request.batch_size, compile_model=request.compile,
                                              precision=request.precision)
                run_local(ctx, rows, predictor, on_result)
        progress.close()
        report.seconds["map"] = time.perf_counter() - map_start
        report.driver_map_cpu_s = time.process_time() - map_cpu
        if lease.lost is not None:
            raise LeaseLostError(f"another run took over the lease on {request.out!r} while "
                                 "this one mapped; it finishes the output (this run wrote "
                                 "no run.json)")
        # Start-up, from the workers' own clocks (the driver sees results a block late):
        # the first chunk's products written, and the first tile on a model.
        timeline = report.timeline
        if "first_chunk_done" in timeline:
            report.seconds["first_chunk"] = timeline["first_chunk_done"] - timeline["map"]
        if "first_tile" in timeline:
            report.seconds["first_tile"] = timeline["first_tile"] - timeline.get(
                "command", timeline["map"])

        final_start = time.perf_counter()
        done = sorted(mosaic.done_chunks() & set(plan.chunks))
        report.valid_pixels = finalize(request.out, storage, plan, mosaic, done, contract,
                                       factor, extent,
                                       report.started_at, report.finalise_steps)
        report.cogs_reused = len(set(cogs_ready) & set(done))
        report.seconds["finalise"] = time.perf_counter() - final_start
        report.done = len(done)
    except LeaseLostError:
        raise  # the output is another run's now: its run.json is not ours to write
    except Exception as err:
        # The run stops: say why in run.json (with the traceback), then let the caller see it.
        report.error = traceback.format_exc().rstrip()
        report.seconds["total"] = time.perf_counter() - started
        recorded = join(request.out, "run.json")
        try:
            storage.write_bytes_atomic(recorded, report.to_json())
        except Exception as again:  # noqa: BLE001 - e.g. the disk that failed is full
            recorded = f"nowhere: run.json could not be written either ({again})"
        phase = "finalising" if "map" in report.seconds else "mapping"
        text = str(err).splitlines()[0] if str(err) else ""
        if isinstance(err, SameFailure):
            stopped = SameFailure(f"{text}; see {recorded}")
            stopped.report = report
            raise stopped from err
        raise RunError(f"the run stopped while {phase}: {type(err).__name__}: {text}; the "
                       f"chunks already done are kept; see {recorded}, fix the cause and "
                       "rerun with --resume") from err
    report.seconds["total"] = time.perf_counter() - started
    storage.write_bytes_atomic(join(request.out, "run.json"), report.to_json())
    log(report.summary())
    return report
