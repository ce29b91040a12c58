"""The one package ``__init__`` convention: public names re-exported lazily (PEP 562).

Every package's ``__init__`` is a docstring, a ``TYPE_CHECKING`` block importing its public
names (for type checkers and readers), a ``{name: submodule}`` table and::

    __getattr__, __dir__ = lazy_exports(__name__, _WHERE)

so ``import depthseg.<package>`` imports nothing heavy, and ``from depthseg.mapping import
map_region`` imports only the submodule that defines it (the predict stage runs on a bare GPU
box without GDAL, Zarr or Ray; ``import depthseg.schedule`` does not start torch).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any


def lazy_exports(package: str, where: dict[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package`` re-exporting ``where``'s names."""

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(where)

    return __getattr__, __dir__
