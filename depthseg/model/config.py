"""Typed, frozen configuration of the DepthSeg model (the training recipe: :mod:`depthseg.config`).

Every field the paper leaves open has a preset per encoder size, one row of
:data:`SIZE_PRESETS`. Fields left as ``None`` are filled from that preset when the
config is built, so ``to_dict()`` always shows the values the model really uses and
``from_dict(to_dict(cfg)) == cfg`` holds exactly.

Validation happens in ``__post_init__``: a bad value raises :class:`~depthseg.errors.InputError`
with one line naming the field, the value, what was expected and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, NamedTuple, TypeVar

from depthseg.errors import InputError
from depthseg.schema import Section, check_fields, require

EncoderName = Literal["tiny", "vits", "vitb", "vitl"]
Arch = Literal["depthseg", "deeplabv3"]
BaselineBackbone = Literal["resnet50", "resnet101", "mobilenet_v3_large"]

_C = TypeVar("_C")


class EncoderPreset(NamedTuple):
    """Shape of one encoder size: ViT width, depth, heads and the 4 blocks that feed the heads."""

    embed_dim: int
    depth: int
    num_heads: int
    layers: tuple[int, int, int, int]


class HeadPreset(NamedTuple):
    """Widths of the trainable parts for one encoder size (fine-to-coarse, 4 pyramid levels)."""

    dpt_features: int
    dpt_channels: tuple[int, int, int, int]
    prompter_channels: tuple[int, int, int, int]
    decoder_channels: tuple[int, int, int, int]


class SizePreset(NamedTuple):
    """Everything that depends on the encoder size, in one row of :data:`SIZE_PRESETS`.

    Attributes:
        encoder: The DINOv2 shape. Layers follow Depth Anything's choice for DINOv2: evenly
            spaced blocks ending at the last.
        heads: Default widths of the depth head, prompter and decoder. The reassembly widths
            (``dpt_channels``) are Depth Anything's for the same encoder; the fusion width,
            prompter and decoder are sized so that all trainable parts together cost at most
            about a third of the encoder's FLOPs on a 518 px tile, i.e. DepthSeg keeps >= 75 %
            of its encoder's throughput (DESIGN section 8). Counts: docs/MODEL.md.
        batch_size: The paper's batch size (8 / 4 / 2 for S / B / L; 4 for tiny).
        timm_size: timm's DINOv2 model size (``vit_<size>_patch14_dinov2``); None for tiny,
            which is built directly.
    """

    encoder: EncoderPreset
    heads: HeadPreset
    batch_size: int
    timm_size: str | None


SIZE_PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(EncoderPreset(64, 4, 2, (0, 1, 2, 3)),
                       HeadPreset(16, (16, 32, 64, 64), (8, 16, 32, 32), (16, 32, 32, 32)),
                       4, None),
    "vits": SizePreset(EncoderPreset(384, 12, 6, (2, 5, 8, 11)),
                       HeadPreset(48, (48, 96, 192, 384), (16, 32, 64, 128),
                                  (32, 64, 128, 256)),
                       8, "small"),
    "vitb": SizePreset(EncoderPreset(768, 12, 12, (2, 5, 8, 11)),
                       HeadPreset(96, (96, 192, 384, 768), (32, 64, 128, 256),
                                  (64, 128, 256, 384)),
                       4, "base"),
    "vitl": SizePreset(EncoderPreset(1024, 24, 16, (4, 11, 17, 23)),
                       HeadPreset(160, (256, 512, 1024, 1024), (48, 96, 192, 384),
                                  (96, 192, 384, 512)),
                       2, "large"),
}


def size_preset(name: str) -> SizePreset:
    """The row of :data:`SIZE_PRESETS` for ``tiny``, ``vits``, ``vitb`` or ``vitl``.

    Raises:
        InputError: for any other name.
    """
    if name not in SIZE_PRESETS:
        raise InputError(
            f"encoder.name={name!r} is not a known encoder; expected one of "
            f"{', '.join(SIZE_PRESETS)}; fix encoder.name in the model config"
        )
    return SIZE_PRESETS[name]


def encoder_preset(name: str) -> EncoderPreset:
    """The DINOv2 shape of an encoder size (see :class:`SizePreset`)."""
    return size_preset(name).encoder


def head_preset(name: str) -> HeadPreset:
    """Default head widths for an encoder size (see :class:`SizePreset`)."""
    return size_preset(name).heads


def paper_batch_size(name: str) -> int:
    """The paper's batch size for an encoder size (8 / 4 / 2 for S / B / L; 4 for tiny)."""
    return size_preset(name).batch_size


@dataclass(frozen=True)
class EncoderConfig(Section):
    """The frozen DINOv2 ViT encoder.

    Attributes:
        name: Encoder size; ``tiny`` (width 64, depth 4) exists for tests and the CPU demo.
        layers: The 4 block indices whose outputs feed the heads, shallow to deep.
            Default S/B: (2, 5, 8, 11), L: (4, 11, 17, 23), tiny: (0, 1, 2, 3).
        freeze: Keep the pretrained weights fixed (paper). Frozen blocks also stay in eval mode.
        weights: Local path of a DINOv2 checkpoint (Meta ``.pth`` or timm ``.safetensors``);
            ``None`` keeps the random initialisation. Remote URIs are fetched by ``depthseg.io``.
        patch_size: ViT patch size in pixels (14 for DINOv2).
        embed_dim: ViT width; ``None`` takes the preset of ``name``. Overridden only to shrink
            an S/B/L-shaped model for tests.
        depth: Number of ViT blocks; ``None`` takes the preset.
        num_heads: Attention heads; ``None`` takes the preset.
        registers: Register tokens: 0 (``dinov2_vit*14_pretrain.pth``) or 4 (the
            ``*_reg4`` checkpoints).
    """

    _SECTION: ClassVar[str] = "encoder"
    name: EncoderName = "vits"
    layers: tuple[int, ...] | None = None
    freeze: bool = True
    weights: str | None = None
    patch_size: int = 14
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    registers: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "encoder")
        require(self.registers in (0, 4),
                 f"encoder.registers={self.registers!r} is not 0 or 4; DINOv2 checkpoints have "
                 "none (dinov2_vit*14_pretrain.pth) or 4 (dinov2_vit*14_reg4_pretrain.pth)")
        preset = encoder_preset(self.name)
        for name, default in (
            ("embed_dim", preset.embed_dim),
            ("depth", preset.depth),
            ("num_heads", preset.num_heads),
            ("layers", preset.layers),
        ):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        require(self.patch_size > 0, f"encoder.patch_size={self.patch_size} must be > 0")
        dim, depth, heads = self.embed_dim, self.depth, self.num_heads
        assert dim is not None and depth is not None and heads is not None
        require(
            dim > 0 and heads > 0 and dim % heads == 0,
            f"encoder.embed_dim={dim} is not divisible by encoder.num_heads={heads}; "
            "choose a width that is a multiple of the head count",
        )
        require(depth > 0, f"encoder.depth={depth} must be > 0")
        layers = self.layers
        require(
            layers is not None
            and len(layers) == 4
            and all(0 <= a < b for a, b in zip(layers, layers[1:], strict=False))
            and layers[-1] < depth,
            f"encoder.layers={list(layers or ())} must be 4 increasing block indices in "
            f"[0, {depth}); e.g. {list(encoder_preset(self.name).layers)} for {self.name}",
        )

    @property
    def full_depth(self) -> int:
        """Number of ViT blocks of the architecture (before pruning blocks after the last layer)."""
        assert self.depth is not None
        return self.depth


@dataclass(frozen=True)
class ModelConfig(Section):
    """The whole segmentation model.

    Attributes:
        arch: ``depthseg`` (the paper) or ``deeplabv3`` (the paper's baseline, same interface).
        encoder: The ViT encoder.
        num_classes: Output classes K (LiuZhou: 7). Label 255 is reserved for "ignore".
        in_channels: Input bands. The first three are fed to DINOv2's pretrained filters and
            must be R, G, B in that order; bands beyond three (e.g. NIR) enter the patch
            embedding through extra trainable filters initialised to zero (see docs/MODEL.md).
        adapter: Lightweight adapter on (paper) or off (``nn.Identity``, 0 parameters).
        depth_prompter: Depth prompting on (paper) or off. Off drops the whole depth branch,
            DPT head and prompter: no depth output and no depth loss.
        dpt_features: Width of the DPT fusion path (Depth Anything's ``features``).
        dpt_channels: Widths the 4 token maps are projected to before reassembly.
        prompter_channels: Widths of the prompter's 4 deep blocks, fine to coarse.
        decoder_channels: Widths of the decoder's 4 pyramid levels, fine to coarse.
        baseline_backbone: Backbone of the ``deeplabv3`` baseline; ignored by ``depthseg``.
    """

    _SECTION: ClassVar[str] = "model"
    arch: Arch = "depthseg"
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    num_classes: int = 7
    in_channels: int = 3
    adapter: bool = True
    depth_prompter: bool = True
    dpt_features: int | None = None
    dpt_channels: tuple[int, ...] | None = None
    prompter_channels: tuple[int, ...] | None = None
    decoder_channels: tuple[int, ...] | None = None
    baseline_backbone: BaselineBackbone = "resnet50"

    _WIDTHS: ClassVar[tuple[str, ...]] = ("dpt_channels", "prompter_channels", "decoder_channels")

    def __post_init__(self) -> None:
        check_fields(self, "model")
        preset = head_preset(self.encoder.name)
        for name in ("dpt_features", *self._WIDTHS):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(preset, name))
        require(
            1 <= self.num_classes <= 255,
            f"model.num_classes={self.num_classes} must be in [1, 255] (255 marks ignored "
            "pixels); set it to the number of land-cover classes",
        )
        min_bands = 3 if self.arch == "depthseg" else 1
        require(
            self.in_channels >= min_bands,
            f"model.in_channels={self.in_channels} is too few for {self.arch}; expected at "
            f"least {min_bands} (R, G, B first, extra bands such as NIR after)",
        )
        assert self.dpt_features is not None
        require(self.dpt_features > 0, f"model.dpt_features={self.dpt_features} must be > 0")
        for name in self._WIDTHS:
            widths = getattr(self, name)
            require(
                len(widths) == 4 and all(w > 0 for w in widths),
                f"model.{name}={list(widths)} must be 4 positive widths, one per pyramid level "
                f"(fine to coarse), e.g. {list(getattr(head_preset('vits'), name))}",
            )
