"""Blending: constant fields stay constant, layouts do not matter, weights fall off at edges."""

from __future__ import annotations

import numpy as np
import pytest

from depthseg.errors import InputError
from depthseg.geo import Blender, blend_weights, crop_halo, tile_windows


def _smooth_field(channels: int, height: int, width: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack(
        [0.5 + 0.4 * np.sin(rows / 17 + k) * np.cos(cols / 23 - k) for k in range(channels)]
    ).astype(np.float32)


def _blend_exact(field: np.ndarray, tile: int, overlap: int, offsets, **kwargs) -> np.ndarray:
    """Blend tiles whose 'model output' is the field itself: the result must be the field."""
    channels, height, width = field.shape
    blender = Blender(channels, height, width, blend_weights(tile, overlap, **kwargs))
    padded = np.zeros((channels, max(height, tile), max(width, tile)), np.float32)
    padded[:, :height, :width] = field
    for row_off, col_off in offsets:
        blender.add(padded[:, row_off : row_off + tile, col_off : col_off + tile], row_off, col_off)
    return blender.result()


@pytest.mark.parametrize("kind", ["cosine", "linear"])
@pytest.mark.parametrize(("tile", "overlap"), [(518, 64), (8, 3), (4, 1), (16, 0)])
def test_weights_symmetric_peak_one_edges_near_zero(kind: str, tile: int, overlap: int) -> None:
    weights = blend_weights(tile, overlap, kind=kind)  # type: ignore[arg-type]
    assert weights.shape == (tile, tile) and weights.dtype == np.float32
    np.testing.assert_array_equal(weights, weights.T)
    np.testing.assert_array_equal(weights, weights[::-1, :])
    np.testing.assert_array_equal(weights, weights[:, ::-1])
    assert weights.max() == pytest.approx(1.0)
    assert weights[tile // 2, tile // 2] == pytest.approx(1.0)
    assert weights.min() >= 1e-3
    if overlap:
        assert weights[0, 0] == pytest.approx(1e-3)
        assert weights[0, tile // 2] == pytest.approx(1e-3)
        # The ramp is `overlap` pixels wide: pixels 0 .. overlap - 2 are below 1 (and the edge
        # pixel always is, so an overlap of 1 still down-weights it).
        inner = max(overlap - 1, 1)
        assert np.all(weights[inner : tile - inner, inner : tile - inner] == 1.0)
        assert np.all(weights[:inner, tile // 2] < 1.0)
    else:
        assert np.all(weights == 1.0)


def test_cosine_neighbours_sum_to_one() -> None:
    tile, overlap = 518, 64
    ramp = blend_weights(tile, overlap, min_weight=1e-9)[tile // 2].astype(np.float64)
    left_tail, right_head = ramp[tile - overlap :], ramp[:overlap]
    np.testing.assert_allclose(left_tail + right_head, 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(11, 13, 4, 1), (100, 100, 8, 3), (2176, 2176, 518, 64), (3, 5, 4, 1)],
)
def test_constant_field_stays_constant(height: int, width: int, tile: int, overlap: int) -> None:
    rng = np.random.default_rng(height * 31 + width)
    for _ in range(3):
        value = rng.uniform(0.0, 1.0)
        field = np.full((2, height, width), value, np.float32)
        offsets = list(tile_windows(height, width, tile, overlap).offsets)
        # Random extra tiles anywhere: a weighted mean of equal values is that value.
        max_row, max_col = max(height - tile, 0), max(width - tile, 0)
        offsets += [(int(rng.integers(0, max_row + 1)), int(rng.integers(0, max_col + 1)))
                    for _ in range(5)]
        rng.shuffle(offsets)
        result = _blend_exact(field, tile, overlap, offsets)
        np.testing.assert_allclose(result, value, rtol=1e-6, atol=0)


def test_two_tilings_of_a_smooth_field_agree() -> None:
    field = _smooth_field(3, 100, 120)
    regular = tile_windows(100, 120, 16, 4).offsets
    shifted = tile_windows(100, 120, 16, 7).offsets  # different stride, different offsets
    a = _blend_exact(field, 16, 4, regular)
    b = _blend_exact(field, 16, 7, shifted, kind="linear")
    np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(a, field, atol=1e-6)


def test_edges_favour_the_tile_with_context() -> None:
    # Two tiles disagree in their overlap: the blend moves smoothly from one to the other.
    blender = Blender(1, 8, 14, blend_weights(8, 2))
    blender.add(np.zeros((1, 8, 8)), 0, 0)
    blender.add(np.ones((1, 8, 8)), 0, 6)
    row = blender.result()[0, 4]
    assert row[5] == 0.0 and row[8] == 1.0
    assert 0.0 < row[6] < row[7] < 1.0
    assert np.all(np.diff(row) >= 0)


def test_uncovered_pixels_filled_and_weight_sum() -> None:
    blender = Blender(1, 10, 10, blend_weights(4, 1))
    blender.add(np.ones((1, 4, 4)), 0, 0)
    assert blender.weight_sum.shape == (10, 10)
    result = blender.result()
    assert np.isnan(result[0, 9, 9]) and result[0, 0, 0] == 1.0
    assert blender.result(fill_value=255)[0, 9, 9] == 255


def test_add_batch_and_for_layout() -> None:
    layout = tile_windows(11, 13, 4, 1)
    blender = Blender.for_layout(2, layout)
    batch = np.full((len(layout), 2, 4, 4), 0.25, np.float32)
    blender.add_batch(batch, layout.offsets)
    np.testing.assert_allclose(blender.result(), 0.25, rtol=1e-6)


def test_torch_tensors_are_accepted() -> None:
    torch = pytest.importorskip("torch")
    blender = Blender(1, 4, 4, blend_weights(4, 1))
    blender.add(torch.full((1, 4, 4), 0.5, dtype=torch.bfloat16), 0, 0)
    assert blender.result()[0, 2, 2] == 0.5


def test_crop_halo() -> None:
    array = np.arange(2 * 10 * 12).reshape(2, 10, 12)
    cropped = crop_halo(array, 2)
    assert cropped.shape == (2, 6, 8)
    assert cropped[0, 0, 0] == array[0, 2, 2]
    assert crop_halo(array, 0) is array
    with pytest.raises(InputError, match="halo 5 cannot be cropped"):
        crop_halo(array, 5)


def test_bad_blend_inputs() -> None:
    with pytest.raises(InputError, match="need tile > overlap >= 0"):
        blend_weights(8, 8)
    with pytest.raises(InputError, match="min_weight 0 must be in"):
        blend_weights(8, 2, min_weight=0)
    with pytest.raises(InputError, match="blend kind 'gauss' is not known"):
        blend_weights(8, 2, kind="gauss")  # type: ignore[arg-type]
    blender = Blender(2, 10, 10, blend_weights(4, 1))
    with pytest.raises(InputError, match="does not match the blender"):
        blender.add(np.ones((1, 4, 4)), 0, 0)
    with pytest.raises(InputError, match="reaches outside"):
        blender.add(np.ones((2, 4, 4)), 7, 0)
    with pytest.raises(InputError, match="not square"):
        Blender(1, 10, 10, np.ones((4, 5)))
