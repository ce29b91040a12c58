"""Land-cover metrics from one confusion matrix, as in the paper's Table I.

Everything is derived from a single ``int64`` confusion matrix (rows = true class,
columns = predicted class). Confusion matrices are plain pixel counts, so they **add up**:
each worker (or each batch) computes its own matrix, the matrices are summed
(``cm_a + cm_b``, ``np.sum``, or an ``all_reduce`` of an int64 tensor), and :func:`scores`
runs once on the total. Never average per-worker scores: that weights small shards as
much as large ones and is not the paper's metric.

Conventions of :func:`scores` (the paper does not state them):

* A class **absent from both target and prediction** (its row and column are all zero)
  has no defined precision, recall, F1 or IoU: its per-class values are ``NaN`` and it is
  left out of every mean. A tile of pure forest is not penalised for having no water.
* A class present in only one of them gets 0 for the 0/0 ratio: precision is 0 for a
  class that is never predicted, recall is 0 for a class predicted but never true. This
  matches scikit-learn's ``zero_division=0`` and keeps a missed class counted as missed.
* Kappa is Cohen's standard ``(p_o - p_e) / (1 - p_e)``; when ``p_e == 1`` (both sides
  used one single class, hence agree perfectly) it is defined as 1.
* Means, OA and Kappa are fractions (OA in [0, 1], Kappa in [-1, 1]);
  :func:`format_table` prints them in percent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from depthseg.errors import InputError

MEAN_KEYS = ("mPre", "mRecall", "mF1", "mIoU", "OA", "Kappa")
"""Summary keys of :func:`scores`, in the column order of the paper's Table I."""

_PER_CLASS_KEYS = ("iou", "f1", "precision", "recall")


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Count (true class, predicted class) pairs over all labelled pixels.

    Counting runs with ``torch.bincount`` on the device of a tensor input (so a GPU
    batch is never copied to the host pixel by pixel); numpy inputs are counted on the CPU.

    Args:
        pred: Predicted class ids (e.g. ``logits.argmax(1)``), any shape, integer dtype.
        target: True class ids, same shape as ``pred``, integer dtype.
        num_classes: Number of classes; valid ids are ``0 .. num_classes - 1``.
        ignore_index: Target value of unlabelled / no-data pixels, which are skipped
            whatever their prediction. ``None`` means every pixel is labelled.

    Returns:
        ``int64`` array of shape ``(num_classes, num_classes)``; ``cm[t, p]`` is the number
        of pixels of true class ``t`` predicted as ``p``. Matrices of disjoint pixel sets
        add up to the matrix of their union.

    Raises:
        InputError: On mismatched shapes, non-integer dtypes, or a class id out of range.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(
            f"num_classes={num_classes!r} is not a positive int; pass the number of classes, "
            "e.g. 7 for LiuZhou"
        )
    if ignore_index is not None and 0 <= ignore_index < num_classes:
        raise InputError(
            f"ignore_index={ignore_index} is a valid class id (0..{num_classes - 1}); "
            "use an id outside the class range, e.g. 255, or None"
        )
    pred_t, target_t = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    if pred_t.shape != target_t.shape:
        raise InputError(
            f"pred shape {tuple(pred_t.shape)} != target shape {tuple(target_t.shape)}; "
            "pass class ids (e.g. logits.argmax(1)), not logits, with the label's shape"
        )
    target_t = target_t.to(pred_t.device)

    labelled = (
        target_t != ignore_index
        if ignore_index is not None
        else torch.ones_like(target_t, dtype=torch.bool)
    )
    pred_v = pred_t[labelled].to(torch.int64)
    target_v = target_t[labelled].to(torch.int64)
    _check_range(target_v, num_classes, "target", ignore_index)
    _check_range(pred_v, num_classes, "pred", None)

    counts = torch.bincount(target_v * num_classes + pred_v, minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes).cpu().numpy().astype(np.int64)


def scores(
    cm: np.ndarray | torch.Tensor,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-class and mean metrics of a confusion matrix.

    See the module docstring for how absent classes, 0/0 and kappa's degenerate case are
    handled.

    Args:
        cm: Confusion matrix from :func:`confusion_matrix` (or a sum of several).
        class_names: One name per class, in class-id order; defaults to
            ``class_0, class_1, ...``. Class names live in the model bundle.

    Returns:
        ``{"mPre", "mRecall", "mF1", "mIoU", "OA", "Kappa"}`` as floats (fractions),
        ``"per_class"``: ``{name: {"iou", "f1", "precision", "recall", "support"}}`` with
        ``NaN`` for classes absent from both target and prediction and ``support`` the
        number of true pixels, and ``"num_pixels"``: the labelled pixel count.

    Raises:
        InputError: If ``cm`` is not a square matrix of non-negative integer counts, is
            empty, or ``class_names`` has the wrong length.
    """
    counts = _check_cm(cm)
    n = counts.shape[0]
    names = [f"class_{k}" for k in range(n)] if class_names is None else list(class_names)
    if len(names) != n:
        raise InputError(
            f"{len(names)} class_names {names!r} for a {n}x{n} confusion matrix; "
            f"pass exactly {n} names, in class-id order"
        )

    # float64 keeps exact integer counts up to 2**53 pixels: far beyond a province.
    cmf = counts.astype(np.float64)
    total = cmf.sum()
    tp = np.diag(cmf)
    true_px = cmf.sum(axis=1)  # tp + fn
    pred_px = cmf.sum(axis=0)  # tp + fp
    union = true_px + pred_px - tp  # tp + fp + fn
    present = union > 0

    precision = _ratio(tp, pred_px, present)
    recall = _ratio(tp, true_px, present)
    f1 = _ratio(2 * tp, true_px + pred_px, present)
    iou = _ratio(tp, union, present)

    p_o = tp.sum() / total
    p_e = float((true_px * pred_px).sum() / total**2)
    kappa = 1.0 if p_e >= 1.0 else (p_o - p_e) / (1.0 - p_e)

    per_class = {
        name: {
            "iou": float(iou[k]),
            "f1": float(f1[k]),
            "precision": float(precision[k]),
            "recall": float(recall[k]),
            "support": int(counts[k].sum()),
        }
        for k, name in enumerate(names)
    }
    return {
        "mPre": float(precision[present].mean()),
        "mRecall": float(recall[present].mean()),
        "mF1": float(f1[present].mean()),
        "mIoU": float(iou[present].mean()),
        "OA": float(p_o),
        "Kappa": float(kappa),
        "per_class": per_class,
        "num_pixels": int(counts.sum()),
    }


def format_table(result: Mapping[str, Any], name: str = "DepthSeg", digits: int = 2) -> str:
    """Render :func:`scores` output as markdown tables in percent.

    The first table has the paper's Table I columns (mPre | mRecall | mF1 | mIoU | OA |
    Kappa) with ``name`` as the method; the second lists IoU, F1, precision, recall and
    true-pixel count per class (``-`` for a class absent from target and prediction).

    Args:
        result: The dict returned by :func:`scores`.
        name: Row label of the summary table (the model or run name).
        digits: Decimals of the percentages.

    Returns:
        The two tables separated by a blank line, ending with a newline.

    Raises:
        InputError: If ``result`` lacks a key of :func:`scores`.
    """
    missing = [k for k in (*MEAN_KEYS, "per_class") if k not in result]
    if missing:
        raise InputError(
            f"scores dict lacks keys {missing}; pass the dict returned by depthseg.metrics.scores"
        )

    def pct(value: float) -> str:
        return "-" if np.isnan(value) else f"{100.0 * value:.{digits}f}"

    lines = [
        "| method | " + " | ".join(MEAN_KEYS) + " |",
        "| --- |" + " --- |" * len(MEAN_KEYS),
        f"| {name} | " + " | ".join(pct(result[k]) for k in MEAN_KEYS) + " |",
        "",
        "| class | IoU | F1 | Pre | Recall | pixels |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for cls, row in result["per_class"].items():
        values = " | ".join(pct(row[k]) for k in _PER_CLASS_KEYS)
        lines.append(f"| {cls} | {values} | {row['support']} |")
    return "\n".join(lines) + "\n"


def _as_tensor(values: np.ndarray | torch.Tensor, what: str) -> torch.Tensor:
    """Integer tensor view of ``values`` (numpy arrays are wrapped, not copied)."""
    if isinstance(values, torch.Tensor):
        tensor = values
    elif isinstance(values, np.ndarray):
        # torch has no uint16/uint32 bincount path; widen such label rasters once, on the CPU.
        if values.dtype in (np.uint16, np.uint32, np.uint64):
            values = values.astype(np.int64)
        tensor = torch.from_numpy(np.ascontiguousarray(values))
    else:
        raise InputError(
            f"{what} is a {type(values).__name__}; pass a numpy array or a torch tensor"
        )
    if tensor.is_floating_point() or tensor.is_complex():
        raise InputError(
            f"{what} has dtype {tensor.dtype}, expected integer class ids; "
            "take logits.argmax(1) and cast labels to an integer dtype"
        )
    return tensor


def _check_range(values: torch.Tensor, num_classes: int, what: str, ignore: int | None) -> None:
    """Refuse class ids outside ``[0, num_classes)`` among the labelled pixels."""
    if values.numel() == 0:
        return
    lo, hi = int(values.min()), int(values.max())
    if lo >= 0 and hi < num_classes:
        return
    bad = lo if lo < 0 else hi
    also = f" (or ignore_index={ignore})" if ignore is not None else ""
    raise InputError(
        f"{what} holds class id {bad}, expected 0..{num_classes - 1}{also}; "
        f"check num_classes={num_classes} and the label encoding"
    )


def _check_cm(cm: np.ndarray | torch.Tensor) -> np.ndarray:
    """The confusion matrix as validated ``int64`` counts."""
    counts = cm.detach().cpu().numpy() if isinstance(cm, torch.Tensor) else np.asarray(cm)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise InputError(
            f"confusion matrix has shape {counts.shape}, expected (C, C); "
            "pass the output of depthseg.metrics.confusion_matrix"
        )
    if not np.issubdtype(counts.dtype, np.number) or not np.all(np.isfinite(counts)):
        raise InputError(
            "confusion matrix holds non-finite or non-numeric values; "
            "pass pixel counts from depthseg.metrics.confusion_matrix"
        )
    if (counts < 0).any() or (counts != np.round(counts)).any():
        raise InputError(
            "confusion matrix holds negative or fractional counts; "
            "pass pixel counts from depthseg.metrics.confusion_matrix"
        )
    counts = counts.astype(np.int64)
    if counts.sum() == 0:
        raise InputError(
            "confusion matrix is empty (0 labelled pixels); every target pixel was "
            "ignore_index: check the labels and ignore_index"
        )
    return counts


def _ratio(num: np.ndarray, den: np.ndarray, present: np.ndarray) -> np.ndarray:
    """``num / den`` with 0 for 0/0 of a present class and NaN for an absent class."""
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    out[~present] = np.nan
    return out
