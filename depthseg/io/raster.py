"""Reading raster scenes (GeoTIFF/COG) from local paths or ``s3://`` through rasterio.

The reader answers with :class:`RasterInfo` (grid and band facts) and windows of pixels in
(band, row, col) order together with a boolean valid mask (row, col). Later layers (catalogs,
footprint index, reprojection) build on these two calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from depthseg.errors import InputError, StorageError
from depthseg.io.storage import Storage


@dataclass(frozen=True)
class RasterInfo:
    """Grid and band facts of one raster.

    Attributes:
        uri: Where it was opened from.
        crs: Its coordinate reference system.
        transform: Affine map from (col, row) pixel corners to CRS coordinates.
        height: Rows.
        width: Columns.
        count: Bands.
        dtype: Numpy dtype name of the bands (``uint8``, ``uint16``, ...).
        nodata: The no-data value, or None when the file has none.
        band_names: Band descriptions (``""`` where the file has none).
    """

    uri: str
    crs: CRS
    transform: Affine
    height: int
    width: int
    count: int
    dtype: str
    nodata: float | None
    band_names: tuple[str, ...]

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size as (y, x), both positive, in CRS units."""
        return abs(self.transform.e), abs(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) in the raster's CRS."""
        return rasterio.transform.array_bounds(self.height, self.width, self.transform)[:4]


def _open(uri: str, storage: Storage) -> rasterio.DatasetReader:
    try:
        return rasterio.open(storage.gdal_path(uri))
    except rasterio.errors.RasterioIOError as err:
        raise StorageError(
            f"cannot open raster {uri!r} ({err}); check that the path/URI exists and is a GeoTIFF"
        ) from err


def open_raster(uri: str, storage: Storage | None = None, require_crs: bool = True) -> RasterInfo:
    """Read the header of a raster.

    Args:
        uri: Local path or ``s3://`` URI.
        storage: Storage settings; defaults to local/anonymous AWS defaults.
        require_crs: Refuse rasters without a CRS (they cannot be placed on a map).
    """
    storage = storage or Storage()
    with storage.gdal_env(), _open(uri, storage) as src:
        if require_crs and src.crs is None:
            raise InputError(
                f"raster {uri!r} has no CRS; expected a georeferenced GeoTIFF "
                "(assign one with `gdal_edit.py -a_srs EPSG:n`)"
            )
        return RasterInfo(
            uri=uri,
            crs=src.crs,
            transform=src.transform,
            height=src.height,
            width=src.width,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=src.nodata,
            band_names=tuple(d or "" for d in src.descriptions),
        )


def read_window(
    uri: str,
    row_off: int,
    col_off: int,
    height: int,
    width: int,
    storage: Storage | None = None,
    bands: tuple[int, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window of pixels; parts outside the raster come back as invalid.

    Args:
        uri: Local path or ``s3://`` URI.
        row_off: First row of the window (may be negative or past the edge).
        col_off: First column of the window.
        height: Rows to read.
        width: Columns to read.
        storage: Storage settings.
        bands: 1-based band indexes to read (default: all).

    Returns:
        ``(pixels (band, row, col), valid (row, col) bool)``; invalid pixels hold 0.
    """
    storage = storage or Storage()
    window = Window(col_off=col_off, row_off=row_off, width=width, height=height)
    with storage.gdal_env(), _open(uri, storage) as src:
        indexes = list(bands) if bands is not None else list(range(1, src.count + 1))
        if max(indexes) > src.count or min(indexes) < 1:
            raise InputError(
                f"bands {indexes} requested from {uri!r}, which has {src.count} bands; "
                f"choose 1-based band indexes between 1 and {src.count}"
            )
        pixels = src.read(indexes, window=window, boundless=True, fill_value=0)
        # The dataset mask marks no-data and outside-the-file pixels (0) versus data (255).
        mask = src.dataset_mask(window=window, boundless=True)
    return pixels, mask > 0
