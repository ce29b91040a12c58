"""The STAC a mapping run writes validates, offline, against STAC 1.1 and its extensions.

pystac ships the STAC 1.1 core and GeoJSON schemas; the extension schemas the items declare
are vendored under ``tests/data/stac_schemas`` (see the README there) and put in the
validator's schema cache under their URLs. The network is switched off while validating: a
schema that is in neither place fails the test instead of being downloaded.
"""

from __future__ import annotations

import copy
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rasterio
from mapping_helpers import CLASS_NAMES, PALETTE, contract_for, region_request
from pystac import STACValidationError
from pystac.validation import JsonSchemaSTACValidator, validate_dict
from pystac.validation.stac_validator import GetSchemaError

from depthseg.geo import OutputGrid, PixelWindow
from depthseg.io.storage import Storage
from depthseg.mapping import map_region
from depthseg.mapping.finalize import _collection
from depthseg.mapping.products import classes as _classes
from depthseg.mapping.products import stac_item

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "stac_schemas"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
VENDORED = {PROJECTION: "projection-v2.0.0.json", CLASSIFICATION: "classification-v2.0.0.json"}
ITEM_SCHEMA = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json"
COLLECTION_SCHEMA = "https://schemas.stacspec.org/v1.1.0/collection-spec/json-schema/collection.json"


@pytest.fixture(scope="module")
def stac_run(synthetic_region_rgb: Any, bundle_uint8: str,
             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, small mapping run (a few 512 px chunks, no Ray); returns its output folder."""
    out = tmp_path_factory.mktemp("stac") / "run"
    report = map_region(region_request(synthetic_region_rgb, out, bundle_uint8, chunk_size=512))
    assert report.ok
    return out


@pytest.fixture()
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """No network: every name lookup or connection raises; the list records the attempts."""
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def raise_(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[:2]!r}")
            raise OSError(f"network is off in this test ({what})")
        return raise_

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    yield attempts


@pytest.fixture()
def validator(network_attempts: list[str]) -> JsonSchemaSTACValidator:
    """pystac's JSON-schema validator; its cache holds pystac's local core schemas plus the
    vendored extension schemas, keyed by the URLs items put in ``stac_extensions``."""
    checker = JsonSchemaSTACValidator()
    for uri, name in VENDORED.items():
        checker.schema_cache[uri] = json.loads((SCHEMAS / name).read_text())
    return checker


def _items(out: Path) -> list[tuple[Path, dict[str, Any]]]:
    paths = sorted((out / "stac" / "items").glob("*.json"))
    return [(path, json.loads(path.read_text())) for path in paths]


def test_vendored_schemas_are_the_declared_urls() -> None:
    for uri, name in VENDORED.items():
        schema = json.loads((SCHEMAS / name).read_text())
        assert schema["$id"].rstrip("#") == uri
        assert schema["definitions"]  # the real schema, not a stub


def test_items_and_collection_validate_offline(stac_run: Path, validator: JsonSchemaSTACValidator,
                                               network_attempts: list[str]) -> None:
    items = _items(stac_run)
    assert len(items) == len(list((stac_run / "done").iterdir())) > 1
    for path, item in items:
        assert item["stac_version"] == "1.1.0"
        checked = validate_dict(item, href=str(path), validator=validator)
        assert set(checked) == {ITEM_SCHEMA, PROJECTION, CLASSIFICATION}, path
    collection_path = stac_run / "stac" / "collection.json"
    collection = json.loads(collection_path.read_text())
    checked = validate_dict(collection, href=str(collection_path), validator=validator)
    assert set(checked) == {COLLECTION_SCHEMA, *collection["stac_extensions"]}
    assert set(collection["stac_extensions"]) == {PROJECTION, CLASSIFICATION}
    assert network_attempts == [], "validation must not fetch anything"


def test_items_link_their_collection_and_describe_their_cogs(stac_run: Path) -> None:
    collection_path = stac_run / "stac" / "collection.json"
    collection = json.loads(collection_path.read_text())
    plan_crs = json.loads((stac_run / "plan.json").read_text())["grid"]["crs"]
    items = _items(stac_run)
    linked = {(collection_path.parent / link["href"]).resolve()
              for link in collection["links"] if link["rel"] == "item"}
    assert linked == {path.resolve() for path, _ in items}
    assert collection["summaries"]["proj:code"] == [plan_crs]
    for path, item in items:
        assert item["collection"] == collection["id"]
        assert sorted(item["stac_extensions"]) == sorted([PROJECTION, CLASSIFICATION])
        for rel in ("collection", "parent", "root"):
            (link,) = [link for link in item["links"] if link["rel"] == rel]
            assert (path.parent / link["href"]).resolve() == collection_path.resolve()
        props = item["properties"]
        assert props["proj:code"] == plan_crs == "EPSG:32649"
        for layer, dtype in (("landcover", "uint8"), ("confidence", "uint8"),
                             ("depth", "float32")):
            asset = item["assets"][layer]
            assert asset["title"] and asset["data_type"] == dtype
            assert asset["href"] == f"../../cog/{layer}/{path.stem}.tif"
            with rasterio.open(path.parent / asset["href"]) as cog:
                # What a reader of the item is told is what the COG holds.
                assert cog.crs.to_string() == props["proj:code"]
                assert list(cog.shape) == props["proj:shape"]
                assert list(cog.transform)[:6] == pytest.approx(props["proj:transform"])
                assert list(cog.bounds) == pytest.approx(props["proj:bbox"])
                assert cog.dtypes[0] == asset["data_type"]
                if layer == "depth":
                    assert asset["nodata"] == "nan" and cog.nodata != cog.nodata
                else:
                    assert asset["nodata"] == cog.nodata
        classes = item["assets"]["landcover"]["classification:classes"]
        assert [c["title"] for c in classes[:-1]] == list(CLASS_NAMES)
        assert [c["value"] for c in classes[:-1]] == list(range(len(CLASS_NAMES)))
        assert classes[1]["color_hint"] == "{:02X}{:02X}{:02X}".format(*PALETTE[1])
        assert classes[-1] == {"value": 255, "name": "no_data", "title": "No data",
                               "nodata": True}


def _set(path: tuple[str | int, ...], value: Any) -> Any:
    """A change that sets ``item[path[0]][path[1]]...`` to ``value``."""
    def change(item: dict[str, Any]) -> None:
        target: Any = item
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


@pytest.mark.parametrize(("change", "schema"), [
    (_set(("properties", "proj:shape"), "512 512"), PROJECTION),  # an array of integers
    (_set(("assets", "landcover", "classification:classes", 0, "name"), "bare land"),
     CLASSIFICATION),  # v2.0.0 names are machine-readable
    (_set(("assets", "depth", "nodata"), "NaN"), ITEM_SCHEMA),  # "nan", "inf", "-inf", number
    (_set(("links",), []), ITEM_SCHEMA),  # an item with `collection` links to it
], ids=["proj-shape-string", "class-name-with-space", "nodata-spelling", "no-collection-link"])
def test_validator_rejects_a_broken_item(stac_run: Path, validator: JsonSchemaSTACValidator,
                                         change: Any, schema: str) -> None:
    _, item = _items(stac_run)[0]
    validate_dict(item, validator=validator)
    broken = copy.deepcopy(item)
    change(broken)
    with pytest.raises(STACValidationError, match=f"against schema at {re.escape(schema)}"):
        validate_dict(broken, validator=validator)


def test_class_names_that_are_not_machine_readable_become_titles(
        stac_run: Path, validator: JsonSchemaSTACValidator) -> None:
    names = ("cropland", "forest", "building", "road", "impervious surface", "bare land", "water")
    contract = replace(contract_for("uint8", (1, 2, 3)), class_names=names)
    classes = _classes(contract)
    assert [c["name"] for c in classes] == ["cropland", "forest", "building", "road",
                                            "impervious_surface", "bare_land", "water", "no_data"]
    assert [c["title"] for c in classes[:-1]] == list(names)
    _, item = _items(stac_run)[0]
    item["assets"]["landcover"]["classification:classes"] = classes
    validate_dict(item, validator=validator)


def test_a_crs_without_a_code_is_written_as_wkt2(tmp_path: Path,
                                                 validator: JsonSchemaSTACValidator) -> None:
    # A projected metric CRS that no authority names: proj:code null, proj:wkt2 instead, and
    # the collection (projection only in summaries) then does not declare projection.
    custom = ("+proj=tmerc +lat_0=0 +lon_0=110.5 +k=0.9996 +x_0=500000 +y_0=0 +ellps=GRS80 "
              "+units=m +no_defs")
    grid = OutputGrid(crs=custom, resolution=1.0, row_off=-2_700_288, col_off=512,
                      height=256, width=256, chunk_size=256)
    plan = SimpleNamespace(grid=grid, polygons=False,
                           bbox_window=lambda: PixelWindow(0, 0, 256, 256))
    contract = contract_for("uint8", (1, 2, 3))
    _collection(str(tmp_path), Storage(), plan, grid.chunks(),  # type: ignore[arg-type]
                contract, None, "2026-01-01T00:00:00+00:00")
    item = stac_item(grid, grid.chunks()[0], contract, None, "2026-01-01T00:00:00+00:00")
    assert item["properties"]["proj:code"] is None
    assert item["properties"]["proj:wkt2"].startswith("PROJCRS[")
    validate_dict(item, validator=validator)
    collection = json.loads((tmp_path / "stac" / "collection.json").read_text())
    assert collection["stac_extensions"] == [CLASSIFICATION]
    validate_dict(collection, validator=validator)


def test_a_schema_that_is_not_vendored_fails_instead_of_downloading(
        stac_run: Path, validator: JsonSchemaSTACValidator, network_attempts: list[str]) -> None:
    _, item = _items(stac_run)[0]
    item["stac_extensions"].append("https://stac-extensions.github.io/raster/v2.0.0/schema.json")
    with pytest.raises(GetSchemaError):
        validate_dict(item, validator=validator)
    assert network_attempts, "pystac tried the network, and the test refused it"
