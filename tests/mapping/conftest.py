"""Fixtures of the mapping tests: tiny model bundles written once per session."""

from __future__ import annotations

import pytest
from mapping_helpers import contract_for, write_tiny_bundle


@pytest.fixture(scope="session")
def bundle_uint16(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tiny bundle reading R, G, B (bands 3, 2, 1) of 4-band uint16 GaoFen-2-like scenes."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle16"), contract_for("uint16", (3, 2, 1)))


@pytest.fixture(scope="session")
def bundle_uint8(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Tiny bundle reading 3-band uint8 RGB."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle8"), contract_for("uint8", (1, 2, 3)))
