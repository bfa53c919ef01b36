"""Runicorn: a local-first, content-addressed store for the files around ML work.

``import runicorn`` stays light: public names are imported from their modules on first
use (see ``_LAZY``), so heavy dependencies load only where they are needed.
"""

from __future__ import annotations

from runicorn._lazy import lazy_attributes
from runicorn._version import __version__
from runicorn.extensions import register_features

# The one composition point: the features' parts in the store (gc roots, tables, rebuild,
# verify) are registered here, which Python runs before any runicorn.* module, so no store
# is ever opened without them (runicorn.store imports no feature).
register_features()

# public name -> "module:attribute"
_LAZY: dict[str, str] = {
    "Store": "runicorn.store:Store",
    "open_store": "runicorn.store:open_store",
    "RunicornError": "runicorn.errors:RunicornError",
    # artifacts (Runicorn.toml)
    "artifact": "runicorn.artifacts:artifact",
    "artifact_hash": "runicorn.artifacts:artifact_hash",
    "artifact_meta": "runicorn.artifacts:artifact_meta",
    "artifact_path": "runicorn.artifacts:artifact_path",
    "artifact_exists": "runicorn.artifacts:artifact_exists",
    "create_artifact": "runicorn.artifacts:create_artifact",
    "archive_artifact": "runicorn.artifacts:archive_artifact",
    "bind_artifact": "runicorn.artifacts:bind_artifact",
    "unbind_artifact": "runicorn.artifacts:unbind_artifact",
    "ensure_artifact_installed": "runicorn.artifacts:ensure_artifact_installed",
    "select_downloadable_artifacts": "runicorn.artifacts:select_downloadable_artifacts",
    "verify_artifact": "runicorn.artifacts:verify_artifact",
    "remove_artifact": "runicorn.artifacts:remove_artifact",
    "host_platform": "runicorn.artifacts:host_platform",
    "tree_hash": "runicorn.artifacts:tree_hash",
    # snapshots and runs
    "snapshot_workspace": "runicorn.snapshot.workspace:snapshot_workspace",
    "init": "runicorn.runs.run:init",
    "Run": "runicorn.runs.run:Run",
    "current_run": "runicorn.runs.run:current_run",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)


__all__ = ["__version__", *_LAZY]
