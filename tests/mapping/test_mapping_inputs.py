"""A resume with another model or other imagery is refused, naming what changed (issue 16)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import xarray as xr
from mapping_helpers import contract_for, region_request, write_tiny_bundle

from depthseg.errors import InputError
from depthseg.mapping import map_region


def _quiet(_: str) -> None:
    pass


def test_resume_with_another_bundle_or_imagery_is_refused(synthetic_region: Any,
                                                          tmp_path: Path) -> None:
    bundle_a = write_tiny_bundle(tmp_path / "a", contract_for("uint16", (3, 2, 1)), seed=0)
    bundle_b = write_tiny_bundle(tmp_path / "b", contract_for("uint16", (3, 2, 1)), seed=1)
    out = tmp_path / "out"
    request = region_request(synthetic_region, out, bundle_a, chunk_size=512)
    report = map_region(request, log=_quiet)
    assert report.ok
    run_before = (out / "run.json").read_bytes()
    inputs = json.loads((out / "inputs.json").read_text())
    assert inputs["model"]["uri"] == bundle_a and inputs["imagery"]["scenes"] == 4
    attrs = xr.open_zarr(out / "mosaic.zarr").attrs
    assert attrs["depthseg_inputs"] == inputs == json.loads(run_before)["inputs"]

    with pytest.raises(InputError, match="the model bundle differs") as err:
        map_region(replace(request, model=bundle_b, resume=True), log=_quiet)
    assert bundle_a in str(err.value) and bundle_b in str(err.value)

    scenes = tmp_path / "scenes"
    shutil.copytree(synthetic_region.root / "scenes", scenes)
    sorted(scenes.glob("*.tif"))[0].unlink()
    with pytest.raises(InputError, match=r"the imagery differs .*\(4 -> 3 scenes\)"):
        map_region(replace(request, imagery=str(scenes), resume=True), log=_quiet)
    assert (out / "run.json").read_bytes() == run_before, "a refused resume writes nothing"
    # The same inputs resume (nothing left to do).
    assert map_region(replace(request, resume=True), log=_quiet).ok


def test_default_chunks_hold_whole_batches_of_lattice_tiles(synthetic_region: Any) -> None:
    """No --chunk: a multiple of the tile stride, so no tile is computed twice; said in notes."""
    from depthseg.io.catalog import open_catalog
    from depthseg.mapping.plan import make_plan

    request = region_request(synthetic_region, "unused", chunk_size=None)  # tile 126, overlap 28
    plan = make_plan(request, open_catalog(request.imagery), contract_for("uint16", (3, 2, 1)))
    stride = 126 - 28
    assert plan.grid.chunk_size % stride == 0
    assert (plan.grid.chunk_size // stride) ** 2 % request.batch_size == 0
    assert plan.tiles.halo == 14  # the lattice tiles reach half the overlap past the chunk
    assert any("no tile is computed twice" in note for note in plan.notes)
