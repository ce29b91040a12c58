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
* **More than three bands.** The first three input bands go through the pretrained ViT
  unchanged; the extra bands (NIR) go through a patch embedding *beside* it
  (:class:`ExtraBandEmbed`), whose tokens are added to each of the four feature maps. It is
  initialised to zero and always trainable, so at step 0 the 4-band model equals the
  pretrained RGB model, and a frozen ViT still runs without autograd (the paper's
  encoder-only and adapter rows compare what the paper compares).

Position embeddings follow DINOv2's reference implementation, not timm's default: the stored
37 x 37 grid is resampled bicubically *without* antialiasing, by the scale factor
``(n + 0.1) / 37`` (DINOv2's ``interpolate_offset``), and left as it is for a square 37 x 37
grid. So a pretrained checkpoint gives DINOv2's own features at any size (224, 742, 1036 px),
not only at 518. ``*_reg4`` checkpoints (register tokens) load with ``encoder.registers: 4``.
"""

from __future__ import annotations

import math
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
from depthseg.model.config import EncoderConfig, size_preset

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


#: DINOv2's ``interpolate_offset``: the position grid is scaled by (n + 0.1) / 37.
DINOV2_INTERPOLATE_OFFSET = 0.1


def dinov2_interpolate_pos_embed(patch_pos: Tensor, rows: int, cols: int,
                                 offset: float = DINOV2_INTERPOLATE_OFFSET) -> Tensor:
    """Resample a square patch position grid as DINOv2's ``interpolate_pos_encoding`` does.

    Args:
        patch_pos: (1, M * M, D) position embeddings of the patches (no prefix tokens).
        rows: Patch rows of the image.
        cols: Patch columns of the image.
        offset: DINOv2's ``interpolate_offset``.

    Returns:
        (1, rows * cols, D): bicubic, no antialiasing, scale factor ``(n + offset) / M`` per
        axis (in float32, returned in the input's dtype); the grid itself when rows = cols = M.
    """
    count, dim = patch_pos.shape[1], patch_pos.shape[2]
    side = math.isqrt(count)
    assert side * side == count, f"position grid of {count} patches is not square"
    if rows == cols == side:
        return patch_pos
    grid = patch_pos.float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((rows + offset) / side, (cols + offset) / side),
                         mode="bicubic", antialias=False)
    assert grid.shape[-2:] == (rows, cols), (grid.shape, rows, cols)
    return grid.permute(0, 2, 3, 1).reshape(1, rows * cols, dim).to(patch_pos.dtype)


class DinoV2VisionTransformer(VisionTransformer):
    """timm's ViT whose position embeddings are resampled the DINOv2 way (see the module)."""

    def _pos_embed(self, x: Tensor) -> Tensor:
        """Add position embeddings to (B, H, W, C) patch tokens and prepend the prefix tokens."""
        batch, rows, cols, dim = x.shape
        x = x.reshape(batch, rows * cols, dim)
        prefix = 0 if self.no_embed_class else self.num_prefix_tokens
        stored = self.pos_embed
        assert stored is not None
        pos = torch.cat([stored[:, :prefix],
                         dinov2_interpolate_pos_embed(stored[:, prefix:], rows, cols)], dim=1)
        tokens = []
        if self.cls_token is not None:
            tokens.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            tokens.append(self.reg_token.expand(batch, -1, -1))
        if self.no_embed_class:  # registers: no position embedding on prefix tokens
            x = torch.cat([*tokens, x + pos], dim=1)
        else:
            x = torch.cat([*tokens, x], dim=1) + pos
        return cast(Tensor, self.pos_drop(x))


class ExtraBandEmbed(nn.Module):
    """Patch embedding of the bands after RGB, beside the ViT.

    One strided convolution gives a token map per encoder layer; each is added to that layer's
    ViT map. Zero-initialised (the RGB features are unchanged at step 0) and trainable even
    when the ViT is frozen, which then needs no autograd.

    Args:
        extra_bands: Bands after the first three.
        embed_dim: ViT width.
        patch_size: ViT patch size.
        maps: Feature maps to add to (the encoder's 4 layers).
    """

    def __init__(self, extra_bands: int, embed_dim: int, patch_size: int, maps: int = 4
                 ) -> None:
        super().__init__()
        self.maps = maps
        self.proj = nn.Conv2d(extra_bands, embed_dim * maps, patch_size, stride=patch_size)
        nn.init.zeros_(self.proj.weight)
        assert self.proj.bias is not None
        nn.init.zeros_(self.proj.bias)

    def forward(self, bands: Tensor) -> list[Tensor]:
        """(B, E, H, W) extra bands (H, W multiples of the patch) -> ``maps`` x (B, D, h, w)."""
        return list(self.proj(bands).chunk(self.maps, dim=1))


def _create(arch: str, kwargs: dict[str, Any]) -> VisionTransformer:
    # use_naflex=False pins the class: timm would otherwise read TIMM_USE_NAFLEXVIT.
    model = timm.create_model(arch, pretrained=False, use_naflex=False, **kwargs)
    assert type(model) is VisionTransformer
    # Same module tree and state dict; only the position-embedding resampling differs.
    model.__class__ = DinoV2VisionTransformer
    return model


def build_vit(cfg: EncoderConfig) -> VisionTransformer:
    """The full (unpruned) RGB ViT of ``cfg`` with random weights and no classifier head.

    DINOv2's position-embedding resampling (:class:`DinoV2VisionTransformer`); with
    ``cfg.registers`` the ``*_reg4_dinov2`` architecture.
    """
    reg = f"_reg{cfg.registers}" if cfg.registers else ""
    vit: VisionTransformer
    common: dict[str, Any] = dict(
        img_size=DINOV2_POS_GRID * cfg.patch_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.embed_dim,
        depth=cfg.depth,
        num_heads=cfg.num_heads,
        num_classes=0,
        dynamic_img_size=True,
    )
    timm_size = size_preset(cfg.name).timm_size
    if timm_size is None:  # tiny: no timm name; the same DINOv2 blocks, built directly
        vit = DinoV2VisionTransformer(**common, init_values=DINOV2_LAYER_SCALE_INIT,
                                      reg_tokens=cfg.registers, no_embed_class=cfg.registers > 0)
    else:
        vit = _create(f"vit_{timm_size}_patch14{reg}_dinov2", common)
    return vit


class Encoder(nn.Module):
    """DINOv2 ViT returning the token maps of 4 blocks as NCHW feature maps.

    Args:
        cfg: Encoder config (size, layers, freeze, patch size).
        in_channels: Input bands; bands after the first three go through
            :class:`ExtraBandEmbed` beside the ViT.
    """

    def __init__(self, cfg: EncoderConfig, in_channels: int = RGB_BANDS) -> None:
        super().__init__()
        assert cfg.layers is not None and cfg.embed_dim is not None
        self.cfg = cfg
        self.layers = list(cfg.layers)
        self.embed_dim = cfg.embed_dim
        self.patch_size = cfg.patch_size
        self.in_channels = in_channels
        self.vit = build_vit(cfg)
        self.extra_bands = (ExtraBandEmbed(in_channels - RGB_BANDS, cfg.embed_dim,
                                           cfg.patch_size, len(self.layers))
                            if in_channels > RGB_BANDS else None)
        # The final LayerNorm is kept: intermediates are normalised as Depth Anything does.
        self.vit.prune_intermediate_layers(self.layers, prune_norm=False, prune_head=True)
        self.frozen = cfg.freeze
        if self.frozen:
            self.vit.requires_grad_(False)
            self.vit.eval()

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
        # A frozen ViT needs no autograd graph (the extra bands bypass it): no activations of
        # any block are kept.
        with torch.no_grad() if self.frozen else nullcontext():
            maps = self.vit.forward_intermediates(
                x[:, :RGB_BANDS], indices=self.layers, norm=True, output_fmt="NCHW",
                intermediates_only=True
            )
        maps = list(cast(list[Tensor], maps))
        if self.extra_bands is not None:
            maps = [m + e for m, e in zip(maps, self.extra_bands(x[:, RGB_BANDS:]), strict=True)]
        return maps


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
    registers = state_dict.get("register_tokens", state_dict.get("reg_token"))
    found = int(registers.shape[1]) if registers is not None else 0
    if found != cfg.registers:
        kind = f"{found} register tokens (a *_reg{found} checkpoint)" if found else \
            "no register tokens"
        raise InputError(
            f"encoder weights {origin} have {kind}, but encoder.registers is {cfg.registers}; "
            f"set encoder.registers: {found} in the model config"
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
    "DinoV2VisionTransformer",
    "Encoder",
    "ExtraBandEmbed",
    "build_vit",
    "dinov2_interpolate_pos_embed",
    "count_parameters",
    "fit_to_patch",
    "load_encoder_weights",
    "patch_grid",
]
