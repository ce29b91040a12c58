"""The regions file of scheduled mapping: what to map, where from, where to, how often.

Format (YAML)::

    regions:
      - name: liuzhou                      # [A-Za-z0-9_.-]+, unique
        bbox: [109.2, 24.1, 109.6, 24.5]   # min x, min y, max x, max y in bbox_crs
        bbox_crs: EPSG:4326                # optional, default EPSG:4326
        imagery: s3://bucket/gf2/          # catalog URI (as jobs/map_region.py --imagery)
        model: s3://bucket/models/vitb/    # model bundle URI
        out: s3://bucket/maps/liuzhou/     # region output root: runs/<run id>/, latest.json
        schedule: "0 2 * * *"              # 5-field cron, evaluated in UTC
        # optional map options (jobs/map_region.py's flags, checked the same way): crs,
        # resolution, chunk, tile, overlap, batch_size, gpus, cpu_actors, stac_asset,
        # resampling, compile, write_stage, precision

Every problem is reported as one line naming the file, the region, the key, the value, what
is expected and the fix (:class:`~depthseg.errors.InputError`).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, replace
from typing import Any

import yaml

from depthseg.errors import InputError
from depthseg.io.storage import Storage, join
from depthseg.mapping.request import REGION_KEYS, Executor, MapRequest, check_option

#: ``--regions env:NAME`` reads the file's text from an environment variable (submitted jobs).
ENV_PREFIX = "env:"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REQUIRED = ("name", "bbox", "imagery", "model", "out", "schedule")
@dataclass(frozen=True)
class Region:
    """One region of the regions file.

    Attributes:
        name: Unique name (used in run ids, job ids and messages).
        bbox: (minx, miny, maxx, maxy) in ``bbox_crs``.
        imagery: Catalog URI.
        model: Model bundle URI.
        out: Output root of the region.
        schedule: 5-field cron string (UTC).
        options: MapRequest keyword arguments the file sets (``chunk_size``, ``tile``, ...).
        gpus: GPUs per run; None: every GPU of the Ray cluster.
    """

    name: str
    bbox: tuple[float, float, float, float]
    imagery: str
    model: str
    out: str
    schedule: str
    options: tuple[tuple[str, Any], ...] = ()
    gpus: int | None = None

    def request(self, out: str, gpus: int = 0, executor: Executor = "ray") -> MapRequest:
        """The map_region request of one run of this region, written to ``out``."""
        return MapRequest(bbox=self.bbox, imagery=self.imagery, model=self.model, out=out,
                          gpus=gpus if self.gpus is None else self.gpus, executor=executor,
                          **dict(self.options))

    def runs_uri(self) -> str:
        """``<out>/runs``: one folder per run."""
        return join(self.out, "runs")


def _fail(where: str, message: str) -> InputError:
    return InputError(f"{where}: {message}")


def check_cron(expr: Any) -> str | None:
    """None when ``expr`` is a valid 5-field cron string, else why not."""
    from croniter import croniter

    if not isinstance(expr, str):
        return "is not a string"
    if len(expr.split()) != 5:
        return f"has {len(expr.split())} fields"
    if not croniter.is_valid(expr):
        return "is not a valid cron expression"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_region(entry: Any, index: int, source: str) -> Region:
    """Validate one entry of ``regions:``."""
    where = f"{source}: regions[{index}]"
    if not isinstance(entry, dict):
        raise _fail(where, f"is {entry!r}; expected a mapping with keys {', '.join(_REQUIRED)}")
    name = entry.get("name")
    if isinstance(name, str) and _NAME.match(name):
        where = f"{source}: region {name!r}"
    elif "name" in entry:
        raise _fail(where, f"key 'name' is {name!r}; expected letters, digits, '_', '.', '-' "
                           "(it names run folders and Ray jobs), e.g. 'liuzhou'")
    unknown = sorted(set(entry) - set(_REQUIRED) - set(REGION_KEYS), key=str)
    if unknown:
        known = ", ".join([*_REQUIRED, *REGION_KEYS])
        raise _fail(where, f"unknown key {unknown[0]!r}; expected one of {known}; fix its "
                           "spelling or remove it")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise _fail(where, f"key {missing[0]!r} is missing; add it (required keys: "
                           f"{', '.join(_REQUIRED)})")
    bbox = entry["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        raise _fail(where, f"key 'bbox' is {bbox!r}; expected [minx, miny, maxx, maxy], four "
                           "numbers, e.g. [109.2, 24.1, 109.6, 24.5]")
    if not (bbox[0] < bbox[2] and bbox[1] < bbox[3]):
        raise _fail(where, f"key 'bbox' is {bbox!r}; expected minx < maxx and miny < maxy; "
                           "give the corners in the order [minx, miny, maxx, maxy]")
    for key in ("imagery", "model", "out"):
        if not isinstance(entry[key], str) or not entry[key]:
            raise _fail(where, f"key {key!r} is {entry[key]!r}; expected a path or s3:// URI")
    why = check_cron(entry["schedule"])
    if why:
        raise _fail(where, f"key 'schedule' is {entry['schedule']!r}, which {why}; expected a "
                           "5-field cron string 'minute hour day-of-month month day-of-week' "
                           "(UTC), e.g. '0 2 * * *' for 02:00 daily")
    options: dict[str, Any] = {}
    gpus = None
    for key in sorted(set(entry) & set(REGION_KEYS)):
        field_name, value = REGION_KEYS[key], entry[key]
        if field_name == "gpus" and value is None:
            continue  # every GPU of the cluster, as when the key is left out
        try:
            value = check_option(field_name, value, f"key {key!r}",
                                 "fix the value or remove the key")
        except InputError as err:
            raise _fail(where, str(err)) from err
        if field_name == "gpus":
            gpus = value
        else:
            options[field_name] = value
    region = Region(name=name, bbox=tuple(float(v) for v in bbox),  # type: ignore[arg-type]
                    imagery=entry["imagery"], model=entry["model"], out=entry["out"],
                    schedule=entry["schedule"], options=tuple(sorted(options.items())),
                    gpus=gpus)
    try:  # MapRequest's own checks (tile/overlap sizes are checked when planning)
        region.request(join(region.out, "runs", "check"))
    except InputError as err:
        raise _fail(where, str(err)) from err
    return region


def parse_regions(text: str, source: str) -> list[Region]:
    """Parse and validate the text of a regions file.

    Raises:
        InputError: The first problem found, as one line.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _fail(source, f"is not valid YAML ({first}); fix the syntax") from err
    if not isinstance(data, dict) or not isinstance(data.get("regions"), list):
        raise _fail(source, "expected a mapping with a 'regions' list, e.g. 'regions: [{name: a,"
                            " bbox: [...], imagery: ..., model: ..., out: ..., schedule: "
                            "\"0 2 * * *\"}]'")
    extra = sorted(set(data) - {"regions"}, key=str)
    if extra:
        raise _fail(source, f"unknown top-level key {extra[0]!r}; expected only 'regions'")
    if not data["regions"]:
        raise _fail(source, "'regions' is empty; list at least one region")
    regions = [parse_region(entry, i, source) for i, entry in enumerate(data["regions"])]
    seen: dict[str, int] = {}
    for i, region in enumerate(regions):
        if region.name in seen:
            raise _fail(f"{source}: region {region.name!r}",
                        f"key 'name' is used by regions[{seen[region.name]}] and regions[{i}]; "
                        "expected unique names; rename one")
        seen[region.name] = i
    outs: dict[str, str] = {}
    for region in regions:
        key = region.out.rstrip("/")
        if key in outs:
            raise _fail(f"{source}: region {region.name!r}",
                        f"key 'out' is {region.out!r}, the same as region {outs[key]!r}'s; "
                        "expected one output root per region; give each its own")
        outs[key] = region.name
    return regions


def read_regions_text(uri: str, storage: Storage) -> str:
    """The text of the regions file at ``uri`` (path, ``s3://`` URI or ``env:VARIABLE``)."""
    if uri.startswith(ENV_PREFIX):
        name = uri[len(ENV_PREFIX):]
        if name not in os.environ:
            raise InputError(f"--regions {uri!r}: environment variable {name!r} is not set; "
                             "give a regions file path or set the variable")
        return os.environ[name]
    if not storage.exists(uri):
        raise InputError(f"regions file {uri!r} does not exist; give the path or s3:// URI of a"
                         " regions YAML file")
    try:
        return storage.read_bytes(uri).decode()
    except UnicodeDecodeError as err:
        raise InputError(f"regions file {uri!r} is not UTF-8 text; give a YAML file") from err


def load_regions(uri: str, storage: Storage | None = None) -> list[Region]:
    """Read and validate a regions file (see the module docstring for its format)."""
    storage = storage or Storage()
    return parse_regions(read_regions_text(uri, storage), uri)


def with_out(region: Region, out: str) -> Region:
    """The same region with another output root (tests)."""
    return replace(region, out=out)
