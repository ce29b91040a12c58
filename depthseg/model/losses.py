"""Training losses: L = w_D * L_D + w_cls * L_cls.

* ``L_D = 1 - SSIM(predicted depth, teacher depth)``, averaged over the three depth scales.
  The teacher (Depth Anything disparity, or a DSM/nDSM height) has arbitrary units, so each
  image's teacher is first mapped to [0, 1] by a robust min-max over its valid pixels (the
  2nd and 98th percentiles go to 0 and 1, values beyond are clipped); larger = closer to the
  sensor = higher. The model's depth is a sigmoid, also in [0, 1], so SSIM's constants use
  data range 1. For each scale the teacher is area-averaged to that scale's size.
* SSIM uses a Gaussian window (11 x 11, sigma 1.5, as Wang et al. 2004) computed with
  *normalised masked* local statistics: invalid teacher pixels (NaN / inf) get weight 0 and
  each window's weights are renormalised over its valid pixels, so no-data and image borders
  bias nothing; only pixels whose window is at least half valid are averaged.
* Optionally (``l1_weight`` > 0, not in the paper) a masked mean absolute error is added to
  L_D at every scale. SSIM alone is flat for a flat prediction on a flat target: with an nDSM
  that is mostly exactly 0 (ground), a saturated sigmoid at 0 scores well there and gets no
  gradient anywhere (the demo's full-resolution depth collapsed so; see configs/demo.yaml).
* ``L_cls`` is cross-entropy with ``ignore_index`` (255) excluded.

Everything is computed in float32 whatever the autocast dtype. Models without depth outputs
(depth prompter off, the DeepLabv3 baseline) get ``L_D = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from depthseg.model.depthnorm import normalize_depth

DEPTH_PERCENTILES = (2.0, 98.0)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


class LossParts(NamedTuple):
    """Total loss and its parts (the parts detached from nothing: log them with ``.item()``)."""

    loss: Tensor
    l_depth: Tensor
    l_cls: Tensor


def normalize_teacher_depth(depth: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image robust min-max of teacher depth to [0, 1], with a validity mask for L_D.

    The scaling is :func:`depthseg.model.depthnorm.normalize_depth`, the same one the teacher
    and DSM heights go through when chips are prepared (so re-applying it to prepared chips is
    a no-op up to rounding).

    Args:
        depth: (B, 1, H, W) or (B, H, W) teacher depth, NaN/inf where invalid.

    Returns:
        ``(normalised, valid)``: (B, 1, H, W) float32 in [0, 1] (0 where invalid) and the
        valid mask as float 0/1. An image whose valid range is empty or flat is all invalid:
        it has no structure for SSIM to match.
    """
    d = depth.float()
    if d.dim() == 3:
        d = d.unsqueeze(1)
    norm = normalize_depth(d, percentiles=DEPTH_PERCENTILES)  # NaN where invalid
    valid = torch.isfinite(norm)
    # normalize_depth maps a flat image to 0 everywhere: no valid pixel above 0 means flat.
    has_range = (torch.where(valid, norm, 0.0) > 0).flatten(1).any(1).view(-1, 1, 1, 1)
    valid = valid & has_range
    return torch.where(valid, norm, 0.0), valid.float()


def gaussian_window(size: int, sigma: float, device: torch.device | None = None) -> Tensor:
    """1-D Gaussian weights of length ``size`` summing to 1."""
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Tensor,
    y: Tensor,
    mask: Tensor | None = None,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
    data_range: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Masked SSIM per image.

    Args:
        x: (B, 1, H, W) prediction.
        y: (B, 1, H, W) target.
        mask: (B, 1, H, W) 0/1 validity of ``y``; all valid when ``None``.
        window: Gaussian window size (odd).
        sigma: Gaussian standard deviation.
        data_range: Value range of the data (1 for [0, 1] depth).

    Returns:
        ``(ssim, has_valid)``: (B,) mean SSIM over valid pixels, and a (B,) bool telling
        which images had any pixel to average (their SSIM is 0 otherwise).
    """
    x, y = x.float(), y.float()
    m = torch.ones_like(y) if mask is None else mask.float()
    g = gaussian_window(window, sigma, x.device)
    gh, gw = g.view(1, 1, -1, 1), g.view(1, 1, 1, -1)

    def blur(t: Tensor) -> Tensor:
        # Separable Gaussian, zero padding: padded pixels carry mask 0 and are renormalised away.
        t = F.conv2d(t, gh, padding=(window // 2, 0))
        return F.conv2d(t, gw, padding=(0, window // 2))

    weight = blur(m)
    w = weight.clamp_min(1e-6)
    mu_x, mu_y = blur(x * m) / w, blur(y * m) / w
    var_x = (blur(x * x * m) / w - mu_x**2).clamp_min(0)
    var_y = (blur(y * y * m) / w - mu_y**2).clamp_min(0)
    cov = blur(x * y * m) / w - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    s = numerator / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    counted = m * (weight > 0.5)
    n = counted.sum(dim=(1, 2, 3))
    return (s * counted).sum(dim=(1, 2, 3)) / n.clamp_min(1), n > 0


def depth_bce(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel binary cross-entropy of a sigmoid depth ``pred`` against ``target`` in [0, 1].

    Its gradient at the sigmoid's input is ``pred - target``: a pixel whose depth saturated at
    0 (logit -14) while its target is high is still pulled up. 1 - SSIM and L1 reach such a
    pixel only through the sigmoid's slope (1e-6 there): in demo runs every roof sat at
    depth 0.000 while trees were learnt. Computed in float32 with the logs clamped (no
    autocast-unsafe ``F.binary_cross_entropy``).
    """
    p = pred.float()
    return -(target * torch.log(p.clamp_min(1e-30))
             + (1 - target) * torch.log1p(-p.clamp_max(1 - 1e-7)))


def depth_loss(
    depths: list[Tensor], teacher: Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
    l1_weight: float = 0.0, bce_weight: float = 0.0,
) -> Tensor:
    """L_D: mean over scales of 1 - SSIM(depth_s, teacher resized to scale s).

    Args:
        depths: Predicted depths (B, 1, h_s, w_s) in [0, 1], any number of scales.
        teacher: (B, 1, H, W) or (B, H, W) raw teacher depth, NaN where invalid.
        window: SSIM window size.
        sigma: SSIM Gaussian sigma.
        l1_weight: Weight of the masked mean absolute error added at every scale.
        bce_weight: Weight of the masked binary cross-entropy between the depth and the
            [0, 1] target added at every scale (:func:`depth_bce`).

    Returns:
        Scalar loss; 0 when no image has a valid teacher pixel.
    """
    target, valid = normalize_teacher_depth(teacher)
    losses = []
    for pred in depths:
        size = (pred.shape[-2], pred.shape[-1])
        if (target.shape[-2], target.shape[-1]) == size:
            t, v = target, valid
        else:
            # Area averages of value*mask and mask keep invalid pixels out of the resampling.
            mass = F.adaptive_avg_pool2d(valid, size)
            t = F.adaptive_avg_pool2d(target * valid, size) / mass.clamp_min(1e-6)
            v = (mass > 0.5).float()
        score, has_valid = ssim(pred, t, v, window, sigma)
        counted = has_valid.float()  # (B,)
        # Every scale stays in the graph, valid or not: DDP expects a gradient for every
        # trainable parameter on every step, and no `if` on tensor values means no device sync.
        scale_loss = ((1 - score) * counted).sum() / counted.sum().clamp_min(1)
        if l1_weight:
            scale_loss = scale_loss + l1_weight * (
                ((pred.float() - t).abs() * v).sum() / v.sum().clamp_min(1))
        if bce_weight:
            scale_loss = scale_loss + bce_weight * (
                (depth_bce(pred, t) * v).sum() / v.sum().clamp_min(1))
        losses.append((scale_loss, (counted.sum() > 0).float()))
    if not losses:
        return teacher.new_zeros((), dtype=torch.float32)
    values = torch.stack([value for value, _ in losses])
    present = torch.stack([flag for _, flag in losses])
    return (values * present).sum() / present.sum().clamp_min(1)


class DepthSegLoss(nn.Module):
    """L = w_D * (1 - SSIM) + w_cls * cross-entropy.

    Args:
        depth_weight: w_D (paper: 1).
        cls_weight: w_cls (paper: 1).
        ignore_index: Label excluded from the cross-entropy (255).
        ssim_window: SSIM Gaussian window size.
        ssim_sigma: SSIM Gaussian sigma.
        depth_l1_weight: Weight of the masked L1 term in L_D (0: the paper's 1 - SSIM only).
        depth_bce_weight: Weight of the masked binary cross-entropy term in L_D (0: none).
        class_weights: (K,) weights of the cross-entropy's classes, or None (all 1).
    """

    def __init__(
        self,
        depth_weight: float = 1.0,
        cls_weight: float = 1.0,
        ignore_index: int = 255,
        ssim_window: int = SSIM_WINDOW,
        ssim_sigma: float = SSIM_SIGMA,
        depth_l1_weight: float = 0.0,
        depth_bce_weight: float = 0.0,
        class_weights: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.depth_l1_weight = depth_l1_weight
        self.depth_bce_weight = depth_bce_weight
        self.class_weights: Tensor | None
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.depth_weight = depth_weight
        self.cls_weight = cls_weight
        self.ignore_index = ignore_index
        self.ssim_window = ssim_window
        self.ssim_sigma = ssim_sigma

    def forward(
        self, logits: Tensor, depths: list[Tensor], labels: Tensor, teacher: Tensor | None = None
    ) -> LossParts:
        """Compute the loss.

        Args:
            logits: (B, K, H, W) class scores.
            depths: Predicted depths, finest first (may be empty).
            labels: (B, H, W) integer labels, ``ignore_index`` where unlabelled.
            teacher: (B, 1, H, W) or (B, H, W) teacher depth, NaN where invalid; ``None``
                (e.g. validation without teacher) gives ``l_depth = 0``.

        Returns:
            :class:`LossParts` (loss, l_depth, l_cls), float32 scalars.
        """
        labels = labels.long()
        if labels.dim() == 4:
            labels = labels.squeeze(1)
        if bool((labels != self.ignore_index).any()):
            l_cls = F.cross_entropy(logits.float(), labels, weight=self.class_weights,
                                    ignore_index=self.ignore_index)
        else:  # cross_entropy of an all-ignored batch is NaN; keep the graph, add nothing
            l_cls = logits.float().sum() * 0.0
        if depths and teacher is not None:
            l_depth = depth_loss(depths, teacher, self.ssim_window, self.ssim_sigma,
                                 self.depth_l1_weight, self.depth_bce_weight)
        else:
            l_depth = torch.zeros((), device=logits.device)
        loss = self.depth_weight * l_depth + self.cls_weight * l_cls
        return LossParts(loss, l_depth, l_cls)
