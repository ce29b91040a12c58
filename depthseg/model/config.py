"""Typed, frozen configuration of the DepthSeg model and its training recipe.

Every field the paper leaves open has a preset per encoder size, chosen by ``match`` on the
encoder name (no registries). Fields left as ``None`` are filled from that preset when the
config is built, so ``to_dict()`` always shows the values the model really uses and
``from_dict(to_dict(cfg)) == cfg`` holds exactly.

Validation happens in ``__post_init__``: a bad value raises :class:`~depthseg.errors.InputError`
with one line naming the field, the value, what was expected and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, Union

from depthseg.errors import InputError

EncoderName = Literal["tiny", "vits", "vitb", "vitl"]
Arch = Literal["depthseg", "deeplabv3"]
BaselineBackbone = Literal["resnet50", "resnet101", "mobilenet_v3_large"]
Precision = Literal["bf16", "fp32"]

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


# ----------------------------------------------------------------------------------------------
# Field checking shared by the dataclasses below.


_SCALAR_HINTS: dict[type, str] = {
    bool: "a boolean; write true or false",
    int: "an integer; write a whole number",
    float: "a number; write a number such as 1.0e-4",
    str: "a string; quote it",
}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; lists become tuples, ints become floats.

    Strings are accepted for float fields because YAML 1.1 reads ``1e-4`` as text.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(value, non_none[0], where)
    if origin is Literal:
        if value in args:
            return value
        raise InputError(
            f"{where}={value!r} is not allowed; expected one of "
            f"{', '.join(map(repr, args))}; change it to one of those"
        )
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}={value!r} is not a list; expected a list like [1, 2, 3, 4]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(
                f"{where}={list(value)!r} has {len(value)} items; expected {len(args)}"
            )
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if tp in _SCALAR_HINTS:
        if tp is float and isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
        accepted = (int, float) if tp is float else tp
        if isinstance(value, accepted) and (tp is bool or not isinstance(value, bool)):
            return tp(value)
        raise InputError(f"{where}={value!r} is not {_SCALAR_HINTS[tp]}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            from_dict: Any = tp.from_dict  # type: ignore[attr-defined]
            return from_dict(value)
        raise InputError(f"{where}={value!r} is not a mapping; expected the {tp.__name__} fields")
    return value


def _check_fields(obj: Any, prefix: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _coerce(getattr(obj, f.name), hints[f.name], f"{prefix}.{f.name}")
        object.__setattr__(obj, f.name, value)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)


def _plain(value: Any) -> Any:
    """Dataclass/tuple tree -> dicts and lists, so YAML and JSON can write it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Section:
    """``to_dict``/``from_dict`` shared by the config dataclasses."""

    _SECTION: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, no tuples) that :meth:`from_dict` turns back into an equal config."""
        return _plain(self)

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Build from a plain dict (nested dicts for nested configs), rejecting unknown keys."""
        section: str = cls._SECTION  # type: ignore[attr-defined]
        if not isinstance(data, dict):
            raise InputError(f"{section} config is {data!r}; expected a mapping of field: value")
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(
                f"unknown {section} config key(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(known)}; remove or rename them"
            )
        return cls(**data)


@dataclass(frozen=True)
class EncoderConfig(_Section):
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
        _check_fields(self, "encoder")
        _require(self.registers in (0, 4),
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
        _require(self.patch_size > 0, f"encoder.patch_size={self.patch_size} must be > 0")
        dim, depth, heads = self.embed_dim, self.depth, self.num_heads
        assert dim is not None and depth is not None and heads is not None
        _require(
            dim > 0 and heads > 0 and dim % heads == 0,
            f"encoder.embed_dim={dim} is not divisible by encoder.num_heads={heads}; "
            "choose a width that is a multiple of the head count",
        )
        _require(depth > 0, f"encoder.depth={depth} must be > 0")
        layers = self.layers
        _require(
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
class ModelConfig(_Section):
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
        _check_fields(self, "model")
        preset = head_preset(self.encoder.name)
        for name in ("dpt_features", *self._WIDTHS):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(preset, name))
        _require(
            1 <= self.num_classes <= 255,
            f"model.num_classes={self.num_classes} must be in [1, 255] (255 marks ignored "
            "pixels); set it to the number of land-cover classes",
        )
        min_bands = 3 if self.arch == "depthseg" else 1
        _require(
            self.in_channels >= min_bands,
            f"model.in_channels={self.in_channels} is too few for {self.arch}; expected at "
            f"least {min_bands} (R, G, B first, extra bands such as NIR after)",
        )
        assert self.dpt_features is not None
        _require(self.dpt_features > 0, f"model.dpt_features={self.dpt_features} must be > 0")
        for name in self._WIDTHS:
            widths = getattr(self, name)
            _require(
                len(widths) == 4 and all(w > 0 for w in widths),
                f"model.{name}={list(widths)} must be 4 positive widths, one per pyramid level "
                f"(fine to coarse), e.g. {list(getattr(head_preset('vits'), name))}",
            )


@dataclass(frozen=True)
class TrainConfig(_Section):
    """The paper's training recipe: AdamW + MultiStepLR, L = w_D * L_D + w_cls * L_cls.

    Attributes:
        epochs: Passes over the training chips (paper: 50).
        batch_size: Chips per optimiser step over all workers (paper: 8 / 4 / 2 for S / B / L;
            :meth:`paper` fills it from the encoder size).
        lr: AdamW initial learning rate.
        weight_decay: AdamW weight decay.
        betas: AdamW (beta1, beta2).
        lr_gamma: MultiStepLR factor.
        lr_milestones: Fractions of the total optimiser steps at which the lr is multiplied by
            ``lr_gamma``; :meth:`milestone_steps` turns them into step numbers.
        depth_loss_weight: w_D, weight of L_D = 1 - SSIM.
        depth_l1_weight: Weight of a masked L1 term added to L_D at every depth scale (not in
            the paper: 0 by default). With an nDSM target that is mostly exactly 0 (flat
            ground) ``1 - SSIM`` alone let the demo's full-resolution depth collapse to 0;
            the demo sets 1.
        cls_loss_weight: w_cls, weight of the cross-entropy.
        lr_reference_batch: The global batch ``lr`` was set for (the paper presets: their
            8 / 4 / 2). A run with another global ``batch_size`` scales the lr linearly,
            ``lr * batch_size / lr_reference_batch`` (Goyal et al. 2017); None: ``lr`` as given.
        chip_size: Side of a training chip in pixels (paper: 512).
        ignore_index: Label value excluded from L_cls and the metrics.
        precision: ``bf16`` autocast on GPU (CPU runs fall back to fp32) or ``fp32``.
        seed: Seed of weight init and data order.
    """

    _SECTION: ClassVar[str] = "train"
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_gamma: float = 0.2
    lr_milestones: tuple[float, ...] = (0.3, 0.6)
    depth_loss_weight: float = 1.0
    depth_l1_weight: float = 0.0
    cls_loss_weight: float = 1.0
    lr_reference_batch: int | None = None
    chip_size: int = 512
    ignore_index: int = 255
    precision: Precision = "bf16"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fields(self, "train")
        _require(self.epochs > 0, f"train.epochs={self.epochs} must be > 0")
        _require(self.batch_size > 0, f"train.batch_size={self.batch_size} must be > 0")
        _require(self.lr > 0, f"train.lr={self.lr} must be > 0, e.g. 1.0e-4")
        _require(self.weight_decay >= 0, f"train.weight_decay={self.weight_decay} must be >= 0")
        _require(
            all(0 <= b < 1 for b in self.betas),
            f"train.betas={list(self.betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]",
        )
        _require(0 < self.lr_gamma <= 1, f"train.lr_gamma={self.lr_gamma} must be in (0, 1]")
        ms = self.lr_milestones
        _require(
            all(0 < m < 1 for m in ms) and all(a < b for a, b in zip(ms, ms[1:], strict=False)),
            f"train.lr_milestones={list(ms)} must be increasing fractions of the total steps "
            "in (0, 1), e.g. [0.3, 0.6]",
        )
        _require(
            min(self.depth_loss_weight, self.cls_loss_weight, self.depth_l1_weight) >= 0,
            f"train loss weights (depth {self.depth_loss_weight}, cls {self.cls_loss_weight}, "
            f"depth_l1 {self.depth_l1_weight}) must be >= 0",
        )
        _require(self.chip_size > 0, f"train.chip_size={self.chip_size} must be > 0")
        _require(self.lr_reference_batch is None or self.lr_reference_batch > 0,
                 f"train.lr_reference_batch={self.lr_reference_batch} must be > 0 or null")

    @property
    def effective_lr(self) -> float:
        """The lr this run uses: ``lr``, scaled linearly when ``lr_reference_batch`` is set."""
        if self.lr_reference_batch is None:
            return self.lr
        return self.lr * self.batch_size / self.lr_reference_batch

    @classmethod
    def paper(cls, encoder_name: str, **overrides: Any) -> TrainConfig:
        """The paper's recipe with its batch size for ``encoder_name``, then ``overrides``."""
        return cls(**{"batch_size": paper_batch_size(encoder_name), **overrides})

    def milestone_steps(self, total_steps: int) -> list[int]:
        """MultiStepLR milestones in optimiser steps for a run of ``total_steps`` steps."""
        return [max(1, round(m * total_steps)) for m in self.lr_milestones]
