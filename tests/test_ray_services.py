"""Ray workers reach the same S3 server as the driver, with the settings passed explicitly."""

from __future__ import annotations

import hashlib

import numpy as np
import rasterio
from rasterio.transform import from_origin

from depthseg.io.catalog import describe_scene
from depthseg.io.storage import Storage
from depthseg.io.warp import read_pixels


def test_ray_tasks_read_windows_from_s3(tmp_path, ray_local, s3_storage, s3_prefix):
    ray = ray_local
    data = np.arange(2 * 96 * 80, dtype=np.uint16).reshape(2, 96, 80) % 1000 + 1
    local = tmp_path / "s.tif"
    with rasterio.open(
        local, "w", driver="COG", width=80, height=96, count=2, dtype="uint16",
        crs="EPSG:32649", transform=from_origin(350000.0, 2700000.0, 1.0, 1.0), nodata=0,
    ) as dst:
        dst.write(data)
    uri = f"{s3_prefix}/s.tif"
    s3_storage.upload(local, uri)

    @ray.remote
    def window_digest(storage: Storage, uri: str, row: int) -> str:
        pixels, valid = read_pixels(describe_scene(uri, storage), storage, row, 0, 32, 80)
        assert valid.all()
        return hashlib.sha256(pixels.tobytes()).hexdigest()

    digests = ray.get([window_digest.remote(s3_storage, uri, row) for row in (0, 32, 64)])
    expected = [hashlib.sha256(data[:, r : r + 32].tobytes()).hexdigest() for r in (0, 32, 64)]
    assert digests == expected
