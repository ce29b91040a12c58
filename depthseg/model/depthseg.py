"""DepthSeg: depth prompting for remote-sensing semantic segmentation (Zhou et al., 2025).

The forward pass is the paper's Fig. 1: frozen DINOv2 encoder -> lightweight adapter ->
DPT depth head -> depth prompter -> semantic decoder. :func:`build_model` is the one place
that chooses between DepthSeg and the DeepLabv3 baseline.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from depthseg.errors import InputError
from depthseg.model.adapter import build_adapter
from depthseg.model.baseline import DeepLabV3Baseline
from depthseg.model.config import ModelConfig
from depthseg.model.decoder import SemanticDecoder
from depthseg.model.dpt import DEPTH_SCALES, DPTHead
from depthseg.model.encoder import Encoder, load_encoder_weights
from depthseg.model.output import DepthSegOutput
from depthseg.model.prompter import DepthPrompter


class DepthSeg(nn.Module):
    """The DepthSeg model.

    Args:
        cfg: Model config; ``cfg.adapter`` and ``cfg.depth_prompter`` are the paper's
            ablation switches. Encoder weights are not loaded here (see :func:`build_model`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        assert cfg.dpt_channels and cfg.prompter_channels and cfg.decoder_channels
        assert cfg.dpt_features is not None
        self.cfg = cfg
        self.encoder = Encoder(cfg.encoder, cfg.in_channels)
        dim = self.encoder.embed_dim
        self.adapter = build_adapter(dim, cfg.adapter)
        # Depth prompter off drops the whole depth branch: without a prompter nothing
        # downstream reads depth, and a frozen encoder could not learn from L_D either.
        self.depth_head: DPTHead | None = None
        self.prompter: DepthPrompter | None = None
        if cfg.depth_prompter:
            self.depth_head = DPTHead(dim, cfg.dpt_features, cfg.dpt_channels)
            self.prompter = DepthPrompter(
                cfg.dpt_features, cfg.prompter_channels, cfg.decoder_channels
            )
        self.decoder = SemanticDecoder(dim, cfg.decoder_channels, cfg.num_classes)

    def forward(self, images: Tensor, depth_scales: int = len(DEPTH_SCALES)) -> DepthSegOutput:
        """Segment normalised images (B, C, H, W) of any H, W; see :func:`normalize`.

        ``depth_scales``: how many depth maps to return, finest first (1 when mapping: the
        coarser two only serve the multi-scale distillation loss).
        """
        out_hw = (images.shape[-2], images.shape[-1])  # (H, W)
        tokens = self.encoder(images)  # 4 x (B, D, h, w), h = round(H / patch)
        f = self.adapter(tokens)  # 4 x (B, D, h, w)
        if self.depth_head is None or self.prompter is None:
            return DepthSegOutput(self.decoder(f, None, out_hw), [])  # ablation: no depth
        depths, depth_features = self.depth_head(f, out_hw, depth_scales)  # (B, 1, H/s, W/s)
        psi = self.prompter(depth_features)  # 4 x (B, C_l, 4h | 2h | h | h/2)
        logits = self.decoder(f, psi, out_hw)  # (B, K, H, W)
        return DepthSegOutput(logits, depths)


def build_model(cfg: ModelConfig, load_weights: bool = True) -> nn.Module:
    """Build the model ``cfg`` names, loading local encoder weights if ``cfg.encoder.weights``.

    Args:
        cfg: Model config.
        load_weights: Load ``cfg.encoder.weights``; pass ``False`` when a full trained
            state dict (a model bundle) is loaded next anyway.

    Returns:
        A module whose ``forward(images)`` returns :class:`DepthSegOutput`.
    """
    match cfg.arch:
        case "depthseg":
            model = DepthSeg(cfg)
            if load_weights and cfg.encoder.weights is not None:
                load_encoder_weights(model.encoder, cfg.encoder.weights)
            return model
        case "deeplabv3":
            return DeepLabV3Baseline(cfg)
        case _:
            raise InputError(
                f"model.arch={cfg.arch!r} is not a known architecture; expected depthseg or "
                "deeplabv3; fix model.arch in the config"
            )


def normalize(
    images: Tensor,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Turn raw band values into model input, on whatever device ``images`` lives.

    Meant to run on the GPU: ship compact uint8/uint16 tiles, normalise there.

    Args:
        images: (B, C, H, W) or (C, H, W) integer (uint8, uint16, ...) or float tensor.
        mean: Per-band mean in the units of ``images`` (e.g. 10-bit DN).
        std: Per-band standard deviation in the same units.
        dtype: Floating dtype of the result.

    Returns:
        ``(images - mean) / std`` per band, as ``dtype``.

    Raises:
        InputError: when ``mean``/``std`` do not have one value per band, or a std is <= 0.
    """
    bands = images.shape[-3]
    # Statistics are checked on the CPU so that normalising a GPU batch never syncs the device.
    mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
    std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
    if mean_t.numel() != bands or std_t.numel() != bands:
        raise InputError(
            f"normalize got {mean_t.numel()} means and {std_t.numel()} stds for {bands} "
            "bands; expected one of each per band; pass the bundle's band statistics"
        )
    if mean_t.device.type == "cpu" and bool((std_t <= 0).any()):
        raise InputError(f"normalize got std {std_t.tolist()}; every std must be > 0")
    mean_t = mean_t.to(images.device, non_blocking=True)
    std_t = std_t.to(images.device, non_blocking=True)
    x = images.to(torch.float32)
    x = (x - mean_t.view(-1, 1, 1)) / std_t.view(-1, 1, 1)
    return x.to(dtype)
