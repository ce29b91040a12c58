"""Seamless blending: constant stays constant; two tile/chunk layouts agree, no seams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr
from mapping_helpers import ConstantModel, LocalModel, contract_for, fake_bundle, region_request

from depthseg.geo import TileSpec
from depthseg.mapping import ChunkPredictor, map_region


def _open(out: Path) -> tuple[xr.Dataset, dict[str, Any]]:
    return (xr.open_zarr(out / "mosaic.zarr", consolidated=False),
            json.loads((out / "plan.json").read_text()))


def test_constant_model_gives_a_constant_mosaic(synthetic_region: Any, tmp_path: Path) -> None:
    logits = (0.1, 2.0, -1.0, 0.3, 0.0, 0.5, -0.2)
    bundle = fake_bundle(ConstantModel(logits, depth=0.375), contract_for("uint16", (3, 2, 1)))
    map_region(region_request(synthetic_region, tmp_path, margin_m=100), bundle=bundle)
    dataset, _ = _open(tmp_path)
    landcover, depth = dataset.landcover.values, dataset.depth.values
    valid = landcover != 255
    expected = round(255 * float(torch.softmax(torch.tensor(logits), 0).max()))
    assert valid.mean() > 0.5
    assert (landcover[valid] == 1).all()
    assert (dataset.confidence.values[valid] == expected).all()
    assert (depth[valid] == np.float16(0.375)).all() and np.isnan(depth[~valid]).all()


def _tile_border_mask(plan: dict[str, Any], shape: tuple[int, int], band: int = 2) -> np.ndarray:
    """Pixels within ``band`` px of an edge of any tile of a run (in that run's grid)."""
    grid, tiles = plan["grid"], plan["tiles"]
    spec = TileSpec(tiles["tile"], tiles["overlap"], tiles["halo"])
    size, halo, tile = grid["chunk_size"], spec.halo_px, spec.tile
    mask = np.zeros(shape, dtype=bool)

    def mark(row0: int, row1: int, col0: int, col1: int) -> None:
        mask[max(row0, 0):max(row1, 0), max(col0, 0):max(col1, 0)] = True

    for key in plan["chunks"]:
        row, col = (int(v[1:]) for v in key.split("_"))
        top = row * size - grid["row_off"] - halo
        left = col * size - grid["col_off"] - halo
        for row_off, col_off in spec.layout(size, size).offsets:
            r0, c0 = top + row_off, left + col_off
            for edge in (r0, r0 + tile - 1):
                mark(edge - band, edge + band + 1, c0, c0 + tile)
            for edge in (c0, c0 + tile - 1):
                mark(r0, r0 + tile, edge - band, edge + band + 1)
    return mask


def test_two_layouts_agree_without_seams(synthetic_region: Any, tmp_path: Path) -> None:
    bundle = fake_bundle(LocalModel(), contract_for("uint16", (3, 2, 1)))
    runs = []
    for name, settings in (("a", {"chunk_size": 256, "tile": 126, "overlap": 28}),
                           ("b", {"chunk_size": 384, "tile": 98, "overlap": 30})):
        out = tmp_path / name
        map_region(region_request(synthetic_region, out, **settings), bundle=bundle)
        runs.append(_open(out))
    # Compare on the common part of both grids, by global pixel position.
    (data_a, plan_a), (data_b, plan_b) = runs
    grid_a, grid_b = plan_a["grid"], plan_b["grid"]
    top = max(grid_a["row_off"], grid_b["row_off"])
    left = max(grid_a["col_off"], grid_b["col_off"])
    bottom = min(grid_a["row_off"] + grid_a["height"], grid_b["row_off"] + grid_b["height"])
    right = min(grid_a["col_off"] + grid_a["width"], grid_b["col_off"] + grid_b["width"])

    def crop(data: xr.Dataset, grid: dict[str, Any], name: str) -> np.ndarray:
        rows = slice(top - grid["row_off"], bottom - grid["row_off"])
        cols = slice(left - grid["col_off"], right - grid["col_off"])
        return data[name].values[rows, cols].astype(np.float32)

    depth_a, depth_b = crop(data_a, grid_a, "depth"), crop(data_b, grid_b, "depth")
    valid = np.isfinite(depth_a) & np.isfinite(depth_b)
    assert valid.mean() > 0.9
    diff = np.abs(depth_a - depth_b)[valid]
    assert diff.max() < 2e-2, "layouts disagree by more than float16 noise + edge leakage"
    assert np.median(diff) <= 1e-3
    landcover_a, landcover_b = crop(data_a, grid_a, "landcover"), crop(data_b, grid_b, "landcover")
    assert (landcover_a == landcover_b)[valid].mean() > 0.999

    full_a = np.zeros((grid_a["height"], grid_a["width"]), dtype=bool)
    border = _tile_border_mask(plan_a, full_a.shape)[
        top - grid_a["row_off"]:bottom - grid_a["row_off"],
        left - grid_a["col_off"]:right - grid_a["col_off"]]
    border_diff = np.abs(depth_a - depth_b)[valid & border]
    inner_diff = np.abs(depth_a - depth_b)[valid & ~border]
    assert border_diff.size > 1000 and inner_diff.size > 1000
    # No seams: tile borders disagree no more than tile interiors (float16 rounding aside).
    assert border_diff.mean() <= 2 * inner_diff.mean() + 2e-4


def test_unblended_layouts_would_show_seams() -> None:
    """The seam check above can fail: without edge ramps, tile borders stand out."""
    contract = contract_for("uint16", (3, 2, 1))
    rng = np.random.default_rng(0)
    pixels = rng.integers(100, 900, size=(3, 312, 312)).astype(np.uint16)
    valid = np.ones((312, 312), dtype=bool)
    flat = ChunkPredictor(LocalModel(), contract, TileSpec(126, 1, halo=28))  # no ramp
    ramp = ChunkPredictor(LocalModel(), contract, TileSpec(126, 28))
    shifted = ChunkPredictor(LocalModel(), contract, TileSpec(98, 28))
    reference = shifted.predict_chunk(pixels, valid).depth.astype(np.float32)
    seam = np.abs(flat.predict_chunk(pixels, valid).depth.astype(np.float32) - reference).max()
    smooth = np.abs(ramp.predict_chunk(pixels, valid).depth.astype(np.float32) - reference).max()
    assert seam > 10 * max(smooth, 1e-3)


@pytest.mark.parametrize("batch_size", [1, 5])
def test_batch_size_does_not_change_the_result(batch_size: int) -> None:
    contract = contract_for("uint8", (1, 2, 3))
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, size=(3, 200, 200)).astype(np.uint8)
    valid = np.ones((200, 200), dtype=bool)
    valid[:40] = False
    one = ChunkPredictor(LocalModel(), contract, TileSpec(70, 14), batch_size=3)
    other = ChunkPredictor(LocalModel(), contract, TileSpec(70, 14), batch_size=batch_size)
    a, b = one.predict_chunk(pixels, valid), other.predict_chunk(pixels, valid)
    np.testing.assert_array_equal(a.landcover, b.landcover)
    np.testing.assert_allclose(a.depth.astype(np.float32), b.depth.astype(np.float32), atol=1e-3)
    assert (a.landcover[:40 - 14] == 255).all()



def test_cpu_passes_are_sized_to_the_tile_and_do_not_change_the_result() -> None:
    """A batch runs in forward passes of about a megapixel on the CPU; the result is the same."""
    from depthseg.mapping.predict import cpu_micro_batch

    assert cpu_micro_batch(518, 8) == 3 and cpu_micro_batch(126, 8) == 8
    assert cpu_micro_batch(2048, 8) == 1
    contract = contract_for("uint8", (1, 2, 3))
    pixels = np.random.default_rng(2).integers(0, 255, size=(3, 200, 200)).astype(np.uint8)
    valid = np.ones((200, 200), dtype=bool)
    whole = ChunkPredictor(LocalModel(), contract, TileSpec(70, 14), batch_size=8,
                           micro_batch=8)
    passes = ChunkPredictor(LocalModel(), contract, TileSpec(70, 14), batch_size=8,
                            micro_batch=3)
    a, b = whole.predict_chunk(pixels, valid), passes.predict_chunk(pixels, valid)
    np.testing.assert_array_equal(a.landcover, b.landcover)
    np.testing.assert_array_equal(a.confidence, b.confidence)
    np.testing.assert_allclose(a.depth.astype(np.float32), b.depth.astype(np.float32), atol=1e-3)
    assert passes.tiles_run == whole.tiles_run > 8

def test_cpu_predictor_runs_the_model_as_the_model_runs_itself(bundle_uint8: str) -> None:
    """Channels-last memory and the finest depth only: the model's own outputs, unchanged."""
    from depthseg.io.bundle import load_bundle
    from depthseg.model import normalize

    bundle = load_bundle(bundle_uint8)
    tiles = np.random.default_rng(3).integers(0, 255, size=(3, 3, 70, 98)).astype(np.uint8)
    with torch.inference_mode():
        images = normalize(torch.from_numpy(tiles), bundle.contract.mean, bundle.contract.std)
        expected = bundle.model.eval()(images)
    predictor = ChunkPredictor(bundle.model, bundle.contract, TileSpec(70, 14), batch_size=3)
    assert predictor.channels_last
    probs, depth = predictor.predict_tiles(tiles)
    torch.testing.assert_close(probs, torch.softmax(expected.logits, dim=1), atol=1e-5, rtol=0)
    assert depth is not None
    torch.testing.assert_close(depth, expected.depths[0], atol=1e-5, rtol=0)


def test_device_blender_equals_the_host_blender() -> None:
    """Predict blends on the model's device; the result is the geo Blender's weighted mean."""
    from depthseg.geo import Blender
    from depthseg.mapping.predict import DeviceBlender

    layout = TileSpec(tile=32, overlap=8).layout(40, 56)
    values = torch.rand(len(layout), 3, 32, 32, generator=torch.Generator().manual_seed(0))
    host = Blender.for_layout(3, layout)
    host.add_batch(values, layout.offsets)
    device = DeviceBlender(3, layout, torch.device("cpu"))
    device.add_batch(values[:2], list(layout.offsets[:2]))
    device.add_batch(values[2:], list(layout.offsets[2:]))
    height, width = layout.height, layout.width
    np.testing.assert_allclose(device.result()[:, :height, :width].numpy(),
                               host.result(fill_value=0.0), rtol=1e-6, atol=1e-7)


def test_compiled_predictor_matches_eager_with_a_short_last_batch() -> None:
    """``--compile``: a short last batch is padded to one static shape; results unchanged."""
    tiles = TileSpec(tile=126, overlap=28)
    contract = contract_for("uint16", (3, 2, 1))
    rng = np.random.default_rng(0)
    side = 200 + 2 * tiles.halo_px  # 3 x 3 tiles: batches of 4, 4 and 1
    pixels = rng.integers(1, 1000, (3, side, side)).astype(np.uint16)
    valid = np.ones((side, side), dtype=bool)
    valid[:40, :] = False
    eager = ChunkPredictor(LocalModel(), contract, tiles, batch_size=4)
    compiled = ChunkPredictor(LocalModel(), contract, tiles, batch_size=4, compile_model=True)
    expected = eager.predict_chunk(pixels, valid)
    got = compiled.predict_chunk(pixels, valid)
    assert compiled.tiles_run == eager.tiles_run == 9
    agree = (got.landcover == expected.landcover).mean()
    assert agree > 0.999, agree
    assert np.abs(got.confidence.astype(int) - expected.confidence).max() <= 1
    np.testing.assert_allclose(got.depth.astype(float), expected.depth.astype(float),
                               atol=2e-3)


class _DtypeProbe(LocalModel):
    """LocalModel that records the dtype its convolutions computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def forward(self, images: torch.Tensor) -> Any:
        out = super().forward(images)
        self.seen.add(out.logits.dtype)
        return out


@pytest.mark.parametrize(("precision", "dtype"), [("auto", torch.float32),
                                                  ("fp32", torch.float32),
                                                  ("bf16", torch.bfloat16)])
def test_precision_sets_the_models_arithmetic_on_the_cpu(precision: str,
                                                         dtype: torch.dtype) -> None:
    """``--precision bf16`` runs the model in bf16 on the CPU too; auto stays fp32 there.

    Blending and encoding stay float32, so bf16 changes a class only where two are close.
    """
    contract = contract_for("uint8", (1, 2, 3))
    pixels = np.random.default_rng(3).integers(0, 255, size=(3, 200, 200)).astype(np.uint8)
    valid = np.ones((200, 200), dtype=bool)
    probe = _DtypeProbe()
    got = ChunkPredictor(probe, contract, TileSpec(70, 14), precision=precision
                         ).predict_chunk(pixels, valid)
    expected = ChunkPredictor(LocalModel(), contract, TileSpec(70, 14), precision="fp32"
                              ).predict_chunk(pixels, valid)
    assert probe.seen == {dtype}
    assert got.depth.dtype == np.float16
    agree = (got.landcover == expected.landcover).mean()
    if dtype == torch.float32:
        np.testing.assert_array_equal(got.landcover, expected.landcover)
    else:
        assert agree > 0.97, agree
        assert np.abs(got.depth.astype(float) - expected.depth.astype(float)).max() < 0.02



def test_tiles_trimmed_at_the_bbox_edge_map_what_whole_tiles_map() -> None:
    """A chunk the bbox cuts: fewer model pixels, the same map where the bbox holds."""
    contract = contract_for("uint16", (3, 2, 1))
    rng = np.random.default_rng(2)
    spec = TileSpec(126, 28)  # stride 98; chunk 392 = 4 cells; halo 28
    area = 392 + 2 * spec.halo_px
    pixels = rng.integers(100, 900, size=(3, area, area)).astype(np.uint16)
    whole = np.ones((area, area), dtype=bool)
    cut = whole.copy()
    cut[:, :spec.halo_px + 350] = False  # the bbox keeps the chunk's last 42 columns
    predictor = ChunkPredictor(LocalModel(), contract, spec, batch_size=3)
    reference = predictor.predict_chunk(pixels, whole)
    full_px = predictor.last_chunk_tile_px
    got = predictor.predict_chunk(pixels, cut)
    assert predictor.last_chunk_tiles == 4  # one column of tiles, each 126 x 70 px
    assert predictor.last_chunk_tile_px == 4 * 126 * 70 < full_px / 4
    mapped = got.landcover != 255
    assert mapped[:, 350:].all() and not mapped[:, :350].any()
    np.testing.assert_array_equal(got.landcover[mapped], reference.landcover[mapped])
    np.testing.assert_allclose(got.depth[mapped].astype(np.float32),
                               reference.depth[mapped].astype(np.float32), atol=1e-3)
