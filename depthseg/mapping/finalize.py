"""Finalise a run: only what is per run.

Every per-chunk product (COG tiles, STAC Item, overview block) was already written where the
chunk was written (see :mod:`depthseg.mapping.products`).

Outputs under ``<out>`` made here::

    cog/overview/<layer>.tif   one COG per layer from the overview level (<= 8192 px per side),
                               with its own internal overviews
    cog/<layer>.vrt            one mosaic per layer over the chunk COG tiles (relative paths),
                               with the overview COG as its overview; the bbox's extent;
                               class names, RAT, units and scale (:mod:`.styles`)
    cog/<layer>.qml            the layer's QGIS style (applied when QGIS opens the VRT)
    stac/collection.json       the STAC Collection (item links for small runs)
    stac/items.parquet         a GeoParquet index of every Item (id, geometry, bbox, times,
                               hrefs): one file tools page through at province scale
    vector/landcover/          with --polygons: the land-cover polygons, a GeoParquet dataset
                               (:mod:`.polygons`; merged up a quadtree of chunks by Ray tasks)
    quicklook.png              land cover drawn from the overview COG, no-data transparent

The driver never reads the full-resolution mosaic: it reads the overview level in strips of one
chunk row (memory: a strip), and its per-chunk work is string formatting and arithmetic on
arrays (VRT lines, Item index rows).
"""

from __future__ import annotations

import io
import json
import math
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

import numpy as np
import pystac
import rasterio
from PIL import Image, ImageDraw, ImageFont
from rasterio.enums import Resampling

from depthseg.geo import ChunkId, OutputGrid, PixelWindow
from depthseg.io.bundle import Contract
from depthseg.io.storage import Storage, join, temp_dir
from depthseg.mapping import products, styles
from depthseg.mapping.layers import PROBABILITY_NODATA, PROBABILITY_SCALE
from depthseg.mapping.products import COG_DTYPE, NODATA, RESAMPLING

if TYPE_CHECKING:
    from depthseg.mapping.plan import Plan
    from depthseg.mapping.write import Mosaic

QUICKLOOK_MAX_PX = 1024
#: From this many overview-level rows on, the strips are read by Ray tasks, not threads.
RAY_STRIP_ROWS = 4096
#: Up to this many Items, the Collection also links each one (small runs, STAC browsers).
ITEM_LINKS_MAX = 2000


def overview_uri(out: str, layer: str) -> str:
    """Where the overview COG of ``layer`` lives."""
    return join(out, "cog", "overview", f"{layer}.tif")


def _write_overviews(out: str, storage: Storage, plan: Plan, mosaic: Mosaic, factor: int,
                     contract: Contract, tmp: Path) -> int:
    """Write the overview COG of each layer from the overview level, strip by strip.

    Returns the run's mapped pixels (the sum of the level's valid counts).
    """
    grid = plan.grid
    strip = grid.chunk_size // factor
    # The level's blocks under the bbox's pixels: the COG's extent is the bbox's, not the
    # chunk grid's.
    rows, cols = products.block_shape(grid, factor)
    window = plan.bbox_window()
    row0, col0 = window.row_off // factor, window.col_off // factor
    row1 = min(rows, -(-(window.row_off + window.height) // factor))
    col1 = min(cols, -(-(window.col_off + window.width) // factor))
    shape = (row1 - row0, col1 - col0)
    transform = (grid.transform * rasterio.Affine.scale(factor)
                 * rasterio.Affine.translation(col0, row0))
    valid = 0
    sources: dict[str, Any] = {}
    for layer in RESAMPLING:
        profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "count": 1,
                   "dtype": COG_DTYPE[layer], "crs": grid.crs, "transform": transform,
                   "nodata": NODATA[layer], "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "ZSTD"}
        dst = sources[layer] = rasterio.open(tmp / f"{layer}-level.tif", "w", **profile)
        dst.set_band_description(1, layer)
        _, colormap = products.cog_metadata(layer, contract, None)
        if colormap is not None:
            dst.write_colormap(1, colormap)
    try:
        # Strips follow the level's chunk rows (whole Zarr chunks), cut to the bbox's rows.
        cuts = sorted({row0, row1, *range((row0 // strip + 1) * strip, row1, strip)})
        spans = list(zip(cuts[:-1], cuts[1:], strict=True))
        for (top, stop), (count, layers) in zip(spans, map_strips(
                out, storage, factor, spans, (col0, col1)), strict=True):
            window = rasterio.windows.Window(0, top - row0, shape[1], stop - top)
            valid += count
            for layer, dst in sources.items():
                dst.write(layers[layer].astype(COG_DTYPE[layer]), 1, window=window)
    finally:
        for dst in sources.values():
            dst.close()
    for layer in RESAMPLING:
        local = tmp / f"{layer}-overview.tif"
        with rasterio.open(tmp / f"{layer}-level.tif") as src:
            # Streamed from the strip-written file: a province's overview never sits in memory.
            products.translate_cog(src, layer, contract, None, local, 512, in_memory=False)
        storage.upload(local, overview_uri(out, layer))
    return valid


def read_level_strip(out: str, storage: Storage, factor: int, top: int, stop: int,
                     cols: tuple[int, int] | None = None) -> tuple[int, dict[str, np.ndarray]]:
    """Rows ``top:stop`` (columns ``cols``, default all) of the overview level.

    Returns (valid pixels under them, the layers).
    """
    from depthseg.mapping.write import Mosaic

    level = Mosaic(out, storage).level(factor)
    span = slice(*cols) if cols is not None else slice(None)
    count = int(np.asarray(level["valid_count"][top:stop, span]).sum(dtype=np.int64))
    return count, {layer: np.asarray(level[layer][top:stop, span]) for layer in RESAMPLING}


def map_strips(out: str, storage: Storage, factor: int, spans: list[tuple[int, int]],
               cols: tuple[int, int] | None = None, in_flight: int = 8,
               ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """The level's strips, in order, read in parallel.

    With Ray running they are Ray tasks (the driver then reads no Zarr chunk itself), else a
    few threads. At most ``in_flight`` strips are held at once.
    """
    from concurrent.futures import ThreadPoolExecutor

    import ray

    # Ray tasks pay a worker start each; they win only when the level has many rows.
    use_ray = ray.is_initialized() and sum(b - a for a, b in spans) >= RAY_STRIP_ROWS
    remote = ray.remote(num_cpus=0.5)(read_level_strip) if use_ray else None
    with ThreadPoolExecutor(4) as pool:

        def submit(span: tuple[int, int]) -> Any:
            if remote is not None:
                return remote.remote(out, storage, factor, *span, cols)
            return pool.submit(read_level_strip, out, storage, factor, *span, cols)

        pending = [submit(span) for span in spans[:in_flight]]
        for k in range(len(spans)):
            value = ray.get(pending[k]) if remote is not None else pending[k].result()
            pending[k] = None  # hold at most ``in_flight`` strips
            if k + in_flight < len(spans):
                pending.append(submit(spans[k + in_flight]))
            yield value


def _vrt(layer: str, grid: OutputGrid, extent: PixelWindow, chunks: list[ChunkId],
         contract: Contract, factor: int) -> bytes:
    """The layer's VRT over ``extent`` of the grid.

    ``extent`` is the bbox's pixels: chunk tiles reach past it, with no data there.
    """
    dtype = {"uint8": "Byte", "float32": "Float32"}[COG_DTYPE[layer]]
    lines = [*_vrt_header(grid, extent),
             f'  <VRTRasterBand dataType="{dtype}" band="1">',
             f"    <NoDataValue>{'nan' if layer == 'depth' else int(NODATA[layer])}"
             "</NoDataValue>", *styles.vrt_band_lines(layer, contract)]
    if layer == "landcover":
        lines.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
        colours = dict(enumerate(contract.palette))
        for i in range(256):
            r, g, b = colours.get(i, (0, 0, 0))
            alpha = 0 if i not in colours else 255
            lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{alpha}"/>')
        lines.append("    </ColorTable>")
    # Zoomed out, GDAL/QGIS read the one overview COG instead of every chunk tile.
    lines += ["    <Overview>",
              f'      <SourceFilename relativeToVRT="1">overview/{layer}.tif</SourceFilename>',
              "      <SourceBand>1</SourceBand>",
              "    </Overview>"]
    lines += [*_vrt_sources(layer, 1, grid, extent, chunks),
              "  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines).encode()


def _vrt_header(grid: OutputGrid, extent: PixelWindow) -> list[str]:
    """A VRT's opening, its CRS and geotransform over ``extent`` of the grid."""
    a = grid.window_transform(extent)
    return [f'<VRTDataset rasterXSize="{extent.width}" rasterYSize="{extent.height}">',
            f"  <SRS>{rasterio.crs.CRS.from_string(grid.crs).to_wkt()}</SRS>",
            f"  <GeoTransform>{a.c!r}, {a.a!r}, {a.b!r}, {a.f!r}, {a.d!r}, {a.e!r}"
            "</GeoTransform>"]


def _vrt_sources(folder: str, band: int, grid: OutputGrid, extent: PixelWindow,
                 chunks: list[ChunkId]) -> list[str]:
    """One ``SimpleSource`` per chunk COG of ``folder`` (band ``band``), placed in ``extent``."""
    size = grid.chunk_size
    row0, col0 = grid.row_off // size, grid.col_off // size
    lines = []
    for chunk in chunks:
        x_off = (chunk.col - col0) * size - extent.col_off
        y_off = (chunk.row - row0) * size - extent.row_off
        lines.append(
            f'    <SimpleSource><SourceFilename relativeToVRT="1">{folder}/{chunk.key}.tif'
            f'</SourceFilename><SourceBand>{band}</SourceBand>'
            f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
            f'<DstRect xOff="{x_off}" yOff="{y_off}" xSize="{size}" ySize="{size}"/>'
            '</SimpleSource>')
    return lines


def _probabilities_vrt(grid: OutputGrid, extent: PixelWindow, chunks: list[ChunkId],
                       contract: Contract) -> bytes:
    """A VRT over the per-class probability COGs: one band per class, named after it."""
    lines = _vrt_header(grid, extent)
    for band, name in enumerate(contract.class_names, start=1):
        lines += [f'  <VRTRasterBand dataType="Byte" band="{band}">',
                  f"    <Description>{escape(name)}</Description>",
                  f"    <NoDataValue>{PROBABILITY_NODATA}</NoDataValue>",
                  "    <UnitType>1</UnitType>", "    <Offset>0</Offset>",
                  f"    <Scale>{1 / PROBABILITY_SCALE!r}</Scale>",
                  *_vrt_sources(products.PROBABILITIES, band, grid, extent, chunks),
                  "  </VRTRasterBand>"]
    lines += ["</VRTDataset>", ""]
    return "\n".join(lines).encode()


def _item_index(plan: Plan, chunks: list[ChunkId], created: str) -> bytes:
    """A GeoParquet index of the run's Items, built with array arithmetic (no per-chunk I/O).

    Columns: ``id``, ``geometry`` (WKB polygon, lon/lat), ``bbox`` (struct), ``href`` (the
    Item JSON), one ``<layer>`` href per asset, ``created``; GeoParquet 1.1 metadata.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from pyproj import Transformer

    grid = plan.grid
    span = grid.chunk_size * grid.resolution
    rows = np.array([c.row for c in chunks], dtype=np.float64)
    cols = np.array([c.col for c in chunks], dtype=np.float64)
    minx, maxx = grid.phase_x + cols * span, grid.phase_x + (cols + 1) * span
    maxy, miny = grid.phase_y - rows * span, grid.phase_y - (rows + 1) * span
    # Densified chunk edges to lon/lat, vectorised over every chunk at once.
    t = np.linspace(0.0, 1.0, 11)
    ring_x = np.concatenate([minx[:, None] + (maxx - minx)[:, None] * t,
                             np.repeat(maxx[:, None], 11, axis=1),
                             maxx[:, None] - (maxx - minx)[:, None] * t,
                             np.repeat(minx[:, None], 11, axis=1)], axis=1)
    ring_y = np.concatenate([np.repeat(miny[:, None], 11, axis=1),
                             miny[:, None] + (maxy - miny)[:, None] * t,
                             np.repeat(maxy[:, None], 11, axis=1),
                             maxy[:, None] - (maxy - miny)[:, None] * t], axis=1)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(
        ring_x, ring_y)
    polygons = shapely.polygons(np.stack([lon, lat], axis=-1))
    boxes = shapely.bounds(polygons)
    keys = [c.key for c in chunks]
    table = pa.table({
        "id": keys,
        "geometry": shapely.to_wkb(polygons),
        "bbox": pa.StructArray.from_arrays(
            [pa.array(boxes[:, k]) for k in range(4)], names=["xmin", "ymin", "xmax", "ymax"]),
        "href": [f"items/{k}.json" for k in keys],
        **{layer: [f"../cog/{layer}/{k}.tif" for k in keys] for layer in RESAMPLING},
        "created": [created] * len(keys),
    })
    total = [float(boxes[:, 0].min()), float(boxes[:, 1].min()), float(boxes[:, 2].max()),
             float(boxes[:, 3].max())] if len(keys) else None
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {
        "encoding": "WKB", "geometry_types": ["Polygon"], "bbox": total,
        "covering": {"bbox": {"xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
                              "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}}}}}
    table = table.replace_schema_metadata({b"geo": json.dumps(geo).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def _collection(out: str, storage: Storage, plan: Plan, chunks: list[ChunkId],
                contract: Contract, extent: tuple[str, str] | None, created: str) -> None:
    grid = plan.grid
    proj = products.proj_fields(grid)
    code = proj["proj:code"]
    start, end = (products.parse_time(t) for t in (extent or (created, created)))
    collection = pystac.Collection(
        id=products.COLLECTION_ID, title="DepthSeg land cover",
        description="DepthSeg land cover, confidence and depth",
        extent=pystac.Extent(pystac.SpatialExtent([products.lonlat_bounds(
            grid, grid.window_bounds(plan.bbox_window()))]),
                             pystac.TemporalExtent([[start, end]])),
        license="other",
        stac_extensions=([products.PROJECTION, products.CLASSIFICATION] if code
                         else [products.CLASSIFICATION]),
        summaries=pystac.Summaries({"proj:code": [code]} if code else {}))
    collection.item_assets = {layer: pystac.ItemAssetDefinition.create(
        title=products.asset_text(layer, contract)[0],
        description=products.asset_text(layer, contract)[1],
        media_type=pystac.MediaType.COG, roles=["data"],
        extra_fields=products.asset_fields(layer, contract)) for layer in RESAMPLING}
    collection.add_asset("items", pystac.Asset(
        href="./items.parquet", title="Item index (GeoParquet)",
        media_type="application/vnd.apache.parquet", roles=["metadata"]))
    if plan.polygons:
        collection.add_asset("polygons", pystac.Asset(
            href="../vector/landcover/", title="Land-cover polygons (GeoParquet dataset)",
            description="One polygon per 4-connected region of one class, whole across chunk "
                        "borders: class, class_name, pixels, area_m2, confidence (mean, 0-1).",
            media_type="application/vnd.apache.parquet", roles=["data"]))
    collection.add_link(pystac.Link(pystac.RelType.ROOT, "./collection.json",
                                    media_type=pystac.MediaType.JSON))
    if len(chunks) <= ITEM_LINKS_MAX:
        for chunk in chunks:
            collection.add_link(pystac.Link("item", f"./items/{chunk.key}.json",
                                            media_type=pystac.MediaType.GEOJSON))
    storage.write_bytes_atomic(join(out, "stac", "collection.json"), json.dumps(
        collection.to_dict(include_self_link=False, transform_hrefs=False), indent=2).encode())


def _quicklook(out: str, storage: Storage, contract: Contract, tmp: Path) -> None:
    """Land cover from the overview COG (its internal overviews), no-data transparent."""
    local = tmp / "landcover-overview.tif"
    with rasterio.open(local) as src:
        step = max(1, math.ceil(max(src.shape) / QUICKLOOK_MAX_PX))
        shape = (math.ceil(src.height / step), math.ceil(src.width / step))
        small = src.read(1, out_shape=shape, resampling=Resampling.mode)
    lut = np.zeros((256, 4), dtype=np.uint8)
    lut[: len(contract.palette), :3] = np.array(contract.palette, dtype=np.uint8)
    lut[: len(contract.palette), 3] = 255
    image = Image.fromarray(lut[small], mode="RGBA")
    legend_h = 16 * len(contract.class_names) + 8
    canvas = Image.new("RGBA", (max(image.width, 160), image.height + legend_h), (0, 0, 0, 0))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, image.height, canvas.width, canvas.height), fill="white")
    # Pillow's built-in scalable font (the bitmap fallback squeezes spaces out of class names).
    font = ImageFont.load_default(size=12)
    for i, (name, rgb) in enumerate(zip(contract.class_names, contract.palette, strict=True)):
        y = image.height + 4 + 16 * i
        draw.rectangle((4, y, 16, y + 12), fill=tuple(rgb), outline="black")
        draw.text((22, y - 1), name, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    storage.write_bytes_atomic(join(out, "quicklook.png"), buffer.getvalue())


def finalize(out: str, storage: Storage, plan: Plan, mosaic: Mosaic, chunks: list[ChunkId],
             contract: Contract, factor: int, extent: tuple[str, str] | None = None,
             created: str | None = None, seconds: dict[str, float] | None = None) -> int:
    """Write the per-run files for the done ``chunks`` (see the module docstring).

    Args:
        out: Output URI.
        storage: Storage settings.
        plan: The run's plan.
        mosaic: The run's mosaic.
        chunks: The done chunks.
        contract: The bundle's contract (classes, colours).
        factor: The overview level's factor.
        extent: (oldest, newest) acquisition of the imagery, for the Collection.
        created: When the run started.
        seconds: Filled with the time of each step (``overview``, ``vrt``, ``stac``,
            ``quicklook``).

    Returns:
        The number of mapped pixels with imagery (for the run report's km2).
    """
    import time

    created = created or datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    timing = seconds if seconds is not None else {}
    mosaic.consolidate()
    with temp_dir("final") as tmp, storage.gdal_env(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Non-standard compression", UserWarning)
        start = time.perf_counter()
        valid = _write_overviews(out, storage, plan, mosaic, factor, contract, tmp)
        timing["overview"] = time.perf_counter() - start
        start = time.perf_counter()
        for layer in RESAMPLING:
            storage.write_bytes_atomic(join(out, "cog", f"{layer}.vrt"),
                                       _vrt(layer, plan.grid, plan.bbox_window(), chunks,
                                            contract, factor))
            # QGIS applies <name>.qml beside <name>.vrt when it opens the VRT.
            storage.write_bytes_atomic(join(out, "cog", f"{layer}.qml"),
                                       styles.qml(layer, contract))
        if plan.probabilities:
            storage.write_bytes_atomic(join(out, "cog", f"{products.PROBABILITIES}.vrt"),
                                       _probabilities_vrt(plan.grid, plan.bbox_window(),
                                                          chunks, contract))
        timing["vrt"] = time.perf_counter() - start
        start = time.perf_counter()
        storage.write_bytes_atomic(join(out, "stac", "items.parquet"),
                                   _item_index(plan, chunks, created))
        _collection(out, storage, plan, chunks, contract, extent, created)
        timing["stac"] = time.perf_counter() - start
        if plan.polygons:
            from depthseg.mapping import polygons

            start = time.perf_counter()
            polygons.finalize(out, storage, plan.grid, chunks, contract.class_names)
            timing["polygons"] = time.perf_counter() - start
        start = time.perf_counter()
        _quicklook(out, storage, contract, tmp)
        timing["quicklook"] = time.perf_counter() - start
    return valid

