"""The one validator of typed configs: frozen dataclasses checked field by field.

:class:`Section` gives a dataclass ``to_dict``/``from_dict`` (unknown keys rejected, naming
them); :func:`check_fields` (called from ``__post_init__``) coerces and checks every field
against its annotation; :func:`require` raises the one-line error of a failed rule. The model
config (:mod:`depthseg.model.config`) and the training recipe (:mod:`depthseg.config`) are
built on it. No I/O, no third-party imports: it runs on a bare GPU box.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from typing import Any, ClassVar, Literal, TypeVar, Union

from depthseg.errors import InputError

_C = TypeVar("_C")


_SCALAR_HINTS: dict[type, str] = {
    bool: "a boolean; write true or false",
    int: "an integer; write a whole number",
    float: "a number; write a number such as 1.0e-4",
    str: "a string; quote it",
}


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; lists become tuples, ints become floats.

    Strings are accepted for float fields because YAML 1.1 reads ``1e-4`` as text.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return coerce(value, non_none[0], where)
    if origin is Literal:
        if value in args:
            return value
        raise InputError(
            f"{where}={value!r} is not allowed; expected one of "
            f"{', '.join(map(repr, args))}; change it to one of those"
        )
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{where}={value!r} is not a list; expected a list like [1, 2, 3, 4]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise InputError(
                f"{where}={list(value)!r} has {len(value)} items; expected {len(args)}"
            )
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if tp in _SCALAR_HINTS:
        if tp is float and isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
        accepted = (int, float) if tp is float else tp
        if isinstance(value, accepted) and (tp is bool or not isinstance(value, bool)):
            return tp(value)
        raise InputError(f"{where}={value!r} is not {_SCALAR_HINTS[tp]}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            from_dict: Any = tp.from_dict  # type: ignore[attr-defined]
            return from_dict(value)
        raise InputError(f"{where}={value!r} is not a mapping; expected the {tp.__name__} fields")
    return value


def check_fields(obj: Any, prefix: str) -> None:
    """Coerce and check every field of the dataclass ``obj`` (errors name ``prefix.field``)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = coerce(getattr(obj, f.name), hints[f.name], f"{prefix}.{f.name}")
        object.__setattr__(obj, f.name, value)


def require(ok: bool, message: str) -> None:
    """Raise :class:`InputError` with ``message`` unless ``ok``."""
    if not ok:
        raise InputError(message)


def _plain(value: Any) -> Any:
    """Dataclass/tuple tree -> dicts and lists, so YAML and JSON can write it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class Section:
    """``to_dict``/``from_dict`` shared by the config dataclasses."""

    _SECTION: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, no tuples) that :meth:`from_dict` turns back into an equal config."""
        return _plain(self)

    @classmethod
    def from_dict(cls: type[_C], data: dict[str, Any]) -> _C:
        """Build from a plain dict (nested dicts for nested configs), rejecting unknown keys."""
        section: str = cls._SECTION  # type: ignore[attr-defined]
        if not isinstance(data, dict):
            raise InputError(f"{section} config is {data!r}; expected a mapping of field: value")
        known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise InputError(
                f"unknown {section} config key(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(known)}; remove or rename them"
            )
        return cls(**data)
