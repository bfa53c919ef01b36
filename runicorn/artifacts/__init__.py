"""Artifacts: content bound by name in ``Runicorn.toml`` (Julia's Pkg.Artifacts, in Python).

Names are imported lazily so ``from runicorn.artifacts import artifact`` loads only the
fast lookup path; installing, binding and archiving load their modules on first use.
``observers`` (a list of ``f(name, tree, path)``) is notified whenever ``artifact()``
hands out a path -- the runs package uses it to record a run's inputs.
"""

from __future__ import annotations

import importlib
from typing import Any

from runicorn.artifacts.lookup import (
    artifact,
    artifact_exists,
    artifact_hash,
    artifact_meta,
    artifact_path,
    observers,
)

_LAZY: dict[str, str] = {
    "create_artifact": "runicorn.artifacts.create:create_artifact",
    "archive_artifact": "runicorn.artifacts.create:archive_artifact",
    "tree_hash": "runicorn.artifacts.create:tree_hash",
    "bind_artifact": "runicorn.artifacts.toml_write:bind_artifact",
    "unbind_artifact": "runicorn.artifacts.toml_write:unbind_artifact",
    "ensure_artifact_installed": "runicorn.artifacts.install:ensure_artifact_installed",
    "select_downloadable_artifacts": "runicorn.artifacts.install:select_downloadable_artifacts",
    "verify_artifact": "runicorn.artifacts.install:verify_artifact",
    "remove_artifact": "runicorn.artifacts.install:remove_artifact",
    "host_platform": "runicorn.artifacts.platform:host_platform",
}


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'runicorn.artifacts' has no attribute {name!r}")
    module_name, attr = spec.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


__all__ = ["artifact", "artifact_exists", "artifact_hash", "artifact_meta", "artifact_path",
           "observers", *_LAZY]
