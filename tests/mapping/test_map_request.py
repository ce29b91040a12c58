"""MapRequest is the map job's one schema: the CLI, the regions file and the API agree."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from depthseg.errors import InputError
from depthseg.mapping.cli import parse_args
from depthseg.mapping.request import REGION_KEYS, MapRequest, request_from_args

REQUIRED = ["--bbox", "0", "0", "1", "1", "--imagery", "x", "--model", "m", "--out", "o"]
BASE: dict[str, Any] = {"bbox": (0.0, 0.0, 1.0, 1.0), "imagery": "x", "model": "m", "out": "o"}


def test_the_cli_defaults_are_the_requests_defaults() -> None:
    """No option has a second default in the CLI: a bare command line is MapRequest()."""
    from_cli = request_from_args(parse_args(REQUIRED))
    assert from_cli == MapRequest(**BASE)


def test_every_option_has_a_flag_and_the_flags_reach_the_request() -> None:
    args = parse_args([*REQUIRED, "--chunk", "1024", "--tile", "252", "--overlap", "28",
                       "--batch-size", "4", "--precision", "bf16", "--write-stage", "actor",
                       "--zarr-format", "2", "--resolution", "native", "--bands", "b3", "2",
                       "--scale", "10000", "--lease-timeout", "60", "--compile", "--polygons"])
    request = request_from_args(args, executor="local")
    assert (request.chunk_size, request.tile, request.overlap, request.batch_size) == (
        1024, 252, 28, 4)
    assert (request.precision, request.write_stage, request.zarr_format) == ("bf16", "actor", 2)
    assert (request.resolution, request.bands, request.scale) == ("native", ("b3", "2"), 10000.0)
    assert request.lease_timeout_s == 60.0 and request.compile and request.polygons
    assert request.executor == "local"
    helps = {f.name for f in dataclasses.fields(MapRequest)} - {"executor"}
    assert all(f.metadata["option"].help for f in dataclasses.fields(MapRequest))
    assert helps <= set(vars(parse_args(REQUIRED)))


@pytest.mark.parametrize(("change", "words"), [
    ({"precision": "fp16"}, ["--precision is 'fp16'", "'auto'", "'bf16'"]),
    ({"chunk_size": 0}, ["--chunk is 0", "positive integer"]),
    ({"batch_size": -2}, ["--batch-size is -2", "positive integer"]),
    ({"overlap": -1}, ["--overlap is -1", ">= 0"]),
    ({"write_stage": "later"}, ["--write-stage is 'later'", "'separate'"]),
    ({"zarr_format": 4}, ["--zarr-format is 4", "or 2"]),
    ({"resolution": "fine"}, ["--resolution is 'fine'", "positive number of metres"]),
    ({"crs": "EPSG:999999"}, ["--crs is 'EPSG:999999'", "'auto' or a CRS"]),
    ({"scale": 0.0}, ["--scale is 0.0", "non-zero"]),
    ({"lease_timeout_s": float("nan")}, ["--lease-timeout is nan", "seconds"]),
    ({"bbox": (1.0, 0.0, 0.0, 1.0)}, ["--bbox is (1.0, 0.0, 0.0, 1.0)", "min < max"]),
    ({"imagery": ""}, ["--imagery is ''", "path or s3:// URI"]),
    ({"executor": "dask"}, ["executor is 'dask'", "'ray' or 'local'"]),
    ({"resampling": "bicubic"}, ["--resampling is 'bicubic'", "bilinear"]),
])
def test_a_bad_value_is_one_line_naming_the_option_value_and_what_is_expected(
        change: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(InputError) as err:
        MapRequest(**{**BASE, **change})
    text = str(err.value)
    assert "\n" not in text
    for word in words:
        assert word in text, (word, text)


def test_auto_precision_resolves_for_the_runs_devices() -> None:
    from depthseg.mapping.request import resolved_precision

    assert resolved_precision(MapRequest(**BASE)) == "fp32"
    assert resolved_precision(MapRequest(**BASE, gpus=2)) == "bf16"
    assert resolved_precision(MapRequest(**BASE, gpus=2, precision="fp32")) == "fp32"
    assert resolved_precision(MapRequest(**BASE, precision="bf16")) == "bf16"


def test_the_regions_file_keys_are_map_options() -> None:
    """Every regions-file key sets a MapRequest field of the same meaning."""
    fields = {f.name for f in dataclasses.fields(MapRequest)}
    assert set(REGION_KEYS.values()) <= fields
    assert REGION_KEYS["chunk"] == "chunk_size" and REGION_KEYS["precision"] == "precision"
    assert "resume" not in REGION_KEYS.values() and "out" not in REGION_KEYS.values()


def test_auto_executor_runs_in_this_process_only_without_a_cluster_gpu_or_second_actor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """One model on this machine: Ray would only add its start-up; anything more gets Ray."""
    import torch

    from depthseg.mapping.cli import choose_executor

    monkeypatch.delenv("RAY_ADDRESS", raising=False)

    def chosen(*extra: str) -> str:
        return choose_executor(parse_args([*REQUIRED, *extra]))[0]

    assert chosen() == ("ray" if torch.cuda.is_available() else "local")
    assert chosen("--gpus", "0") == "local"
    assert chosen("--local") == chosen("--executor", "local") == "local"
    assert chosen("--executor", "ray") == "ray"
    assert chosen("--ray-address", "127.0.0.1:6379") == "ray"
    assert chosen("--gpus", "1") == chosen("--cpu-actors", "2") == "ray"
    assert chosen("--num-cpus", "4") == chosen("--write-stage", "separate") == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # inside `ray job submit`
    assert chosen("--gpus", "0") == "ray"
    monkeypatch.delenv("RAY_ADDRESS")
    why = choose_executor(parse_args([*REQUIRED, "--gpus", "0"]))[1]
    assert "--executor ray" in why  # the local choice says how to get Ray instead
