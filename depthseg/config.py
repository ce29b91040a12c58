"""YAML presets -> typed configs: ``load_config(path) -> Config`` and back with ``dump_config``.

A preset file has two sections, ``model`` (:class:`~depthseg.model.config.ModelConfig`, with
``encoder`` nested) and ``train`` (:class:`~depthseg.model.config.TrainConfig`). Anything
left out takes its default; ``train.batch_size`` left out takes the paper's batch size for
the encoder (8 / 4 / 2 for S / B / L). Unknown keys are errors that name the key and file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from depthseg.errors import InputError
from depthseg.model.config import ModelConfig, TrainConfig, paper_batch_size

SECTIONS = ("model", "train")


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


def explicit_model_keys(path: str | Path) -> set[str]:
    """The ``model:`` keys a preset file sets itself (the rest take defaults)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    model = data.get("model") if isinstance(data, dict) else None
    return set(model) if isinstance(model, dict) else set()


def load_config(path: str | Path) -> Config:
    """Read a YAML preset such as ``configs/vitb.yaml``.

    Raises:
        InputError: missing file, invalid YAML, or a bad/unknown key (the message names the
            file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"config file {str(path)!r} does not exist; expected a YAML preset such as "
            "configs/vits.yaml; fix the path"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        first = str(err).replace("\n", " ")
        raise InputError(f"config file {str(path)!r} is not valid YAML ({first})") from None
    try:
        return Config.from_dict(data)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def dump_config(cfg: Config, path: str | Path | None = None) -> str:
    """YAML text of ``cfg`` (every field, resolved); also written to ``path`` if given."""
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
    if path is not None:
        Path(path).write_text(text)
    return text
