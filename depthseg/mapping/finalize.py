"""Finalise a run, chunk by chunk: COG tiles, VRTs, STAC and a quicklook PNG.

Outputs under ``<out>``::

    cog/landcover/<chunk>.tif   uint8, colour table, class names in tags, mode overviews
    cog/confidence/<chunk>.tif  uint8, average overviews
    cog/depth/<chunk>.tif       float16 -> float32 COG (GeoTIFF has no float16), average overviews
    cog/<layer>.vrt             one mosaic per layer over the COG tiles (relative paths)
    stac/collection.json, stac/items/<chunk>.json
    quicklook.png               coloured land cover, downsampled to <= 1024 px, with a legend

One chunk is in memory at a time. Each COG is built in a local temporary file and then
uploaded (S3: one PUT, atomic) or renamed (local), so readers never see half a COG.
"""

from __future__ import annotations

import io
import json
import math
import re
import tempfile
import warnings
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pystac
import rasterio
from PIL import Image, ImageDraw, ImageFont
from pyproj import Transformer
from rasterio.io import MemoryFile
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from depthseg.geo import ChunkId
from depthseg.io.bundle import Contract
from depthseg.io.storage import Storage, join
from depthseg.mapping.predict import CONFIDENCE_NODATA, LANDCOVER_NODATA

if TYPE_CHECKING:
    from depthseg.io.catalog import Catalog
    from depthseg.mapping.plan import Plan
    from depthseg.mapping.write import Mosaic

QUICKLOOK_MAX_PX = 1024
_OVERVIEW = {"landcover": "mode", "confidence": "average", "depth": "average"}
_NODATA: dict[str, float] = {"landcover": LANDCOVER_NODATA, "confidence": CONFIDENCE_NODATA,
                             "depth": float("nan")}
_DTYPE = {"landcover": "uint8", "confidence": "uint8", "depth": "float32"}


def _write_cog(data: np.ndarray, layer: str, plan: Plan, chunk: ChunkId, contract: Contract,
               dst_path: Path) -> None:
    profile = {"driver": "GTiff", "height": data.shape[0], "width": data.shape[1], "count": 1,
               "dtype": _DTYPE[layer], "crs": plan.grid.crs,
               "transform": plan.grid.chunk_transform(chunk), "nodata": _NODATA[layer]}
    block = min(512, plan.grid.chunk_size)
    cog_profile = dict(cog_profiles.get("deflate"), compress="ZSTD", blockxsize=block,
                       blockysize=block)
    tags: dict[str, Any] = {"layer": layer, "chunk": chunk.key}
    colormap = None
    if layer == "landcover":
        tags["class_names"] = json.dumps(list(contract.class_names))
        tags.update({f"CLASS_{i}": name for i, name in enumerate(contract.class_names)})
        colormap = {i: (*rgb, 255) for i, rgb in enumerate(contract.palette)}
        colormap[LANDCOVER_NODATA] = (0, 0, 0, 0)
    with MemoryFile() as memfile, warnings.catch_warnings():
        # rio-cogeo warns that ZSTD needs a recent libtiff: GDAL >= 3.1 readers all have it.
        warnings.filterwarnings("ignore", "Non-standard compression", UserWarning)
        with memfile.open(**profile) as mem:
            mem.write(data.astype(_DTYPE[layer]), 1)
            mem.set_band_description(1, layer)
            if colormap is not None:
                mem.write_colormap(1, colormap)
        with memfile.open() as src:
            cog_translate(src, str(dst_path), cog_profile,
                          overview_resampling=cast(Any, _OVERVIEW[layer]), colormap=colormap,
                          additional_cog_metadata=tags, quiet=True, in_memory=True,
                          config={"GDAL_NUM_THREADS": "1"})


def _vrt(layer: str, plan: Plan, chunks: list[ChunkId], contract: Contract) -> bytes:
    grid = plan.grid
    dtype = {"uint8": "Byte", "float32": "Float32"}[_DTYPE[layer]]
    a = grid.transform
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">',
             f"  <SRS>{rasterio.crs.CRS.from_string(grid.crs).to_wkt()}</SRS>",
             f"  <GeoTransform>{a.c!r}, {a.a!r}, {a.b!r}, {a.f!r}, {a.d!r}, {a.e!r}"
             "</GeoTransform>",
             f'  <VRTRasterBand dataType="{dtype}" band="1">',
             f"    <NoDataValue>{'nan' if layer == 'depth' else int(_NODATA[layer])}"
             "</NoDataValue>"]
    if layer == "landcover":
        lines.append("    <ColorInterp>Palette</ColorInterp>\n    <ColorTable>")
        colours = dict(enumerate(contract.palette))
        for i in range(256):
            r, g, b = colours.get(i, (0, 0, 0))
            alpha = 0 if i not in colours else 255
            lines.append(f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{alpha}"/>')
        lines.append("    </ColorTable>")
    size = grid.chunk_size
    for chunk in chunks:
        window = grid.chunk_window(chunk)
        lines += ["    <SimpleSource>",
                  f'      <SourceFilename relativeToVRT="1">{layer}/{chunk.key}.tif'
                  "</SourceFilename>",
                  "      <SourceBand>1</SourceBand>",
                  f'      <SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>',
                  f'      <DstRect xOff="{window.col_off}" yOff="{window.row_off}" '
                  f'xSize="{size}" ySize="{size}"/>',
                  "    </SimpleSource>"]
    lines += ["  </VRTRasterBand>", "</VRTDataset>", ""]
    return "\n".join(lines).encode()


def _lonlat_box(plan: Plan, bounds: tuple[float, float, float, float]) -> list[float]:
    to_lonlat = Transformer.from_crs(plan.grid.crs, "EPSG:4326", always_xy=True)
    return [round(v, 9) for v in to_lonlat.transform_bounds(*bounds, densify_pts=21)]


def _acquisition_range(plan: Plan, chunk: ChunkId, catalog: Catalog | None
                       ) -> tuple[datetime, datetime] | None:
    """Oldest and newest acquisition of the scenes that meet the chunk, if all are dated."""
    if catalog is None:
        return None
    scenes = catalog.scenes_intersecting(plan.grid.chunk_bounds(chunk), plan.grid.crs)
    if not scenes or not all(s.acquired for s in scenes):
        return None
    dates = [datetime.fromisoformat(str(s.acquired).replace("Z", "+00:00")) for s in scenes]
    dates = [d if d.tzinfo else d.replace(tzinfo=timezone.utc) for d in dates]
    return min(dates), max(dates)


_COLLECTION_ID = "depthseg-landcover"
# Extension versions are pinned: tests/data/stac_schemas holds these exact schemas.
_PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
_CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
_ASSET_TEXT = {
    "landcover": ("Land cover", "Class per pixel (classification:classes); 255 = no data."),
    "confidence": ("Confidence", "round(255 x the highest class probability); 0 = no data."),
    "depth": ("Relative depth", "Relative depth in [0, 1] (float16 in the mosaic); NaN = no data."),
}


def _classes(contract: Contract) -> list[dict[str, Any]]:
    """Classification v2 classes: ``name`` must match ``[0-9A-Za-z-_]+``, ``title`` is free."""
    classes: list[dict[str, Any]] = [
        {"value": i, "name": re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or f"class_{i}",
         "title": name, "color_hint": "{:02X}{:02X}{:02X}".format(*rgb)}
        for i, (name, rgb) in enumerate(zip(contract.class_names, contract.palette, strict=True))]
    classes.append({"value": int(LANDCOVER_NODATA), "name": "no_data", "title": "No data",
                    "nodata": True})
    return classes


def _asset_fields(layer: str, contract: Contract) -> dict[str, Any]:
    """Fields of a layer's single-band asset.

    STAC 1.1 common ``data_type`` and ``nodata`` go on the asset itself (the STAC best
    practice for one band); the land cover asset also carries its classes.
    """
    fields: dict[str, Any] = {"data_type": _DTYPE[layer],
                              "nodata": "nan" if layer == "depth" else int(_NODATA[layer])}
    if layer == "landcover":
        fields["classification:classes"] = _classes(contract)
    return fields


def _stac(out: str, storage: Storage, plan: Plan, chunks: list[ChunkId],
          contract: Contract, catalog: Catalog | None = None) -> None:
    """Write the STAC 1.1 Collection and one Item per chunk.

    Extensions: projection v2.0.0 and classification v2.0.0. Links are relative (items ->
    ``../collection.json``), as are asset hrefs (``../../cog/<layer>/<chunk>.tif``).
    """
    now = datetime.now(timezone.utc).replace(microsecond=0)
    extent_start, extent_end = now, now
    crs = rasterio.crs.CRS.from_string(plan.grid.crs)
    authority = crs.to_authority()
    proj_code = ":".join(authority) if authority else None
    # Projection v2: a CRS without an authority code is written as WKT2, with proj:code null.
    proj_crs: dict[str, Any] = {"proj:code": proj_code}
    if proj_code is None:
        proj_crs["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
    assets = {layer: _asset_fields(layer, contract) for layer in _OVERVIEW}
    collection_link = "../collection.json"
    items: list[pystac.Item] = []
    for chunk in chunks:
        bbox = _lonlat_box(plan, plan.grid.chunk_bounds(chunk))
        minx, miny, maxx, maxy = bbox
        geometry = {"type": "Polygon", "coordinates": [[[minx, miny], [maxx, miny],
                                                        [maxx, maxy], [minx, maxy],
                                                        [minx, miny]]]}
        size = plan.grid.chunk_size
        # The map shows the imagery's time: newest acquisition of the composited scenes
        # (with the range), else, for undated imagery, the time the map was made.
        acquired = _acquisition_range(plan, chunk, catalog)
        dates: dict[str, Any] = {"created": now.isoformat()}
        if acquired is not None:
            dates.update(start_datetime=acquired[0].isoformat(),
                         end_datetime=acquired[1].isoformat())
        item_time = acquired[1] if acquired is not None else now
        if items:
            extent_start = min(extent_start, acquired[0] if acquired else now)
            extent_end = max(extent_end, item_time)
        else:
            extent_start, extent_end = acquired[0] if acquired else now, item_time
        item = pystac.Item(id=chunk.key, geometry=geometry, bbox=bbox, datetime=item_time,
                           properties={**dates, **proj_crs,
                                       "proj:bbox": list(plan.grid.chunk_bounds(chunk)),
                                       "proj:shape": [size, size],
                                       "proj:transform": list(plan.grid.chunk_transform(chunk))
                                       [:6]},
                           stac_extensions=[_PROJECTION, _CLASSIFICATION],
                           collection=_COLLECTION_ID)
        for layer, fields in assets.items():
            title, description = _ASSET_TEXT[layer]
            item.add_asset(layer, pystac.Asset(
                href=f"../../cog/{layer}/{chunk.key}.tif", title=title, description=description,
                media_type=pystac.MediaType.COG, roles=["data"], extra_fields=dict(fields)))
        for rel in (pystac.RelType.COLLECTION, pystac.RelType.PARENT, pystac.RelType.ROOT):
            item.add_link(pystac.Link(rel, collection_link, media_type=pystac.MediaType.JSON))
        items.append(item)
        storage.write_bytes_atomic(join(out, "stac", "items", f"{chunk.key}.json"), json.dumps(
            item.to_dict(include_self_link=False, transform_hrefs=False), indent=2).encode())
    bbox = _lonlat_box(plan, plan.grid.bounds)
    # The collection uses projection fields only in its summaries, so only with a code.
    collection = pystac.Collection(
        id=_COLLECTION_ID, title="DepthSeg land cover",
        description="DepthSeg land cover, confidence and depth",
        extent=pystac.Extent(pystac.SpatialExtent([bbox]),
                             pystac.TemporalExtent([[extent_start, extent_end]])),
        license="other",
        stac_extensions=[_PROJECTION, _CLASSIFICATION] if proj_code else [_CLASSIFICATION],
        summaries=pystac.Summaries({"proj:code": [proj_code]} if proj_code else {}))
    collection.item_assets = {layer: pystac.ItemAssetDefinition.create(
        title=_ASSET_TEXT[layer][0], description=_ASSET_TEXT[layer][1],
        media_type=pystac.MediaType.COG, roles=["data"], extra_fields=dict(fields))
        for layer, fields in assets.items()}
    collection.add_link(pystac.Link(pystac.RelType.ROOT, "./collection.json",
                                    media_type=pystac.MediaType.JSON))
    for item in items:
        collection.add_link(pystac.Link("item", f"./items/{item.id}.json",
                                        media_type=pystac.MediaType.GEOJSON))
    storage.write_bytes_atomic(join(out, "stac", "collection.json"), json.dumps(
        collection.to_dict(include_self_link=False, transform_hrefs=False), indent=2).encode())


def _quicklook(out: str, storage: Storage, plan: Plan, mosaic: Mosaic, chunks: list[ChunkId],
               contract: Contract) -> int:
    grid = plan.grid
    step = max(1, math.ceil(max(grid.shape) / QUICKLOOK_MAX_PX))
    small = np.full((math.ceil(grid.height / step), math.ceil(grid.width / step)),
                    LANDCOVER_NODATA, dtype=np.uint8)
    valid_pixels = 0
    for chunk in chunks:
        landcover = mosaic.read_chunk(grid, chunk).landcover
        valid_pixels += int((landcover != LANDCOVER_NODATA).sum())
        window = grid.chunk_window(chunk)
        # Sample every step-th pixel of the whole grid: chunk starts are multiples of step
        # only by luck, so start at the first sampled row/col inside this chunk.
        row0, col0 = (-window.row_off) % step, (-window.col_off) % step
        sampled = landcover[row0::step, col0::step]
        top, left = (window.row_off + row0) // step, (window.col_off + col0) // step
        small[top:top + sampled.shape[0], left:left + sampled.shape[1]] = sampled
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[: len(contract.palette)] = np.array(contract.palette, dtype=np.uint8)
    image = Image.fromarray(lut[small], mode="RGB")
    legend_h = 16 * len(contract.class_names) + 8
    canvas = Image.new("RGB", (max(image.width, 160), image.height + legend_h), "white")
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    # Pillow's built-in scalable font (the bitmap fallback squeezes spaces out of class names).
    font = ImageFont.load_default(size=12)
    for i, (name, rgb) in enumerate(zip(contract.class_names, contract.palette, strict=True)):
        y = image.height + 4 + 16 * i
        draw.rectangle((4, y, 16, y + 12), fill=tuple(rgb), outline="black")
        draw.text((22, y - 1), name, fill="black", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    storage.write_bytes_atomic(join(out, "quicklook.png"), buffer.getvalue())
    return valid_pixels


def finalize(out: str, storage: Storage, plan: Plan, mosaic: Mosaic, chunks: list[ChunkId],
             contract: Contract, catalog: Catalog | None = None,
             cogs_ready: Collection[ChunkId] = ()) -> int:
    """Write COGs, VRTs, STAC and the quicklook for the done chunks.

    ``catalog`` (the run's imagery) dates the STAC items by the scenes' acquisition times.
    ``cogs_ready``: chunks whose three COGs are already in place (copied by an incremental
    run from the run it carried them from); they are not encoded again.

    Returns:
        The number of mapped pixels with imagery (for the run report's km2).
    """
    mosaic.consolidate()
    with tempfile.TemporaryDirectory(prefix="depthseg-cog-") as tmp, storage.gdal_env():
        ready = set(cogs_ready)
        for chunk in chunks:
            if chunk in ready:
                continue
            prediction = mosaic.read_chunk(plan.grid, chunk)
            for layer in _OVERVIEW:
                local = Path(tmp) / f"{layer}-{chunk.key}.tif"
                _write_cog(getattr(prediction, layer), layer, plan, chunk, contract, local)
                storage.upload(local, join(out, "cog", layer, f"{chunk.key}.tif"))
                local.unlink()
    for layer in _OVERVIEW:
        storage.write_bytes_atomic(join(out, "cog", f"{layer}.vrt"),
                                   _vrt(layer, plan, chunks, contract))
    _stac(out, storage, plan, chunks, contract, catalog)
    return _quicklook(out, storage, plan, mosaic, chunks, contract)
