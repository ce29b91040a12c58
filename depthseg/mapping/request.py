"""What a user asks of one mapping run: :class:`MapRequest`, the one schema of the map job.

Every option is declared once, as a field with its default, its help text, what a good value
is and its rule (:func:`option`). From that one declaration come:

- the command line of ``jobs/map_region.py`` (:func:`add_arguments`: flags, types, choices,
  defaults, help);
- the optional keys of the scheduler's regions file (:data:`REGION_KEYS`, checked by
  :func:`check_option` with the file's own wording);
- the checks of the Python API (``MapRequest.__post_init__``): a bad value is one line naming
  the option, the value, what is expected and the fix.

No torch here: the scheduler and the CLI's ``--help`` import it without the model stack.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from depthseg.errors import InputError
from depthseg.schema import coerce

Executor = Literal["ray", "local"]
WriteStage = Literal["auto", "separate", "actor"]
#: The model's arithmetic (``--precision``): ``auto`` is bf16 autocast on CUDA and fp32 on the
#: CPU; ``bf16`` also autocasts on the CPU (about twice as fast on CPUs with AMX or AVX-512
#: BF16, slower on others); ``fp32`` everywhere. Blending and encoding stay in float32.
Precision = Literal["auto", "fp32", "bf16"]
WRITE_STAGES: tuple[str, ...] = typing.get_args(WriteStage)
PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
#: The tiles per forward pass when nobody says otherwise.
BATCH_SIZE = 8


@dataclass(frozen=True)
class Option:
    """How one :class:`MapRequest` field is documented, spelled and checked.

    Attributes:
        help: The ``--help`` text (also the field's documentation).
        expected: What a good value is, for error messages.
        check: A rule beyond the field's type: False for a bad value (not called for None
            where None is the default).
        flag: The CLI flag; None: ``--`` + the field name with dashes; ``""``: no flag.
        key: The regions-file key; None: not settable there.
        cli: Extra ``argparse`` keywords (``nargs``, ``metavar``, ``type``, ``required``).
    """

    help: str
    expected: str
    check: Callable[[Any], bool] | None = None
    flag: str | None = None
    key: str | None = None
    cli: dict[str, Any] = field(default_factory=dict)


def option(default: Any = dataclasses.MISSING, *, help: str, expected: str,  # noqa: A002
           check: Callable[[Any], bool] | None = None, flag: str | None = None,
           key: str | None = None, cli: dict[str, Any] | None = None) -> Any:
    """A :class:`MapRequest` field with its :class:`Option` metadata."""
    meta = {"option": Option(help, expected, check, flag, key, cli or {})}
    return field(metadata=meta) if default is dataclasses.MISSING else field(
        default=default, metadata=meta)


def _positive(value: Any) -> bool:
    return value is None or value > 0


def _crs(value: str, allow_auto: bool = False) -> bool:
    if allow_auto and value == "auto":
        return True
    from depthseg.geo.grid import parse_crs

    try:
        parse_crs(value)
    except InputError:
        return False
    return True


def _resampling(value: str) -> bool:
    from depthseg.io.warp import RESAMPLING

    return value in RESAMPLING


def _resolution(value: Any) -> bool:
    if value is None or value == "native":
        return True
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0)


def _parse_resolution(text: str) -> float | str:
    """``--resolution``: a number of metres or ``native``."""
    if text == "native":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of metres or 'native'") from None


@dataclass(frozen=True)
class MapRequest:
    """Everything a user asks of one mapping run: the map job's options.

    Each field's ``help`` (in its :class:`Option` metadata) documents it; ``jobs/map_region.py
    --help`` shows the same text.
    """

    bbox: tuple[float, float, float, float] = option(
        help="the area to map: min x, min y, max x, max y in --bbox-crs",
        expected="four numbers min x, min y, max x, max y with min < max",
        check=lambda b: b[0] < b[2] and b[1] < b[3] and all(map(math.isfinite, b)),
        cli={"nargs": 4, "required": True, "metavar": ("MINX", "MINY", "MAXX", "MAXY")})
    imagery: str = option(
        help="catalog: folder/prefix/glob of GeoTIFFs, STAC ItemCollection .json, .zarr",
        expected="a path or s3:// URI", check=bool, cli={"required": True})
    model: str = option(help="model bundle folder or s3:// prefix",
                        expected="a path or s3:// URI", check=bool, cli={"required": True})
    out: str = option(help="output folder or s3:// prefix", expected="a path or s3:// URI",
                      check=bool, cli={"required": True})
    bbox_crs: str = option(
        "EPSG:4326", help="CRS of --bbox", expected="a CRS such as 'EPSG:4326'", check=_crs,
        key="bbox_crs")
    crs: str = option(
        "auto", help="output CRS: auto (the imagery's metric CRS, else UTM) or EPSG:n",
        expected="'auto' or a CRS such as 'EPSG:32649'",
        check=lambda v: _crs(v, allow_auto=True), key="crs")
    resolution: float | str | None = option(
        None, help="output pixel size in metres, or 'native' (default: the imagery's, or the "
                   "model's training resolution when the imagery differs from it by more than "
                   "25%%)",
        expected="a positive number of metres, or 'native' (or leave it out: the imagery's "
                 "own, or the model's training resolution)",
        check=_resolution, key="resolution", cli={"type": _parse_resolution})
    chunk_size: int | None = option(
        None, help="chunk side in pixels (default: a multiple of the tile stride near 2048, "
                   "e.g. 1816 for 518 px tiles with 64 px overlap, so that no tile is computed "
                   "twice)",
        expected="a positive integer (or leave it out: a multiple of the tile stride near "
                 "2048)",
        check=_positive, flag="--chunk", key="chunk")
    tile: int | None = option(
        None, help="model tile side in pixels (default: the bundle's)",
        expected="a positive integer (or leave it out: the model bundle's)", check=_positive,
        key="tile")
    overlap: int | None = option(
        None, help="tile overlap in pixels (default: about 64, at most tile/4, so that the "
                   "stride is a multiple of 64: 70 for 518 px tiles)",
        expected="an integer >= 0 (or leave it out: about 64, at most a quarter tile)",
        check=lambda v: v is None or v >= 0, key="overlap")
    batch_size: int = option(BATCH_SIZE, help="tiles per forward pass",
                             expected="a positive integer, e.g. 8", check=_positive,
                             key="batch_size")
    gpus: int = option(
        0, help="GPUs to use, one predict actor each; 0 runs CPU actors (the command line and "
                "the regions file default to every GPU Ray sees)",
        expected="an integer >= 0 (or leave it out: every GPU Ray sees)",
        check=lambda v: v >= 0, key="gpus", cli={"default": None})
    cpu_actors: int = option(1, help="predict actors when there is no GPU",
                             expected="a positive integer", check=_positive, key="cpu_actors")
    resume: bool = option(False, help="continue a run in --out", expected="true or false")
    stac_asset: str = option("image", help="asset key of STAC items",
                             expected="a non-empty string", check=bool, key="stac_asset")
    executor: Executor = option(
        "ray", help="run the stages in this process, without Ray (debugging)",
        expected="'ray' or 'local'", flag="")
    resampling: str | None = option(
        None, help="warping of scenes not on the output grid: nearest, bilinear, cubic, "
                   "cubic_spline, lanczos, average (default: what the bundle's training used)",
        expected="one of nearest, bilinear, cubic, cubic_spline, lanczos, average",
        check=_resampling, key="resampling")
    compile: bool = option(False, help="torch.compile the model in each predict actor (long "
                                       "GPU runs)", expected="true or false", key="compile")
    write_stage: WriteStage = option(
        "auto", help="where chunks are written: separate Ray Data tasks (default with GPUs) or "
                     "the predict actor (default on CPU)",
        expected="'auto', 'separate' or 'actor'", key="write_stage")
    precision: Precision = option(
        "auto", help="the model's arithmetic: auto (bf16 on CUDA, fp32 on the CPU), fp32, or "
                     "bf16 (also on the CPU: about twice as fast on CPUs with AMX or AVX-512 "
                     "BF16, slower on others). Part of the plan: a resume keeps it",
        expected="'auto' (bf16 on CUDA, fp32 on the CPU), 'fp32' or 'bf16'", key="precision")
    bands: tuple[str, ...] | None = option(
        None, help="imagery bands for the model's channels, in order: 1-based indices or band "
                   "names (default: by the bundle's band names, else its band indices)",
        expected="a list of strings: 1-based band indices or band names, e.g. ['3', '2', '1'] "
                 "or ['red', 'green', 'blue']",
        check=lambda v: v is None or (len(v) > 0 and all(v)), cli={"nargs": "+"})
    scale: float | None = option(
        None, help="multiply pixels by this before the model (e.g. 10000 for 0-1 float "
                   "reflectance into a bundle trained on integers)",
        expected="a finite non-zero number, e.g. 10000",
        check=lambda v: v is None or (math.isfinite(v) and v != 0))
    offset: float = option(0.0, help="add this after --scale", expected="a finite number",
                           check=math.isfinite)
    lease_timeout_s: float = option(
        300.0, help="seconds without a heartbeat after which another run's lease on --out "
                    "counts as stale and is taken over (a run holds the lease while it writes; "
                    "one whose process is gone on this host is stale at once)",
        expected="a positive number of seconds, e.g. 300",
        check=lambda v: math.isfinite(v) and v > 0, flag="--lease-timeout")
    zarr_format: Literal[3, 2] = option(
        3, help="Zarr format of mosaic.zarr: 3 (default; zarr-python 3, xarray) or 2 (also "
                "opened by GDAL and QGIS)", expected="3 (default) or 2 (also opened by GDAL/QGIS)",
        cli={"type": int})
    probabilities: bool = option(
        False, help="also write every class's probability: cog/probabilities/<chunk>.tif "
                    "(uint8, one band per class, round(254 x p), 255 = no data) and "
                    "cog/probabilities.vrt", expected="true or false")
    polygons: bool = option(
        False, help="also write the land cover as polygons: a GeoParquet dataset in "
                    "vector/landcover/ (class, class_name, pixels, area_m2, mean confidence), "
                    "each polygon whole across chunk borders", expected="true or false")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = check_option(f.name, getattr(self, f.name), flag_of(f))
            object.__setattr__(self, f.name, value)


_HINTS = typing.get_type_hints(MapRequest)
_FIELDS = {f.name: f for f in dataclasses.fields(MapRequest)}


def option_of(name: str) -> Option:
    """The :class:`Option` of a :class:`MapRequest` field."""
    meta: Option = _FIELDS[name].metadata["option"]
    return meta


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The CLI spelling of a field (``--chunk`` for ``chunk_size``; its name if no flag)."""
    meta: Option = f.metadata["option"]
    if meta.flag == "":
        return f.name
    return meta.flag or "--" + f.name.replace("_", "-")


def check_option(name: str, value: Any, label: str, fix: str = "fix the value") -> Any:
    """Check (and coerce: lists to tuples, ints to floats) one option's value.

    Args:
        name: The :class:`MapRequest` field.
        value: The value given.
        label: How the message names the option (``--chunk``, ``key 'chunk'``).
        fix: The end of the message: what to do.

    Raises:
        InputError: ``<label> is <value>; expected <what>; <fix>``.
    """
    meta = option_of(name)
    message = f"{label} is {value!r}; expected {meta.expected}; {fix}"
    try:
        value = coerce(value, _HINTS[name], label)
    except InputError as err:
        raise InputError(message) from err
    if value is None and _FIELDS[name].default is None:
        return value
    try:
        ok = meta.check is None or bool(meta.check(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(message)
    return value


#: Regions-file key -> :class:`MapRequest` field, for the options a region may set.
REGION_KEYS: dict[str, str] = {
    option_of(name).key: name for name in _FIELDS if option_of(name).key  # type: ignore[misc]
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every :class:`MapRequest` option with a flag to ``parser`` (dest = field name)."""
    for name, f in _FIELDS.items():
        meta = option_of(name)
        if meta.flag == "":
            continue
        hint = _HINTS[name]
        kwargs: dict[str, Any] = {"dest": name, "help": meta.help}
        if not meta.cli.get("required"):
            kwargs["default"] = f.default
        if hint is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(hint) is Literal:
            kwargs["choices"] = typing.get_args(hint)
        else:
            kwargs["type"] = _scalar(hint)
            kwargs["metavar"] = flag_of(f).lstrip("-").upper().replace("-", "_")
        kwargs.update(meta.cli)
        parser.add_argument(flag_of(f), **kwargs)


def _scalar(hint: Any) -> Any:
    """The argparse ``type`` of an annotation: its one scalar type."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0]
    if args:
        return _scalar(args[0])
    return hint


def resolved_precision(request: MapRequest) -> Precision:
    """``fp32`` or ``bf16``: ``auto`` resolved for the run's devices (bf16 with GPUs)."""
    if request.precision != "auto":
        return request.precision
    return "bf16" if request.gpus > 0 else "fp32"


def request_from_args(args: argparse.Namespace, **fixed: Any) -> MapRequest:
    """The :class:`MapRequest` of parsed arguments (``fixed`` overrides, e.g. ``executor``)."""
    values = {name: getattr(args, name) for name in _FIELDS if hasattr(args, name)}
    if values.get("gpus") is None:
        values["gpus"] = 0
    return MapRequest(**{**values, **fixed})
