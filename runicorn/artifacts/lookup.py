"""The pure, fast lookup path: ``artifact()`` and friends.

Nothing here downloads or writes (except a lazy artifact, which is handed to
:mod:`runicorn.artifacts.install` on first use).  A warm ``artifact("name")`` costs a
dictionary lookup for the caller's TOML, one ``stat`` of that TOML (parse cache), one
``stat`` of ``Overrides.toml`` and one ``isdir`` of the artifact directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping

from runicorn.artifacts.locate import artifacts_dir, find_toml, require_tree_id, resolve_toml_path
from runicorn.artifacts.overrides import load_overrides, override_dir
from runicorn.artifacts.toml_read import copy_entry, entry_hash, load_toml, require_entry, select_entry
from runicorn.errors import ArtifactError, ArtifactNotInstalledError
from runicorn.lineage import observers  # told f(name, tree_hash, path) for each path handed out


def artifact(
    name: str, *, toml: str | os.PathLike[str] | None = None, platform: Mapping[str, Any] | None = None
) -> Path:
    """The directory of a bound artifact (``"name/sub/path"`` indexes into it).

    Lazy artifacts are installed on first use (with a progress bar on stderr when it is
    a terminal).

    Raises:
        ArtifactError: no TOML, unknown name, no variant for the platform, or a backslash
            in ``name`` (refused on every platform: write ``name/sub``).
        ArtifactNotInstalledError: a non-lazy artifact is not installed (run ``runicorn fetch``).
        TomlFormatError: the TOML is malformed.
    """
    tpath = (
        resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
        if toml is not None
        else find_toml(sys._getframe(1).f_code.co_filename)
    )
    return _artifact_at(tpath, name, platform)


def _artifact_at(
    tpath: str, name: str, platform: Mapping[str, Any] | None, storage: str | os.PathLike[str] | None = None
) -> Path:
    if "\\" in name:
        # "name\\sub" means name/sub on Windows and a file named with a backslash on POSIX:
        # refused everywhere, so a script behaves the same on every machine.
        raise ArtifactError(
            f"{tpath}: artifact path {name!r} contains a backslash; write 'name/sub/path' with forward slashes"
        )
    base, _, sub = name.partition("/")
    parsed = load_toml(tpath)
    entry = require_entry(parsed, base, platform)
    h = entry_hash(entry)
    adir = artifacts_dir(storage)
    d = override_dir(adir, base, h)
    if d is None:
        d = adir + "/" + h
        if not os.path.isdir(d):
            if entry.get("lazy"):
                from runicorn.artifacts.install import ensure_artifact_installed
                from runicorn.display import progress_bar

                # A download can take minutes: a bar on stderr when it is a terminal.
                bar = progress_bar(f"installing {base}")
                try:
                    ensure_artifact_installed(base, tpath, platform=platform, storage=storage, progress=bar)
                finally:
                    bar.close()
            elif not entry.get("download") and not _in_store(entry.get("tree-sha256"), storage):
                raise ArtifactNotInstalledError(
                    f"{tpath}: artifact {base!r} ({h[:12]}) is not installed and cannot be fetched: its tree "
                    "is not in the store and it has no download source; bind it again from its directory"
                )
            else:
                raise ArtifactNotInstalledError(
                    f"{tpath}: artifact {base!r} ({h[:12]}) is not installed; "
                    f"run `runicorn fetch {base} --toml {tpath}`"
                )
    if sub:
        from runicorn.relpath import validate_relpath

        validate_relpath(sub, what=f"path inside artifact {base!r}")
        path = Path(d, sub)
    else:
        path = Path(d)
    if observers:
        for fn in observers:
            fn(base, h, path)
    return path


def _in_store(tree: str | None, storage: str | os.PathLike[str] | None) -> bool:
    """Whether the store has ``tree`` (only asked on the way to an error)."""
    from runicorn.store import open_store

    return bool(tree) and open_store(storage).has_tree(tree)  # type: ignore[arg-type]


def artifact_meta(
    name: str, toml: str | os.PathLike[str] | None = None, *, platform: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The selected entry of ``name`` as a dict with the file's own keys, or None if unbound
    (or if the ``toml`` given does not exist yet).

    Raises:
        ArtifactError: no TOML found.  TomlFormatError: malformed TOML.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
    if toml is not None and not os.path.exists(tpath):
        return None  # a file not written yet binds nothing (create-then-bind scripts)
    entry = select_entry(load_toml(tpath), name, platform)
    return None if entry is None else copy_entry(entry)


def artifact_hash(
    name: str, toml: str | os.PathLike[str] | None = None, *, platform: Mapping[str, Any] | None = None
) -> str | None:
    """The tree id (``tree-sha256``, else ``git-tree-sha1``) bound to ``name``, or None
    (also when the ``toml`` given does not exist yet).

    Raises:
        ArtifactError: no TOML found.  TomlFormatError: malformed TOML.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
    if toml is not None and not os.path.exists(tpath):
        return None
    entry = select_entry(load_toml(tpath), name, platform)
    return None if entry is None else entry_hash(entry)


def artifact_path(tree: str, *, storage: str | os.PathLike[str] | None = None) -> Path:
    """Where the tree is (or would be) installed: an Overrides.toml directory or ``artifacts/<tree>``.

    Raises:
        ArtifactError: ``tree`` is not a tree id.
    """
    require_tree_id(tree)
    adir = artifacts_dir(storage)
    ov = load_overrides(adir)
    d = ov.get(tree) if ov else None
    return Path(d if d is not None else adir + "/" + tree)


def artifact_exists(tree: str, *, storage: str | os.PathLike[str] | None = None) -> bool:
    """True if the tree is installed (or overridden to an existing directory)."""
    return os.path.isdir(artifact_path(tree, storage=storage))


__all__ = ["artifact", "artifact_meta", "artifact_hash", "artifact_path", "artifact_exists", "observers"]
