"""Artifacts: content bound by name in ``Runicorn.toml`` (Julia's Pkg.Artifacts, in Python).

Names are imported lazily so ``from runicorn.artifacts import artifact`` loads only the
fast lookup path; installing, binding and archiving load their modules on first use.
``observers`` (a list of ``f(name, tree, path)``) is notified whenever ``artifact()``
hands out a path -- the runs package uses it to record a run's inputs.
"""

from __future__ import annotations

from runicorn._lazy import lazy_attributes
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


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)


__all__ = ["artifact", "artifact_exists", "artifact_hash", "artifact_meta", "artifact_path", "observers", *_LAZY]
