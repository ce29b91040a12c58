"""Catalogs of scenes: which rasters cover a place, and one composited window of pixels.

A catalog is opened from one of:

- a folder, ``s3://`` prefix or glob of GeoTIFF/COG scenes (``*.tif``, ``*.tiff``);
- a STAC ItemCollection JSON file (``*.json``; the asset key is configurable);
- a Zarr mosaic (``*.zarr``) that ``xarray`` + ``rioxarray`` open with a CRS: its first
  (band, y, x) or (y, x) variable is one scene, read lazily window by window (GDAL's own Zarr
  driver cannot decode Zarr v3 ``bytes`` codecs in GDAL 3.10, so xarray reads it).

Reading a window (:meth:`Catalog.read`) asks the footprint index (a shapely STRtree over the
scene footprints in the output CRS) which scenes meet it, warps each onto the window's grid
(rasterio ``WarpedVRT``; an identity warp when the scene is already on the grid) and
composites them first-valid, newest first where acquisition dates are known (``datetime``
tag or STAC property), else in catalog order. Pixels keep the scene dtype (uint8/uint16).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from shapely.strtree import STRtree

from depthseg.errors import InputError, StorageError
from depthseg.io.storage import Storage, join, scheme_of, with_retries

RASTER_SUFFIXES = (".tif", ".tiff")
#: Resampling of scenes warped onto the output grid (names of ``rasterio.enums.Resampling``).
RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average")


@dataclass(frozen=True)
class Scene:
    """One input raster of a catalog.

    Attributes:
        uri: Local path or ``s3://`` URI.
        crs: CRS as a string (WKT or ``EPSG:n``).
        transform: Affine of the raster's top-left pixel corner.
        height: Rows.
        width: Columns.
        count: Bands.
        dtype: Numpy dtype name of the bands.
        nodata: No-data value, or None.
        acquired: Acquisition time as ISO text, or None when unknown.
        variable: The Zarr variable for Zarr mosaics; None for GeoTIFFs.
    """

    uri: str
    crs: str
    transform: tuple[float, ...]
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    acquired: str | None = None
    variable: str | None = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the scene's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, Affine(*self.transform))


def _acquired(tags: dict[str, str]) -> str | None:
    text = tags.get("datetime") or tags.get("TIFFTAG_DATETIME")
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y:%m:%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            continue
    return None


def describe_scene(uri: str, storage: Storage, acquired: str | None = None) -> Scene:
    """Read one raster's header into a :class:`Scene`; refuses rasters without a CRS."""
    path = storage.gdal_path(uri)
    try:
        with storage.gdal_env(), rasterio.open(path) as src:
            if src.crs is None:
                raise InputError(f"scene {uri!r} has no CRS; expected georeferenced imagery "
                                 "(assign one with `gdal_edit.py -a_srs EPSG:n`)")
            return Scene(uri=uri, crs=src.crs.to_string(),
                         transform=tuple(src.transform)[:6], height=src.height, width=src.width,
                         count=src.count, dtype=src.dtypes[0], nodata=src.nodata,
                         acquired=acquired or _acquired(src.tags()))
    except rasterio.errors.RasterioIOError as err:
        raise StorageError(f"cannot open scene {uri!r} ({err}); check that it exists and is a "
                           "GeoTIFF/COG") from err


class Catalog:
    """The scenes of a run, with a footprint index in one output CRS."""

    def __init__(self, scenes: list[Scene], source: str, storage: Storage) -> None:
        """Index scenes; newest first where every scene has a date, else catalog order.

        Args:
            scenes: The scenes, in catalog order.
            source: The URI the catalog was opened from (for messages).
            storage: Storage settings used to read the scenes.
        """
        if not scenes:
            raise InputError(f"imagery {source!r} holds no scenes; expected GeoTIFF/COG files "
                             "(*.tif), a STAC ItemCollection (*.json) or a Zarr mosaic (*.zarr)")
        if all(s.acquired for s in scenes):
            # Stable sort: equal dates keep catalog order.
            scenes = sorted(scenes, key=lambda s: s.acquired or "", reverse=True)
        self.scenes = scenes
        self.source = source
        self.storage = storage
        self._index_crs: str | None = None
        self._footprints: list[Any] = []
        self._tree: STRtree | None = None
        #: How scenes are resampled when warped onto the output grid (identity warps, where a
        #: scene already lies on the grid, copy pixels whatever this is).
        self.resampling = "nearest"

    @property
    def count(self) -> int:
        """Smallest band count over the scenes."""
        return min(s.count for s in self.scenes)

    @property
    def dtype(self) -> str:
        """The common dtype of the scenes; refuses mixed dtypes."""
        dtypes = sorted({s.dtype for s in self.scenes})
        if len(dtypes) != 1:
            raise InputError(f"imagery {self.source!r} mixes dtypes {dtypes}; expected one dtype")
        return dtypes[0]

    def footprints(self, crs: str) -> list[Any]:
        """Scene footprints (shapely polygons) in ``crs``, in :attr:`scenes` order."""
        if self._index_crs != crs:
            from depthseg.geo import reproject_geometry

            self._footprints = [
                shapely.box(*s.bounds) if CRS.from_string(s.crs) == CRS.from_string(crs)
                else reproject_geometry(shapely.box(*s.bounds), s.crs, crs) for s in self.scenes]
            self._tree = STRtree(self._footprints)
            self._index_crs = crs
        return self._footprints

    def scenes_intersecting(self, bounds: tuple[float, float, float, float],
                            crs: str) -> list[Scene]:
        """Scenes whose footprint meets the interior of ``bounds``, in composite order."""
        self.footprints(crs)
        assert self._tree is not None
        box = shapely.box(*bounds)
        hits = self._tree.query(box, predicate="intersects")
        keep = [int(i) for i in hits
                if shapely.relate_pattern(self._footprints[int(i)], box, "T********")]
        return [self.scenes[i] for i in sorted(keep)]

    def read(self, crs: str, transform: Affine, height: int, width: int,
             bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Composite one window of the output grid from every scene that meets it.

        Args:
            crs: Output CRS.
            transform: Affine of the window's top-left corner.
            height: Rows of the window.
            width: Columns of the window.
            bands: 1-based bands, in the order wanted (the bundle's ``band_indices``).

        Returns:
            ``(pixels (band, row, col) in the scenes' dtype, valid (row, col) bool)``;
            invalid pixels hold 0.

        Raises:
            StorageError: A scene could not be read (names the scene).
        """
        bounds = rasterio.transform.array_bounds(height, width, transform)
        pixels = np.zeros((len(bands), height, width), dtype=self.dtype)
        filled = np.zeros((height, width), dtype=bool)
        for scene in self.scenes_intersecting(bounds, crs):
            scene_pixels, scene_valid = _read_scene(scene, self.storage, crs, transform,
                                                    height, width, bands, self.resampling)
            take = scene_valid & ~filled
            pixels[:, take] = scene_pixels[:, take]
            filled |= take
            if filled.all():
                break
        return pixels, filled


def _read_scene(scene: Scene, storage: Storage, crs: str, transform: Affine, height: int,
                width: int, bands: tuple[int, ...], resampling: str = "nearest",
                ) -> tuple[np.ndarray, np.ndarray]:
    if scene.variable is not None:
        return _read_zarr(scene, storage, crs, transform, height, width, bands, resampling)
    path = storage.gdal_path(scene.uri)

    def read() -> tuple[np.ndarray, np.ndarray]:
        with storage.gdal_env(), rasterio.open(path) as src, WarpedVRT(
            src, crs=crs, transform=transform, height=height, width=width,
            resampling=Resampling[resampling], src_nodata=src.nodata, nodata=src.nodata,
            # Without a no-data value only an alpha band tells pixels outside the scene.
            add_alpha=src.nodata is None,
        ) as vrt:
            data = vrt.read(list(bands))
            # The dataset mask covers no-data and pixels outside the scene after warping.
            valid = vrt.dataset_mask() > 0
            return data, valid

    try:
        return with_retries(read)
    except rasterio.errors.RasterioIOError as err:
        raise StorageError(f"cannot read scene {scene.uri!r} ({err}); check or remove it") from err


def open_catalog(uri: str, storage: Storage | None = None, asset: str = "image") -> Catalog:
    """Open the imagery of a run.

    Args:
        uri: Folder / ``s3://`` prefix / glob of GeoTIFFs, a STAC ItemCollection ``.json``, or a
            ``.zarr`` mosaic.
        storage: Storage settings.
        asset: STAC asset key holding the image (falls back to the only ``image/tiff`` asset).

    Raises:
        InputError: Nothing readable at ``uri``, or a scene without a CRS.
    """
    storage = storage or Storage()
    text = uri.rstrip("/")
    if text.endswith(".json"):
        return _open_stac(uri, storage, asset)
    if text.endswith(".zarr"):
        return Catalog([_zarr_scene(text, storage)], uri, storage)
    if text.lower().endswith(RASTER_SUFFIXES) and not any(c in text for c in "*?["):
        return Catalog([describe_scene(uri, storage)], uri, storage)
    return Catalog([describe_scene(u, storage) for u in _list_rasters(uri, storage)],
                   uri, storage)


def _list_rasters(uri: str, storage: Storage) -> list[str]:
    fs, path = storage.fs(uri)
    prefix = "s3://" if scheme_of(uri) == "s3" else ""
    if any(c in path for c in "*?["):
        found = with_retries(lambda: fs.glob(path))
    else:
        if not with_retries(lambda: fs.exists(path)):
            raise InputError(f"imagery {uri!r} does not exist; give a folder, s3:// prefix, glob,"
                             " STAC ItemCollection .json or .zarr mosaic")
        found = with_retries(lambda: fs.find(path))
    names = sorted(p for p in found if p.lower().endswith(RASTER_SUFFIXES)
                   and not fnmatch.fnmatch(p.rsplit("/", 1)[-1], ".*"))
    return [prefix + p for p in names]


def _open_stac(uri: str, storage: Storage, asset: str) -> Catalog:
    try:
        collection = json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as err:
        raise InputError(f"STAC file {uri!r} is not JSON ({err}); expected an "
                         "ItemCollection") from err
    features = collection.get("features") if isinstance(collection, dict) else None
    if not isinstance(features, list):
        raise InputError(f"{uri!r} is not a STAC ItemCollection (no 'features' list); give a "
                         "FeatureCollection of STAC Items")
    base = uri.rsplit("/", 1)[0] if "/" in uri else "."
    scenes = []
    for item in features:
        assets = item.get("assets", {})
        chosen = assets.get(asset) or next(
            (a for a in assets.values() if "image/tiff" in str(a.get("type", ""))), None)
        if chosen is None:
            raise InputError(f"STAC item {item.get('id')!r} in {uri!r} has no asset {asset!r} "
                             f"(assets: {sorted(assets)}); pass the right --stac-asset")
        href = str(chosen["href"])
        if scheme_of(href) == "" and not href.startswith("/"):
            href = join(base, href)  # relative hrefs are relative to the collection file
        acquired = item.get("properties", {}).get("datetime")
        scenes.append(describe_scene(href, storage, acquired=_acquired({"datetime": acquired})
                                     if acquired else None))
    return Catalog(scenes, uri, storage)


def _open_zarr_variable(uri: str, storage: Storage, variable: str | None = None) -> Any:
    import rioxarray  # noqa: F401 - registers the .rio accessor
    import xarray as xr

    from depthseg.io.chips import open_zarr_store

    try:
        # Raw values: no-data stays the integer the mosaic declares, not a float NaN.
        dataset = xr.open_zarr(open_zarr_store(uri, storage, read_only=True), consolidated=False,
                               mask_and_scale=False)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise InputError(f"cannot open Zarr mosaic {uri!r} ({err}); expected a Zarr group that "
                         "xarray opens") from err
    names = [variable] if variable else [n for n, v in dataset.data_vars.items()
                                         if v.ndim in (2, 3)]
    if not names or dataset[names[0]].rio.crs is None:
        raise InputError(f"Zarr mosaic {uri!r} has no georeferenced (band, y, x) variable; "
                         "expected one that rioxarray reads with a CRS (write it with "
                         ".rio.write_crs)")
    array = dataset[names[0]]
    return array if array.ndim == 3 else array.expand_dims("band")


def _zarr_scene(uri: str, storage: Storage) -> Scene:
    array = _open_zarr_variable(uri, storage)
    nodata = array.rio.nodata if array.rio.nodata is not None else array.rio.encoded_nodata
    return Scene(uri=uri, crs=array.rio.crs.to_string(),
                 transform=tuple(array.rio.transform())[:6], height=array.shape[-2],
                 width=array.shape[-1], count=array.shape[0], dtype=str(array.dtype),
                 nodata=None if nodata is None else float(nodata),
                 acquired=_acquired({"datetime": str(array.attrs.get("datetime", ""))}),
                 variable=str(array.name))


def _read_zarr(scene: Scene, storage: Storage, crs: str, transform: Affine, height: int,
               width: int, bands: tuple[int, ...], resampling: str = "nearest",
               ) -> tuple[np.ndarray, np.ndarray]:
    from rasterio.warp import reproject, transform_bounds
    from rasterio.windows import Window, from_bounds
    from rasterio.windows import transform as window_transform

    src_transform = Affine(*scene.transform)
    bounds = transform_bounds(crs, scene.crs, *rasterio.transform.array_bounds(
        height, width, transform), densify_pts=21)
    # Source pixels covering the target window, with a margin for the resampling kernel.
    wanted = from_bounds(*bounds, transform=src_transform)
    margin = 1 if resampling == "nearest" else 4
    row0 = max(int(np.floor(wanted.row_off)) - margin, 0)
    col0 = max(int(np.floor(wanted.col_off)) - margin, 0)
    row1 = min(int(np.ceil(wanted.row_off + wanted.height)) + margin, scene.height)
    col1 = min(int(np.ceil(wanted.col_off + wanted.width)) + margin, scene.width)
    pixels = np.zeros((len(bands), height, width), dtype=scene.dtype)
    valid = np.zeros((height, width), dtype=np.uint8)
    if row1 <= row0 or col1 <= col0:
        return pixels, valid.astype(bool)
    array = _open_zarr_variable(scene.uri, storage, scene.variable)
    source = np.asarray(with_retries(lambda: array.isel(
        band=[b - 1 for b in bands], y=slice(row0, row1), x=slice(col0, col1)).values))
    source_valid = (np.ones(source.shape[1:], dtype=np.uint8) if scene.nodata is None
                    else (source != scene.nodata).all(axis=0).astype(np.uint8))
    source_transform = window_transform(Window(col0, row0, col1 - col0, row1 - row0),
                                        src_transform)
    common = {"src_transform": source_transform, "src_crs": scene.crs,
              "dst_transform": transform, "dst_crs": crs}
    # The valid mask is warped nearest; pixels with the chosen kernel, no-data excluded.
    reproject(source_valid, valid, src_nodata=None, dst_nodata=None,
              resampling=Resampling.nearest, **common)
    for band in range(len(bands)):
        reproject(source[band], pixels[band], src_nodata=scene.nodata,
                  dst_nodata=scene.nodata, resampling=Resampling[resampling], **common)
    valid_mask = valid.astype(bool)
    pixels[:, ~valid_mask] = 0
    return pixels, valid_mask
