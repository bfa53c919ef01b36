"""Where artifacts are: the caller's ``Runicorn.toml`` and the store's ``artifacts/`` directory.

Answers are cached per caller file, working directory and storage argument, so a warm
``artifact()`` finds its TOML by a dictionary lookup.
"""

from __future__ import annotations

import os

from runicorn.artifacts.toml_read import TOML_NAMES
from runicorn.errors import ArtifactError, option

_caller_toml: dict[str, str | None] = {}
_cwd_toml: dict[str, str | None] = {}
_artifacts_dirs: dict[tuple[str | None, str | None], str] = {}


def _find_upward(start: str) -> str | None:
    d = start
    while True:
        for n in TOML_NAMES:
            p = os.path.join(d, n)
            if os.path.isfile(p):
                return p
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def find_toml(caller_file: str | None) -> str:
    """The artifacts TOML for code in ``caller_file``: upward from its directory, else from the cwd.

    Raises:
        ArtifactError: none found.
    """
    found = _caller_toml.get(caller_file) if caller_file is not None else None
    if found is not None:
        return found
    if caller_file is not None and caller_file not in _caller_toml:
        if not caller_file.startswith("<"):
            found = _find_upward(os.path.dirname(os.path.abspath(caller_file)))
        _caller_toml[caller_file] = found
        if found is not None:
            return found
    cwd = os.getcwd()
    try:
        found = _cwd_toml[cwd]
    except KeyError:
        found = _cwd_toml[cwd] = _find_upward(cwd)
    if found is None:
        _cwd_toml.pop(cwd, None)  # a TOML may be created later; do not remember absence
        start = (
            os.path.dirname(os.path.abspath(caller_file)) if caller_file and not caller_file.startswith("<") else cwd
        )
        raise ArtifactError(
            f"no {' / '.join(TOML_NAMES)} found upward from {start} or from the "
            f"working directory {cwd}; pass {option('toml')}"
        )
    return found


def forget_lookups() -> None:
    """Drop cached caller -> TOML lookups (after a TOML is created or removed)."""
    _caller_toml.clear()
    _cwd_toml.clear()


def resolve_toml_path(toml: str | os.PathLike[str] | None, caller_file: str | None) -> str:
    """An absolute TOML path: ``toml`` (file or directory holding one) or the caller's."""
    if toml is None:
        return find_toml(caller_file)
    p = os.path.abspath(os.fspath(toml))
    if os.path.isdir(p):
        for n in TOML_NAMES:
            if os.path.isfile(os.path.join(p, n)):
                return os.path.join(p, n)
        return os.path.join(p, TOML_NAMES[0])
    return p


def artifacts_dir(storage: str | os.PathLike[str] | None = None) -> str:
    """``<storage_root>/artifacts`` as a string (cached per storage argument and $RUNICORN_DIR)."""
    key = (None if storage is None else os.fspath(storage), os.environ.get("RUNICORN_DIR"))
    d = _artifacts_dirs.get(key)
    if d is None:
        from runicorn.config import resolve_storage_root

        d = _artifacts_dirs[key] = str(resolve_storage_root(storage) / "artifacts")
    return d


def require_tree_id(tree: object) -> str:
    """``tree`` if it is a ``tree-sha256`` (64 hex) or ``git-tree-sha1`` (40 hex); it names a
    directory below ``artifacts/``, so nothing else (``../x``, ``/abs``) may reach the filesystem.

    Raises:
        ArtifactError: naming the bad value.
    """
    from runicorn.hashing import is_tree_id

    if not is_tree_id(tree):
        raise ArtifactError(
            f"{tree!r} is not a tree id (64 lowercase hex digits) or git-tree-sha1 (40 lowercase hex digits)"
        )
    return tree  # type: ignore[return-value]


__all__ = ["find_toml", "forget_lookups", "resolve_toml_path", "artifacts_dir", "require_tree_id"]
