"""Write a synthetic region to disk: COG scenes, labels, heights, a preview and a manifest.

Layout of ``out_dir``::

    scenes/scene_00_YYYYMMDD.tif ...   overlapping Cloud-Optimized GeoTIFF scenes
    labels.tif                          uint8 classes (LiuZhou order), 255 = no data
    height.tif                          float32 height above ground (nDSM), metres
    preview.png                         true-colour rendering (at most 2048 px per side)
    region.json                         manifest (grid, bands, classes, sun, scenes)

In region.json, ``transform`` holds the affine coefficients (a, b, c, d, e, f), i.e.
x = a * col + b * row + c and y = d * col + e * row + f, and ``bounds`` is
(left, bottom, right, top) in CRS units.

Every raster is on one pixel grid: labels and heights cover the region; each scene is a
window of the same grid (same CRS and resolution, origin offset by whole pixels).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from depthseg.errors import InputError
from depthseg.synthetic.classes import CLASS_NAMES, NODATA_LABEL, PALETTE
from depthseg.synthetic.scene import BAND_NAMES, MAX_VALUE, check_dtype, sensor, simulate
from depthseg.synthetic.tiling import SceneWindow, plan_scenes

MANIFEST_NAME = "region.json"
PREVIEW_MAX_PX = 2048
_COG_OPTIONS: dict[str, Any] = {
    "driver": "COG",
    "compress": "ZSTD",
    "level": 3,
    "blocksize": 512,
    "overviews": "AUTO",
    "num_threads": 2,
    "bigtiff": "IF_SAFER",
}


@dataclass(frozen=True)
class Region:
    """A synthetic region on disk.

    Attributes:
        root: The output folder.
        scenes: COG scenes, in acquisition order (oldest first).
        labels: Path of labels.tif.
        height: Path of height.tif.
        preview: Path of preview.png.
        manifest: Path of region.json.
        size: Pixels per side.
        seed: Generator seed.
        resolution: Pixel size in CRS units.
        crs: The CRS as an authority string (e.g. "EPSG:32649"), else as WKT.
        transform: Affine transform of the region grid (north-up).
        dtype: "uint16" or "uint8".
        band_names: Scene band names, in file order.
    """

    root: Path
    scenes: list[Path]
    labels: Path
    height: Path
    preview: Path
    manifest: Path
    size: int
    seed: int
    resolution: float
    crs: str
    transform: Affine
    dtype: str
    band_names: tuple[str, ...]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Region:
        """Open a region written by :func:`make_region` (its folder or its region.json)."""
        manifest = Path(path)
        if manifest.is_dir():
            manifest = manifest / MANIFEST_NAME
        if not manifest.is_file():
            raise InputError(
                f"{str(path)!r} holds no {MANIFEST_NAME}; expected a folder written by "
                "make_region / jobs/make_synthetic.py"
            )
        info = json.loads(manifest.read_text())
        root = manifest.parent
        return cls(
            root=root,
            scenes=[root / "scenes" / name for name in info["scenes"]],
            labels=root / info["labels"],
            height=root / info["height"],
            preview=root / info["preview"],
            manifest=manifest,
            size=int(info["size"]),
            seed=int(info["seed"]),
            resolution=float(info["resolution"]),
            crs=str(info["crs"]),
            transform=Affine(*info["transform"]),
            dtype=str(info["dtype"]),
            band_names=tuple(info["band_names"]),
        )

    def info(self) -> dict[str, Any]:
        """The parsed manifest."""
        return json.loads(self.manifest.read_text())


def projected_crs(crs: str) -> tuple[CRS, float]:
    """Parse a CRS and check that it is projected.

    Args:
        crs: Anything pyproj accepts ("EPSG:32649", WKT, PROJ string).

    Returns:
        (pyproj CRS, metres per CRS unit).

    Raises:
        InputError: If it cannot be parsed or is not a projected CRS with linear units.
    """
    try:
        parsed = CRS.from_user_input(crs)
    except CRSError as exc:
        raise InputError(
            f"crs {crs!r} is not a coordinate reference system pyproj understands; "
            "use a projected CRS such as EPSG:32649"
        ) from exc
    if parsed.is_geographic:
        raise InputError(
            f"crs {crs!r} is geographic (degrees), but a region grid needs metres; "
            "use a projected CRS such as EPSG:32649"
        )
    if not parsed.is_projected:
        raise InputError(f"crs {crs!r} is not a projected CRS; use one such as EPSG:32649")
    factor = parsed.axis_info[0].unit_conversion_factor if parsed.axis_info else 1.0
    return parsed, float(factor or 1.0)


def grid_origin(crs: CRS, seed: int, size: int, resolution: float) -> tuple[float, float]:
    """Upper-left corner (x, y) of the region grid, deterministic for the seed.

    The corner snaps to multiples of 2048 pixels, so regions of one CRS and resolution
    share a global grid (the mapping output grid snaps the same way). EPSG:32649 (UTM 49N)
    lands near Liuzhou, Guangxi; other CRSs near the centre of their area of use.
    """
    cell = 2048 * resolution
    rng = np.random.default_rng([seed, 32649])
    extent = size * resolution
    if crs.to_epsg() == 32649:
        x_lo, x_hi, y_lo, y_hi = 300_000.0, 400_000.0, 2_680_000.0, 2_720_000.0
        n_x = max(1, int((x_hi - x_lo - extent) // cell))
        n_y = max(1, int((y_hi - y_lo - extent) // cell))
        x0 = np.ceil(x_lo / cell) * cell + cell * int(rng.integers(0, n_x))
        y0 = np.floor(y_hi / cell) * cell - cell * int(rng.integers(0, n_y))
        return float(x0), float(y0)
    centre_x, centre_y = 0.0, 0.0
    area = crs.area_of_use
    if area is not None:
        lon = 0.5 * (area.west + area.east)
        lat = 0.5 * (area.south + area.north)
        to_crs = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        centre_x, centre_y = to_crs.transform(lon, lat)
        if not (np.isfinite(centre_x) and np.isfinite(centre_y)):
            centre_x, centre_y = 0.0, 0.0
    # Up to about 20 km from the centre, still on the snapped grid.
    steps = max(1, int(20_000 // cell))
    x0 = (np.floor(centre_x / cell) + int(rng.integers(-steps, steps + 1))) * cell
    y0 = (np.floor(centre_y / cell) + int(rng.integers(-steps, steps + 1))) * cell
    return float(x0), float(y0)


def make_region(
    out_dir: str | os.PathLike[str],
    size: int = 1024,
    seed: int = 0,
    resolution: float = 0.8,
    crs: str = "EPSG:32649",
    dtype: str = "uint16",
    n_scenes: int = 4,
) -> Region:
    """Simulate a region and write its scenes, labels, heights, preview and manifest.

    Args:
        out_dir: Output folder (created). Files of the same names are replaced, and
            ``scenes/scene_*.tif`` files of an earlier run are removed.
        size: Pixels per side of the square region.
        seed: Seed; the same arguments write the same bytes.
        resolution: Pixel size in CRS units (metres for UTM).
        crs: A projected CRS.
        dtype: "uint16" (B, G, R, NIR, 10-bit, like GaoFen-2) or "uint8" (R, G, B).
        n_scenes: Number of overlapping scenes covering the region.

    Returns:
        The written region.

    Raises:
        InputError: For a geographic CRS, bad size, resolution, dtype or scene count.
    """
    check_dtype(dtype)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 64:
        raise InputError(f"size {size!r} must be an integer of at least 64 pixels")
    if not isinstance(n_scenes, (int, np.integer)) or not 1 <= n_scenes <= 64:
        raise InputError(f"n_scenes {n_scenes!r} must be an integer between 1 and 64")
    if not (isinstance(resolution, (int, float)) and np.isfinite(resolution) and resolution > 0):
        raise InputError(f"resolution {resolution!r} must be a positive number of CRS units")
    crs_obj, metres_per_unit = projected_crs(crs)
    size, seed, resolution = int(size), int(seed), float(resolution)
    x0, y0 = grid_origin(crs_obj, seed, size, resolution)
    transform = Affine(resolution, 0.0, x0, 0.0, -resolution, y0)
    rio_crs = rasterio.crs.CRS.from_wkt(crs_obj.to_wkt())

    arrays = simulate(size, seed, dtype, resolution=resolution * metres_per_unit)
    root = Path(out_dir)
    (root / "scenes").mkdir(parents=True, exist_ok=True)

    windows = plan_scenes(size, n_scenes, np.random.default_rng([seed, 7]))
    scene_paths, details = [], []
    for window in windows:
        path = root / "scenes" / window.file_name
        valid = _write_scene(path, arrays.radiance, window, dtype, transform, rio_crs, seed)
        scene_paths.append(path)
        details.append({
            "file": window.file_name,
            "datetime": window.acquired.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "window": {"row_off": window.row_off, "col_off": window.col_off,
                       "height": window.height, "width": window.width},
            "valid_fraction": round(valid, 4),
        })
    # Scenes of an earlier run into the same folder would be picked up by a glob: drop them.
    for stale in (root / "scenes").glob("scene_*.tif"):
        if stale not in scene_paths:
            stale.unlink()

    _write_cog(root / "labels.tif", arrays.labels[None], transform, rio_crs, NODATA_LABEL,
               ("land cover",), {"class_names": json.dumps(list(CLASS_NAMES))},
               resampling="mode", colormap=True)
    _write_cog(root / "height.tif", arrays.height[None], transform, rio_crs, None,
               ("height above ground (m)",), {"units": "metre"}, resampling="average",
               predictor=3)
    preview = root / "preview.png"
    _write_preview(preview, arrays.image, arrays.band_names)

    manifest = root / MANIFEST_NAME
    band_names = BAND_NAMES[dtype]
    info = {
        "format": "depthseg-synthetic-region/1",
        "size": size,
        "shape": [size, size],  # (rows, cols)
        "seed": seed,
        "resolution": resolution,
        "crs": crs_obj.to_string() if crs_obj.to_epsg() else crs_obj.to_wkt(),
        "transform": list(transform)[:6],
        "bounds": [round(v, 6) for v in (x0, y0 - size * resolution, x0 + size * resolution, y0)],
        "dtype": dtype,
        "band_names": list(band_names),
        "max_value": MAX_VALUE[dtype],
        "nodata": 0,
        "class_names": list(CLASS_NAMES),
        "palette": [list(c) for c in PALETTE],
        "label_nodata": NODATA_LABEL,
        "class_fractions": np.round(
            np.bincount(arrays.labels.ravel(), minlength=len(CLASS_NAMES)) / arrays.labels.size, 4
        ).tolist(),
        "sun_azimuth": round(arrays.sun_azimuth, 3),
        "sun_elevation": round(arrays.sun_elevation, 3),
        "scenes": [d["file"] for d in details],
        "scene_details": details,
        "labels": "labels.tif",
        "height": "height.tif",
        "preview": "preview.png",
    }
    _atomic_text(manifest, json.dumps(info, indent=2) + "\n")
    return Region.load(manifest)


def _write_scene(
    path: Path,
    radiance: np.ndarray,
    window: SceneWindow,
    dtype: str,
    transform: Affine,
    crs: rasterio.crs.CRS,
    seed: int,
) -> float:
    """Render one scene window with its own calibration and noise; return its valid fraction."""
    rng = np.random.default_rng([seed, 11, window.index])
    # Scenes of different dates differ slightly in gain and haze, as real ones do.
    gain = 1.0 + rng.uniform(-0.04, 0.04) + rng.uniform(-0.01, 0.01, 4)
    offset = rng.uniform(-0.004, 0.008) * np.array([1.0, 0.75, 0.5, 0.3])
    rows = slice(window.row_off, window.row_off + window.height)
    cols = slice(window.col_off, window.col_off + window.width)
    image = sensor(radiance[:, rows, cols], dtype, rng, gain=gain, offset=offset)
    image[:, ~window.valid] = 0
    stamp = window.acquired
    tags = {
        "TIFFTAG_DATETIME": stamp.strftime("%Y:%m:%d %H:%M:%S"),
        "datetime": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "platform": "synthetic-gf2" if dtype == "uint16" else "synthetic-rgb",
        "scene_id": path.stem,
    }
    scene_transform = transform * Affine.translation(window.col_off, window.row_off)
    _write_cog(path, image, scene_transform, crs, 0, BAND_NAMES[dtype], tags,
               resampling="average")
    return float(window.valid.mean())


def _write_cog(
    path: Path,
    data: np.ndarray,
    transform: Affine,
    crs: rasterio.crs.CRS,
    nodata: float | None,
    descriptions: tuple[str, ...],
    tags: dict[str, str],
    resampling: str,
    predictor: int = 2,
    colormap: bool = False,
) -> None:
    """Write (bands, rows, cols) as a COG via a temporary name, then rename (atomic)."""
    count, rows, cols = data.shape
    tmp = path.with_name(path.name + ".part")
    profile = dict(_COG_OPTIONS, width=cols, height=rows, count=count, dtype=data.dtype.name,
                   crs=crs, transform=transform, nodata=nodata, predictor=predictor,
                   overview_resampling=resampling)
    with rasterio.open(tmp, "w", **profile) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        dst.update_tags(**tags)
        if colormap:
            dst.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(PALETTE)})
    os.replace(tmp, path)


def _write_preview(path: Path, image: np.ndarray, band_names: tuple[str, ...]) -> None:
    """True-colour PNG, 2-98 % stretch per band, block-averaged to <= 2048 px per side."""
    rgb = image[[band_names.index(name) for name in ("red", "green", "blue")]]
    factor = int(np.ceil(max(rgb.shape[1:]) / PREVIEW_MAX_PX))
    if factor > 1:
        rows, cols = (rgb.shape[1] // factor) * factor, (rgb.shape[2] // factor) * factor
        rgb = rgb[:, :rows, :cols].reshape(3, rows // factor, factor, cols // factor, factor)
        rgb = rgb.mean(axis=(2, 4), dtype=np.float32)
    rgb = rgb.astype(np.float32)
    sample = rgb[:, ::4, ::4].reshape(3, -1)
    low, high = np.percentile(sample, 2, axis=1), np.percentile(sample, 98, axis=1)
    scaled = (rgb - low[:, None, None]) / np.maximum(high - low, 1e-6)[:, None, None]
    scaled = np.clip(scaled, 0, 1) ** np.float32(0.9) * 255
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(np.moveaxis(scaled.astype(np.uint8), 0, -1)).save(tmp, format="PNG")
    os.replace(tmp, path)


def _atomic_text(path: Path, text: str) -> None:
    """Write text via a temporary name and rename."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(text)
    os.replace(tmp, path)


__all__ = ["MANIFEST_NAME", "Region", "grid_origin", "make_region", "projected_crs"]
