"""Artifacts: content bound by name in ``Runicorn.toml`` (Julia's Pkg.Artifacts, in Python).

Names are imported lazily so ``from runicorn.artifacts import artifact`` loads only the
fast lookup path; installing, binding and archiving load their modules on first use.
``observers`` (a list of ``f(name, tree, path)``) is notified whenever ``artifact()``
hands out a path -- the runs package uses it to record a run's inputs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runicorn._lazy import lazy_attributes

if TYPE_CHECKING:
    from runicorn.artifacts.lookup import artifact as artifact
    from runicorn.artifacts.lookup import artifact_exists as artifact_exists
    from runicorn.artifacts.lookup import artifact_hash as artifact_hash
    from runicorn.artifacts.lookup import artifact_meta as artifact_meta
    from runicorn.artifacts.lookup import artifact_path as artifact_path
    from runicorn.artifacts.lookup import observers as observers

# The lookup path is lazy too: gc imports this package for its roots and installed
# folders (runicorn.artifacts.gcroots, .installed), and needs no TOML reading.
_LAZY: dict[str, str] = {
    "artifact": "runicorn.artifacts.lookup:artifact",
    "artifact_exists": "runicorn.artifacts.lookup:artifact_exists",
    "artifact_hash": "runicorn.artifacts.lookup:artifact_hash",
    "artifact_meta": "runicorn.artifacts.lookup:artifact_meta",
    "artifact_path": "runicorn.artifacts.lookup:artifact_path",
    "observers": "runicorn.artifacts.lookup:observers",
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


__all__ = [*_LAZY]
