"""Depth teacher: pseudo-depth labels from Depth Anything, or heights from a DSM/nDSM.

The depth loss is ``1 - SSIM``, which compares means and contrasts, so teacher depth
and DSM heights must share one scale: both go through :func:`normalize_depth`.

**Normalisation.** Per image, the 2nd and 98th percentiles of the valid, finite values
map to 0 and 1, clipped to [0, 1]: percentiles so that outliers (a mast, a DSM spike)
do not flatten the rest, per image because Depth Anything's output has an unknown
scale and shift per image. It is invariant to ``a * d + b`` (``a > 0``). Larger means
nearer the sensor, i.e. higher for nadir imagery: Depth Anything's relative output is
already inverse depth (disparity), heights are used as they are, metric-depth models
(distance) are negated. Invalid pixels get ``fill`` (NaN) so that losses can mask them;
an image with zero percentile spread (flat terrain) maps to 0.

**Input.** :meth:`DepthTeacher.predict` takes band-first ``(B, C, H, W)`` images.
Depth Anything needs 8-bit RGB: ``rgb_indices`` picks red, green, blue (``(2, 1, 0)``
for GaoFen-2's B, G, R, NIR) and non-``uint8`` input is stretched by :func:`to_uint8`.

Weights come from a local Hugging Face directory (``config.json`` + ``model.safetensors``)
or an official Depth-Anything-V2 checkpoint (``depth_anything_v2_vit{s,b,l}.pth``), whose
state dict is converted in code (:func:`convert_official_v2`); an ``s3://`` model is first
downloaded by :mod:`depthseg.io`. Nothing is fetched from the Hub.

**Preprocessing** follows the official ``infer_image`` recipe: the short side resized to
518 px, the long side keeping the aspect ratio and rounded to a multiple of 14 (its
``lower_bound`` / ``ensure_multiple_of=14`` rule), bicubic without antialiasing and without
clamping (OpenCV's ``INTER_CUBIC`` on a float image), ImageNet normalisation, and DINOv2's
own position-embedding resampling in the backbone (transformers' port resizes the grid
differently); the output
resized back bilinearly with ``align_corners=True``. Remaining differences: imagery that is
not 8-bit RGB is stretched to uint8 first (:func:`to_uint8`), the bicubic kernel is
PyTorch's (OpenCV's has the same ``a = -0.75`` and pixel-centre convention, but border
handling differs), and CUDA runs in bf16 autocast.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
from transformers.models.dinov2.modeling_dinov2 import Dinov2Embeddings

from depthseg.errors import InputError
from depthseg.model.depthnorm import (
    DEFAULT_PERCENTILES,
    _check_percentiles,
    depth_from_height,
    normalize_depth,
    to_uint8,
)
from depthseg.model.encoder import dinov2_interpolate_pos_embed

__all__ = [
    "DepthTeacher",
    "TeacherConfig",
    "convert_official_v2",
    "depth_from_height",
    "load_teacher_model",
    "normalize_depth",
    "tiny_teacher_config",
    "to_uint8",
]

# Depth Anything V1 and V2 were both trained on ImageNet-normalised RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TeacherConfig:
    """How images are fed to the teacher and how its output is normalised.

    Attributes:
        input_size: Short side of the teacher's input in pixels, a multiple of the
            model's patch size (518 as Depth Anything was trained); the long side keeps
            the aspect ratio, rounded to a multiple of the patch. ``None`` keeps the
            native size, rounded to the patch, which preserves fine detail of large tiles.
        rgb_indices: Band indices of red, green, blue in the input, e.g. ``(2, 1, 0)``
            for B, G, R, NIR; ``None`` if the input already is 3-band RGB.
        stretch_percentiles: Percentiles mapped to 0 and 255 by :func:`to_uint8`.
        depth_percentiles: Percentiles mapped to 0 and 1 by :func:`normalize_depth`.
    """

    input_size: int | None = 518
    rgb_indices: tuple[int, int, int] | None = None
    stretch_percentiles: tuple[float, float] = DEFAULT_PERCENTILES
    depth_percentiles: tuple[float, float] = DEFAULT_PERCENTILES

    def __post_init__(self) -> None:
        if self.input_size is not None and self.input_size < 1:
            raise InputError(f"input_size={self.input_size} is not positive; use e.g. 518")
        rgb = self.rgb_indices
        if rgb is not None and (len(rgb) != 3 or len(set(rgb)) != 3 or min(rgb) < 0):
            raise InputError(
                f"rgb_indices={self.rgb_indices} is not 3 distinct band indices; "
                "use e.g. (2, 1, 0) for B, G, R, NIR imagery"
            )
        _check_percentiles(self.stretch_percentiles, "stretch_percentiles")
        _check_percentiles(self.depth_percentiles, "depth_percentiles")


def tiny_teacher_config(
    version: Literal["v1", "v2"], depth_estimation_type: Literal["relative", "metric"] = "relative"
) -> DepthAnythingConfig:
    """A Depth Anything config small enough to initialise randomly in tests and the demo.

    The real layout scaled down (DINOv2 width 32, 8 blocks, patch 14): V1 taps the last
    four blocks (real V1-S: 9-12), V2 four evenly spaced ones (real V2-S: 3, 6, 9, 12).
    ``depth_estimation_type="metric"`` gives a head that outputs distances (V2 metric).

    Raises:
        InputError: For an unknown version or depth type.
    """
    match version:
        case "v1":
            out_indices = [5, 6, 7, 8]
        case "v2":
            out_indices = [2, 4, 6, 8]
        case _:
            raise InputError(f"Depth Anything version {version!r} is unknown; use 'v1' or 'v2'")
    if depth_estimation_type not in ("relative", "metric"):
        raise InputError(
            f"depth_estimation_type={depth_estimation_type!r} is unknown; "
            "use 'relative' or 'metric'"
        )
    width = 32
    backbone = Dinov2Config(
        hidden_size=width,
        num_hidden_layers=8,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=98,  # position embeddings are interpolated to any input size
        patch_size=14,
        # The kwarg works in transformers 4.x and 5.x; 5.x's type stubs only know _out_indices.
        out_indices=out_indices,  # type: ignore[call-arg]
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=width,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        depth_estimation_type=depth_estimation_type,
        max_depth=80 if depth_estimation_type == "metric" else 1,
    )


class _DinoV2Embeddings(Dinov2Embeddings):
    """transformers' DINOv2 embeddings with DINOv2's own position resampling.

    transformers resizes the position grid to the exact patch count; DINOv2 (and so the
    official Depth Anything) scales it by ``(n + 0.1) / 37`` (see
    :func:`~depthseg.model.encoder.dinov2_interpolate_pos_embed`). Away from the 518 px square
    the two give different depth; this keeps the official one.
    """

    def interpolate_pos_encoding(self, embeddings: Tensor, height: int, width: int) -> Tensor:
        """Class + patch position embeddings for an image of ``height`` x ``width`` pixels."""
        patch = self.patch_embeddings.patch_size
        rows, cols = height // patch[0], width // patch[1]
        stored = self.position_embeddings
        patches = dinov2_interpolate_pos_embed(stored[:, 1:], rows, cols)
        return torch.cat([stored[:, :1], patches.to(stored.dtype)], dim=1)


def _official_interpolation(model: DepthAnythingForDepthEstimation) -> None:
    """Swap the backbone's embeddings class in place (same parameters, DINOv2's resampling)."""
    embeddings = getattr(model.backbone, "embeddings", None)
    if type(embeddings) is Dinov2Embeddings:
        embeddings.__class__ = _DinoV2Embeddings


#: The blocks the official Depth-Anything-V2 taps, by encoder width (``intermediate_layer_idx``).
OFFICIAL_V2_LAYERS = {384: [2, 5, 8, 11], 768: [2, 5, 8, 11], 1024: [4, 11, 17, 23]}


def _official_v2_config(state: dict[str, Tensor]) -> DepthAnythingConfig:
    """The transformers config of an official V2 state dict, read from its tensor shapes."""
    width = int(state["pretrained.patch_embed.proj.weight"].shape[0])
    patch = int(state["pretrained.patch_embed.proj.weight"].shape[-1])
    blocks = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("pretrained.blocks."))
    grid = int(state["pretrained.pos_embed"].shape[1] - 1) ** 0.5
    layers = OFFICIAL_V2_LAYERS.get(width)
    if layers is None or layers[-1] >= blocks:  # a scaled-down layout (tests): evenly spaced
        layers = [round(blocks * k / 4) - 1 for k in range(1, 5)]
    backbone = Dinov2Config(
        hidden_size=width, num_hidden_layers=blocks, num_attention_heads=max(1, width // 64),
        mlp_ratio=int(state["pretrained.blocks.0.mlp.fc1.weight"].shape[0]) // width,
        image_size=int(round(grid)) * patch, patch_size=patch,
        # Hugging Face counts the embeddings as stage 0: block i is stage i + 1.
        out_indices=[i + 1 for i in layers],  # type: ignore[call-arg]
        reshape_hidden_states=False)
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=patch, reassemble_hidden_size=width,
        neck_hidden_sizes=[int(state[f"depth_head.projects.{i}.weight"].shape[0])
                           for i in range(4)],
        fusion_hidden_size=int(state["depth_head.scratch.layer1_rn.weight"].shape[0]),
        head_hidden_size=int(state["depth_head.scratch.output_conv2.0.weight"].shape[0]),
        depth_estimation_type="relative", max_depth=1)


def _official_v2_key(key: str) -> str | None:
    """The transformers name of one official V2 tensor (None: dropped, e.g. qkv, handled apart)."""
    rules = [
        (r"pretrained\.cls_token", "backbone.embeddings.cls_token"),
        (r"pretrained\.mask_token", "backbone.embeddings.mask_token"),
        (r"pretrained\.pos_embed", "backbone.embeddings.position_embeddings"),
        (r"pretrained\.patch_embed\.proj\.", "backbone.embeddings.patch_embeddings.projection."),
        (r"pretrained\.blocks\.(\d+)\.norm(\d)\.", r"backbone.encoder.layer.\1.norm\2."),
        (r"pretrained\.blocks\.(\d+)\.attn\.proj\.",
         r"backbone.encoder.layer.\1.attention.o_proj."),
        (r"pretrained\.blocks\.(\d+)\.ls(\d)\.gamma",
         r"backbone.encoder.layer.\1.layer_scale\2.lambda1"),
        (r"pretrained\.blocks\.(\d+)\.mlp\.", r"backbone.encoder.layer.\1.mlp."),
        (r"pretrained\.norm\.", "backbone.layernorm."),
        (r"depth_head\.projects\.(\d)\.", r"neck.reassemble_stage.layers.\1.projection."),
        (r"depth_head\.resize_layers\.(\d)\.", r"neck.reassemble_stage.layers.\1.resize."),
        (r"depth_head\.scratch\.output_conv1\.", "head.conv1."),
        (r"depth_head\.scratch\.output_conv2\.0\.", "head.conv2."),
        (r"depth_head\.scratch\.output_conv2\.2\.", "head.conv3."),
    ]
    for pattern, target in rules:
        if re.match(pattern, key):
            return re.sub(pattern, target, key)
    if match := re.match(r"depth_head\.scratch\.layer(\d)_rn\.", key):
        return f"neck.convs.{int(match[1]) - 1}." + key[match.end():]
    # refinenet4 fuses the deepest level first: it is the first layer of the fusion stage.
    if match := re.match(r"depth_head\.scratch\.refinenet(\d)\.", key):
        rest = key[match.end():]
        rest = (rest.replace("resConfUnit", "residual_layer").replace("conv1", "convolution1")
                .replace("conv2", "convolution2").replace("out_conv", "projection"))
        return f"neck.fusion_stage.layers.{4 - int(match[1])}.{rest}"
    return None


def convert_official_v2(state: dict[str, Tensor]) -> tuple[DepthAnythingConfig, dict[str, Tensor]]:
    """An official Depth-Anything-V2 state dict -> (transformers config, state dict).

    The official checkpoints (``depth_anything_v2_vit{s,b,l}.pth``) hold the DINOv2 backbone
    under ``pretrained.`` (fused ``attn.qkv``, split here into query/key/value) and the DPT head
    under ``depth_head.`` (``projects``, ``resize_layers``, ``scratch.layerN_rn``,
    ``scratch.refinenetN``, ``scratch.output_conv1/2``).

    Raises:
        InputError: A tensor that has no place in the transformers model (not a V2 file).
    """
    config = _official_v2_config(state)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if match := re.match(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key):
            layer, kind = match[1], match[2]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0),
                                  strict=True):
                out[f"backbone.encoder.layer.{layer}.attention.{name}.{kind}"] = part.clone()
            continue
        target = _official_v2_key(key)
        if target is None:
            raise InputError(
                f"tensor {key!r} is not part of an official Depth-Anything-V2 checkpoint "
                "(relative depth, depth_anything_v2_vit{s,b,l}.pth); for other models pass a "
                "Hugging Face folder (config.json + model.safetensors)")
        out[target] = value
    return config, out


def _load_official_v2(path: Path) -> DepthAnythingForDepthEstimation:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the same thing to the user
        raise InputError(f"teacher checkpoint {str(path)!r} could not be read "
                         f"({type(err).__name__}); expected an official Depth-Anything-V2 "
                         ".pth saved with torch.save; re-download it") from err
    if not isinstance(state, dict) or "pretrained.patch_embed.proj.weight" not in state:
        raise InputError(f"teacher checkpoint {str(path)!r} is not an official "
                         "Depth-Anything-V2 state dict (no pretrained.patch_embed.proj.weight); "
                         "pass depth_anything_v2_vit{s,b,l}.pth or a Hugging Face folder")
    config, converted = convert_official_v2(state)
    model = DepthAnythingForDepthEstimation(config)
    missing, unexpected = model.load_state_dict(converted, strict=False)
    missing = [k for k in missing if "mask_token" not in k]
    if missing or unexpected:
        raise InputError(f"teacher checkpoint {str(path)!r} does not convert cleanly: missing "
                         f"{missing[:3]}, unexpected {unexpected[:3]}; pass a Hugging Face "
                         "folder instead")
    _official_interpolation(model)
    return model.eval()


def load_teacher_model(path: str | Path) -> DepthAnythingForDepthEstimation:
    """Load Depth Anything (V1 or V2) on the CPU, in eval mode, from a local path.

    ``path`` is a directory holding ``config.json`` and ``model.safetensors`` as
    ``save_pretrained`` wrote, or an official ``depth_anything_v2_vit*.pth`` file.

    Raises:
        InputError: If the path is a URI, does not exist, has no readable config.json, is
            not a Depth Anything model, or lacks some of the model's weights.
    """
    text = str(path)
    if "://" in text:
        raise InputError(
            f"teacher path {text} is a URI; download it with depthseg.io first and pass "
            "the local directory"
        )
    folder = Path(text).expanduser()
    if folder.is_file() and folder.suffix in (".pth", ".pt"):
        return _load_official_v2(folder)
    hint = ("pass a local Depth Anything directory saved with save_pretrained, or an official "
            "depth_anything_v2_vit*.pth file")
    if not folder.is_dir():
        raise InputError(f"teacher directory {folder} does not exist or is not a directory; {hint}")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise InputError(f"teacher directory {folder} has no config.json; {hint}")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise InputError(f"{config_file} is not a JSON object ({err}); {hint}") from err
    if model_type != "depth_anything":
        raise InputError(
            f"teacher directory {folder} holds a {model_type!r} model, expected model_type "
            f"'depth_anything' (Depth Anything V1/V2); {hint}"
        )
    try:
        # With output_loading_info the result is a (model, info) pair, which the stubs miss.
        loaded: Any = DepthAnythingForDepthEstimation.from_pretrained(
            folder, local_files_only=True, output_loading_info=True
        )
    except OSError as err:
        raise InputError(
            f"teacher directory {folder} has no readable weights (model.safetensors); {hint}"
        ) from err
    model, info = loaded
    # A partly random teacher would silently give garbage pseudo-labels; the mask token
    # is only used in DINOv2 pre-training, so checkpoints may omit it.
    missing = sorted(k for k in info["missing_keys"] if "mask_token" not in k)
    if missing:
        raise InputError(
            f"teacher weights in {folder} lack {len(missing)} tensors (e.g. {missing[0]}); "
            "the weights do not match config.json: re-export the model with save_pretrained"
        )
    _official_interpolation(model)
    return model.eval()


class DepthTeacher:
    """Depth Anything wrapped to turn image batches into normalised pseudo-depth.

    Loads once, then :meth:`predict` runs on the model's device under
    ``torch.inference_mode()``, in bf16 autocast on CUDA.
    """

    def __init__(
        self, model: DepthAnythingForDepthEstimation, config: TeacherConfig | None = None
    ) -> None:
        """Wrap (and freeze) an already-built model, on any device.

        Raises:
            InputError: If ``model`` is not Depth Anything or ``config.input_size`` is not
                a multiple of its patch size.
        """
        if not isinstance(model, DepthAnythingForDepthEstimation):
            raise InputError(
                f"teacher model is a {type(model).__name__}, expected "
                "DepthAnythingForDepthEstimation; load it with load_teacher_model(path)"
            )
        self.config = config or TeacherConfig()
        patch = model.config.patch_size
        self.patch_size = p = int(patch if isinstance(patch, int) else patch[0])
        size = self.config.input_size
        if size is not None and size % p:
            raise InputError(
                f"teacher input_size={size} is not a multiple of the patch size {p}; "
                f"use e.g. {max(1, round(size / p)) * p}"
            )
        # Metric heads output distance (larger = farther): negate so larger = nearer.
        self.sign = -1.0 if model.config.depth_estimation_type == "metric" else 1.0
        self.model = model.eval().requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        config: TeacherConfig | None = None,
        device: str | torch.device = "cpu",
    ) -> DepthTeacher:
        """Load the teacher from a local directory (see :func:`load_teacher_model`)."""
        model = load_teacher_model(path)
        module: torch.nn.Module = model  # PreTrainedModel.to's decorator confuses mypy
        module.to(device)  # in place
        return cls(model, config)

    @property
    def device(self) -> torch.device:
        """Device the model lives on; inputs are moved there."""
        return next(self.model.parameters()).device

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        """Teacher input ``(height, width)`` for an image of that size, patch multiples."""
        short = self.config.input_size
        scale = 1.0 if short is None else short / min(height, width)
        p = self.patch_size
        return (max(p, round(height * scale / p) * p), max(p, round(width * scale / p) * p))

    def predict(self, images: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Normalised pseudo-depth of an image batch.

        Args:
            images: ``(B, C, H, W)``, band first: ``uint8`` RGB, or any band count and
                integer dtype with ``config.rgb_indices`` (non-``uint8`` is stretched by
                :func:`to_uint8`).
            valid: Optional ``(B, H, W)`` or ``(B, 1, H, W)`` bool mask of pixels with data.

        Returns:
            ``(B, 1, H, W)`` float32 in [0, 1], larger = nearer/higher; pixels outside
            ``valid`` are NaN. An ordinary tensor (not an inference tensor), on the
            model's device, usable as a loss target.

        Raises:
            InputError: On a wrong shape, band count or ``rgb_indices``.
        """
        device = self.device
        rgb = self._rgb_uint8(images.to(device), None if valid is None else valid.to(device))
        height, width = rgb.shape[-2:]
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
        with torch.inference_mode():
            x = rgb.float() / 255.0
            # The official recipe: OpenCV INTER_CUBIC on the float image (no antialias, no clamp).
            x = F.interpolate(x, self.model_input_size(height, width), mode="bicubic",
                              align_corners=False)
            x = (x - mean) / std  # (B, 3, h, w)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                raw = self.model(pixel_values=x).predicted_depth  # (B, h, w)
            raw = self.sign * raw.float().unsqueeze(1)
            raw = F.interpolate(raw, (height, width), mode="bilinear", align_corners=True)
            depth = normalize_depth(raw, valid, self.config.depth_percentiles)
        return depth.clone()  # leaves inference mode: usable in autograd downstream

    def _rgb_uint8(self, images: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
        """Select RGB bands and stretch to uint8, refusing shapes it cannot read."""
        if images.ndim != 4:
            raise InputError(
                f"teacher images have shape {tuple(images.shape)}, expected (B, C, H, W); "
                "add a batch axis with images[None]"
            )
        bands, indices = images.shape[1], self.config.rgb_indices
        if indices is None and bands != 3:
            last = images.shape[-1] in (3, 4) and bands > 4
            hint = "; they look channel-last: use images.permute(0, 3, 1, 2)" if last else ""
            raise InputError(
                f"teacher images have {bands} bands, expected 3 (RGB); set "
                f"TeacherConfig.rgb_indices, e.g. (2, 1, 0) for B, G, R, NIR{hint}"
            )
        if indices is not None:
            if max(indices) >= bands:
                raise InputError(
                    f"rgb_indices={indices} but the images have {bands} bands; "
                    f"use indices below {bands}"
                )
            images = images[:, list(indices)]
        if images.is_floating_point():
            raise InputError(
                f"teacher images have dtype {images.dtype}, expected integer digital numbers "
                "(uint8, or 10/16-bit which is stretched); pass the raw pixel values"
            )
        return to_uint8(images, valid, self.config.stretch_percentiles)
