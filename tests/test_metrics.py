"""Metrics equal scikit-learn's on random labels, add up across workers, refuse bad ids."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from depthseg.errors import InputError
from depthseg.metrics import MEAN_KEYS, confusion_matrix, format_table, scores

NUM_CLASSES = 7
IGNORE = 255


def _random_labels(seed: int, missing: int | None = None, shape=(3, 37, 41)):
    """Noisy predictions of random labels, ~10 % ignore pixels, optionally a missing class."""
    rng = np.random.default_rng(seed)
    target = rng.integers(0, NUM_CLASSES, size=shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, NUM_CLASSES, size=shape))
    pred = pred.astype(np.int64)
    if missing is not None:
        # Absent from both target and prediction: excluded from the means.
        target[target == missing] = (missing + 1) % NUM_CLASSES
        pred[pred == missing] = (missing + 2) % NUM_CLASSES
    target[rng.random(shape) < 0.1] = IGNORE
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("missing", [None, 3])
def test_scores_equal_sklearn(seed, missing):
    pred, target = _random_labels(seed, missing)
    keep = target != IGNORE
    y_true, y_pred = target[keep].astype(np.int64), pred[keep]
    labels = list(range(NUM_CLASSES))

    cm = confusion_matrix(pred, target, NUM_CLASSES, ignore_index=IGNORE)
    assert cm.dtype == np.int64 and cm.shape == (NUM_CLASSES, NUM_CLASSES)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(y_true, y_pred, labels=labels))

    result = scores(cm)
    present = sorted(set(y_true) | set(y_pred))
    pre, rec, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=present, average=None, zero_division=0
    )
    iou = skm.jaccard_score(y_true, y_pred, labels=present, average=None, zero_division=0)
    per_class = [result["per_class"][f"class_{k}"] for k in present]
    np.testing.assert_allclose([r["precision"] for r in per_class], pre)
    np.testing.assert_allclose([r["recall"] for r in per_class], rec)
    np.testing.assert_allclose([r["f1"] for r in per_class], f1)
    np.testing.assert_allclose([r["iou"] for r in per_class], iou)
    np.testing.assert_allclose(
        [result["mPre"], result["mRecall"], result["mF1"], result["mIoU"]],
        [pre.mean(), rec.mean(), f1.mean(), iou.mean()],
    )
    assert result["OA"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert result["Kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    assert result["num_pixels"] == keep.sum()
    if missing is not None:
        assert len(present) == NUM_CLASSES - 1
        assert all(
            np.isnan(v)
            for k, v in result["per_class"][f"class_{missing}"].items()
            if k != "support"
        )


def test_class_never_predicted_counts_as_zero_precision():
    target = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 1])  # class 2 true but never predicted
    result = scores(confusion_matrix(pred, target, 3))
    assert result["per_class"]["class_2"]["precision"] == 0.0
    assert result["per_class"]["class_2"]["recall"] == 0.0
    assert result["mPre"] == pytest.approx((1 + 2 / 3 + 0) / 3)


def test_single_class_perfect_agreement_has_kappa_one():
    labels = np.zeros((4, 4), dtype=np.uint8)
    result = scores(confusion_matrix(labels, labels, NUM_CLASSES))
    assert result["Kappa"] == 1.0 and result["OA"] == 1.0 and result["mIoU"] == 1.0


def test_confusion_matrices_add_up_across_workers():
    pred_a, target_a = _random_labels(10)
    pred_b, target_b = _random_labels(11, shape=(2, 19, 23))
    whole = confusion_matrix(
        np.concatenate([pred_a.ravel(), pred_b.ravel()]),
        np.concatenate([target_a.ravel(), target_b.ravel()]),
        NUM_CLASSES,
    )
    parts = confusion_matrix(pred_a, target_a, NUM_CLASSES) + confusion_matrix(
        pred_b, target_b, NUM_CLASSES
    )
    np.testing.assert_array_equal(parts, whole)


def test_torch_and_numpy_inputs_agree():
    pred, target = _random_labels(5)
    from_numpy = confusion_matrix(pred, target, NUM_CLASSES)
    from_torch = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), NUM_CLASSES)
    mixed = confusion_matrix(torch.from_numpy(pred), target.astype(np.uint16), NUM_CLASSES)
    np.testing.assert_array_equal(from_numpy, from_torch)
    np.testing.assert_array_equal(from_numpy, mixed)
    assert scores(torch.from_numpy(from_numpy)) == scores(from_numpy)


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (np.array([0, 7]), np.array([0, 1]), "pred holds class id 7"),
        (np.array([0, -1]), np.array([0, 1]), "pred holds class id -1"),
        (np.array([0, 1]), np.array([0, 9]), "target holds class id 9"),
        (np.array([0, 1]), np.array([[0, 1]]), "shape"),
        (np.array([0.0, 1.0]), np.array([0, 1]), "integer class ids"),
    ],
)
def test_bad_values_are_refused(pred, target, match):
    with pytest.raises(InputError, match=match):
        confusion_matrix(pred, target, NUM_CLASSES)


def test_prediction_under_ignored_pixels_is_not_checked():
    pred = np.array([0, 255, 99])
    target = np.array([0, IGNORE, IGNORE], dtype=np.uint8)
    assert confusion_matrix(pred, target, NUM_CLASSES).sum() == 1


def test_bad_arguments_are_refused():
    labels = np.zeros(4, dtype=np.int64)
    with pytest.raises(InputError, match="ignore_index=3"):
        confusion_matrix(labels, labels, NUM_CLASSES, ignore_index=3)
    with pytest.raises(InputError, match="num_classes=0"):
        confusion_matrix(labels, labels, 0)
    with pytest.raises(InputError, match="empty"):
        scores(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(InputError, match="shape"):
        scores(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(InputError, match="negative"):
        scores(np.array([[1, -1], [0, 1]]))
    with pytest.raises(InputError, match="2 class_names"):
        scores(np.eye(3, dtype=np.int64), class_names=["a", "b"])


def test_format_table_prints_percent_like_table_one():
    pred, target = _random_labels(0, missing=3)
    names = ["cropland", "forest", "building", "road", "impervious", "bare", "water"]
    result = scores(confusion_matrix(pred, target, NUM_CLASSES), class_names=names)
    text = format_table(result, name="DepthSeg ViT-S")
    lines = text.splitlines()
    assert lines[0] == "| method | mPre | mRecall | mF1 | mIoU | OA | Kappa |"
    assert lines[2].startswith("| DepthSeg ViT-S | ")
    assert f"{100 * result['mIoU']:.2f}" in lines[2]
    # Rows follow class-id order after the blank line and the per-class header.
    assert lines[6 + 3] == "| road | - | - | - | - | 0 |"
    assert len([line for line in lines if line.startswith("| ")]) == 3 + 2 + NUM_CLASSES
    assert set(MEAN_KEYS) <= set(result)
