"""The depth prompter: three scales of depth features -> multi-scale depth prompts psi.

Five sub-modules, as in the paper: one shallow downsampling conv block and four deep encoding
blocks (residual basic blocks). Transmission is residual layer by layer: each block refines
the previous block's output and adds a shortcut of it, and the two coarser depth-feature
scales enter through 1x1 skip connections where the resolutions meet::

    d0 (8h) --shallow s2--> (4h) + skip(d1) --E1--> psi0 (4h)
                                             --E2 s2--> (2h) + skip(d2) --> psi1 (2h)
                                             --E3 s2--> psi2 (h) --E4 s2--> psi3 (h/2)

The large-scale prompt psi0 is kept at 4h while deeper blocks extract coarser prompts, one per
level of the semantic decoder's pyramid.

Each prompt is finally projected by a bias-free 3x3 conv to the decoder's width and *added*
to the decoder's own 3x3 conv of its features. That sum is exactly ``conv3x3(concat(f, psi))``
(a conv over a concatenation is the sum of convs over its parts), the plain reading of the
paper's fusion, written so that switching the prompter off removes exactly its parameters.
"""

from __future__ import annotations

from torch import Tensor, nn


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv (no bias, BN follows) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """Basic residual block: two 3x3 conv-BN, shortcut (1x1 conv-BN when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(c_in, c_out, stride),
            nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(
                nn.Conv2d(c_in, c_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """(B, c_in, g, g') -> (B, c_out, ceil(g/stride), ceil(g'/stride))."""
        return self.act(self.body(x) + self.shortcut(x))


def skip_projection(c_in: int, c_out: int) -> nn.Sequential:
    """1x1 conv-BN bringing a depth-feature scale into the prompter's stream."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size=1, bias=False), nn.BatchNorm2d(c_out))


class DepthPrompter(nn.Module):
    """Depth prompter with five sub-modules and residual skips.

    Args:
        depth_features: Width F of the three depth-feature maps (``dpt_features``).
        channels: Widths of the four deep blocks (``prompter_channels``), fine to coarse.
        decoder_channels: Widths of the decoder levels the prompts are projected to.
    """

    def __init__(
        self, depth_features: int, channels: tuple[int, ...], decoder_channels: tuple[int, ...]
    ) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.shallow = conv_bn_relu(depth_features, c0, stride=2)  # 8h -> 4h
        self.skip1 = skip_projection(depth_features, c0)  # depth features at 4h
        self.skip2 = skip_projection(depth_features, c1)  # depth features at 2h
        self.blocks = nn.ModuleList(
            [
                ResidualBlock(c0, c0),  # E1 at 4h
                ResidualBlock(c0, c1, stride=2),  # E2 -> 2h
                ResidualBlock(c1, c2, stride=2),  # E3 -> h
                ResidualBlock(c2, c3, stride=2),  # E4 -> h/2
            ]
        )
        self.to_prompt = nn.ModuleList(
            nn.Conv2d(c, d, kernel_size=3, padding=1, bias=False)
            for c, d in zip(channels, decoder_channels, strict=True)
        )

    def forward(self, depth_features: list[Tensor]) -> list[Tensor]:
        """Depth prompts.

        Args:
            depth_features: 3 maps (B, F, 8h|4h|2h, ...), finest first.

        Returns:
            psi: 4 maps (B, decoder_channels[l], 4h|2h|h|h/2, ...), finest first.
        """
        d0, d1, d2 = depth_features
        x = self.shallow(d0) + self.skip1(d1)  # (B, c0, 4h, 4w)
        psi = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == 1:
                x = x + self.skip2(d2)  # (B, c1, 2h, 2w)
            psi.append(x)
        return [project(p) for project, p in zip(self.to_prompt, psi, strict=True)]
