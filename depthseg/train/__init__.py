"""Training: chip preparation, the training loop, Ray Train wiring, evaluation.

* :func:`prepare_chips`: sources -> chip store (``jobs/prepare.py``);
* :func:`fit`: the plain PyTorch loop (runs with or without Ray);
* :func:`train`: ``TorchTrainer`` around it (``jobs/train.py``);
* :func:`depthseg.train.evaluate.evaluate`: Table I metrics of a bundle (``jobs/evaluate.py``;
  not re-exported: the name is its submodule's).

Names are imported on first use (the package convention, :mod:`depthseg._lazy`), so
importing this package pulls in neither Ray nor torch.
"""

from typing import TYPE_CHECKING

from depthseg._lazy import lazy_exports

if TYPE_CHECKING:
    from depthseg.train.loop import RunSpec, fit
    from depthseg.train.prepare import PrepareOptions, prepare_chips
    from depthseg.train.ray_train import train

_WHERE = {"RunSpec": "loop", "fit": "loop",
          "PrepareOptions": "prepare", "prepare_chips": "prepare", "train": "ray_train"}

__all__ = ["PrepareOptions", "RunSpec", "fit", "prepare_chips", "train"]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
