"""Runicorn: a local-first, content-addressed store for the files around ML work.

``import runicorn`` stays light: public names are imported from their modules on first
use (see ``_LAZY``), so heavy dependencies load only where they are needed.
"""

from __future__ import annotations

import importlib
from typing import Any

from runicorn._version import __version__

# public name -> "module:attribute"
_LAZY: dict[str, str] = {
    "Store": "runicorn.store:Store",
    "open_store": "runicorn.store:open_store",
    "RunicornError": "runicorn.errors:RunicornError",
    "snapshot_workspace": "runicorn.assets.snapshot:snapshot_workspace",
    "init": "runicorn.runs.run:init",
    "Run": "runicorn.runs.run:Run",
    "current_run": "runicorn.runs.run:current_run",
}


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'runicorn' has no attribute {name!r}")
    module_name, attr = spec.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", *_LAZY]
