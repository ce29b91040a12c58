"""Evaluate a model bundle on a split of a chip store: the paper's Table I, per class, a figure.

Outputs (in ``out``, a local folder or ``s3://`` prefix): ``metrics.md`` (Table I columns
mPre | mRecall | mF1 | mIoU | OA | Kappa, then IoU/F1/precision/recall per class),
``metrics.json`` (the same numbers, fractions, with the confusion matrix) and
``confusion.png`` (row-normalised confusion matrix).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from depthseg.errors import InputError
from depthseg.io.bundle import load_bundle
from depthseg.io.chips import SPLITS, ChipStore
from depthseg.io.storage import Storage, join
from depthseg.metrics import format_table, scores
from depthseg.progress import Progress
from depthseg.train.data import read_chips
from depthseg.train.loop import confusion_over


@dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate`: scores, the confusion matrix and the markdown table."""

    scores: dict[str, Any]
    confusion: np.ndarray
    markdown: str
    num_chips: int


def evaluate(model_uri: str, chips: str, split: str = "test", out: str | None = None,
             storage: Storage | None = None, batch_size: int = 8,
             device: str | None = None) -> Evaluation:
    """Score the bundle at ``model_uri`` on ``split`` of the chip store ``chips``."""
    storage = storage or Storage()
    if split not in SPLITS:
        raise InputError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    bundle = load_bundle(model_uri, storage)
    store = ChipStore.open(chips, storage)
    contract = bundle.contract
    if store.schema.band_indices != contract.band_indices:
        raise InputError(f"chip store bands {store.schema.band_indices} differ from the model's "
                         f"{contract.band_indices}; evaluate on chips prepared with the same "
                         "--bands")
    indices = store.indices(split)
    if not len(indices):
        raise InputError(f"chip store {chips!r} has no {split} chips; pick another --split")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = bundle.model.to(dev)
    batches = ({k: torch.from_numpy(v) for k, v in
                read_chips(store, indices[i:i + batch_size]).items()}
               for i in range(0, len(indices), batch_size))
    with Progress(len(indices), f"evaluate ({split})", "chips") as progress:
        counted = progress.iterate(batches, sizes=lambda batch: len(batch["label"]))
        cm = confusion_over(model, counted, torch.tensor(contract.mean),
                            torch.tensor(contract.std), len(contract.class_names),
                            dev).cpu().numpy()
    result = scores(cm, contract.class_names)
    name = model_uri.rstrip("/").rsplit("/", 1)[-1] or "model"
    markdown = (f"# {name} on {split} ({len(indices)} chips, {result['num_pixels']} pixels)\n\n"
                + format_table(result, name=name))
    if out is not None:
        storage.write_bytes_atomic(join(out, "metrics.md"), markdown.encode())
        doc = {"model": model_uri, "chips": chips, "split": split, "num_chips": int(len(indices)),
               **result, "confusion_matrix": cm.tolist(),
               "class_names": list(contract.class_names)}
        storage.write_bytes_atomic(join(out, "metrics.json"),
                                   json.dumps(doc, indent=2, allow_nan=True).encode())
        storage.write_bytes_atomic(join(out, "confusion.png"),
                                   confusion_png(cm, contract.class_names, name))
    return Evaluation(result, cm, markdown, int(len(indices)))


def confusion_png(cm: np.ndarray, class_names: tuple[str, ...], title: str) -> bytes:
    """PNG of the row-normalised confusion matrix, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")  # no display: jobs and tests run headless
    import matplotlib.pyplot as plt

    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: confusion (row-normalised)")
    for t in range(k):
        for p in range(k):
            ax.text(p, t, f"{share[t, p]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if share[t, p] > 0.5 else "black")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
