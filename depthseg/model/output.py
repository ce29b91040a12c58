"""What every segmentation model of the package returns (its own module: no import cycle)."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["DepthSegOutput"]


class DepthSegOutput(NamedTuple):
    """What every segmentation model here returns.

    Attributes:
        logits: (B, K, H, W) class scores at the input size.
        depths: Relative depth in [0, 1], finest first: (B, 1, H, W), (B, 1, H/2, W/2),
            (B, 1, H/4, W/4) (sizes rounded up); only the finest when the model was called
            with ``depth_scales=1`` (mapping). Empty when the model has no depth branch
            (depth prompter off, or the baseline); the loss then has no depth term.
    """

    logits: Tensor
    depths: list[Tensor]
