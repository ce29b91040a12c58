"""Catalogs of scenes: which rasters cover a place, and one composited window of pixels.

A catalog is opened from one of:

- a folder, ``s3://`` prefix or glob of GeoTIFF/COG scenes (``*.tif``, ``*.tiff``), or a list
  of such files and folders (``jobs/prepare.py --scenes``): listed once, headers read
  concurrently;
- a STAC ItemCollection JSON file (``*.json``; the asset key is configurable), read with
  pystac; Items whose asset carries ``proj:code``/``proj:epsg``, ``proj:transform`` (or
  ``proj:bbox``) and ``proj:shape`` plus band metadata (STAC 1.1 ``bands`` or
  ``raster:bands``) are described from that metadata alone, with no header read;
- a Zarr mosaic (``*.zarr``) that ``xarray`` + ``rioxarray`` open with a CRS: its first
  (band, y, x) or (y, x) variable is one scene, read lazily window by window.

Reading a window (:meth:`Catalog.read`) asks the footprint index (a shapely STRtree over the
scene footprints in the output CRS) which scenes meet it, reads each onto the window's grid
(:func:`depthseg.io.warp.read_scene`: directly when the scene is on the grid, else warped with
a validity mask) and composites them first-valid, newest first where acquisition dates are
known (``datetime`` tag or STAC property), else in catalog order. Pixels keep the scene dtype.
Training (``jobs/prepare.py``) and mapping (``jobs/map_region.py``) read through this one path.
"""

from __future__ import annotations

import fnmatch
import json
import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from shapely.strtree import STRtree

from depthseg.errors import InputError
from depthseg.io.storage import Storage, join, scheme_of, with_retries
from depthseg.io.warp import (
    RESAMPLING,
    check_resampling,
    open_zarr_variable,
    read_scene,
    read_with_retries,
    same_crs,
)

__all__ = ["RASTER_SUFFIXES", "RESAMPLING", "Catalog", "Scene", "composite", "describe_scene",
           "describe_scenes", "open_catalog"]

RASTER_SUFFIXES = (".tif", ".tiff")
#: Headers read at once when a catalog is a folder/prefix (they mostly wait on storage).
HEADER_THREADS = 16


@dataclass(frozen=True)
class Scene:
    """One input raster of a catalog.

    Attributes:
        uri: Local path or ``s3://`` URI.
        crs: CRS as a string (WKT or ``EPSG:n``); ``""`` for rasters without one (chip PNGs).
        transform: Affine of the raster's top-left pixel corner (a, b, c, d, e, f).
        height: Rows.
        width: Columns.
        count: Bands.
        dtype: Numpy dtype name of the bands.
        nodata: No-data value, or None.
        acquired: Acquisition time as ISO text, or None when unknown.
        variable: The Zarr variable for Zarr mosaics; None for GeoTIFFs.
        band_names: Band descriptions (``""`` where the file has none).
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
    band_names: tuple[str, ...] = ()

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the scene's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, Affine(*self.transform))

    @property
    def resolution(self) -> float:
        """Pixel width in CRS units."""
        return float(math.hypot(self.transform[0], self.transform[3]))

    def gsd(self) -> float | None:
        """Ground sample distance in metres (measured at the centre in a geographic CRS)."""
        if not self.crs:
            return None
        crs = CRS.from_string(self.crs)
        if crs.is_projected and crs.linear_units_factor[1] == 1.0:
            return self.resolution
        from pyproj import Geod

        a = Affine(*self.transform)
        x0, y0 = a * (self.width / 2, self.height / 2)
        x1, y1 = a * (self.width / 2 + 1, self.height / 2)
        if crs.is_geographic:
            return float(Geod(ellps="WGS84").inv(x0, y0, x1, y1)[2])
        return self.resolution * crs.linear_units_factor[1]


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


def describe_scene(uri: str, storage: Storage, acquired: str | None = None,
                   require_crs: bool = True) -> Scene:
    """Read one raster's header into a :class:`Scene`; refuses rasters without a CRS.

    Args:
        uri: Local path or ``s3://`` URI.
        storage: Storage settings.
        acquired: Acquisition time to use instead of the file's ``datetime`` tag.
        require_crs: Refuse rasters without a CRS (imagery must be placed on a map; chip
            pairs need not be).
    """
    path = storage.gdal_path(uri)

    def read() -> Scene:
        with storage.gdal_env(), warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                if require_crs and src.crs is None:
                    raise InputError(f"scene {uri!r} has no CRS; expected georeferenced imagery "
                                     "(assign one with `gdal_edit.py -a_srs EPSG:n`)")
                return Scene(uri=uri, crs=src.crs.to_string() if src.crs else "",
                             transform=tuple(src.transform)[:6], height=src.height,
                             width=src.width, count=src.count, dtype=src.dtypes[0],
                             nodata=src.nodata, acquired=acquired or _acquired(src.tags()),
                             band_names=tuple(d or "" for d in src.descriptions))

    return read_with_retries(read, path, f"raster {uri!r}",
                             fix="check that it exists and is a GeoTIFF/COG")


def describe_scenes(uris: Sequence[str], storage: Storage, require_crs: bool = True,
                    ) -> list[Scene]:
    """Headers of many rasters, read concurrently (order kept)."""
    if len(uris) <= 1:
        return [describe_scene(u, storage, require_crs=require_crs) for u in uris]
    with ThreadPoolExecutor(min(HEADER_THREADS, len(uris))) as pool:
        return list(pool.map(lambda u: describe_scene(u, storage, require_crs=require_crs),
                             uris))


class Catalog:
    """The scenes of a run, with a footprint index in one output CRS."""

    def __init__(self, scenes: list[Scene], source: str, storage: Storage,
                 resampling: str = "nearest") -> None:
        """Index scenes; newest first where every scene has a date, else catalog order.

        Args:
            scenes: The scenes, in catalog order.
            source: The URI the catalog was opened from (for messages).
            storage: Storage settings used to read the scenes.
            resampling: How scenes not on the target grid are resampled (identity reads,
                where a scene already lies on the grid, copy pixels whatever this is).
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
        self.resampling = check_resampling(resampling)
        self._index_crs: str | None = None
        self._footprints: list[Any] = []
        self._tree: STRtree | None = None

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

    @property
    def band_names(self) -> tuple[str, ...]:
        """The scenes' band descriptions (``""`` where none); refuses scenes that disagree."""
        count = self.count
        described = {s.band_names[:count] for s in self.scenes if any(s.band_names)}
        if len(described) > 1:
            shown = " vs ".join(str(list(d)) for d in sorted(described)[:2])
            raise InputError(f"imagery {self.source!r} mixes band descriptions ({shown}); "
                             "give scenes of one band layout")
        return next(iter(described)) if described else ("",) * count

    def footprints(self, crs: str) -> list[Any]:
        """Scene footprints (shapely polygons) in ``crs``, in :attr:`scenes` order."""
        if self._index_crs != crs:
            from depthseg.geo import reproject_geometry

            self._footprints = [
                shapely.box(*s.bounds) if same_crs(s.crs, crs)
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

    def scenes_meeting(self, windows: Sequence[tuple[float, float, float, float]],
                       crs: str) -> list[list[int]]:
        """Indices of the scenes meeting each window's interior, in composite order.

        One bulk query of the footprint index for many windows at once.
        """
        footprints = self.footprints(crs)
        assert self._tree is not None
        boxes = shapely.box(*np.asarray(windows, dtype=np.float64).reshape(-1, 4).T)
        window_idx, scene_idx = self._tree.query(boxes, predicate="intersects")
        inside = shapely.relate_pattern(np.asarray(footprints, dtype=object)[scene_idx],
                                        boxes[window_idx], "T********")
        out: list[list[int]] = [[] for _ in range(len(boxes))]
        for w, k in zip(window_idx[inside].tolist(), scene_idx[inside].tolist(), strict=True):
            out[w].append(k)
        return [sorted(hits) for hits in out]

    def read(self, crs: str, transform: Affine, height: int, width: int,
             bands: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Composite one window of a target grid from every scene that meets it.

        Args:
            crs: Target CRS.
            transform: Affine of the window's top-left corner.
            height: Rows of the window.
            width: Columns of the window.
            bands: 1-based bands, in the order wanted (the plan's bands).

        Returns:
            ``(pixels (band, row, col) in the scenes' dtype, valid (row, col) bool)``;
            invalid pixels hold 0.

        Raises:
            StorageError: A scene could not be read (names the scene).
        """
        bounds = rasterio.transform.array_bounds(height, width, transform)
        return composite(self.scenes_intersecting(bounds, crs), self.storage, crs, transform,
                         height, width, bands, self.resampling, self.dtype)


def composite(scenes: Sequence[Scene], storage: Storage, crs: str, transform: Affine,
              height: int, width: int, bands: tuple[int, ...], resampling: str,
              dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """First-valid composite of ``scenes`` (in the order given) on one window of a grid.

    Mapping's read tasks call this with the scenes the planner found for their chunk, so a
    task never holds the whole catalog.
    """
    pixels: np.ndarray | None = None
    filled = np.zeros((height, width), dtype=bool)
    for scene in scenes:
        scene_pixels, scene_valid = read_scene(scene, storage, crs, transform, height, width,
                                               bands, resampling)
        if pixels is None:  # the first scene: taken whole (it holds 0 where it has no data)
            pixels, filled = scene_pixels.astype(dtype, copy=False), scene_valid.copy()
        else:
            take = scene_valid & ~filled
            np.copyto(pixels, scene_pixels, where=take, casting="unsafe")
            filled |= take
        if filled.all():
            break
    if pixels is None:
        pixels = np.zeros((len(bands), height, width), dtype=dtype)
    return pixels, filled


def open_catalog(uri: str | Sequence[str], storage: Storage | None = None,
                 asset: str = "image", resampling: str = "nearest") -> Catalog:
    """Open the imagery of a run.

    Args:
        uri: Folder / ``s3://`` prefix / glob of GeoTIFFs, a STAC ItemCollection ``.json``, a
            ``.zarr`` mosaic, or a list of GeoTIFF files and folders.
        storage: Storage settings.
        asset: STAC asset key holding the image (falls back to the only ``image/tiff`` asset).
        resampling: How scenes off the target grid are resampled.

    Raises:
        InputError: Nothing readable at ``uri``, or a scene without a CRS.
    """
    storage = storage or Storage()
    if not isinstance(uri, str):
        uris = [u for part in uri for u in _rasters_at(part, storage)]
        return Catalog(describe_scenes(uris, storage), " ".join(uri), storage, resampling)
    text = uri.rstrip("/")
    if text.endswith(".json"):
        from depthseg.io.stac import stac_scenes

        return Catalog(stac_scenes(uri, storage, asset), uri, storage, resampling)
    if text.endswith(".zarr"):
        return Catalog([_zarr_scene(text, storage)], uri, storage, resampling)
    return Catalog(describe_scenes(_rasters_at(uri, storage), storage), uri, storage, resampling)


def _rasters_at(uri: str, storage: Storage) -> list[str]:
    """The GeoTIFFs a file, folder, prefix or glob names, sorted, listed once."""
    text = uri.rstrip("/")
    globbing = any(c in text for c in "*?[")
    if text.lower().endswith(RASTER_SUFFIXES) and not globbing:
        return [uri]
    fs, path = storage.fs(uri)
    prefix = "s3://" if scheme_of(uri) == "s3" else ""
    if globbing:
        found = with_retries(lambda: fs.glob(path))
    else:
        if not with_retries(lambda: fs.exists(path)):
            raise InputError(f"imagery {uri!r} does not exist; give a folder, s3:// prefix, glob,"
                             " STAC ItemCollection .json or .zarr mosaic")
        found = with_retries(lambda: fs.find(path))
    names = sorted(p for p in found if p.lower().endswith(RASTER_SUFFIXES)
                   and not fnmatch.fnmatch(p.rsplit("/", 1)[-1], ".*"))
    if not names:
        raise InputError(f"no GeoTIFF (*.tif) scenes under {uri!r}; give scene files or a "
                         "folder of GeoTIFFs")
    return [prefix + p for p in names]


def relative_href(base_uri: str, href: str) -> str:
    """``href`` resolved against the folder of ``base_uri`` when it is relative."""
    if scheme_of(href) != "" or href.startswith("/"):
        return href
    base = base_uri.rsplit("/", 1)[0] if "/" in base_uri else "."
    return join(base, href)


def _zarr_scene(uri: str, storage: Storage) -> Scene:
    array: Any = open_zarr_variable(uri, storage)
    nodata = array.rio.nodata if array.rio.nodata is not None else array.rio.encoded_nodata
    names = array.attrs.get("band_names") or array.attrs.get("long_name") or ()
    if isinstance(names, str):
        names = (names,)
    return Scene(uri=uri, crs=array.rio.crs.to_string(),
                 transform=tuple(array.rio.transform())[:6], height=array.shape[-2],
                 width=array.shape[-1], count=array.shape[0], dtype=str(array.dtype),
                 nodata=None if nodata is None else float(nodata),
                 acquired=_acquired({"datetime": str(array.attrs.get("datetime", ""))}),
                 variable=str(array.name),
                 band_names=tuple(str(n) for n in names) if len(names) == array.shape[0]
                 else ())


def load_json(uri: str, storage: Storage, what: str) -> Any:
    """A JSON document, or a one-line InputError naming ``what`` it should have been."""
    try:
        return json.loads(storage.read_bytes(uri))
    except json.JSONDecodeError as err:
        raise InputError(f"{what} {uri!r} is not JSON ({err})") from err
