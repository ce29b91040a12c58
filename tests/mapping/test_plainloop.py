"""The plain-loop baseline of ``jobs/bench.py`` maps a small region end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import rasterio
from mapping_helpers import CLASS_NAMES, contract_for, write_tiny_bundle

from depthseg.geo import tile_windows
from depthseg.mapping import plainloop
from depthseg.synthetic import make_region


def test_window_offsets_end_at_the_edge() -> None:
    assert plainloop.window_offsets(256, 126, 98) == [0, 98, 130]
    assert plainloop.window_offsets(224, 126, 98) == [0, 98]
    assert plainloop.window_offsets(100, 126, 98) == [0]


def test_plain_loop_maps_a_region(tmp_path: Path) -> None:
    region = make_region(tmp_path / "region", size=256, seed=0)
    bundle = write_tiny_bundle(tmp_path / "bundle", contract_for("uint16", (3, 2, 1)))
    side = region.size * region.resolution
    x0, y0 = region.transform.c, region.transform.f
    tile, overlap = 126, 28
    out, times_path = tmp_path / "plain.tif", tmp_path / "times.json"

    assert plainloop.main([
        "--imagery", str(region.root / "scenes"), "--model", bundle,
        "--bounds", str(x0), str(y0 - side), str(x0 + side), str(y0),
        "--tile", str(tile), "--overlap", str(overlap), "--batch-size", "4",
        "--num-workers", "1", "--out", str(out), "--json", str(times_path)]) == 0

    with rasterio.open(out) as src:
        assert src.shape == (region.size, region.size)
        assert src.crs == rasterio.crs.CRS.from_user_input(region.crs)
        assert src.transform.almost_equals(region.transform)
        assert src.dtypes[0] == "uint8"
        labels = src.read(1)
    assert labels.max() < len(CLASS_NAMES)
    assert np.isin(labels, np.arange(len(CLASS_NAMES))).all()

    times = json.loads(times_path.read_text())
    per_axis = math.ceil((region.size - tile) / (tile - overlap)) + 1
    assert times["tiles"] == per_axis**2 == 9
    assert times["tiles"] == len(tile_windows(region.size, region.size, tile, overlap).offsets)
    assert times["batches"] == math.ceil(times["tiles"] / 4)
    assert times["first_batch_tiles"] == 4
    assert (times["start"] <= times["first_batch_done"] <= times["last_batch_done"]
            <= times["end"])
