"""Tiny georeferenced rasters for the training tests (written in milliseconds, no simulator).

Images are a per-class colour plus noise, so a few optimiser steps can learn them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
CRS = "EPSG:32649"
RES = 0.8
ORIGIN = (500000.0, 2700000.0)
COLOURS = np.array([[200, 180, 90], [30, 110, 20], [220, 30, 30], [80, 80, 80],
                    [170, 170, 170], [150, 100, 20], [10, 60, 200]], np.float32)


def write_tif(path: Path, data: np.ndarray, row_off: int = 0, col_off: int = 0,
              nodata: float | None = None, names: tuple[str, ...] | None = None) -> Path:
    count, rows, cols = data.shape
    transform = Affine(RES, 0, ORIGIN[0] + col_off * RES, 0, -RES, ORIGIN[1] - row_off * RES)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", width=cols, height=rows, count=count,
                       dtype=data.dtype.name, crs=CRS, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data)
        if names:
            dst.descriptions = names
    return path


def label_field(size: int, seed: int, cell: int = 16, classes: int = 7) -> np.ndarray:
    """(size, size) uint8 labels: blocky classes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, classes, (-(-size // cell),) * 2).astype(np.uint8)
    return np.kron(coarse, np.ones((cell, cell), np.uint8))[:size, :size]


def image_of(labels: np.ndarray, seed: int, dtype: str = "uint8") -> np.ndarray:
    """(3, H, W) RGB (or 4-band B,G,R,NIR uint16 when dtype is uint16) from labels."""
    rng = np.random.default_rng(seed)
    rgb = COLOURS[np.minimum(labels, 6)].transpose(2, 0, 1)
    rgb = rgb + rng.normal(0, 8, rgb.shape)
    if dtype == "uint8":
        return np.clip(rgb, 1, 255).astype(np.uint8)
    nir = rgb[1:2] * 1.5
    bgrn = np.concatenate([rgb[::-1], nir]) * 4  # 10-bit, B, G, R, NIR
    return np.clip(bgrn, 1, 1023).astype(np.uint16)


def make_scenes(root: Path, size: int = 256, seed: int = 0, dtype: str = "uint8") -> dict:
    """A label raster, a height raster and two overlapping scenes on one grid."""
    labels = label_field(size, seed)
    labels[:8, :] = 255  # a strip without labels
    write_tif(root / "labels.tif", labels[None], nodata=255)
    height = (labels == 2).astype(np.float32) * 12 + (labels == 1) * 8
    write_tif(root / "height.tif", height[None].astype(np.float32))
    image = image_of(labels, seed, dtype)
    half = size // 2 + 32
    # Scene A covers the left part, scene B the right part; they overlap in the middle.
    a = image[:, :, :half].copy()
    b = image[:, :, size - half:].copy()
    b[:, :, : 64] = 1  # B differs from A in the overlap: the composite must pick A (newer)
    scene_a = write_tif(root / "scenes" / "a.tif", a, nodata=0)
    scene_b = write_tif(root / "scenes" / "b.tif", b, col_off=size - half, nodata=0)
    for path, stamp in ((scene_a, "2020-06-01T00:00:00Z"), (scene_b, "2019-06-01T00:00:00Z")):
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(datetime=stamp)
    return {"labels": root / "labels.tif", "height": root / "height.tif",
            "scenes": [scene_a, scene_b], "image": image, "label_array": labels}


def scene_store(root: Path, out: str, size: int, chip_size: int,
                fractions: tuple[float, float, float], storage=None) -> str:  # noqa: ANN001
    """A chip store (nDSM depth, one split per chip) from :func:`make_scenes` under ``root``."""
    from depthseg.train.prepare import PrepareOptions, prepare_chips

    data = make_scenes(root, size=size)
    prepare_chips(PrepareOptions(out=out, scenes=(str(root / "scenes"),),
                                 labels=(str(data["labels"]),), height=str(data["height"]),
                                 chip_size=chip_size, block=1, fractions=fractions),
                  storage, log=lambda *_: None)
    return out


def make_pairs(root: Path, n: int = 6, size: int = 64, seed: int = 0, layout: str = "pairs",
               dtype: str = "uint8") -> list[Path]:
    """``n`` chip pairs of ``size`` px in the ``pairs`` or ``loveda`` layout."""
    out = []
    for k in range(n):
        labels = label_field(size, seed + k, cell=8)
        image = image_of(labels, seed + k, dtype)
        if layout == "pairs":
            labels[:4, :4] = 255
            out.append(write_tif(root / f"c{k:02d}_img.tif", image, nodata=0))
            write_tif(root / f"c{k:02d}_label.tif", labels[None], nodata=255)
        else:
            (root / "images_png").mkdir(parents=True, exist_ok=True)
            (root / "masks_png").mkdir(parents=True, exist_ok=True)
            mask = labels + 1
            mask[:4, :4] = 0
            Image.fromarray(image.transpose(1, 2, 0)).save(root / "images_png" / f"{k}.png")
            Image.fromarray(mask).save(root / "masks_png" / f"{k}.png")
            out.append(root / "images_png" / f"{k}.png")
    return out


def load_job(name: str):  # noqa: ANN201
    """Import ``jobs/<name>.py`` under a unique module name (jobs/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
