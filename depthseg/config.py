"""YAML presets -> typed configs: ``load_config(path) -> Config`` and back with ``dump_config``.

A preset file has two sections, ``model`` (:class:`~depthseg.model.config.ModelConfig`, with
``encoder`` nested) and ``train`` (:class:`TrainConfig`, defined here: the recipe is not the
model's). Anything left out takes its default; ``train.batch_size`` left out takes the
paper's batch size for the encoder (8 / 4 / 2 for S / B / L). Unknown keys are errors that
name the key and file.

The presets ship inside the package (``depthseg/presets/*.yaml``; ``configs/`` in a checkout
links to them), so ``load_config("vits")`` works wherever depthseg is installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from depthseg.errors import InputError
from depthseg.model.config import ModelConfig, paper_batch_size
from depthseg.schema import Section, check_fields, require

Precision = Literal["bf16", "fp32"]
ClassWeighting = Literal["none", "inverse_sqrt", "inverse"]
Augment = Literal["d4", "none"]

SECTIONS = ("model", "train")
PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def preset_names() -> list[str]:
    """The presets shipped with the package (``tiny``, ``demo``, ``vits``, ``vitb``, ``vitl``)."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_config(path: str | Path) -> Path:
    """A preset name (``vits``) or a YAML path -> the file to read."""
    text = str(path)
    if text in preset_names():
        return PRESETS_DIR / f"{text}.yaml"
    return Path(path)


@dataclass(frozen=True)
class TrainConfig(Section):
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
        depth_bce_weight: Weight of a masked binary cross-entropy term added to L_D at every
            depth scale (not in the paper: 0 by default). Unlike 1 - SSIM and L1 it keeps
            pulling a pixel whose sigmoid depth saturated at 0 (roofs in the demo sat at
            logit -14, depth 0.000, and got no depth gradient); the demo sets 1.
        cls_loss_weight: w_cls, weight of the cross-entropy.
        class_weighting: Per-class weights of the cross-entropy (not in the paper: ``none``).
            ``inverse_sqrt`` weighs each class by ``1 / sqrt(its pixel share)`` in the
            training split (mean weight 1; shares from up to 256 training chips, see
            :func:`depthseg.train.loop.class_shares`), so rare classes (buildings, water,
            bare land) are not drowned by cropland and forest; ``inverse`` weighs by
            ``1 / share`` (stronger). The demo uses it: without it
            its model never predicted a building (test IoU 0.0; 23.1 with it, same run).
        lr_reference_batch: The global batch ``lr`` was set for (the paper presets: their
            8 / 4 / 2). A run with another global ``batch_size`` scales the lr linearly,
            ``lr * batch_size / lr_reference_batch`` (Goyal et al. 2017); None: ``lr`` as given.
        chip_size: Side of a training chip in pixels (paper: 512).
        augment: ``d4`` (default): each training chip gets a random flip and 90-degree
            rotation. ``none``: random crops only, for imagery whose orientation carries
            meaning, e.g. shadows all cast to one side under one sun.
        val_every: Validate, save ``best/`` and write a checkpoint every this many epochs and
            always after the last (default 1: every epoch). A run with short epochs (the
            CPU demo: 11 steps) spends much of its time there; a larger value buys optimiser
            steps, at the price of coarser best-model selection and resume points.
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
    depth_bce_weight: float = 0.0
    cls_loss_weight: float = 1.0
    class_weighting: ClassWeighting = "none"
    lr_reference_batch: int | None = None
    chip_size: int = 512
    ignore_index: int = 255
    precision: Precision = "bf16"
    augment: Augment = "d4"
    val_every: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "train")
        require(self.epochs > 0, f"train.epochs={self.epochs} must be > 0")
        require(self.batch_size > 0, f"train.batch_size={self.batch_size} must be > 0")
        require(self.lr > 0, f"train.lr={self.lr} must be > 0, e.g. 1.0e-4")
        require(self.weight_decay >= 0, f"train.weight_decay={self.weight_decay} must be >= 0")
        require(
            all(0 <= b < 1 for b in self.betas),
            f"train.betas={list(self.betas)} must be two numbers in [0, 1), e.g. [0.9, 0.999]",
        )
        require(0 < self.lr_gamma <= 1, f"train.lr_gamma={self.lr_gamma} must be in (0, 1]")
        ms = self.lr_milestones
        require(
            all(0 < m < 1 for m in ms) and all(a < b for a, b in zip(ms, ms[1:], strict=False)),
            f"train.lr_milestones={list(ms)} must be increasing fractions of the total steps "
            "in (0, 1), e.g. [0.3, 0.6]",
        )
        require(
            min(self.depth_loss_weight, self.cls_loss_weight, self.depth_l1_weight,
                self.depth_bce_weight) >= 0,
            f"train loss weights (depth {self.depth_loss_weight}, cls {self.cls_loss_weight}, "
            f"depth_l1 {self.depth_l1_weight}, depth_bce {self.depth_bce_weight}) must be >= 0",
        )
        require(self.chip_size > 0, f"train.chip_size={self.chip_size} must be > 0")
        require(self.val_every > 0, f"train.val_every={self.val_every} must be >= 1 "
                "(1: validate and checkpoint after every epoch)")
        require(self.lr_reference_batch is None or self.lr_reference_batch > 0,
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


@dataclass(frozen=True)
class Config:
    """A whole preset: the model and its training recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict that :meth:`from_dict` turns back into an equal config."""
        return {"model": self.model.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: Any) -> Config:
        """Build from a plain nested dict, rejecting unknown sections and keys by name."""
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError(
                f"config is a {type(data).__name__}; expected a mapping with sections "
                "model: and train:"
            )
        unknown = sorted(set(data) - set(SECTIONS))
        if unknown:
            raise InputError(
                f"unknown config section(s) {', '.join(map(repr, unknown))}; expected "
                f"{' and '.join(SECTIONS)}; remove or rename them"
            )
        model = ModelConfig.from_dict(data.get("model") or {})
        train_data = data.get("train") or {}
        if not isinstance(train_data, dict):
            raise InputError(f"train config is {train_data!r}; expected a mapping of field: value")
        # batch_size defaults to the paper's value for the encoder, not TrainConfig's.
        train_data = {"batch_size": paper_batch_size(model.encoder.name), **train_data}
        train = TrainConfig.from_dict(train_data)
        return cls(model=model, train=train)


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.lr=3e-4", "model.depth_prompter=false"]`` -> ``{"train.lr": 0.0003, ...}``.

    Values are read as YAML scalars/lists (``false``, ``3e-4``, ``[1, 2]``).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) < 2 or parts[0] not in SECTIONS or not all(parts):
            raise InputError(f"--set {item!r} is not SECTION.KEY=VALUE; give e.g. "
                             "--set train.lr=3e-4 or --set model.depth_prompter=false")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        if isinstance(value, str) and re.fullmatch(r"[-+]?\d*\.?\d+[eE][-+]?\d+", value):
            value = float(value)  # YAML 1.1 reads 3e-4 as text
        out[key.strip()] = value
    return out


def _apply(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for dotted, value in overrides.items():
        node = data
        *path, last = dotted.split(".")
        for part in path:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise InputError(f"--set {dotted}: {part!r} is not a section")
            node = child
        node[last] = value
    return data


def explicit_model_keys(path: str | Path, overrides: dict[str, Any] | None = None) -> set[str]:
    """The ``model:`` keys a preset file (or ``--set``) sets itself; the rest take defaults."""
    data = yaml.safe_load(resolve_config(path).read_text()) or {}
    model = data.get("model") if isinstance(data, dict) else None
    keys = set(model) if isinstance(model, dict) else set()
    return keys | {k.split(".")[1] for k in (overrides or {}) if k.startswith("model.")}


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> Config:
    """Read a YAML preset: a shipped preset's name (``vitb``) or a file (``my/vitb.yaml``).

    Raises:
        InputError: missing file, invalid YAML, or a bad/unknown key (the message names the
            file).
    """
    path = resolve_config(path)
    if not path.is_file():
        raise InputError(
            f"config file {str(path)!r} does not exist; expected a YAML file or a shipped "
            f"preset's name ({', '.join(preset_names())}); fix the path"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).replace("\n", " ")
        raise InputError(f"config file {str(path)!r} is not valid YAML ({first})") from None
    if overrides:
        data = _apply(data if isinstance(data, dict) else {}, overrides)
    try:
        return Config.from_dict(data)
    except InputError as err:
        where = f"{path} with --set {', '.join(overrides)}" if overrides else str(path)
        raise InputError(f"{where}: {err}") from None


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    """YAML text of ``cfg`` (every field, resolved); also written to ``path`` if given."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text)
    return text
