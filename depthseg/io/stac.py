"""STAC ItemCollections as catalogs: scenes described from Item metadata, read with pystac.

A province of orthophoto tiles is tens of thousands of files; opening every header costs a
round trip each. An Item whose image asset (or the Item itself) carries the projection
extension's ``proj:code`` (or ``proj:epsg``), ``proj:shape`` and ``proj:transform`` (or
``proj:bbox``), and band metadata (STAC 1.1 ``bands`` or ``raster:bands`` with ``data_type``)
is described from that metadata alone. Items without it fall back to reading the header, in
a bounded thread pool. Band names come from ``eo:common_name`` / ``common_name`` (``red``,
``nir``, ...) where given, else the band ``name``/``description``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pystac
from affine import Affine

from depthseg.errors import InputError
from depthseg.io.catalog import (
    HEADER_THREADS,
    Scene,
    _acquired,
    describe_scene,
    load_json,
    relative_href,
)
from depthseg.io.storage import Storage


def _field(item: pystac.Item, asset: pystac.Asset, key: str) -> Any:
    """A field of the asset, else of the Item's properties (STAC puts proj:* in either)."""
    value = asset.extra_fields.get(key)
    return item.properties.get(key) if value is None else value


def _crs(item: pystac.Item, asset: pystac.Asset) -> str | None:
    code = _field(item, asset, "proj:code")
    if code:
        return str(code)
    epsg = _field(item, asset, "proj:epsg")
    return f"EPSG:{int(epsg)}" if epsg else None


def _transform(item: pystac.Item, asset: pystac.Asset,
               shape: tuple[int, int]) -> tuple[float, ...] | None:
    values = _field(item, asset, "proj:transform")
    if values is not None and len(values) >= 6:
        return tuple(float(v) for v in values[:6])
    bbox = _field(item, asset, "proj:bbox")
    if bbox is not None and len(bbox) == 4:
        minx, miny, maxx, maxy = (float(v) for v in bbox)
        rows, cols = shape
        return tuple(Affine((maxx - minx) / cols, 0, minx, 0, -(maxy - miny) / rows, maxy))[:6]
    return None


def _bands(asset: pystac.Asset) -> list[dict[str, Any]] | None:
    for key in ("bands", "raster:bands"):
        bands = asset.extra_fields.get(key)
        if isinstance(bands, list) and bands:
            return bands
    return None


def _band_name(band: dict[str, Any], eo: dict[str, Any] | None) -> str:
    for source in (band, eo or {}):
        for key in ("eo:common_name", "common_name", "name", "description"):
            if source.get(key):
                return str(source[key])
    return ""


def scene_from_metadata(item: pystac.Item, asset: pystac.Asset, href: str) -> Scene | None:
    """The scene an Item's metadata describes, or None when something needed is missing."""
    crs, shape, bands = _crs(item, asset), _field(item, asset, "proj:shape"), _bands(asset)
    if not crs or shape is None or len(shape) != 2 or bands is None:
        return None
    rows, cols = int(shape[0]), int(shape[1])
    transform = _transform(item, asset, (rows, cols))
    dtypes = {b.get("data_type") for b in bands}
    if transform is None or len(dtypes) != 1 or None in dtypes:
        return None
    nodata = bands[0].get("nodata")
    eo_bands = asset.extra_fields.get("eo:bands") or [None] * len(bands)
    names = tuple(_band_name(b, e) for b, e in zip(bands, eo_bands, strict=False))
    return Scene(uri=href, crs=crs, transform=transform, height=rows, width=cols,
                 count=len(bands), dtype=str(dtypes.pop()),
                 nodata=None if nodata is None else float(nodata),
                 acquired=_item_time(item), band_names=names)


def _item_time(item: pystac.Item) -> str | None:
    text = item.properties.get("datetime") or item.properties.get("end_datetime")
    return _acquired({"datetime": str(text).replace("+00:00", "Z")}) if text else None


def _choose_asset(item: pystac.Item, key: str, uri: str) -> pystac.Asset:
    chosen = item.assets.get(key)
    if chosen is None:
        tiffs = [a for a in item.assets.values() if "image/tiff" in str(a.media_type or "")]
        chosen = tiffs[0] if len(tiffs) == 1 else None
    if chosen is None:
        raise InputError(f"STAC item {item.id!r} in {uri!r} has no asset {key!r} (assets: "
                         f"{sorted(item.assets)}); pass the right --stac-asset")
    return chosen


def stac_scenes(uri: str, storage: Storage, asset: str = "image") -> list[Scene]:
    """The scenes of a STAC ItemCollection file (local or ``s3://``), in Item order."""
    document = load_json(uri, storage, "STAC file")
    if not isinstance(document, dict) or not isinstance(document.get("features"), list):
        raise InputError(f"{uri!r} is not a STAC ItemCollection (no 'features' list); give a "
                         "FeatureCollection of STAC Items")
    features = document["features"]
    scenes: list[Scene | None] = []
    missing: list[tuple[int, str, str | None]] = []
    for k in range(len(features)):
        # One Item at a time, each feature dropped once read: a province's ItemCollection is
        # tens of thousands of Items, and only the scenes are kept.
        feature, features[k] = features[k], None
        try:
            item = pystac.Item.from_dict(feature, preserve_dict=False, migrate=False)
        except (pystac.STACError, KeyError, TypeError, ValueError) as err:
            raise InputError(f"{uri!r}: feature {k} is not a valid STAC Item ({err}); check "
                             "the ItemCollection") from err
        chosen = _choose_asset(item, asset, uri)
        href = relative_href(uri, chosen.href)
        scene = scene_from_metadata(item, chosen, href)
        scenes.append(scene)
        if scene is None:
            missing.append((k, href, _item_time(item)))
    if missing:
        with ThreadPoolExecutor(min(HEADER_THREADS, len(missing))) as pool:
            described = pool.map(lambda m: describe_scene(m[1], storage, acquired=m[2]), missing)
            for (k, _, _), scene in zip(missing, described, strict=True):
                scenes[k] = scene
    return [s for s in scenes if s is not None]
