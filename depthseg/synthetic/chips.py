"""Cut a synthetic region into labelled chips, the way labelled datasets are shipped."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image
from rasterio.windows import Window

from depthseg.errors import InputError
from depthseg.synthetic.classes import NODATA_LABEL, PALETTE
from depthseg.synthetic.writer import Region

LAYOUTS = ("pairs", "loveda")


def write_chip_pairs(
    region: Region | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    chip_size: int = 512,
    layout: str = "pairs",
    min_valid: float = 0.5,
) -> list[Path]:
    """Cut the region into ``chip_size`` chips on a regular grid and write image/label pairs.

    The image of a chip is composited from the scenes newest-first (the first valid pixel
    wins); chips with less than ``min_valid`` valid pixels are dropped, and label pixels
    without imagery become no data. Only whole chips are cut (a region of 1100 px gives
    2 x 2 chips of 512).

    Layouts:
        ``"pairs"``: ``out_dir/<id>_img.tif`` and ``out_dir/<id>_label.tif``, georeferenced
        GeoTIFFs on the region grid; ``<id>`` is ``y<row>_x<col>`` (pixel offset of the chip
        in the region). Images keep the scene dtype and bands (nodata 0); labels are uint8
        in LiuZhou order with 255 = no data.

        ``"loveda"``: ``out_dir/images_png/<n>.png`` (8-bit RGB; 10-bit scenes are divided
        by 4) and ``out_dir/masks_png/<n>.png`` with ``n`` = 0, 1, 2... As in the LoveDA
        dataset, masks store class + 1 and 0 = no data. Only the encoding follows LoveDA;
        the classes stay in LiuZhou order (1 = cropland ... 7 = water). PNGs carry no
        georeferencing.

    Args:
        region: A :class:`Region`, or its folder / region.json.
        out_dir: Output folder (created).
        chip_size: Chip side in pixels.
        layout: "pairs" or "loveda".
        min_valid: Smallest fraction of valid image pixels for a chip to be kept.

    Returns:
        Paths of the chip images written, in row-major chip order.

    Raises:
        InputError: For an unknown layout or a chip size larger than the region.
    """
    if not isinstance(region, Region):
        region = Region.load(region)
    if layout not in LAYOUTS:
        raise InputError(f"layout {layout!r} is not supported; expected one of {LAYOUTS}")
    if not 16 <= int(chip_size) <= region.size:
        raise InputError(
            f"chip_size {chip_size!r} must be between 16 and the region size {region.size}"
        )
    chip_size = int(chip_size)
    out = Path(out_dir)
    if layout == "loveda":
        (out / "images_png").mkdir(parents=True, exist_ok=True)
        (out / "masks_png").mkdir(parents=True, exist_ok=True)
    else:
        out.mkdir(parents=True, exist_ok=True)

    info = region.info()
    # Newest scene first: the composite prefers the most recent acquisition.
    scenes = sorted(
        info["scene_details"],
        key=lambda d: dt.datetime.fromisoformat(d["datetime"].replace("Z", "+00:00")),
        reverse=True,
    )
    n_bands = len(region.band_names)
    written: list[Path] = []
    n_chips = region.size // chip_size
    with rasterio.open(region.labels) as labels_ds:
        for chip_row in range(n_chips):
            for chip_col in range(n_chips):
                row_off, col_off = chip_row * chip_size, chip_col * chip_size
                image = np.zeros((n_bands, chip_size, chip_size), np.dtype(region.dtype))
                valid = np.zeros((chip_size, chip_size), bool)
                for scene in scenes:
                    _fill_from_scene(region.root / "scenes" / scene["file"], scene["window"],
                                     row_off, col_off, image, valid)
                if valid.mean() < min_valid:
                    continue
                window = Window(col_off, row_off, chip_size, chip_size)
                labels = labels_ds.read(1, window=window)
                labels[~valid] = NODATA_LABEL
                if layout == "pairs":
                    chip_id = f"y{row_off:05d}_x{col_off:05d}"
                    transform = labels_ds.window_transform(window)
                    path = out / f"{chip_id}_img.tif"
                    _write_tif(path, image, transform, labels_ds.crs, 0, region.band_names)
                    _write_tif(out / f"{chip_id}_label.tif", labels[None], transform,
                               labels_ds.crs, NODATA_LABEL, ("land cover",), colormap=True)
                else:
                    path = out / "images_png" / f"{len(written)}.png"
                    _write_png(path, _to_rgb8(image, region.band_names, region.dtype))
                    mask = np.where(labels == NODATA_LABEL, 0, labels.astype(np.int16) + 1)
                    _write_png(out / "masks_png" / f"{len(written)}.png", mask.astype(np.uint8))
                written.append(path)
    return written


def _fill_from_scene(
    path: Path,
    scene_window: dict[str, int],
    row_off: int,
    col_off: int,
    image: np.ndarray,
    valid: np.ndarray,
) -> None:
    """Copy a scene's valid pixels into the still-empty pixels of a chip (in place)."""
    size_r, size_c = valid.shape
    r0 = max(row_off, scene_window["row_off"])
    c0 = max(col_off, scene_window["col_off"])
    r1 = min(row_off + size_r, scene_window["row_off"] + scene_window["height"])
    c1 = min(col_off + size_c, scene_window["col_off"] + scene_window["width"])
    if r1 <= r0 or c1 <= c0:
        return
    with rasterio.open(path) as src:
        data = src.read(window=Window(c0 - scene_window["col_off"], r0 - scene_window["row_off"],
                                      c1 - c0, r1 - r0))
    target = (slice(r0 - row_off, r1 - row_off), slice(c0 - col_off, c1 - col_off))
    take = (data[0] != 0) & ~valid[target]
    image[:, target[0], target[1]][:, take] = data[:, take]
    valid[target] |= take


def _to_rgb8(image: np.ndarray, band_names: tuple[str, ...], dtype: str) -> np.ndarray:
    """(rows, cols, 3) uint8 true colour; 10-bit values are divided by 4."""
    rgb = image[[band_names.index(name) for name in ("red", "green", "blue")]]
    if dtype == "uint16":
        rgb = np.clip(rgb // 4, 0, 255)
    return np.moveaxis(rgb.astype(np.uint8), 0, -1)


def _write_tif(
    path: Path,
    data: np.ndarray,
    transform: rasterio.Affine,
    crs: rasterio.crs.CRS,
    nodata: int,
    descriptions: tuple[str, ...],
    colormap: bool = False,
) -> None:
    """A small tiled, DEFLATE-compressed GeoTIFF (written under a temporary name)."""
    count, rows, cols = data.shape
    tmp = path.with_name(path.name + ".part")
    with rasterio.open(tmp, "w", driver="GTiff", width=cols, height=rows, count=count,
                       dtype=data.dtype.name, crs=crs, transform=transform, nodata=nodata,
                       tiled=True, blockxsize=256, blockysize=256, compress="deflate",
                       predictor=2) as dst:
        dst.write(data)
        dst.descriptions = descriptions
        if colormap:
            dst.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(PALETTE)})
    os.replace(tmp, path)


def _write_png(path: Path, array: np.ndarray) -> None:
    """A PNG written under a temporary name."""
    tmp = path.with_name(path.name + ".part")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)
