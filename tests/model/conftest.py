"""Shrunk S/B/L-shaped DepthSeg configs: the real layer indices and wiring, tiny widths."""

from __future__ import annotations

import pytest
import torch

from depthseg.model import EncoderConfig, ModelConfig

SHAPES = ("tiny", "vits", "vitb", "vitl")


def shrunk_config(name: str, **overrides) -> ModelConfig:
    """``name``'s depth and layers (S/B: 12 blocks, L: 24) at width 32; small heads.

    The B-shaped model keeps 3 bands, the others take 4 (R, G, B, NIR) so both paths run.
    """
    if name == "tiny":
        fields = dict(encoder=EncoderConfig(name="tiny"), in_channels=3)
    else:
        fields = dict(
            encoder=EncoderConfig(name=name, embed_dim=32, num_heads=2),
            in_channels=3 if name == "vitb" else 4,
            dpt_features=16,
            dpt_channels=(8, 16, 16, 32),
            prompter_channels=(8, 8, 16, 16),
            decoder_channels=(8, 16, 16, 16),
        )
    fields.update(overrides)
    return ModelConfig(**fields)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def shrunk():
    """The :func:`shrunk_config` factory (fixtures avoid importing conftest by name)."""
    return shrunk_config
