"""What one chunk produces, made where the chunk is written (a write task or the predict actor).

For each chunk, in this order (all idempotent: a rewrite gives the same bytes):

1. its three Zarr chunks (``mosaic.zarr``: land cover, confidence, depth);
2. its block of the overview level (``mosaic.zarr/levels/<F>``): the chunk downsampled by
   the run's overview factor ``F`` (mode for land cover, mean of valid pixels for confidence
   and depth) and the count of valid pixels under each block, from which the run's area is
   summed exactly without reading the mosaic again;
3. its three COG tiles (``cog/<layer>/<chunk>.tif``);
4. with ``--polygons``, its polygons (``vector/chunks/<chunk>.parquet``, see
   :mod:`depthseg.mapping.polygons`);
5. its STAC Item (``stac/items/<chunk>.json``);
6. the done marker, last.

Nothing here runs per chunk on the driver: the driver only assembles per-run files from the
overview level and the chunk list (:mod:`depthseg.mapping.finalize`).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import numpy as np
import pystac
from pyproj import Transformer
from rasterio.io import MemoryFile
from rasterio.shutil import copy as rio_copy
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from depthseg.geo import ChunkId, OutputGrid
from depthseg.io.bundle import Contract
from depthseg.io.storage import Storage, join, temp_dir
from depthseg.mapping.layers import (
    CONFIDENCE_NODATA,
    LANDCOVER_NODATA,
    PROBABILITY_NODATA,
    PROBABILITY_SCALE,
    ChunkPrediction,
)

#: The overview COG of a layer stays at most this many pixels on its long side.
OVERVIEW_MAX_PX = 8192
RESAMPLING = {"landcover": "mode", "confidence": "average", "depth": "average"}
NODATA: dict[str, float] = {"landcover": LANDCOVER_NODATA, "confidence": CONFIDENCE_NODATA,
                            "depth": float("nan")}
COG_DTYPE = {"landcover": "uint8", "confidence": "uint8", "depth": "float32"}
COLLECTION_ID = "depthseg-landcover"
# Extension versions are pinned: tests/data/stac_schemas holds these exact schemas.
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
ASSET_TEXT = {
    "landcover": ("Land cover", "Class per pixel (classification:classes); 255 = no data."),
    "confidence": ("Confidence", "round(255 x the highest class probability); 0 = no data."),
    "depth": ("Relative depth", "Relative depth in [0, 1] (float16 in the mosaic); NaN = no data."),
}


def asset_text(layer: str, contract: Contract) -> tuple[str, str]:
    """(title, description) of a layer's STAC asset; depth says what it was trained on."""
    from depthseg.mapping.styles import DEPTH_SOURCES

    title, description = ASSET_TEXT[layer]
    if layer == "depth" and contract.depth_source in DEPTH_SOURCES:
        description = f"{DEPTH_SOURCES[contract.depth_source].capitalize()}. {description}"
    return title, description


def overview_factor(grid: OutputGrid) -> int:
    """The overview level's downsampling factor.

    A power of two >= 2 that brings the grid's long side to <= :data:`OVERVIEW_MAX_PX`
    (capped at the chunk size, which it divides).
    """
    factor = 2
    while max(grid.shape) / factor > OVERVIEW_MAX_PX and factor < grid.chunk_size:
        factor *= 2
    while grid.chunk_size % factor:
        factor //= 2
    return max(factor, 1)


# ------------------------------------------------------------------------------------------
# Overview blocks


@lru_cache(maxsize=8)
def _block_ids(shape: tuple[int, int], factor: int) -> np.ndarray:
    """(rows * cols,) index of each pixel's overview block, row-major (cached per shape)."""
    rows, cols = shape
    block_rows = np.arange(rows, dtype=np.int64) // factor
    block_cols = np.arange(cols, dtype=np.int64) // factor
    return (block_rows[:, None] * (cols // factor) + block_cols[None, :]).ravel()


def downsample(layer: str, data: np.ndarray, factor: int) -> np.ndarray:
    """One layer downsampled by ``factor`` (which divides its shape), no-data aware.

    Land cover: the most frequent class of each block (ties: the lowest class id), 255 where
    the block has no valid pixel. Confidence and depth: the mean of the block's valid pixels
    (confidence rounded half up to uint8), no-data where it has none. One pass over the
    pixels per layer.
    """
    shape = (data.shape[0] // factor, data.shape[1] // factor)
    if layer == "landcover":
        blocks = shape[0] * shape[1]
        ids = _block_ids(data.shape, factor)
        flat = data.ravel()
        valid = flat != LANDCOVER_NODATA
        whole = bool(valid.all())  # the usual chunk: no boolean indexing needed
        classes = int(flat.max() if whole else flat[valid].max(initial=0)) + 1
        keys = ids * classes + flat
        counts = np.bincount(keys if whole else keys[valid], minlength=blocks * classes)
        counts = counts.reshape(blocks, classes)
        mode = counts.argmax(axis=1).astype(np.uint8)
        return np.where(counts.sum(axis=1) > 0, mode, LANDCOVER_NODATA).reshape(shape).astype(
            np.uint8)
    # Means over (rows / f, f, cols / f, f) views: exact sums (uint8 in int64, float16 in
    # float64), equal to the bincounts and about half their time.
    grouped = (shape[0], factor, shape[1], factor)
    if layer == "confidence":  # no data is 0, so it adds nothing to the sum
        count = (data != CONFIDENCE_NODATA).reshape(grouped).sum(axis=(1, 3))
        total = data.reshape(grouped).sum(axis=(1, 3), dtype=np.int64)
        mean = np.floor(total / np.maximum(count, 1) + 0.5)
        return np.where(count > 0, mean, CONFIDENCE_NODATA).astype(np.uint8)
    valid = np.isfinite(data)
    count = valid.reshape(grouped).sum(axis=(1, 3))
    total = np.where(valid, data, 0).reshape(grouped).sum(axis=(1, 3), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float16)


def valid_counts(landcover: np.ndarray, factor: int) -> np.ndarray:
    """Valid (mapped) pixels under each block of the overview level."""
    shape = (landcover.shape[0] // factor, landcover.shape[1] // factor)
    ids = _block_ids(landcover.shape, factor)
    valid = landcover.ravel() != LANDCOVER_NODATA
    return np.bincount(ids, weights=valid, minlength=shape[0] * shape[1]).reshape(
        shape).astype(np.uint32)


def overview_blocks(prediction: ChunkPrediction, factor: int) -> dict[str, np.ndarray]:
    """The chunk's blocks of every overview array (layers + ``valid_count``)."""
    blocks = {layer: downsample(layer, getattr(prediction, layer), factor)
              for layer in RESAMPLING}
    blocks["valid_count"] = valid_counts(prediction.landcover, factor)
    return blocks


# ------------------------------------------------------------------------------------------
# COG tiles


def cog_metadata(layer: str, contract: Contract, chunk: ChunkId | None,
                 ) -> tuple[dict[str, Any], dict[int, tuple[int, int, int, int]] | None]:
    """GeoTIFF tags and colour table of a layer's COG (class names and colours for land cover)."""
    tags: dict[str, Any] = {"layer": layer}
    if chunk is not None:
        tags["chunk"] = chunk.key
    colormap = None
    if layer == "landcover":
        tags["class_names"] = json.dumps(list(contract.class_names))
        tags.update({f"CLASS_{i}": name for i, name in enumerate(contract.class_names)})
        colormap = {i: (*rgb, 255) for i, rgb in enumerate(contract.palette)}
        colormap[LANDCOVER_NODATA] = (0, 0, 0, 0)
    return tags, colormap


def translate_cog(src: Any, layer: str, contract: Contract, chunk: ChunkId | None,
                  dst_path: Path, block: int, in_memory: bool = True) -> None:
    """An open dataset -> a COG (ZSTD, internal overviews with the layer's resampling)."""
    tags, colormap = cog_metadata(layer, contract, chunk)
    # ZSTD level 3: half the CPU of GDAL's default level 9 for about 3 % more bytes
    # (measured on chunk COGs); the write stage's CPU is what a province run must provision.
    cog_profile = dict(cog_profiles.get("deflate"), compress="ZSTD", zstd_level=3,
                       blockxsize=block, blockysize=block)
    with warnings.catch_warnings():
        # rio-cogeo warns that ZSTD needs a recent libtiff: GDAL >= 3.1 readers all have it.
        warnings.filterwarnings("ignore", "Non-standard compression", UserWarning)
        cog_translate(src, str(dst_path), cog_profile,
                      overview_resampling=cast(Any, RESAMPLING[layer]), colormap=colormap,
                      additional_cog_metadata=tags, quiet=True, in_memory=in_memory,
                      config={"GDAL_NUM_THREADS": "1"})


def copy_to_cog(src: Any, dst_path: Path, block: int, resampling: str) -> None:
    """An open (in-memory) dataset -> a COG by GDAL's COG driver, in one pass.

    Tags, colour table, band descriptions, scales and no-data come from ``src``. ZSTD level
    3 and internal overviews resampled with ``resampling``, as :func:`translate_cog`; for
    the chunk tiles (three per chunk) this takes about 0.2 s where rio-cogeo's translate,
    which first writes the whole file once more, took 0.33-0.37 s (1792 px, 2-core Xeon).
    """
    rio_copy(src, str(dst_path), driver="COG", COMPRESS="ZSTD", LEVEL=3, BLOCKSIZE=block,
             OVERVIEW_RESAMPLING=resampling.upper(), NUM_THREADS=1)


def encode_cog(data: np.ndarray, layer: str, grid: OutputGrid, chunk: ChunkId,
               contract: Contract, dst_path: Path) -> None:
    """Write one chunk's layer as a COG (ZSTD, internal overviews, class names, colours)."""
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1,
               "dtype": COG_DTYPE[layer], "crs": grid.crs,
               "transform": grid.chunk_transform(chunk), "nodata": NODATA[layer]}
    tags, colormap = cog_metadata(layer, contract, chunk)
    with MemoryFile() as memfile:
        with memfile.open(**profile) as mem:
            mem.write(data.astype(COG_DTYPE[layer]), 1)
            mem.set_band_description(1, layer)
            # As rio-cogeo records it (the overview COGs still go through rio-cogeo).
            mem.update_tags(**tags, OVERVIEW_RESAMPLING=RESAMPLING[layer].upper())
            if colormap is not None:
                mem.write_colormap(1, colormap)
        with memfile.open() as src:
            # TIFF blocks are multiples of 16 px; a block may reach past a small chunk.
            copy_to_cog(src, dst_path, min(512, -(-grid.chunk_size // 16) * 16),
                        RESAMPLING[layer])


def cog_uri(out: str, layer: str, chunk: ChunkId) -> str:
    """Where a chunk's COG tile of ``layer`` lives."""
    return join(out, "cog", layer, f"{chunk.key}.tif")


def write_cogs(out: str, storage: Storage, grid: OutputGrid, chunk: ChunkId,
               prediction: ChunkPrediction, contract: Contract) -> None:
    """Encode the chunk's three COG tiles locally, then upload/rename each whole."""
    with temp_dir("cog") as tmp, storage.gdal_env():
        for layer in RESAMPLING:
            local = tmp / f"{layer}.tif"
            encode_cog(getattr(prediction, layer), layer, grid, chunk, contract, local)
            storage.upload(local, cog_uri(out, layer, chunk))
        if prediction.probabilities is not None:
            local = tmp / "probabilities.tif"
            encode_probabilities(prediction.probabilities, grid, chunk, contract, local)
            storage.upload(local, cog_uri(out, PROBABILITIES, chunk))


#: The per-class probability COGs (``--probabilities``): one band per class.
PROBABILITIES = "probabilities"


def encode_probabilities(data: np.ndarray, grid: OutputGrid, chunk: ChunkId,
                         contract: Contract, dst_path: Path) -> None:
    """One chunk's class probabilities as a uint8 COG, one band per class (named after it).

    Values are ``round(254 x p)`` (scale 1/254 in the band metadata); 255 is no data.
    """
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2],
               "count": data.shape[0], "dtype": "uint8", "crs": grid.crs,
               "transform": grid.chunk_transform(chunk), "nodata": PROBABILITY_NODATA}
    with MemoryFile() as memfile:
        with memfile.open(**profile) as mem:
            mem.write(data)
            for band, name in enumerate(contract.class_names, start=1):
                mem.set_band_description(band, name)
            mem.scales = (1 / PROBABILITY_SCALE,) * data.shape[0]
            mem.offsets = (0.0,) * data.shape[0]
            mem.update_tags(layer=PROBABILITIES, chunk=chunk.key, OVERVIEW_RESAMPLING="AVERAGE",
                            class_names=json.dumps(list(contract.class_names)))
        with memfile.open() as src:
            copy_to_cog(src, dst_path, min(512, -(-grid.chunk_size // 16) * 16), "average")


# ------------------------------------------------------------------------------------------
# STAC


def lonlat_bounds(grid: OutputGrid, bounds: tuple[float, float, float, float]) -> list[float]:
    """Bounds in the grid CRS -> (min lon, min lat, max lon, max lat), edges densified."""
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    return [round(v, 9) for v in to_lonlat.transform_bounds(*bounds, densify_pts=21)]


def classes(contract: Contract) -> list[dict[str, Any]]:
    """Classification v2 classes: ``name`` must match ``[0-9A-Za-z-_]+``, ``title`` is free."""
    out: list[dict[str, Any]] = [
        {"value": i, "name": re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or f"class_{i}",
         "title": name, "color_hint": "{:02X}{:02X}{:02X}".format(*rgb)}
        for i, (name, rgb) in enumerate(zip(contract.class_names, contract.palette, strict=True))]
    out.append({"value": int(LANDCOVER_NODATA), "name": "no_data", "title": "No data",
                "nodata": True})
    return out


def asset_fields(layer: str, contract: Contract) -> dict[str, Any]:
    """Fields of a layer's single-band asset.

    STAC 1.1 common ``data_type`` and ``nodata`` go on the asset itself (the STAC best
    practice for one band); the land cover asset also carries its classes.
    """
    fields: dict[str, Any] = {"data_type": COG_DTYPE[layer],
                              "nodata": "nan" if layer == "depth" else int(NODATA[layer])}
    if layer == "landcover":
        fields["classification:classes"] = classes(contract)
    return fields


def proj_fields(grid: OutputGrid) -> dict[str, Any]:
    """``proj:code`` (or ``proj:wkt2`` for a CRS without an authority code)."""
    from rasterio.crs import CRS

    crs = CRS.from_string(grid.crs)
    authority = crs.to_authority()
    code = ":".join(authority) if authority else None
    fields: dict[str, Any] = {"proj:code": code}
    if code is None:
        fields["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
    return fields


def parse_time(text: str) -> datetime:
    """ISO text -> an aware datetime in UTC (text without a zone is taken as UTC)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def stac_item(grid: OutputGrid, chunk: ChunkId, contract: Contract,
              acquired: tuple[str, str] | None, created: str,
              probabilities: bool = False) -> dict[str, Any]:
    """The STAC 1.1 Item of one chunk (projection v2.0.0, classification v2.0.0).

    Its ``datetime`` is the newest acquisition of the scenes under the chunk, with
    ``start_datetime``/``end_datetime`` spanning them; undated imagery takes ``created``.
    """
    bbox = lonlat_bounds(grid, grid.chunk_bounds(chunk))
    minx, miny, maxx, maxy = bbox
    geometry = {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny], [maxx, maxy],
                                                    [minx, maxy], [minx, miny]]]}
    dates: dict[str, Any] = {"created": created}
    if acquired is not None:
        dates.update(start_datetime=parse_time(acquired[0]).isoformat(),
                     end_datetime=parse_time(acquired[1]).isoformat())
    item_time = parse_time(acquired[1] if acquired is not None else created)
    size = grid.chunk_size
    item = pystac.Item(id=chunk.key, geometry=geometry, bbox=bbox, datetime=item_time,
                       properties={**dates, **proj_fields(grid),
                                   "proj:bbox": list(grid.chunk_bounds(chunk)),
                                   "proj:shape": [size, size],
                                   "proj:transform": list(grid.chunk_transform(chunk))[:6]},
                       stac_extensions=[PROJECTION, CLASSIFICATION], collection=COLLECTION_ID)
    for layer in RESAMPLING:
        title, description = asset_text(layer, contract)
        item.add_asset(layer, pystac.Asset(
            href=f"../../cog/{layer}/{chunk.key}.tif", title=title, description=description,
            media_type=pystac.MediaType.COG, roles=["data"],
            extra_fields=asset_fields(layer, contract)))
    if probabilities:
        item.add_asset(PROBABILITIES, pystac.Asset(
            href=f"../../cog/{PROBABILITIES}/{chunk.key}.tif", title="Class probabilities",
            description="One band per class (named after it): round(254 x p); 255 = no data.",
            media_type=pystac.MediaType.COG, roles=["data"],
            extra_fields={"data_type": "uint8", "nodata": PROBABILITY_NODATA}))
    for rel in (pystac.RelType.COLLECTION, pystac.RelType.PARENT, pystac.RelType.ROOT):
        item.add_link(pystac.Link(rel, "../collection.json", media_type=pystac.MediaType.JSON))
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def item_uri(out: str, chunk: ChunkId) -> str:
    """Where a chunk's STAC Item lives."""
    return join(out, "stac", "items", f"{chunk.key}.json")


def acquisition_range(dates: list[str | None]) -> tuple[str, str] | None:
    """(oldest, newest) of the scenes' acquisition times, if every scene is dated."""
    if not dates or not all(dates):
        return None
    parsed = sorted(parse_time(str(d)) for d in dates)
    return parsed[0].isoformat(), parsed[-1].isoformat()


def now_text() -> str:
    """The current UTC time, to the second, ISO."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def chunk_area_m2(count: int, grid: OutputGrid) -> float:
    """Square metres of ``count`` pixels."""
    return count * grid.resolution * grid.resolution


def block_shape(grid: OutputGrid, factor: int) -> tuple[int, int]:
    """Shape of the overview level of ``grid``."""
    return math.ceil(grid.height / factor), math.ceil(grid.width / factor)
