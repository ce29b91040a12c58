"""The semantic decoder: image features f (+ depth prompts psi) -> class logits at input size.

Input layer, three intermediate layers and an output layer, as in the paper. The adapted
encoder maps are first reassembled into the same 4-level pyramid the depth head uses
(4h, 2h, h, h/2). The input layer decodes the coarsest level; each intermediate layer
upsamples the running features to the next finer level and fuses them with that level's
image features and depth prompt; the output layer classifies at 4h (1/3.5 of the
patch-fitted input) and resizes the logits to the input (H, W).

Fusion at each level is ``conv3x3(concat(x_up, f_l, psi_l))`` + BN + ReLU + conv-BN-ReLU; the
psi part of that conv lives in the prompter (see :mod:`depthseg.model.prompter`), so here it
is an addition and the decoder is the same module with or without depth prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from depthseg.model.dpt import reassemble_resampler
from depthseg.model.prompter import conv_bn_relu


class DecoderLayer(nn.Module):
    """Fuse (concat + 3x3 conv), add the prompt, BN + ReLU, then one more conv-BN-ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.fuse = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)
        self.norm = nn.Sequential(nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.refine = conv_bn_relu(c_out, c_out)

    def forward(self, inputs: list[Tensor], prompt: Tensor | None) -> Tensor:
        """Fuse same-size maps ``inputs`` (and ``prompt``) into (B, c_out, g, g')."""
        x = self.fuse(torch.cat(inputs, dim=1) if len(inputs) > 1 else inputs[0])
        if prompt is not None:
            x = x + prompt
        return self.refine(self.norm(x))


class SemanticDecoder(nn.Module):
    """Decoder coupling depth prompts with image features.

    Args:
        in_channels: Width D of the adapted encoder maps.
        channels: Widths of the 4 pyramid levels (``decoder_channels``), fine to coarse.
        num_classes: Number of output classes K.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.reassemble = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels, c, kernel_size=1), reassemble_resampler(c, i))
            for i, c in enumerate(channels)
        )
        self.input_layer = DecoderLayer(channels[3], channels[3])  # level 3 (h/2)
        # intermediate[j] decodes level 2 - j (h, 2h, 4h) from the level above.
        self.intermediate = nn.ModuleList(
            DecoderLayer(channels[level + 1] + channels[level], channels[level])
            for level in (2, 1, 0)
        )
        self.output_layer = nn.Sequential(
            conv_bn_relu(channels[0], channels[0]),
            nn.Conv2d(channels[0], num_classes, kernel_size=1),
        )

    def forward(
        self, features: list[Tensor], prompts: list[Tensor] | None, out_hw: tuple[int, int]
    ) -> Tensor:
        """Class logits.

        Args:
            features: 4 adapted maps (B, D, h, w), shallow to deep.
            prompts: 4 depth prompts (B, C_l, 4h|2h|h|h/2, ...) finest first, or ``None``.
            out_hw: The (H, W) of the model input.

        Returns:
            (B, K, H, W) logits.
        """
        f = [r(x) for r, x in zip(self.reassemble, features, strict=True)]  # 4h | 2h | h | h/2
        psi: list[Tensor | None] = list(prompts) if prompts is not None else [None] * 4
        x = self.input_layer([f[3]], psi[3])  # (B, C3, h/2, w/2)
        for layer, level in zip(self.intermediate, (2, 1, 0), strict=True):
            up = F.interpolate(x, size=f[level].shape[-2:], mode="bilinear", align_corners=False)
            x = layer([up, f[level]], psi[level])  # (B, C_l, ...)
        logits = self.output_layer(x)  # (B, K, 4h, 4w)
        return F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
