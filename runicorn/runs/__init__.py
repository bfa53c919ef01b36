"""Experiment runs: ``runicorn.init`` and the run index (kept light to import)."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Run", "init", "list_outputs"):
        from runicorn.runs import run

        return getattr(run, name)
    raise AttributeError(f"module 'runicorn.runs' has no attribute {name!r}")


__all__ = ["Run", "init", "list_outputs"]
