"""Experiment runs: ``runicorn.init`` (:mod:`~runicorn.runs.run`), the run index
(:mod:`~runicorn.runs.index`), run refs (:mod:`~runicorn.runs.refs`) and run deletion
(:mod:`~runicorn.runs.delete`); kept light to import."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Run", "init", "list_outputs"):
        from runicorn.runs import run

        return getattr(run, name)
    raise AttributeError(f"module 'runicorn.runs' has no attribute {name!r}")


__all__ = ["Run", "init", "list_outputs"]
