"""The DPT depth head: token maps -> depth at three scales + the depth features of the prompter.

Follows Depth Anything's ``DPTHead``: the four (B, D, h, w) maps are *reassembled* (1x1
projection, then ConvTranspose x4 / x2 / identity / stride-2 conv) into a pyramid at 4h, 2h,
h and h/2, and fused coarse to fine by RefineNet blocks, giving fusion paths at 2h, 4h and 8h
(1/7, 1/3.5 and 1/1.75 of the patch-fitted input).

Each of those three paths is a *depth feature* scale (fed to the prompter) and has its own
Depth-Anything-style output head giving depth at 1, 1/2 and 1/4 of the **input** (H, W):
``depths[0]`` is full resolution. Outputs go through a sigmoid: relative depth in [0, 1],
the same range as the normalised teacher depth the SSIM loss compares them with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Depth Anything's width of the last hidden conv of its output head.
DEPTH_HEAD_HIDDEN = 32
# Depth outputs, finest first, as divisors of the input size.
DEPTH_SCALES = (1, 2, 4)


def depth_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Sizes of the three depth outputs for an (H, W) input: (H, W), ceil(/2), ceil(/4)."""
    return [(-(-height // s), -(-width // s)) for s in DEPTH_SCALES]


def reassemble_resampler(channels: int, level: int) -> nn.Module:
    """Resample the h x w token grid to pyramid level ``level`` (4h, 2h, h, ceil(h/2)).

    Shared with the semantic decoder, which reassembles the image features the same way.
    """
    match level:
        case 0:
            return nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=4)
        case 1:
            return nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        case 2:
            return nn.Identity()
        case 3:
            return nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)
        case _:
            raise ValueError(f"pyramid level {level} does not exist; expected 0..3")


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit of RefineNet/DPT: x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """Residual refinement, shape unchanged."""
        # Not in-place: x is also the residual.
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet-style fusion: refine the skip, add it, refine, upsample, 1x1 project."""

    def __init__(self, channels: int, has_skip: bool = True) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels) if has_skip else None
        self.unit = ResidualConvUnit(channels)
        self.out_conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor, skip: Tensor | None, size: tuple[int, int]) -> Tensor:
        """Fuse the coarser path ``x`` with ``skip`` (same size) and upsample to ``size``."""
        if skip is not None and self.skip_unit is not None:
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.out_conv(x)


class DepthOutput(nn.Module):
    """Depth Anything's output head: conv, resize to the target size, conv-ReLU-1x1, sigmoid."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.conv2 = nn.Sequential(
            nn.Conv2d(features // 2, DEPTH_HEAD_HIDDEN, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(DEPTH_HEAD_HIDDEN, 1, kernel_size=1),
        )

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """(B, F, g, g') -> (B, 1, *size) relative depth in [0, 1]."""
        x = F.interpolate(self.conv1(x), size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(self.conv2(x))


class DPTHead(nn.Module):
    """Dense prediction transformer head giving depth at three scales.

    Args:
        in_channels: Width D of the four (adapted) encoder maps.
        features: Width of the fusion path (``dpt_features``).
        channels: Widths of the four reassembled maps (``dpt_channels``), fine to coarse.
    """

    def __init__(self, in_channels: int, features: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, kernel_size=1) for c in channels)
        self.resamplers = nn.ModuleList(reassemble_resampler(c, i) for i, c in enumerate(channels))
        self.layers_rn = nn.ModuleList(
            nn.Conv2d(c, features, kernel_size=3, padding=1, bias=False) for c in channels
        )
        # fusions[i] produces the path one level finer than level i (level 0 -> 8h).
        self.fusions = nn.ModuleList(FusionBlock(features, has_skip=i < 3) for i in range(4))
        self.outputs = nn.ModuleList(DepthOutput(features) for _ in DEPTH_SCALES)

    def forward(
        self, features: list[Tensor], out_hw: tuple[int, int], scales: int = len(DEPTH_SCALES)
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Decode depth.

        Args:
            features: 4 maps (B, D, h, w), shallow to deep.
            out_hw: The (H, W) of the model input.
            scales: How many depth maps to output, finest first (training supervises all
                three; mapping stores only the finest, and the coarser two cost ~3 % of a
                ViT-S forward).

        Returns:
            ``depths``: ``scales`` maps (B, 1, H/s, W/s) for s = 1, 2, 4, finest first;
            ``depth_features``: 3 maps (B, F, 8h|4h|2h, ...), finest first.
        """
        pyramid = [
            rn(resample(project(x)))  # (B, F, 4h | 2h | h | h/2, ...)
            for x, project, resample, rn in zip(
                features, self.projects, self.resamplers, self.layers_rn, strict=True
            )
        ]
        sizes = [tuple(p.shape[-2:]) for p in pyramid]
        finest = (2 * sizes[0][0], 2 * sizes[0][1])
        path_h = self.fusions[3](pyramid[3], None, sizes[2])  # (B, F, h, w)
        path_2h = self.fusions[2](path_h, pyramid[2], sizes[1])  # (B, F, 2h, 2w)
        path_4h = self.fusions[1](path_2h, pyramid[1], sizes[0])  # (B, F, 4h, 4w)
        path_8h = self.fusions[0](path_4h, pyramid[0], finest)  # (B, F, 8h, 8w)
        depth_features = [path_8h, path_4h, path_2h]
        depths = [
            head(x, size)  # (B, 1, H/s, W/s)
            for head, x, size in list(zip(
                self.outputs, depth_features, depth_sizes(*out_hw), strict=True
            ))[:scales]
        ]
        return depths, depth_features
