"""The regions file: valid files parse; every mistake is one line naming region, key and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from schedule_helpers import load_job

from depthseg.errors import InputError
from depthseg.schedule.regions import parse_regions

GOOD: dict[str, Any] = {"name": "liuzhou", "bbox": [109.2, 24.1, 109.6, 24.5],
                        "imagery": "s3://b/gf2/", "model": "s3://b/models/vitb/",
                        "out": "s3://b/maps/liuzhou/", "schedule": "0 2 * * *"}


def _text(*entries: dict[str, Any], **top: Any) -> str:
    return yaml.safe_dump({"regions": list(entries), **top})


def test_a_valid_file_fills_the_defaults() -> None:
    [region] = parse_regions(_text(GOOD, ), "r.yaml")
    assert region.name == "liuzhou" and region.bbox == (109.2, 24.1, 109.6, 24.5)
    request = region.request("s3://b/maps/liuzhou/runs/x")
    assert (request.bbox_crs, request.crs, request.chunk_size, request.tile) == (
        "EPSG:4326", "auto", None, None)  # chunk: the planner's; tile: the bundle's
    [tuned] = parse_regions(_text({**GOOD, "chunk": 1024, "gpus": 2, "resolution": 0.8,
                                   "bbox_crs": "EPSG:32649", "resampling": "bilinear",
                                   "compile": True, "write_stage": "separate"}),
                            "r.yaml")
    request = tuned.request("x", gpus=7)
    assert (request.chunk_size, request.gpus, request.resolution, request.bbox_crs,
            request.resampling) == (1024, 2, 0.8, "EPSG:32649", "bilinear")
    assert (request.compile, request.write_stage) == (True, "separate")
    assert (region.request("x").compile, region.request("x").write_stage) == (False, "auto")
    assert parse_regions(_text(GOOD), "r.yaml")[0].request("x", gpus=3).gpus == 3


@pytest.mark.parametrize(("change", "words"), [
    ({"schedule": "0 2 * *"}, ["region 'liuzhou'", "'schedule'", "'0 2 * *'", "4 fields",
                               "5-field cron", "0 2 * * *"]),
    ({"schedule": "61 2 * * *"}, ["'schedule'", "not a valid cron"]),
    ({"schedule": "@daily"}, ["'schedule'", "1 fields"]),
    ({"bbox": [1, 2, 3]}, ["'bbox'", "[1, 2, 3]", "four numbers"]),
    ({"bbox": [109.6, 24.1, 109.2, 24.5]}, ["'bbox'", "minx < maxx"]),
    ({"bbox": "109 24 110 25"}, ["'bbox'", "[minx, miny, maxx, maxy]"]),
    ({"cadence": "daily"}, ["unknown key 'cadence'", "schedule", "remove it"]),
    ({"chunk": 0}, ["'chunk'", "positive integer"]),
    ({"gpus": -1}, ["'gpus'", ">= 0"]),
    ({"crs": "EPSG:999999"}, ["'crs'", "'EPSG:999999'", "'auto' or a CRS"]),
    ({"resolution": "fine"}, ["'resolution'", "positive number"]),
    ({"name": "liu zhou"}, ["regions[0]", "'name'", "'liu zhou'", "letters, digits"]),
    ({"out": 5}, ["'out'", "path or s3:// URI"]),
    ({"resampling": "bicubic"}, ["region 'liuzhou'", "'bicubic'", "bilinear"]),
    ({"compile": "yes"}, ["'compile'", "'yes'", "true or false"]),
    ({"write_stage": "later"}, ["'write_stage'", "'later'", "'separate'"]),
])
def test_bad_values_name_region_key_value_and_fix(change: dict[str, Any],
                                                  words: list[str]) -> None:
    with pytest.raises(InputError) as err:
        parse_regions(_text({**GOOD, **change}), "r.yaml")
    text = str(err.value)
    assert "\n" not in text and text.startswith("r.yaml: ")
    for word in words:
        assert word in text, (word, text)


def test_missing_key_duplicates_and_file_shape() -> None:
    without = {k: v for k, v in GOOD.items() if k != "model"}
    with pytest.raises(InputError, match="region 'liuzhou': key 'model' is missing"):
        parse_regions(_text(without), "r.yaml")
    other = {**GOOD, "out": "s3://b/maps/other/"}
    with pytest.raises(InputError, match=r"'name' is used by regions\[0\] and regions\[1\]"):
        parse_regions(_text(GOOD, other), "r.yaml")
    with pytest.raises(InputError, match="the same as region 'liuzhou'"):
        parse_regions(_text(GOOD, {**GOOD, "name": "twin"}), "r.yaml")
    with pytest.raises(InputError, match="'regions' is empty"):
        parse_regions("regions: []\n", "r.yaml")
    with pytest.raises(InputError, match="unknown top-level key 'region'"):
        parse_regions(_text(GOOD, region=1), "r.yaml")
    with pytest.raises(InputError, match="expected a mapping with a 'regions' list"):
        parse_regions("- a\n- b\n", "r.yaml")
    with pytest.raises(InputError, match="not valid YAML"):
        parse_regions("regions: [\n", "r.yaml")


def test_cli_exits_2_with_one_error_line_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = load_job("schedule").main
    out = tmp_path / "out"
    path = tmp_path / "regions.yaml"
    path.write_text(_text({**GOOD, "out": str(out), "schedule": "0 25 * * *"}))
    assert main(["--regions", str(path), "--now", "2026-11-28T03:00:00Z"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "'schedule'" in err[0]
    assert not out.exists()
    assert main(["--regions", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    path.write_text(_text({**GOOD, "out": str(out)}))
    assert main(["--regions", str(path), "--only", "nowhere", "--dry-run"]) == 2
    assert "--only 'nowhere'" in capsys.readouterr().err
    assert main(["--regions", str(path), "--now", "yesterday", "--dry-run"]) == 2
    assert "not an ISO 8601 time" in capsys.readouterr().err
