"""Scene reads on the output grid: windows that reach past the file read as no data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from depthseg.io.catalog import describe_scene
from depthseg.io.storage import Storage
from depthseg.io.warp import read_scene

ORIGIN = Affine(0.5, 0.0, 500_000.0, 0.0, -0.5, 4_000_000.0)


@pytest.fixture(scope="module")
def scene_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-band uint16 scene of 300 x 200 px with no-data 0 in a corner of band 1 only."""
    rng = np.random.default_rng(0)
    data = rng.integers(1, 4000, size=(3, 300, 200)).astype(np.uint16)
    data[:, :20, :30] = 0  # no data in every band
    data[0, 40:60, 40:60] = 0  # no data in one band only: still valid
    path = tmp_path_factory.mktemp("warp") / "scene.tif"
    with rasterio.open(path, "w", driver="GTiff", width=200, height=300, count=3,
                       dtype="uint16", crs="EPSG:32611", transform=ORIGIN, nodata=0,
                       tiled=True, blockxsize=64, blockysize=64, compress="zstd") as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize(("row", "col", "height", "width"), [
    (10, 10, 100, 100),  # inside
    (-30, -50, 120, 90),  # past the top-left corner
    (250, 150, 100, 100),  # past the bottom-right corner
    (-10, -10, 320, 220),  # larger than the file on every side
    (400, 0, 50, 50),  # wholly outside
])
def test_a_window_reads_like_rasterios_boundless_read(scene_file: Path, row: int, col: int,
                                                       height: int, width: int) -> None:
    storage = Storage()
    scene = describe_scene(str(scene_file), storage)
    transform = ORIGIN * Affine.translation(col, row)
    pixels, valid = read_scene(scene, storage, "EPSG:32611", transform, height, width, (3, 1))
    with rasterio.open(scene_file) as src:
        window = Window(col, row, width, height)
        expected = src.read([3, 1], window=window, boundless=True, fill_value=0)
        expected_valid = src.dataset_mask(window=window, boundless=True) > 0
    assert pixels.shape == (2, height, width) and pixels.dtype == np.uint16
    np.testing.assert_array_equal(valid, expected_valid)
    np.testing.assert_array_equal(pixels, np.where(expected_valid, expected, 0))
