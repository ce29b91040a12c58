"""The Zarr mosaic of a run and its per-chunk done markers.

Layout of ``<out>/mosaic.zarr`` (Zarr format 3 with consolidated metadata written when a run
finishes, readable by ``xarray.open_zarr``; ``.rio.crs`` works through the CF ``spatial_ref``
grid mapping)::

    landcover   (y, x) uint8    255 = no data
    confidence  (y, x) uint8    0 = no data
    depth       (y, x) float16  NaN = no data
    x, y        pixel-centre coordinates;  spatial_ref  CF grid mapping (crs_wkt, GeoTransform)
    levels/<F>/ the overview level, downsampled F times (same layout, plus
                valid_count (y, x) uint32: mapped pixels under each block); the root's
                ``multiscales`` attribute lists the levels

Zarr chunks equal mapping chunks, and grids start on whole chunks, so every mapping chunk is
exactly one Zarr chunk per array (and one chunk of each level array): one writer per chunk,
and rewriting a chunk is idempotent. ``<out>/done/<chunk key>`` is written after all of the
chunk's outputs are (see :mod:`depthseg.mapping.products`).
"""

from __future__ import annotations

import json
import warnings
from typing import Any, cast

import numpy as np
import zarr
from affine import Affine
from pyproj import CRS as ProjCRS

from depthseg.geo import ChunkId, OutputGrid
from depthseg.io.storage import Storage, join, open_zarr_store, with_retries
from depthseg.mapping.layers import CONFIDENCE_NODATA, LANDCOVER_NODATA, ChunkPrediction

MOSAIC = "mosaic.zarr"
DONE = "done"
LAYERS: dict[str, dict[str, Any]] = {
    "landcover": {"dtype": "uint8", "fill_value": LANDCOVER_NODATA},
    "confidence": {"dtype": "uint8", "fill_value": CONFIDENCE_NODATA},
    "depth": {"dtype": "float16", "fill_value": np.nan},
}


def _cf_grid_mapping(crs_text: str, a: Affine) -> dict[str, Any]:
    crs = ProjCRS.from_user_input(crs_text)
    attrs = crs.to_cf()
    attrs.update({"crs_wkt": crs.to_wkt(), "spatial_ref": crs.to_wkt(),
                  "GeoTransform": " ".join(repr(v) for v in (a.c, a.a, a.b, a.f, a.d, a.e))})
    return attrs


def _dims(zarr_format: int, names: list[str]) -> dict[str, Any]:
    """Dimension names as each Zarr format holds them (v2: xarray's ``_ARRAY_DIMENSIONS``)."""
    if zarr_format == 2:
        return {"attributes": {"_ARRAY_DIMENSIONS": names}}
    return {"dimension_names": names, "attributes": {}}


def _array(group: Any, name: str, zarr_format: int, dims: list[str],
           attributes: dict[str, Any], **kwargs: Any) -> Any:
    spec = _dims(zarr_format, dims)
    if zarr_format == 2:
        # GDAL (>= 3.4) reads Zarr v2 with zstd; its 3.10 Zarr v3 reader lacks the "bytes"
        # codec zarr-python writes, hence the v2 option.
        from numcodecs import Zstd

        kwargs["compressors"] = [Zstd(level=3)]
    return group.create_array(name, attributes={**spec.pop("attributes"), **attributes},
                              **spec, **kwargs)


def _layers(group: Any, shape: tuple[int, int], chunk: int, res: float, transform: Affine,
            grid: OutputGrid, valid_count: bool = False, zarr_format: int = 3) -> None:
    """The layer arrays, ``spatial_ref`` and 1-D coordinates of one resolution level."""
    specs = dict(LAYERS)
    if valid_count:
        specs["valid_count"] = {"dtype": "uint32", "fill_value": 0}
    # GDAL's Zarr driver reads the CRS from ``_CRS``, the transform from x/y.
    gdal_crs = {"_CRS": {"wkt": ProjCRS.from_user_input(grid.crs).to_wkt()}}
    for name, spec in specs.items():
        _array(group, name, zarr_format, ["y", "x"],
               {"grid_mapping": "spatial_ref", "coordinates": "spatial_ref",
                "nodata": None if name in ("depth", "valid_count") else spec["fill_value"],
                **gdal_crs},
               shape=shape, chunks=(chunk, chunk), dtype=spec["dtype"],
               fill_value=spec["fill_value"])
    spatial_ref = _array(group, "spatial_ref", zarr_format, [],
                         _cf_grid_mapping(grid.crs, transform), shape=(), dtype="int64",
                         fill_value=0)
    spatial_ref[()] = 0
    # 1-D coordinate vectors are grid-width long, not region-sized 2-D arrays.
    for axis, size, start, step in (("x", shape[1], transform.c, res),
                                    ("y", shape[0], transform.f, -res)):
        coord = _array(group, axis, zarr_format, [axis],
                       {"units": "metre", "standard_name": f"projection_{axis}_coordinate"},
                       shape=(size,), chunks=(size,), dtype="float64", fill_value=0.0)
        coord[:] = start + step * (np.arange(size) + 0.5)


class Mosaic:
    """Reader/writer of one run's Zarr mosaic and done markers."""

    def __init__(self, out: str, storage: Storage) -> None:
        """Point at ``<out>/mosaic.zarr`` (nothing is opened yet)."""
        self.out = out
        self.uri = join(out, MOSAIC)
        self.storage = storage
        self._group: Any = None

    def create(self, grid: OutputGrid, attrs: dict[str, Any], factor: int,
               zarr_format: int = 3) -> None:
        """Write the empty arrays, coordinates and the overview level ``factor``.

        Metadata only; chunks stay absent. ``zarr_format`` 2 writes what GDAL's Zarr driver
        reads too (zstd, ``_ARRAY_DIMENSIONS``); 3 (default) what zarr-python 3 and xarray
        read.
        """
        level = f"levels/{factor}"
        attrs = {**attrs, "multiscales": [{"name": "mosaic", "datasets": [
            {"path": ".", "factor": 1}, {"path": level, "factor": factor}]}]}
        group = zarr.open_group(open_zarr_store(self.uri, self.storage), mode="w",
                                zarr_format=cast(Any, zarr_format), attributes=attrs)
        _layers(group, grid.shape, grid.chunk_size, grid.resolution, grid.transform, grid,
                zarr_format=zarr_format)
        sub = group.create_group(level, attributes={"factor": factor})
        res = grid.resolution * factor
        transform = grid.transform * Affine.scale(factor)
        _layers(sub, (grid.height // factor, grid.width // factor), grid.chunk_size // factor,
                res, transform, grid, valid_count=True, zarr_format=zarr_format)
        self._group = group
        self.factor = factor

    @property
    def group(self) -> Any:
        """The open Zarr group (opened read/write on first use)."""
        if self._group is None:
            self._group = zarr.open_group(open_zarr_store(self.uri, self.storage), mode="r+")
        return self._group

    def level(self, factor: int) -> Any:
        """The overview level group ``levels/<factor>``."""
        return self.group[f"levels/{factor}"]

    def write_layers(self, grid: OutputGrid, chunk: ChunkId, prediction: ChunkPrediction,
                     blocks: dict[str, np.ndarray] | None = None, factor: int = 0) -> None:
        """Write the chunk's three layers and, with ``blocks``, its overview-level blocks."""
        window = grid.chunk_window(chunk)
        targets = [(self.group[name], window, getattr(prediction, name)) for name in LAYERS]
        if blocks is not None:
            level = self.level(factor)
            small = type(window)(window.row_off // factor, window.col_off // factor,
                                 window.height // factor, window.width // factor)
            targets += [(level[name], small, data) for name, data in blocks.items()]
        for array, win, data in targets:
            rows = slice(win.row_off, win.row_off + win.height)
            cols = slice(win.col_off, win.col_off + win.width)

            def write(array: Any = array, data: np.ndarray = data, rows: slice = rows,
                      cols: slice = cols) -> None:
                array[rows, cols] = data

            with_retries(write)

    def mark_done(self, chunk: ChunkId, run_id: str = "") -> None:
        """The done marker: written after every output of the chunk.

        It names the chunk and the run (lease id) that wrote it.
        """
        self.storage.write_bytes_atomic(self.done_uri(chunk), json.dumps(
            {"chunk": chunk.key, "run_id": run_id}).encode())

    def write_chunk(self, grid: OutputGrid, chunk: ChunkId, prediction: ChunkPrediction) -> None:
        """Write the chunk's three layers, then its done marker (no other products)."""
        self.write_layers(grid, chunk, prediction)
        self.mark_done(chunk)

    def read_chunk(self, grid: OutputGrid, chunk: ChunkId) -> ChunkPrediction:
        """Read back one chunk's layers."""
        window = grid.chunk_window(chunk)
        rows = slice(window.row_off, window.row_off + window.height)
        cols = slice(window.col_off, window.col_off + window.width)
        arrays: dict[str, np.ndarray] = {}
        for name in LAYERS:
            array = self.group[name]

            def read(array: Any = array) -> np.ndarray:
                return np.asarray(array[rows, cols])

            arrays[name] = with_retries(read)
        return ChunkPrediction(**arrays)

    def consolidate(self) -> None:
        """Write consolidated metadata, so ``xr.open_zarr(uri)`` opens it in one read.

        Only metadata is consolidated (chunks written later, e.g. on resume, need no update).
        """
        with warnings.catch_warnings():
            # Zarr 3 notes that consolidated metadata is not in the v3 spec yet; zarr-python
            # and xarray read it, and other readers fall back to the per-array metadata.
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            zarr_format = self.group.metadata.zarr_format
            with_retries(lambda: zarr.consolidate_metadata(
                open_zarr_store(self.uri, self.storage), zarr_format=zarr_format))

    def done_uri(self, chunk: ChunkId) -> str:
        """Where the chunk's done marker lives."""
        return join(self.out, DONE, chunk.key)

    def done_chunks(self) -> set[ChunkId]:
        """Chunks with a done marker."""
        fs, path = self.storage.fs(join(self.out, DONE))
        # s3fs caches listings per filesystem instance; markers written by other processes
        # (the Ray actors) since the last listing would be missed.
        fs.invalidate_cache(path)
        if not with_retries(lambda: fs.exists(path)):
            return set()
        names = with_retries(lambda: fs.ls(path, detail=False))
        keys = (str(n).rstrip("/").rsplit("/", 1)[-1] for n in names)
        return {ChunkId.parse(k) for k in keys if ".tmp-" not in k}
