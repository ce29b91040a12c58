"""The frozen DINOv2 ViT encoder: any image size in, four NCHW token maps out.

Built from timm's ``VisionTransformer`` (``vit_{small,base,large}_patch14_dinov2`` or a tiny
preset with the same structure), so one interface, ``forward_intermediates``, gives the
features of the chosen blocks and ``prune_intermediate_layers`` drops the blocks after the
last one needed.

Two things a satellite image needs that DINOv2 does not do:

* **Any H x W.** The patch grid needs multiples of ``patch_size``; other sizes are resized
  (bilinear) to the nearest multiple. Resizing rather than padding keeps the image extent, so
  every output resized back to (H, W) lines up exactly; multiples of the patch (518, 126) skip
  the resampling.
* **More than three bands.** The first three input bands go through DINOv2's pretrained RGB
  filters unchanged; each extra band (NIR) gets its own patch filter, initialised to zero and
  trainable even when the encoder is frozen. At step 0 the 4-band model equals the pretrained
  RGB model; training then learns how much NIR to add.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any, cast

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from depthseg.errors import InputError
from depthseg.model.config import EncoderConfig

# DINOv2 checkpoints store a 37 x 37 position grid (518 px at patch 14) and layer scale 1e-5.
DINOV2_POS_GRID = 37
DINOV2_LAYER_SCALE_INIT = 1e-5
RGB_BANDS = 3


def fit_to_patch(images: Tensor, patch_size: int) -> Tensor:
    """Resize images to the nearest multiple of ``patch_size`` on each axis (at least one patch).

    Args:
        images: (B, C, H, W) float images.
        patch_size: ViT patch size.

    Returns:
        The images unchanged when H and W are multiples already, else bilinearly resized.
    """
    height, width = images.shape[-2:]
    fit_h = max(1, round(height / patch_size)) * patch_size
    fit_w = max(1, round(width / patch_size)) * patch_size
    if (fit_h, fit_w) == (height, width):
        return images
    return F.interpolate(images, size=(fit_h, fit_w), mode="bilinear", align_corners=False)


class BandExtendedConv2d(nn.Conv2d):
    """A patch projection that keeps DINOv2's RGB filters and adds filters for extra bands.

    Its own ``weight``/``bias`` are the RGB projection, so checkpoints load under the usual
    ``patch_embed.proj.*`` keys; the extra bands live in ``extra`` (no bias, zero init).
    """

    def __init__(self, rgb: nn.Conv2d, extra_bands: int) -> None:
        super().__init__(
            RGB_BANDS,
            rgb.out_channels,
            rgb.kernel_size,  # type: ignore[arg-type]
            rgb.stride,  # type: ignore[arg-type]
            bias=rgb.bias is not None,
            device=rgb.weight.device,
            dtype=rgb.weight.dtype,
        )
        with torch.no_grad():
            self.weight.copy_(rgb.weight)
            if self.bias is not None and rgb.bias is not None:
                self.bias.copy_(rgb.bias)
        self.extra = nn.Conv2d(
            extra_bands,
            rgb.out_channels,
            rgb.kernel_size,  # type: ignore[arg-type]
            rgb.stride,  # type: ignore[arg-type]
            bias=False,
            device=rgb.weight.device,
            dtype=rgb.weight.dtype,
        )
        nn.init.zeros_(self.extra.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Project (B, C, H, W) with C > 3 to patch tokens."""
        return super().forward(x[:, :RGB_BANDS]) + self.extra(x[:, RGB_BANDS:])


def _create(arch: str, kwargs: dict[str, Any]) -> VisionTransformer:
    # use_naflex=False pins the class: timm would otherwise read TIMM_USE_NAFLEXVIT.
    model = timm.create_model(arch, pretrained=False, use_naflex=False, **kwargs)
    assert isinstance(model, VisionTransformer)
    return model


def build_vit(cfg: EncoderConfig, in_channels: int = RGB_BANDS) -> VisionTransformer:
    """The full (unpruned) timm ViT of ``cfg`` with random weights and no classifier head."""
    common: dict[str, Any] = dict(
        img_size=DINOV2_POS_GRID * cfg.patch_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        num_classes=0,
        dynamic_img_size=True,
    )
    match cfg.name:
        case "tiny":
            vit = VisionTransformer(**common, init_values=DINOV2_LAYER_SCALE_INIT)
        case "vits":
            vit = _create("vit_small_patch14_dinov2", common)
        case "vitb":
            vit = _create("vit_base_patch14_dinov2", common)
        case "vitl":
            vit = _create("vit_large_patch14_dinov2", common)
        case _:
            raise InputError(
                f"encoder.name={cfg.name!r} is not a known encoder; expected one of "
                "tiny, vits, vitb, vitl; fix encoder.name in the model config"
            )
    if in_channels > RGB_BANDS:
        proj = vit.patch_embed.proj
        assert isinstance(proj, nn.Conv2d)
        vit.patch_embed.proj = BandExtendedConv2d(proj, in_channels - RGB_BANDS)
    return vit


class Encoder(nn.Module):
    """DINOv2 ViT returning the token maps of 4 blocks as NCHW feature maps.

    Args:
        cfg: Encoder config (size, layers, freeze, patch size).
        in_channels: Input bands; bands after the first three get extra patch filters.
    """

    def __init__(self, cfg: EncoderConfig, in_channels: int = RGB_BANDS) -> None:
        super().__init__()
        assert cfg.layers is not None and cfg.embed_dim is not None
        self.cfg = cfg
        self.layers = list(cfg.layers)
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.in_channels = in_channels
        self.vit = build_vit(cfg, in_channels)
        # The final LayerNorm is kept: intermediates are normalised as Depth Anything does.
        self.vit.prune_intermediate_layers(self.layers, prune_norm=False, prune_head=True)
        self.frozen = cfg.freeze
        if self.frozen:
            self.vit.requires_grad_(False)
            self.vit.eval()
            for p in self.extra_band_parameters():
                p.requires_grad_(True)

    def extra_band_parameters(self) -> list[nn.Parameter]:
        """The patch filters of bands beyond RGB: trainable even in a frozen encoder."""
        proj = self.vit.patch_embed.proj
        return list(proj.extra.parameters()) if isinstance(proj, BandExtendedConv2d) else []

    def train(self, mode: bool = True) -> Encoder:
        """Set training mode, but keep a frozen ViT in eval mode (no dropout/drop-path drift)."""
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    def forward(self, images: Tensor) -> list[Tensor]:
        """Encode images of any size.

        Args:
            images: (B, C, H, W) normalised images.

        Returns:
            4 maps (B, D, h, w), h = round(H / patch), w = round(W / patch), shallow to deep.
        """
        x = fit_to_patch(images, self.patch_size)
        # A fully frozen encoder needs no autograd graph: saves the activations of every block.
        no_grad = self.frozen and not any(p.requires_grad for p in self.extra_band_parameters())
        with torch.no_grad() if no_grad else nullcontext():
            maps = self.vit.forward_intermediates(
                x, indices=self.layers, norm=True, output_fmt="NCHW", intermediates_only=True
            )
        return list(cast(list[Tensor], maps))


# ----------------------------------------------------------------------------------------------
# Weights from a local file.

_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


def _read_state_dict(path: Path, expected: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(
            f"encoder weights file {str(path)!r} does not exist; expected a local DINOv2 "
            f"{expected} checkpoint (.pth from Meta or model.safetensors from timm); fix "
            "encoder.weights or download the file first"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the same thing to the user
        raise InputError(
            f"encoder weights file {str(path)!r} could not be read ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); expected a DINOv2 {expected} "
            "state dict saved with torch.save or safetensors; re-download the file"
        ) from err
    if not isinstance(loaded, dict):
        raise InputError(
            f"encoder weights file {str(path)!r} holds a {type(loaded).__name__}, not a state "
            f"dict; expected a DINOv2 {expected} checkpoint; save model.state_dict() instead"
        )
    return loaded


def _describe(state_dict: Mapping[str, Tensor]) -> tuple[int | None, int]:
    """(embed dim, number of blocks) of a ViT state dict in Meta or timm layout."""
    proj = state_dict.get("patch_embed.proj.weight")
    dim = int(proj.shape[0]) if proj is not None else None
    blocks = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    return dim, (max(blocks) + 1 if blocks else 0)


def _size_name(dim: int | None, depth: int) -> str:
    for name, shape in (("vits", (384, 12)), ("vitb", (768, 12)), ("vitl", (1024, 24))):
        if (dim, depth) == shape:
            return f" (a {name})"
    return ""


def load_encoder_weights(encoder: Encoder, source: str | Path | Mapping[str, Tensor]) -> None:
    """Load DINOv2 weights into ``encoder`` from a local file or an already loaded state dict.

    Accepts the official Meta layout (``dinov2_vits14_pretrain.pth``: ``mask_token``,
    ``blocks.N.ls1.gamma``, 37 x 37 + 1 position embedding) and timm / Hugging Face
    safetensors in timm's key layout; timm's ``checkpoint_filter_fn`` converts Meta keys and
    resamples the position grid or patch size where they differ. Blocks the encoder pruned
    are skipped; extra-band filters absent from an RGB checkpoint keep their zero init.

    Args:
        encoder: The encoder to fill in place.
        source: Local path (``.pth``/``.pt`` via ``torch.load(weights_only=True)``,
            ``.safetensors``) or a state dict. Remote URIs are ``depthseg.io``'s job.

    Raises:
        InputError: missing or unreadable file, or a checkpoint of another encoder size.
    """
    cfg = encoder.cfg
    expected = f"{cfg.name} (embed dim {cfg.embed_dim}, {cfg.full_depth} blocks)"
    origin = "the given state dict"
    if isinstance(source, (str, Path)):
        if "://" in str(source):
            raise InputError(
                f"encoder weights {str(source)!r} is a remote URI; depthseg.model reads local "
                "files only; fetch it with depthseg.io first and pass the local path"
            )
        origin = repr(str(source))
        state_dict = _read_state_dict(Path(source), expected)
    else:
        state_dict = dict(source)
    for wrapper in ("model", "state_dict"):
        inner = state_dict.get(wrapper)
        if isinstance(inner, dict):
            state_dict = inner
    if "embeddings.patch_embeddings.projection.weight" in state_dict:
        raise InputError(
            f"encoder weights {origin} are in Hugging Face transformers (Dinov2Model) layout; "
            "expected Meta .pth or timm safetensors; use the timm/vit_*_patch14_dinov2 files"
        )
    dim, depth = _describe(state_dict)
    if (dim, depth) != (cfg.embed_dim, cfg.full_depth):
        raise InputError(
            f"encoder weights {origin} hold a ViT with embed dim {dim} and {depth} blocks"
            f"{_size_name(dim, depth)}, but the encoder is {expected}; set encoder.name to "
            "match the checkpoint or use a checkpoint of that size"
        )
    converted = checkpoint_filter_fn(dict(state_dict), encoder.vit)
    kept_blocks = len(encoder.vit.blocks)
    converted = {
        k: v
        for k, v in converted.items()
        if not ((m := _BLOCK_KEY.match(k)) and int(m.group(1)) >= kept_blocks)
        and not k.startswith(("head.", "fc_norm."))
    }
    missing, unexpected = encoder.vit.load_state_dict(converted, strict=False)
    missing = [k for k in missing if not k.startswith("patch_embed.proj.extra.")]
    if missing or unexpected:
        raise InputError(
            f"encoder weights {origin} do not fit {expected}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}; use an official DINOv2 or timm dinov2 checkpoint"
        )


def count_parameters(module: nn.Module | None, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (0 for ``None``)."""
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def patch_grid(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """The (h, w) token grid :func:`fit_to_patch` gives for an (H, W) input."""
    return max(1, round(height / patch_size)), max(1, round(width / patch_size))


__all__ = [
    "BandExtendedConv2d",
    "Encoder",
    "build_vit",
    "count_parameters",
    "fit_to_patch",
    "load_encoder_weights",
    "patch_grid",
]
