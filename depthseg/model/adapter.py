"""The lightweight adapter: one 1x1 conv + BatchNorm + ReLU per encoder scale.

It re-weights natural-image DINOv2 channels for remote sensing at a cost of about D^2
parameters per scale, far below the encoder's. Shape and channel count are unchanged, so
switching it off (``nn.Identity``) leaves the rest of the model as it is.
"""

from __future__ import annotations

from torch import Tensor, nn


class AdapterBlock(nn.Sequential):
    """1x1 conv + BatchNorm + ReLU, channels unchanged."""

    def __init__(self, channels: int) -> None:
        super().__init__(
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )


class Adapter(nn.Module):
    """One :class:`AdapterBlock` per encoder scale.

    Args:
        channels: Encoder width D.
        num_scales: Number of feature maps (4).
    """

    def __init__(self, channels: int, num_scales: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(AdapterBlock(channels) for _ in range(num_scales))

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        """Adapt each (B, D, h, w) map; returns maps of the same shapes."""
        return [block(x) for block, x in zip(self.blocks, features, strict=True)]


def build_adapter(channels: int, enabled: bool, num_scales: int = 4) -> nn.Module:
    """The adapter, or ``nn.Identity`` (0 parameters) when the ablation switch is off."""
    return Adapter(channels, num_scales) if enabled else nn.Identity()
