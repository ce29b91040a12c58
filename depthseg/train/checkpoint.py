"""Training state <-> one ``state.pt`` file in a checkpoint directory.

A checkpoint holds what a resumed run needs to take the very next optimiser step as the
uninterrupted run would: the trainable weights and buffers (the frozen encoder is left out:
it is rebuilt from the config's weights file, and a ViT-L copy per epoch would cost 1.2 GB),
the optimizer and scheduler states, completed epochs, the global step, the best mIoU so far,
the metrics history and the RNG states.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

STATE_FILE = "state.pt"
CHECKPOINT_PREFIX = "checkpoint_epoch_"  # + 4-digit epoch: sorts in epoch order


@dataclass
class TrainState:
    """Where a run stands.

    Attributes:
        epoch: Completed epochs.
        step: Completed optimiser steps (global: every worker takes the same steps).
        best_miou: Best validation mIoU so far (-1 before any validation).
        history: One metrics dict per completed epoch.
    """

    epoch: int = 0
    step: int = 0
    best_miou: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)


def frozen_names(model: nn.Module) -> set[str]:
    """Names of the parameters that do not train (kept out of checkpoints and DDP)."""
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def save_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any, state: TrainState, extra: dict[str, Any] | None = None) -> Path:
    """Write ``state.pt`` into ``directory`` (created); returns its path."""
    frozen = frozen_names(model)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in frozen}
    payload = {
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": state.epoch,
        "step": state.step,
        "best_miou": state.best_miou,
        "history": state.history,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        **(extra or {}),
    }
    path = Path(directory) / STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_state(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any) -> tuple[TrainState, dict[str, Any]]:
    """Restore model, optimizer, scheduler and RNGs from ``directory``; return the state."""
    payload = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    result = model.load_state_dict(payload["model"], strict=False)
    missing = set(result.missing_keys) - frozen_names(model)
    if missing or result.unexpected_keys:
        raise RuntimeError(f"checkpoint {directory} does not fit the model: missing "
                           f"{sorted(missing)[:5]}, unexpected {result.unexpected_keys[:5]}")
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = TrainState(payload["epoch"], payload["step"], payload["best_miou"],
                       list(payload["history"]))
    return state, payload
