"""Land-cover polygons: whole across chunk borders, exactly the raster's regions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from scipy import ndimage

from depthseg.geo import ChunkId, OutputGrid
from depthseg.io.storage import Storage
from depthseg.mapping import polygons

NAMES = ("cropland", "forest", "building", "water")
CHUNK = 48
RES = 2.0


def _grid() -> OutputGrid:
    # 4 x 4 chunks; negative global rows, so block ids must floor, not truncate.
    return OutputGrid("EPSG:32649", RES, row_off=-2 * CHUNK, col_off=5 * CHUNK,
                      height=4 * CHUNK, width=4 * CHUNK, chunk_size=CHUNK)


def _landcover(seed: int) -> np.ndarray:
    """Blobs of 4 classes, a disk over the corner of 4 chunks, a ring, no-data speckles."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=(4 * CHUNK, 4 * CHUNK)), 3)
    landcover = np.digitize(noise, np.quantile(noise, [0.3, 0.6, 0.85])).astype(np.uint8)
    rows, cols = np.mgrid[: 4 * CHUNK, : 4 * CHUNK]
    radius = np.hypot(rows - CHUNK + 0.5, cols - 2 * CHUNK + 0.5)
    landcover[radius < 20] = 2  # spans chunks (0..1) x (1..2): one polygon of 4 chunks
    landcover[(radius >= 26) & (radius < 28)] = 3  # a ring: a polygon with a hole
    landcover[rng.random(landcover.shape) < 0.01] = 255
    landcover[:, -7:] = 255  # a clipped edge
    return landcover


def _write(out: str, storage: Storage, grid: OutputGrid, landcover: np.ndarray,
           confidence: np.ndarray, chunks: list[ChunkId]) -> None:
    for chunk in chunks:
        window = grid.chunk_window(chunk)
        rows = slice(window.row_off, window.row_off + CHUNK)
        cols = slice(window.col_off, window.col_off + CHUNK)
        polygons.write_chunk(out, storage, grid, chunk, landcover[rows, cols],
                             confidence[rows, cols])


def _check(frame: Any, grid: OutputGrid, landcover: np.ndarray, confidence: np.ndarray
           ) -> None:
    """The polygons are the raster's 4-connected regions, one each, with their attributes."""
    assert frame.crs.to_epsg() == 32649
    assert frame.geometry.is_valid.all() and (frame.geom_type == "Polygon").all()
    cross = ndimage.generate_binary_structure(2, 1)
    for value, name in enumerate(NAMES):
        labels, count = ndimage.label(landcover == value, structure=cross)
        mine = frame[frame["class"] == value]
        assert (mine["class_name"] == name).all()
        # As many polygons as regions, of the same sizes: none cut at a chunk border.
        assert len(mine) == count, name
        sizes = np.sort(np.bincount(labels.ravel())[1:])
        assert np.array_equal(np.sort(mine["pixels"].to_numpy()), sizes), name
    np.testing.assert_allclose(frame.geometry.area, frame["pixels"] * RES * RES)
    np.testing.assert_allclose(frame["area_m2"], frame["pixels"] * RES * RES)
    # Drawn back onto the grid, the polygons are the land cover, pixel for pixel.
    drawn = rasterize(zip(frame.geometry, frame["class"].astype(int), strict=True),
                      out_shape=landcover.shape, transform=grid.transform, fill=255,
                      dtype="uint8")
    assert np.array_equal(drawn, landcover)
    # Each polygon's confidence is the mean of its pixels'.
    ids = rasterize(zip(frame.geometry, range(1, len(frame) + 1), strict=True),
                    out_shape=landcover.shape, transform=grid.transform, fill=0,
                    dtype="int32")
    means = ndimage.mean(confidence.astype(float), ids, index=np.arange(1, len(frame) + 1))
    np.testing.assert_allclose(frame["confidence"], means / 255, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_polygons_are_the_rasters_regions_whole_across_chunks(tmp_path: Path, seed: int
                                                               ) -> None:
    grid, storage = _grid(), Storage()
    landcover = _landcover(seed)
    confidence = np.random.default_rng(seed).integers(60, 256, landcover.shape).astype(np.uint8)
    out = str(tmp_path / "run")
    _write(out, storage, grid, landcover, confidence, grid.chunks())
    files = polygons.finalize(out, storage, grid, grid.chunks(), NAMES)
    assert files >= 1
    frame = gpd.read_parquet(tmp_path / "run" / "vector" / "landcover")
    _check(frame, grid, landcover, confidence)
    disk = frame[frame.contains(shapely.Point(grid.transform * (2 * CHUNK, CHUNK)))]
    assert len(disk) == 1 and disk["class_name"].iloc[0] == "building"
    # It reaches into the four chunks around the corner, and is the disk's whole region.
    corner = [grid.chunk_window(c) for c in grid.chunks()]
    inside = [shapely.box(*grid.window_bounds(w)) for w in corner]
    assert sum(disk.geometry.iloc[0].intersection(b).area > 0 for b in inside) >= 4
    labels, _ = ndimage.label(landcover == 2, structure=ndimage.generate_binary_structure(2, 1))
    assert disk["pixels"].iloc[0] == (labels == labels[CHUNK, 2 * CHUNK]).sum() > 1000
    # Nothing but the dataset is left: the per-chunk files stay (a resumed run reuses them).
    assert sorted(p.name for p in (tmp_path / "run" / "vector").iterdir()) == [
        "chunks", "landcover"]


def test_finalise_as_ray_tasks_on_s3_only_done_chunks(ray_local: Any, s3_storage: Storage,
                                                      s3_prefix: str) -> None:
    grid = _grid()
    landcover = _landcover(2)
    confidence = np.full(landcover.shape, 200, dtype=np.uint8)
    # A chunk written by a run that did not finish it must not appear: only done chunks count.
    done = [c for c in grid.chunks() if c != ChunkId(-1, 7)]
    _write(s3_prefix, s3_storage, grid, landcover, confidence, grid.chunks())
    polygons.finalize(s3_prefix, s3_storage, grid, done, NAMES)
    fs, path = s3_storage.fs(polygons.dataset_uri(s3_prefix))
    frame = gpd.read_parquet(path, filesystem=fs)
    window = grid.chunk_window(ChunkId(-1, 7))
    expected = landcover.copy()
    expected[window.row_off:window.row_off + CHUNK, window.col_off:window.col_off + CHUNK] = 255
    _check(frame, grid, expected, confidence)
    # Finalising again (a resumed run) rebuilds the same dataset, nothing doubled.
    polygons.finalize(s3_prefix, s3_storage, grid, done, NAMES)
    again = gpd.read_parquet(path, filesystem=fs)
    assert len(again) == len(frame)
