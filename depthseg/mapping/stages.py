"""The per-chunk stages, usable with or without Ray: read -> predict -> write.

A chunk travels as a row: its key, the scenes the planner found under its read window (so a
task never holds the whole catalog) and their acquisition range. Pixels travel once from a
read task to a predict actor (raw uint8/uint16 chunk + halo: 2 bytes x bands x 2176^2 = 38 MB
for a default 4-band uint16 chunk), and the encoded chunk (4 bytes per pixel: 17 MB at
2048 px) once from the actor to a write task, which writes every product of the chunk
(Zarr, overview blocks, COG tiles, STAC Item, then the done marker), so the model's device
never waits on encoding or uploads. Only chunk keys, timings, error strings and valid-pixel
counts leave the write stage.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from depthseg.errors import DepthSegError, LeaseLostError
from depthseg.geo import ChunkId, OutputGrid, PixelWindow, TileSpec, chunk_read_window
from depthseg.io import lease
from depthseg.io.bundle import Bundle, Contract, load_bundle
from depthseg.io.catalog import Scene, composite
from depthseg.io.storage import Storage, retries_so_far, sweep_temp_dirs
from depthseg.mapping import products
from depthseg.mapping.layers import PROBABILITY_NODATA
from depthseg.mapping.predict import ChunkPrediction, ChunkPredictor, pick_device
from depthseg.mapping.request import BATCH_SIZE
from depthseg.mapping.write import LAYERS, Mosaic


@dataclass(frozen=True)
class ChunkContext:
    """What every stage needs to know about the run (small; pickled to Ray workers).

    It holds no catalog: each row carries the scenes the planner found for its chunk.

    Attributes:
        grid: The output grid.
        tiles: Tile size, overlap, halo.
        bands: 1-based imagery bands in model channel order.
        out: Output URI.
        storage: Storage settings.
        source_dtype: The imagery's dtype (what the composite is read in).
        resampling: How scenes off the grid are resampled.
        scale: ``(scale, offset)`` applied to pixels before the model, or None.
        dtype: The dtype the model bundle takes (pixels are converted to it after scaling).
        value_range: The bundle's valid pixel range (scaled pixels are clipped to it).
        contract: The bundle's contract (class names and colours of the COGs and Items).
        factor: The overview level's downsampling factor.
        created: When the run started (the STAC Items' ``created``).
        run_id: The run's lease id (:mod:`depthseg.io.lease`): a chunk is marked done only
            while this run still holds the output's lease; "" writes without checking.
        clip: The bbox ring in the output CRS (:meth:`Plan.clip_ring`): pixels outside it
            are no data in every product; None maps whole chunks.
        probabilities: Also write each chunk's per-class probabilities (a multi-band COG).
        polygons: Also polygonise each chunk's land cover (:mod:`.polygons`).
    """

    grid: OutputGrid
    tiles: TileSpec
    bands: tuple[int, ...]
    out: str
    storage: Storage
    source_dtype: str = "uint8"
    resampling: str = "nearest"
    scale: tuple[float, float] | None = None
    dtype: str | None = None
    value_range: tuple[float, float] = (0.0, 65535.0)
    contract: Contract | None = None
    factor: int = 2
    created: str = ""
    run_id: str = ""
    clip: tuple[tuple[float, float], ...] | None = None
    probabilities: bool = False
    polygons: bool = False

    @property
    def pixel_dtype(self) -> str:
        """The dtype of the pixels handed to the model."""
        return self.dtype or self.source_dtype

    def read_window(self, chunk: ChunkId) -> PixelWindow:
        """The chunk + halo window every stage reads and predicts (computed only here)."""
        return chunk_read_window(self.grid.chunk_window(chunk), self.tiles.halo_px)


_SCENE_FIELDS = dataclasses.fields(Scene)


def scenes_text(scenes: list[Scene]) -> str:
    """A row's scenes as compact JSON (what travels with a chunk key)."""
    # Scene fields are flat (strings, numbers, tuples of them): no deep copy needed.
    return json.dumps([[getattr(s, f.name) for f in _SCENE_FIELDS] for s in scenes],
                      separators=(",", ":"))


def scenes_from_text(text: str) -> list[Scene]:
    """Inverse of :func:`scenes_text`."""
    names = [f.name for f in _SCENE_FIELDS]
    scenes = []
    for values in json.loads(text):
        fields: dict[str, Any] = {name: tuple(v) if isinstance(v, list) else v
                                  for name, v in zip(names, values, strict=True)}
        scenes.append(Scene(**fields))
    return scenes


def read_chunk(ctx: ChunkContext, chunk: ChunkId, scenes: list[Scene],
               ) -> tuple[np.ndarray, np.ndarray]:
    """Chunk + halo pixels (band, row, col) and valid mask (row, col), composited, once."""
    window = ctx.read_window(chunk)
    pixels, valid = composite(scenes, ctx.storage, ctx.grid.crs,
                              ctx.grid.window_transform(window), window.height, window.width,
                              ctx.bands, ctx.resampling, ctx.source_dtype)
    if ctx.scale is not None:
        scale, offset = ctx.scale
        scaled = pixels.astype(np.float32) * np.float32(scale) + np.float32(offset)
        low, high = ctx.value_range
        pixels = np.clip(np.rint(scaled), low, high).astype(ctx.pixel_dtype)
        pixels[:, ~valid] = 0
    if ctx.clip is not None:
        # Outside the bbox the pixels stay as context for the tiles, but nothing is mapped
        # there (and tiles that would only map there are not computed).
        valid &= inside_ring(ctx.clip, ctx.grid.window_transform(window), window.height,
                             window.width)
    return pixels, valid


def inside_ring(ring: tuple[tuple[float, float], ...], transform: Any, height: int,
                width: int) -> np.ndarray:
    """(height, width) bool: pixels whose centre lies inside ``ring`` (grid CRS)."""
    import shapely
    from rasterio.features import geometry_mask

    polygon = shapely.Polygon(ring)
    left, top = transform.c, transform.f
    box = shapely.box(left, top + transform.e * height, left + transform.a * width, top)
    if polygon.contains(box):
        return np.ones((height, width), dtype=bool)
    if not polygon.intersects(box):
        return np.zeros((height, width), dtype=bool)
    return geometry_mask([polygon], out_shape=(height, width), transform=transform,
                         invert=True)


def write_products(ctx: ChunkContext, mosaic: Mosaic, chunk: ChunkId,
                   prediction: ChunkPrediction, acquired: tuple[str, str] | None,
                   cogs: bool = True) -> int:
    """Write everything one chunk produces, done marker last; return its mapped pixels.

    See :mod:`depthseg.mapping.products` for the list. ``mosaic`` is the run's, opened once
    per batch (opening it reads the group's metadata).

    ``cogs=False`` when the chunk's COG tiles are already in place (an incremental run
    copied them from the run it carries the chunk from).
    """
    assert ctx.contract is not None
    blocks = products.overview_blocks(prediction, ctx.factor)
    mosaic.write_layers(ctx.grid, chunk, prediction, blocks, ctx.factor)
    if cogs:
        products.write_cogs(ctx.out, ctx.storage, ctx.grid, chunk, prediction, ctx.contract)
    if ctx.polygons:
        from depthseg.mapping import polygons

        polygons.write_chunk(ctx.out, ctx.storage, ctx.grid, chunk, prediction.landcover,
                             prediction.confidence)
    item = products.stac_item(ctx.grid, chunk, ctx.contract, acquired, ctx.created,
                              probabilities=prediction.probabilities is not None)
    ctx.storage.write_bytes_atomic(products.item_uri(ctx.out, chunk),
                                   json.dumps(item, indent=2).encode())
    if ctx.run_id and not lease.holds(ctx.out, ctx.storage, ctx.run_id):
        # A worker that outlived its run (killed driver) or a run that lost its lease: the
        # run holding the output now maps this chunk itself.
        raise LeaseLostError(f"run {ctx.run_id[:8]} no longer holds the lease on "
                             f"{ctx.out!r}; chunk {chunk.key} left for the run that does")
    mosaic.mark_done(chunk, ctx.run_id)
    return int(blocks["valid_count"].sum())


def _error_text(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text if isinstance(err, DepthSegError) else f"{type(err).__name__}: {text}"


def _error_detail(err: BaseException) -> str:
    """The traceback of an unexpected error ("" for expected ones: their line says it all)."""
    if isinstance(err, DepthSegError):
        return ""
    return "".join(traceback.format_exception(err)).rstrip()


def read_batch(batch: dict[str, np.ndarray], ctx: ChunkContext) -> dict[str, Any]:
    """Ray Data read task: chunk rows (key, scenes, acquired) -> pixels + valid mask."""
    keys = [str(k) for k in batch["chunk"]]
    window = ctx.read_window(ChunkId.parse(keys[0]))
    shape = (len(ctx.bands), window.height, window.width)
    pixels, valid, errors, details, seconds, retries = [], [], [], [], [], []
    for key, text in zip(keys, batch["scenes"], strict=True):
        start, retried = time.perf_counter(), retries_so_far()
        try:
            chunk_pixels, chunk_valid = read_chunk(ctx, ChunkId.parse(key),
                                                   scenes_from_text(str(text)))
            errors.append("")
            details.append("")
        except Exception as err:  # noqa: BLE001 - a bad scene fails its chunk, not the run
            chunk_pixels = np.zeros(shape, dtype=ctx.pixel_dtype)
            chunk_valid = np.zeros(shape[1:], dtype=bool)
            errors.append(_error_text(err))
            details.append(_error_detail(err))
        pixels.append(chunk_pixels)
        valid.append(chunk_valid)
        seconds.append(time.perf_counter() - start)
        retries.append(retries_so_far() - retried)
    return {"chunk": np.array(keys), "acquired": np.array([str(a) for a in batch["acquired"]]),
            "pixels": np.stack(pixels), "valid": np.stack(valid), "error": np.array(errors),
            "detail": np.array(details), "read_s": np.array(seconds),
            "retries": np.array(retries)}


class ChunkPredictActor:
    """Predict one chunk at a time; built once per actor (model loaded once).

    Returns the chunk's encoded layers (uint8, uint8, float16: 4 bytes per pixel) for the
    write stage, so the model's device never waits on Zarr encoding or object-store uploads
    (measured on the CPU box: ~25 ms per megapixel to write, against ~2 ms per megapixel of
    ViT-S model time on an H100).
    """

    def __init__(self, ctx: ChunkContext, model_uri: str | None = None,
                 bundle: Bundle | None = None, gpus: int = 0, batch_size: int = BATCH_SIZE,
                 cpu_threads: int | None = None, compile_model: bool = False,
                 write: bool = False, precision: str = "auto") -> None:
        """Load the model onto this worker's device.

        Args:
            ctx: The run context.
            model_uri: Bundle URI (loaded here, on the worker).
            bundle: An already-loaded bundle (tests, benchmarks) instead of ``model_uri``.
            gpus: > 0 to run on CUDA when visible.
            batch_size: Tiles per forward pass.
            cpu_threads: Torch threads when the model runs on the CPU. Ray starts a worker
                with ``OMP_NUM_THREADS`` = its ``num_cpus`` (1), which would leave a CPU
                actor on one core while the read tasks mostly wait on I/O.
            compile_model: ``torch.compile`` the model (see :class:`ChunkPredictor`).
            write: Also write each chunk here and return :func:`write_batch`'s rows: for
                CPU-only runs, where the model shares the cores with the writes anyway and a
                separate stage only adds a hop through the object store.
            precision: The model's arithmetic (:data:`~depthseg.mapping.request.PRECISIONS`).
        """
        sweep_temp_dirs()  # COG temp folders of killed workers on this node
        if bundle is None:
            assert model_uri is not None
            bundle = load_bundle(model_uri, ctx.storage)
        self.ctx = ctx
        device = pick_device(gpus)
        if device.type == "cpu" and cpu_threads:
            torch.set_num_threads(min(cpu_threads, os.cpu_count() or 1))
        self.predictor = ChunkPredictor(bundle.model, bundle.contract, ctx.tiles,
                                        batch_size=batch_size, device=device,
                                        compile_model=compile_model, precision=precision)
        self.write = write

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Ray Data actor call: read rows -> predicted rows (encoded layers, no input pixels)."""
        size = self.ctx.grid.chunk_size
        out: dict[str, list[Any]] = {name: [] for name in (
            "chunk", "acquired", "error", "detail", "read_s", "predict_s", "tiles", "tile_px",
            "first_tile_at", "retries", *LAYERS)}
        for i, key in enumerate(batch["chunk"]):
            error, detail, seconds = str(batch["error"][i]), str(batch["detail"][i]), 0.0
            prediction, tiles, tile_px = None, 0, 0
            if not error:
                start = time.perf_counter()
                try:
                    prediction = self.predictor.predict_chunk(
                        batch["pixels"][i], batch["valid"][i],
                        probabilities=self.ctx.probabilities)
                    tiles = self.predictor.last_chunk_tiles
                    tile_px = self.predictor.last_chunk_tile_px
                except Exception as err:  # noqa: BLE001 - fail the chunk, keep the run
                    error, detail = _error_text(err), _error_detail(err)
                seconds = time.perf_counter() - start
            for name, spec in LAYERS.items():
                out[name].append(getattr(prediction, name) if prediction is not None else
                                 np.full((size, size), spec["fill_value"], spec["dtype"]))
            if self.ctx.probabilities:
                classes = len(self.predictor.contract.class_names)
                out.setdefault("probabilities", []).append(
                    prediction.probabilities if prediction is not None
                    and prediction.probabilities is not None
                    else np.full((classes, size, size), PROBABILITY_NODATA, np.uint8))
            for name, value in (("chunk", str(key)), ("acquired", str(batch["acquired"][i])),
                                ("error", error), ("detail", detail),
                                ("read_s", float(batch["read_s"][i])), ("predict_s", seconds),
                                ("tiles", tiles), ("tile_px", tile_px),
                                ("retries", int(batch["retries"][i])),
                                ("first_tile_at", self.predictor.first_forward_at or 0.0)):
                out[name].append(value)
        rows = {name: np.stack(v) if name in LAYERS or name == "probabilities" else np.array(v)
                for name, v in out.items()}
        return write_batch(rows, self.ctx) if self.write else rows


def _acquired(text: str) -> tuple[str, str] | None:
    start, _, end = text.partition("|")
    return (start, end) if start and end else None


def write_batch(batch: dict[str, np.ndarray], ctx: ChunkContext) -> dict[str, np.ndarray]:
    """Ray Data write task: predicted rows -> every product of each chunk -> result rows.

    Only chunk keys, errors, timings, tile and valid-pixel counts leave this stage
    (``done_at``: epoch seconds when the chunk's products were written).
    """
    mosaic = Mosaic(ctx.out, ctx.storage)
    results: dict[str, list[Any]] = {name: [] for name in (
        "chunk", "error", "detail", "read_s", "predict_s", "write_s", "valid", "tiles",
        "tile_px", "first_tile_at", "done_at", "retries")}
    for i, key in enumerate(batch["chunk"]):
        error, detail, seconds, valid = str(batch["error"][i]), str(batch["detail"][i]), 0.0, 0
        retried = retries_so_far()
        if not error:
            start = time.perf_counter()
            try:
                valid = write_products(ctx, mosaic, ChunkId.parse(str(key)), ChunkPrediction(
                    **{name: batch[name][i] for name in LAYERS},
                    probabilities=batch["probabilities"][i] if "probabilities" in batch
                    else None), _acquired(str(batch["acquired"][i])))
            except Exception as err:  # noqa: BLE001 - fail the chunk, keep the run
                error, detail = _error_text(err), _error_detail(err)
            seconds = time.perf_counter() - start
        for name, value in (("chunk", str(key)), ("error", error), ("detail", detail),
                            ("read_s", float(batch["read_s"][i])),
                            ("predict_s", float(batch["predict_s"][i])), ("write_s", seconds),
                            ("valid", valid), ("tiles", int(batch["tiles"][i])),
                            ("tile_px", int(batch["tile_px"][i])),
                            ("first_tile_at", float(batch["first_tile_at"][i])),
                            ("done_at", time.time()),
                            ("retries", int(batch["retries"][i]) + retries_so_far() - retried)):
            results[name].append(value)
    return {name: np.array(values) for name, values in results.items()}


def run_local(ctx: ChunkContext, rows: list[dict[str, str]], predictor: ChunkPredictActor,
              on_result: Callable[[dict[str, Any]], None]) -> None:
    """The same stages in one process, as a pipeline: read ahead, predict, write behind.

    While the model predicts a chunk, one thread reads the next chunk and another writes the
    previous one (GDAL, Zarr and COG encoding release the GIL), so the model rarely waits on
    storage: at most three chunks are held at once. Results reach ``on_result`` in order.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    def read(row: dict[str, str]) -> dict[str, Any]:
        return read_batch({name: np.array([value]) for name, value in row.items()}, ctx)

    def write(predicted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return predicted if predictor.write else write_batch(predicted, ctx)

    def report(written: Future[dict[str, np.ndarray]] | None) -> None:
        if written is not None:
            on_result({name: values[0] for name, values in written.result().items()})

    with ThreadPoolExecutor(1, thread_name_prefix="depthseg-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="depthseg-write") as writer:
        ahead = [reader.submit(read, row) for row in rows[:1]]
        written: Future[dict[str, np.ndarray]] | None = None
        for index in range(len(rows)):
            pixels = ahead.pop().result()
            if index + 1 < len(rows):
                ahead.append(reader.submit(read, rows[index + 1]))
            predicted = predictor(pixels)
            del pixels
            report(written)  # the previous chunk's write, done while this one predicted
            written = writer.submit(write, predicted)
        report(written)
