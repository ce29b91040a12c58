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
