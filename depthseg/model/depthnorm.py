"""One normalisation for teacher depth and DSM/nDSM heights, shared by the teacher and the loss.

Per image, the 2nd and 98th percentiles of the valid, finite values map to 0 and 1, clipped
to [0, 1] (invariant to ``a * d + b`` with ``a > 0``); larger means nearer/higher; invalid
pixels get ``fill`` (NaN); an image with zero spread (flat terrain) maps to 0. Kept apart from
:mod:`depthseg.model.teacher` so the loss does not import ``transformers``.
"""

from __future__ import annotations

import math

import torch

from depthseg.errors import InputError

DEFAULT_PERCENTILES = (2.0, 98.0)


def normalize_depth(
    depth: torch.Tensor,
    valid: torch.Tensor | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    fill: float = float("nan"),
) -> torch.Tensor:
    """Map each image's depth/height to [0, 1] by a robust percentile stretch.

    Used for teacher depth and DSM/nDSM heights alike (see the module docstring).

    Args:
        depth: ``(B, 1, H, W)``, larger = nearer/higher; NaN/inf count as invalid.
        valid: Optional bool mask, ``(B, H, W)`` or ``(B, 1, H, W)``.
        percentiles: Lower and upper percentiles mapped to 0 and 1.
        fill: Value of invalid pixels.

    Returns:
        ``(B, 1, H, W)`` float32 in [0, 1] at valid pixels, ``fill`` elsewhere.

    Raises:
        InputError: On a wrong shape or bad percentiles.
    """
    _check_percentiles(percentiles, "percentiles")
    _check_depth_shape(depth)
    values = depth.float()
    ok = torch.isfinite(values) & _mask(valid, values)
    lo, hi = _percentile_range(values, ok, percentiles)  # (B, 1, 1, 1) each
    spread = hi - lo
    # Relative tolerance: a spread at float32 rounding level of the values is flat.
    tiny = 8 * torch.finfo(torch.float32).eps * torch.maximum(lo.abs(), hi.abs())
    flat = spread <= tiny
    scaled = ((values - lo) / torch.where(flat, torch.ones_like(spread), spread)).clamp(0.0, 1.0)
    scaled = torch.where(flat, torch.zeros_like(scaled), scaled)
    return torch.where(ok, scaled, torch.full_like(scaled, fill))


def depth_from_height(
    height_m: torch.Tensor,
    valid: torch.Tensor | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
    fill: float = float("nan"),
) -> torch.Tensor:
    """Normalised pseudo-depth from a DSM/nDSM, the alternative to the teacher.

    ``height_m`` is ``(B, 1, H, W)`` in metres (NaN/inf invalid); other arguments and
    the result are as in :func:`normalize_depth`, i.e. the form of
    :meth:`DepthTeacher.predict`. Negative heights are clipped to 0: in an nDSM they are
    ground-filtering noise (for a DSM below sea level, subtract a ground level first).
    """
    _check_depth_shape(height_m)
    heights = height_m.float()
    # Decide validity before clipping, which would turn -inf into a valid 0.
    ok = torch.isfinite(heights) & _mask(valid, heights)
    return normalize_depth(heights.clamp(min=0.0), ok, percentiles, fill)


def to_uint8(
    images: torch.Tensor,
    valid: torch.Tensor | None = None,
    percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
) -> torch.Tensor:
    """Stretch ``(B, C, H, W)`` 10/16-bit imagery to uint8, per image and per band.

    Each band's ``percentiles`` over the ``valid`` pixels map to 0 and 255 (QGIS's
    cumulative cut); invalid pixels become 0. Per band because GaoFen-2's blue band
    carries a haze offset that a joint stretch would keep as a colour cast. ``uint8``
    input is returned unchanged.
    """
    if images.dtype == torch.uint8:
        return images
    _check_percentiles(percentiles, "percentiles")
    if images.ndim != 4:
        raise InputError(f"images have shape {tuple(images.shape)}, expected (B, C, H, W)")
    values = images.float()
    ok = torch.isfinite(values) & _mask(valid, values)
    lo, hi = _percentile_range(values, ok, percentiles)  # (B, C, 1, 1)
    scale = 255.0 / (hi - lo).clamp(min=torch.finfo(torch.float32).tiny)
    out = ((values - lo) * scale).clamp(0.0, 255.0).round()
    return torch.where(ok, out, torch.zeros_like(out)).to(torch.uint8)


def _check_depth_shape(depth: torch.Tensor) -> None:
    """Refuse depth/height maps that are not ``(B, 1, H, W)``."""
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise InputError(
            f"depth has shape {tuple(depth.shape)}, expected (B, 1, H, W); "
            "add the channel axis with depth.unsqueeze(1)"
        )


def _mask(valid: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``valid`` as a bool mask broadcastable to ``like`` (B, C, H, W)."""
    if valid is None:
        return torch.ones((), dtype=torch.bool, device=like.device)
    mask = valid.to(like.device, torch.bool)
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    b, _, h, w = like.shape
    if tuple(mask.shape) != (b, 1, h, w):
        raise InputError(
            f"valid mask has shape {tuple(valid.shape)}, expected ({b}, {h}, {w}) or "
            f"({b}, 1, {h}, {w}); pass one mask per image"
        )
    return mask


def _percentile_range(
    values: torch.Tensor, ok: torch.Tensor, percentiles: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (image, band) percentiles of the ``ok`` values, each shaped (B, C, 1, 1).

    One batched sort instead of ``torch.quantile``, which cannot mask and refuses more
    than 2**24 values (a 4096 px chunk); linear interpolation as numpy's default.
    Slices without any ok value get (0, 0): the caller fills all their pixels.
    """
    b, c = values.shape[:2]
    ok = ok.expand_as(values).flatten(2)  # (B, C, N)
    # Masked values sort last as +inf; only the first `count` ranks are read.
    ranked = torch.where(ok, values.flatten(2), torch.inf).sort(dim=-1).values
    last = (ok.sum(-1, keepdim=True) - 1).clamp(min=0)  # (B, C, 1)
    q = torch.tensor(percentiles, dtype=torch.float64, device=values.device) / 100.0
    pos = q * last  # float64: exact ranks beyond float32's 2**24
    below = pos.floor().long()
    above = torch.minimum(below + 1, last)
    low, high = ranked.gather(-1, below), ranked.gather(-1, above)
    edges = low + (pos - below).float() * (high - low)  # (B, C, 2)
    edges = torch.where(ok.any(-1, keepdim=True), edges, torch.zeros_like(edges))
    return edges[..., 0].view(b, c, 1, 1), edges[..., 1].view(b, c, 1, 1)


def _check_percentiles(percentiles: tuple[float, float], name: str) -> None:
    """Refuse percentile pairs that are not ``0 <= lo < hi <= 100``."""
    lo, hi = percentiles
    if not (0.0 <= lo < hi <= 100.0 and math.isfinite(lo) and math.isfinite(hi)):
        raise InputError(
            f"{name}={percentiles} is not a pair 0 <= low < high <= 100; use e.g. (2, 98)"
        )
