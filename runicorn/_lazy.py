"""Late binding by name: ``"module:attribute"`` specs and lazy package attributes.

Keeps ``import runicorn`` light: a public name is imported from its module the first
time it is used, and CLI commands are found by naming a function rather than importing it
(features join the store through objects instead, see ``runicorn.store.extensions``).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def resolve(spec: str) -> Any:
    """Import ``"package.module:attribute"`` and return the attribute."""
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


def lazy_attributes(
    module_name: str, namespace: dict[str, Any], table: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` serving ``table`` (name -> spec) lazily."""

    def __getattr__(name: str) -> Any:
        spec = table.get(name)
        if spec is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        value = resolve(spec)
        namespace[name] = value  # later lookups are plain module attributes
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
