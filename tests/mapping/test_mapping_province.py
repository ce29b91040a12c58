"""Province-scale planning paths, at small counts: metadata-only STAC, rows that carry only
their chunk's scenes, a latency proxy in front of the S3 server, and the projection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from depthseg.io.catalog import open_catalog
from depthseg.mapping.pipeline import chunk_rows
from depthseg.mapping.plan import MapRequest, make_plan
from depthseg.mapping.province import (
    UTM49,
    ProvinceOptions,
    _contract,
    bench_index,
    project_guangxi,
    write_item_collection,
)
from depthseg.mapping.stages import scenes_from_text


def test_stac_items_with_proj_metadata_are_planned_without_opening_a_file(tmp_path: Path
                                                                          ) -> None:
    path = tmp_path / "items.json"
    minx, miny, maxx, maxy = write_item_collection(path, 400, tile_m=500.0)
    # The hrefs point at a bucket that does not exist: any header read would fail.
    catalog = open_catalog(str(path))
    assert len(catalog.scenes) == 400
    scene = catalog.scenes[0]
    assert scene.uri.startswith("s3://ortho/") and scene.count == 3 and scene.dtype == "uint8"
    assert scene.band_names == ("red", "green", "blue") and scene.nodata == 0
    assert scene.crs == UTM49 and scene.resolution == pytest.approx(0.8)
    request = MapRequest(bbox=(minx + 100, miny + 100, maxx - 100, maxy - 100), bbox_crs=UTM49,
                         imagery=str(path), model="m", out="o", chunk_size=512)
    plan = make_plan(request, catalog, _contract())
    rows, _ = chunk_rows(catalog, plan, plan.chunks)
    assert len(rows) == len(plan.chunks) > 100
    for row, chunk in list(zip(rows, plan.chunks, strict=True))[::37]:
        carried = scenes_from_text(row["scenes"])
        expected = catalog.scenes_intersecting(plan.read_bounds(chunk), plan.grid.crs)
        assert carried == expected and 0 < len(carried) < 16  # only the chunk's own scenes
        start, end = row["acquired"].split("|")
        assert start <= end


def test_latency_proxy_passes_bytes_and_counts_requests(s3_server, s3_prefix, tmp_path: Path
                                                        ) -> None:
    from depthseg.io.s3server import LatencyProxy

    s3_server.storage.write_bytes_atomic(f"{s3_prefix}/a.bin", b"x" * 100_000)
    with LatencyProxy(s3_server.port, 0.01) as proxy:
        assert proxy.storage().read_bytes(f"{s3_prefix}/a.bin") == b"x" * 100_000
        assert proxy.requests >= 1


def test_guangxi_projection_adds_the_stages_it_measures(tmp_path: Path) -> None:
    index = bench_index(ProvinceOptions(tmp_path), chunks=400)
    assert index["chunks"] == 400 and index["vrt_open_s"] >= 0
    figures = {"stac": {"open_catalog_s": 5.0, "scenes": 50_000, "make_plan_s": 3.0,
                        "chunk_rows_s": 2.0, "chunks": 20_000},
               "e2e": {"driver_ms_per_chunk": 2.0, "finalise_steps_s": {"quicklook": 0.1}},
               "write": {"cpu_s_per_chunk": 0.5, "level_read_s_per_chunk": 0.01},
               "overview": {"cog_s": 30.0}, "index": index}
    projection = project_guangxi(figures)
    # 237,600 km2 in the default 1792 px chunks at 0.8 m, 4 x 4 lattice tiles each.
    assert projection["chunks"] == 115_609 and projection["tiles_per_chunk"] == 16
    assert projection["map_gpu_bound_s"] == pytest.approx(115_609 * 16 / (8 * 340))
    assert projection["total_s"] == pytest.approx(
        projection["plan_s"] + projection["map_gpu_bound_s"] + projection["finalise_s"])
    assert json.dumps(projection)
