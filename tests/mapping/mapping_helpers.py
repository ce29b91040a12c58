"""Helpers of the mapping tests: tiny model bundles, exactly-known models, fast requests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthseg.config import load_config
from depthseg.io.bundle import Bundle, Contract, save_bundle
from depthseg.mapping import MapRequest
from depthseg.model import DepthSegOutput, build_model

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASS_NAMES = ("cropland", "forest", "building", "road", "impervious", "bare", "water")
PALETTE = ((250, 230, 100), (30, 130, 40), (200, 40, 40), (120, 120, 120), (190, 190, 190),
           (160, 120, 70), (40, 90, 220))
# Small sizes that keep CPU runs fast and do not divide evenly.
FAST = {"chunk_size": 256, "tile": 126, "overlap": 28, "batch_size": 4}


def contract_for(dtype: str, bands: tuple[int, ...]) -> Contract:
    """A contract for 3 model channels taken from ``bands`` of ``dtype`` imagery."""
    scale = 300.0 if dtype == "uint16" else 100.0
    return Contract(band_indices=bands, band_names=("red", "green", "blue"), input_dtype=dtype,
                    value_range=(0, 1023) if dtype == "uint16" else (0, 255),
                    mean=(scale,) * 3, std=(scale / 3,) * 3, class_names=CLASS_NAMES,
                    palette=PALETTE, tile_size=126)


def write_tiny_bundle(path: Path, contract: Contract, seed: int = 0) -> str:
    """Save a randomly initialised tiny DepthSeg with ``contract``; returns the URI."""
    torch.manual_seed(seed)
    config = load_config(REPO_ROOT / "configs" / "tiny.yaml").model
    return save_bundle(str(path), build_model(config), config, contract)


class ConstantModel(nn.Module):
    """Same logits and depth for every pixel, whatever the input."""

    def __init__(self, logits: tuple[float, ...], depth: float) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits).view(1, -1, 1, 1))
        self.depth = depth

    def forward(self, images: torch.Tensor) -> DepthSegOutput:
        batch, _, height, width = images.shape
        logits = self.logits.expand(batch, -1, height, width).clone()
        return DepthSegOutput(logits, [torch.full((batch, 1, height, width), self.depth)])


class LocalModel(nn.Module):
    """A small-receptive-field model (fixed 5x5 convolutions, zero padding).

    Its output depends only on a pixel's neighbourhood, so two tile layouts must agree once
    tile edges (where zero padding changes the answer) are blended away.
    """

    def __init__(self, classes: int = 7, bands: int = 3) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.classify = nn.Conv2d(bands, classes, 5, padding=2)
        self.height = nn.Conv2d(bands, 1, 5, padding=2)
        with torch.no_grad():
            for conv in (self.classify, self.height):
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.3)
                conv.bias.zero_()

    def forward(self, images: torch.Tensor) -> DepthSegOutput:
        return DepthSegOutput(self.classify(images), [torch.sigmoid(self.height(images))])


def fake_bundle(model: nn.Module, contract: Contract) -> Bundle:
    """A loaded-bundle object around any model (the pipeline's ``bundle=`` argument)."""
    return Bundle(model=model.eval(), config=None, contract=contract, uri="memory://test")  # type: ignore[arg-type]


def region_request(region: Any, out: Path | str, model: str = "memory://test",
                   margin_m: float = 0.0, **overrides: Any) -> MapRequest:
    """A request over a synthetic region's extent (grown by ``margin_m`` left and up, so
    that the grid also holds pixels without imagery), in its CRS, with fast settings."""
    size = region.size * region.resolution
    x0, y0 = region.transform.c, region.transform.f
    request = MapRequest(bbox=(x0 - margin_m, y0 - size, x0 + size, y0 + margin_m),
                         bbox_crs=region.crs,
                         imagery=str(region.root / "scenes"), model=model, out=str(out),
                         executor="local", **FAST)
    return replace(request, **overrides)


def load_job(name: str) -> Any:
    """Import ``jobs/<name>.py`` as a module (``jobs/`` is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO_ROOT / "jobs" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gdal_band_categories(path: Path | str) -> tuple[list[str], list[list[str]]]:
    """What GDAL itself reports for band 1: category names and the default RAT's rows.

    Calls rasterio's own libgdal through its C API (rasterio exposes neither), the same
    calls QGIS and ``gdalinfo`` make.
    """
    import ctypes
    import glob

    import rasterio

    libs = glob.glob(str(Path(rasterio.__file__).parent.parent / "rasterio.libs" / "libgdal*"))
    lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL("libgdal.so")
    lib.GDALAllRegister()
    lib.GDALOpen.restype = ctypes.c_void_p
    lib.GDALOpen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALGetDefaultRAT.restype = ctypes.c_void_p
    lib.GDALGetDefaultRAT.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetRowCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetColumnCount.argtypes = [ctypes.c_void_p]
    lib.GDALRATGetValueAsString.restype = ctypes.c_char_p
    lib.GDALRATGetValueAsString.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    dataset = lib.GDALOpen(str(path).encode(), 0)
    assert dataset, f"GDAL cannot open {path}"
    try:
        band = lib.GDALGetRasterBand(dataset, 1)
        names_p = lib.GDALGetRasterCategoryNames(band)
        names: list[str] = []
        while names_p and names_p[len(names)] is not None:
            names.append(names_p[len(names)].decode())
        rat = lib.GDALGetDefaultRAT(band)
        rows = [] if not rat else [
            [lib.GDALRATGetValueAsString(rat, r, c).decode()
             for c in range(lib.GDALRATGetColumnCount(rat))]
            for r in range(lib.GDALRATGetRowCount(rat))]
        return names, rows
    finally:
        lib.GDALClose(dataset)
