"""Losses: SSIM, teacher normalisation, masking of NaN depth and ignored labels."""

from __future__ import annotations

import torch

from depthseg.model import DepthSegLoss
from depthseg.model.losses import depth_bce, depth_loss, normalize_teacher_depth, ssim


def _ramp(h=40, w=48, batch=2):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (torch.sin(yy / 5.0) + xx / w).float().expand(batch, 1, h, w).clone()


def test_ssim_of_identical_maps_is_one_and_of_different_maps_less():
    x = torch.rand(2, 1, 32, 32)
    score, has_valid = ssim(x, x)
    torch.testing.assert_close(score, torch.ones(2))
    assert has_valid.all()
    assert (ssim(x, torch.rand(2, 1, 32, 32))[0] < 0.5).all()


def test_teacher_normalisation_is_affine_invariant_and_in_unit_range():
    t = _ramp()
    a, _ = normalize_teacher_depth(t)
    b, _ = normalize_teacher_depth(37.0 * t - 5.0)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert a.min() == 0 and a.max() == 1


def test_flat_or_empty_teacher_images_are_invalid():
    t = _ramp()
    t[0] = 3.0
    t[1] = torch.nan
    _, valid = normalize_teacher_depth(t)
    assert valid.sum() == 0


def test_depth_loss_is_zero_for_a_perfect_prediction_at_every_scale():
    t = _ramp()
    target, _ = normalize_teacher_depth(t)
    preds = [target, torch.nn.functional.adaptive_avg_pool2d(target, (20, 24))]
    assert depth_loss(preds, t) < 1e-3
    assert depth_loss([torch.rand_like(target)], t) > 0.5


def test_nan_teacher_pixels_do_not_reach_the_loss():
    t = _ramp(h=64, w=64, batch=1)
    t[..., :, 32:] = torch.nan
    pred = torch.rand(1, 1, 64, 64, requires_grad=True)
    loss = depth_loss([pred], t)
    assert torch.isfinite(loss)
    loss.backward()
    # Pixels farther than the window radius (5) from any valid pixel get no gradient.
    assert pred.grad[..., 38:].abs().max() == 0
    assert pred.grad[..., :32].abs().max() > 0
    # NaN pixels weigh exactly like pixels beyond the image border: same loss as the crop.
    cropped = depth_loss([pred.detach()[..., :32]], t[..., :32])
    torch.testing.assert_close(loss.detach(), cropped)


def test_all_invalid_teacher_gives_zero_depth_loss_with_a_graph():
    pred = torch.rand(2, 1, 16, 16, requires_grad=True)
    loss = depth_loss([pred], torch.full((2, 16, 16), torch.nan))
    assert loss == 0
    loss.backward()


def test_cross_entropy_ignores_255_and_survives_all_ignored_batches():
    logits = torch.randn(2, 7, 8, 8, requires_grad=True)
    labels = torch.randint(0, 7, (2, 8, 8))
    labels[:, :4] = 255
    loss_fn = DepthSegLoss()
    base = loss_fn(logits, [], labels).l_cls
    changed = logits.detach().clone()
    changed[:, :, :4] = 100.0  # only ignored pixels change
    torch.testing.assert_close(loss_fn(changed, [], labels).l_cls, base.detach())
    empty = loss_fn(logits, [], torch.full((2, 8, 8), 255)).loss
    assert empty == 0 and torch.isfinite(empty)
    empty.backward()


def test_total_is_the_weighted_sum_and_depthless_models_have_no_depth_term():
    t = _ramp(h=16, w=16)
    logits = torch.randn(2, 7, 16, 16)
    labels = torch.randint(0, 7, (2, 16, 16)).to(torch.uint8)
    depths = [torch.rand(2, 1, 16, 16), torch.rand(2, 1, 8, 8), torch.rand(2, 1, 4, 4)]
    parts = DepthSegLoss(depth_weight=0.5, cls_weight=2.0)(logits, depths, labels, t[:, 0])
    torch.testing.assert_close(parts.loss, 0.5 * parts.l_depth + 2.0 * parts.l_cls)
    assert parts.l_depth > 0
    assert DepthSegLoss()(logits, [], labels, t).l_depth == 0
    assert DepthSegLoss()(logits, depths, labels, None).l_depth == 0


def test_every_depth_scale_gets_a_gradient_even_without_valid_teacher_pixels():
    # DDP needs a gradient for every trainable parameter on every step.
    depths = [torch.rand(2, 1, s, s, requires_grad=True) for s in (32, 16, 8)]
    teacher = torch.full((2, 1, 32, 32), float("nan"))
    loss = depth_loss(depths, teacher)
    loss.backward()
    assert loss.item() == 0.0
    assert all(d.grad is not None and torch.isfinite(d.grad).all() for d in depths)


def test_depth_l1_term_adds_the_masked_mean_error_at_every_scale():

    torch.manual_seed(0)
    teacher = torch.zeros(2, 1, 32, 32)
    teacher[:, :, 8:20, 8:20] = 10.0  # a building on flat ground: most of the target is 0
    teacher[1, :, :4] = float("nan")
    depths = [torch.full((2, 1, 32 // s, 32 // s), 0.01) for s in (1, 2, 4)]
    plain = depth_loss(depths, teacher)
    with_l1 = depth_loss(depths, teacher, l1_weight=0.5)
    target, valid = normalize_teacher_depth(teacher)
    errors = []
    for pred in depths:
        size = pred.shape[-2:]
        mass = torch.nn.functional.adaptive_avg_pool2d(valid, size)
        t = torch.nn.functional.adaptive_avg_pool2d(target * valid, size) / mass.clamp_min(1e-6)
        v = (mass > 0.5).float()
        errors.append(((pred - t).abs() * v).sum() / v.sum())
    torch.testing.assert_close(with_l1 - plain, 0.5 * torch.stack(errors).mean())
    # A flat prediction at 0 on the flat ground scores nearly perfect SSIM there; the L1 term
    # still pulls the building up.
    assert float(with_l1 - plain) > 0.05


def test_class_weights_weigh_the_cross_entropy():
    """A class weighted 0 leaves the loss; equal weights change nothing."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    labels = torch.randint(0, 3, (2, 8, 8))
    plain = DepthSegLoss(depth_weight=0)(logits, [], labels).l_cls
    same = DepthSegLoss(depth_weight=0, class_weights=torch.full((3,), 2.0))(
        logits, [], labels).l_cls
    torch.testing.assert_close(plain, same)
    no_two = DepthSegLoss(depth_weight=0, class_weights=torch.tensor([1.0, 1.0, 0.0]))(
        logits, [], labels).l_cls
    without = labels.clone()
    without[labels == 2] = 255
    torch.testing.assert_close(no_two, DepthSegLoss(depth_weight=0)(logits, [], without).l_cls)


def test_bce_term_pulls_up_a_roof_whose_depth_saturated_at_zero():
    # A building on flat ground; the head's sigmoid depth saturated at 0 everywhere (logit
    # -14, as roofs were in a demo run): 1 - SSIM and L1 reach the roof only through the
    # sigmoid's slope, the BCE term at full strength.
    teacher = torch.zeros(1, 1, 32, 32)
    teacher[:, :, 8:20, 8:20] = 10.0
    roof = (slice(None), slice(None), slice(8, 20), slice(8, 20))

    def roof_gradient(**weights):
        logits = torch.full((1, 1, 32, 32), -14.0, requires_grad=True)
        depth_loss([torch.sigmoid(logits)], teacher, **weights).backward()
        return logits.grad[roof].abs().mean().item()

    l1, bce = roof_gradient(l1_weight=1.0), roof_gradient(bce_weight=1.0)
    assert bce > 1e4 * l1
    # d BCE / d logit = depth - target = 0 - 1 on the roof, over the 32 x 32 valid pixels.
    assert abs(bce - 1 / 1024) < 1e-5
    # Where the depth is right the term is small; where it is wrong, large.
    target, valid = normalize_teacher_depth(teacher)
    assert (depth_bce(target.clamp(0.01, 0.99), target) * valid).mean() < 0.1
    assert (depth_bce(1 - target.clamp(0.01, 0.99), target) * valid).mean() > 1.0
    assert torch.isfinite(depth_bce(torch.zeros(4), torch.ones(4))).all()
