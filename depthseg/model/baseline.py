"""The paper's DeepLabv3 baseline behind DepthSeg's interface.

torchvision's DeepLabv3 architectures (ResNet-50, ResNet-101, or MobileNetV3-Large for fast
tests), built without downloading anything (``weights=None, weights_backbone=None``). Bands
beyond three are handled by widening the first conv (it is trained from scratch anyway).
It returns :class:`~depthseg.model.depthseg.DepthSegOutput` with no depths, so the same
training and mapping code runs it and the loss has no depth term.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.segmentation import (
    DeepLabV3,
    deeplabv3_mobilenet_v3_large,
    deeplabv3_resnet50,
    deeplabv3_resnet101,
)

from depthseg.errors import InputError
from depthseg.model.config import ModelConfig
from depthseg.model.output import DepthSegOutput


def _widen_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        bias=conv.bias is not None,
    )


def build_deeplabv3(backbone: str, num_classes: int, in_channels: int) -> DeepLabV3:
    """A randomly initialised torchvision DeepLabv3 with ``in_channels`` input bands."""
    kwargs = dict(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    match backbone:
        case "resnet50":
            net = deeplabv3_resnet50(**kwargs)
        case "resnet101":
            net = deeplabv3_resnet101(**kwargs)
        case "mobilenet_v3_large":
            net = deeplabv3_mobilenet_v3_large(**kwargs)
        case _:
            raise InputError(
                f"model.baseline_backbone={backbone!r} is not known; expected resnet50, "
                "resnet101 or mobilenet_v3_large; fix it in the model config"
            )
    if in_channels != 3:
        if backbone == "mobilenet_v3_large":
            stem = net.backbone["0"]
            stem[0] = _widen_first_conv(stem[0], in_channels)
        else:
            net.backbone.conv1 = _widen_first_conv(net.backbone.conv1, in_channels)
    return net


class DeepLabV3Baseline(nn.Module):
    """DeepLabv3 with DepthSeg's forward signature and output type.

    Args:
        cfg: Model config with ``arch == "deeplabv3"``; uses ``baseline_backbone``,
            ``num_classes`` and ``in_channels``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = build_deeplabv3(cfg.baseline_backbone, cfg.num_classes, cfg.in_channels)

    def forward(self, images: Tensor) -> DepthSegOutput:
        """Segment normalised (B, C, H, W) images; logits come back at (H, W), no depths."""
        return DepthSegOutput(self.net(images)["out"], [])  # (B, K, H, W)
