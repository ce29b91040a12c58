"""The real WorldView-3 RGB sample maps end to end, in its own CRS (EPSG:26911)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray  # noqa: F401 - registers .rio
import xarray as xr
from mapping_helpers import load_job
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate

SAMPLE = "worldview3_lasvegas_rgb_0.27m.tif"


@pytest.mark.slow
def test_worldview3_sample_maps_in_its_crs(real_data: Path, bundle_uint8: str,
                                           tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    scene = real_data / SAMPLE
    with rasterio.open(scene) as src:
        bounds = src.bounds
    to_lonlat = Transformer.from_crs("EPSG:26911", "EPSG:4326", always_xy=True)
    bbox = to_lonlat.transform_bounds(*bounds)
    out = tmp_path / "lasvegas"
    code = load_job("map_region").main([
        "--bbox", *map(str, bbox), "--imagery", str(scene), "--model", bundle_uint8,
        "--out", str(out), "--chunk", "256", "--tile", "126", "--overlap", "28", "--gpus", "0"])
    assert code == 0
    # No cluster, no GPU, one model: the stages ran in this process, and it said so.
    assert "executor: this process" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["grid"]["crs"] == "EPSG:26911"
    assert run["grid"]["resolution"] == pytest.approx(0.2723, abs=1e-3)
    mosaic = xr.open_zarr(out / "mosaic.zarr", consolidated=False)
    assert mosaic.rio.crs.to_epsg() == 26911
    landcover = mosaic.landcover.values
    # The sample has no no-data: every pixel inside it is mapped, everything else is 255.
    mapped_km2 = (landcover != 255).sum() * run["grid"]["resolution"] ** 2 / 1e6
    sample_km2 = (bounds.right - bounds.left) * (bounds.top - bounds.bottom) / 1e6
    assert mapped_km2 == pytest.approx(sample_km2, rel=0.02)
    assert np.isfinite(mosaic.depth.values[landcover != 255]).all()
    for cog in (out / "cog").glob("*/*.tif"):
        assert cog_validate(str(cog), quiet=True)[0], cog
