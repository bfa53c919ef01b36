"""``artifacts/Overrides.toml``: directories that stand in for artifacts (Julia's rules).

Read by the lookup path (``artifact()``) and by install alike, through
:func:`override_dir`, so both decide an override the same way.
"""

from __future__ import annotations

import os
from typing import Any

from runicorn.artifacts.toml_read import is_artifact_name
from runicorn.errors import ArtifactError, TomlFormatError

_overrides_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}


def load_overrides(adir: str) -> dict[str, str]:
    """``<artifacts>/Overrides.toml`` as ``{tree id or artifact name: directory}`` (cached by stat).

    Julia's rules (stdlib Artifacts ``load_overrides``): a key is a tree id
    (``git-tree-sha1`` or ``tree-sha256``, any case) or an artifact name -- also inside a
    ``[<package UUID>]`` table; a target is an absolute directory path or a tree id (that
    tree's ``artifacts/<tree>``); an empty string means "no override".

    Raises:
        TomlFormatError: the file is not valid TOML, or a key or target Julia rejects
            (naming the file and the key).
    """
    path = adir + "/Overrides.toml"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    key = (st.st_mtime_ns, st.st_size)
    hit = _overrides_cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    from runicorn.artifacts.toml_read import loads_toml

    with open(path, "rb") as f:
        data = f.read()
    try:
        doc = loads_toml(data.decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        raise TomlFormatError(f"{path}: not UTF-8 text ({exc})") from None
    out: dict[str, str] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            _override_table(path, adir, k, v, out)
            continue
        tree = _tree_key(k)
        if tree is None:
            if _is_uuid(k) or not is_artifact_name(k):
                raise TomlFormatError(
                    f"{path}: override key {k!r} is neither a tree id (40 or 64 hex digits) nor an artifact name"
                )
        target = _override_target(path, adir, k, v)
        if target is not None:
            out[tree or k] = target
    _overrides_cache[path] = (key, out)
    return out


def _override_table(path: str, adir: str, k: str, table: dict[str, Any], out: dict[str, str]) -> None:
    # Julia's [<package UUID>] table of name = target; Runicorn files carry no package
    # UUID, so its names override that name in any file (a top-level name wins).
    if not _is_uuid(k):
        raise TomlFormatError(
            f"{path}: override table [{k}] must be named by a package UUID "
            '(name overrides may also be written at top level: name = "/dir")'
        )
    for name, v in table.items():
        if not is_artifact_name(name):
            raise TomlFormatError(f"{path}: override [{k}] key {name!r} is not an artifact name")
        target = _override_target(path, adir, f"{k}.{name}", v)
        if target is not None:
            out.setdefault(name, target)


def _tree_key(text: str) -> str | None:
    from runicorn.hashing import is_tree_id

    low = text.lower()
    return low if is_tree_id(low) else None


def _is_uuid(text: str) -> bool:
    import re

    return (
        re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text) is not None
    )


def _override_target(path: str, adir: str, k: str, v: object) -> str | None:
    if not isinstance(v, str):
        raise TomlFormatError(f"{path}: override {k!r} must be a directory path string, got {v!r}")
    if v == "":
        return None  # Julia: an empty string means "not overridden"
    tree = _tree_key(v)
    if tree is not None:
        return adir + "/" + tree
    if not os.path.isabs(v):
        raise TomlFormatError(f"{path}: override {k!r} must map to an absolute path or a tree id, got {v!r}")
    return os.path.normpath(v)


def override_dir(adir: str, name: str, tree: str) -> str | None:
    """The directory ``Overrides.toml`` (in ``adir``) puts in place of artifact ``name``
    with tree id ``tree`` (a name override wins), or None when neither is overridden.

    Raises:
        ArtifactError: the override names something that is not a directory.
        TomlFormatError: as :func:`load_overrides`.
    """
    ov = load_overrides(adir)
    d = (ov.get(name) or ov.get(tree)) if ov else None
    if d is not None and not os.path.isdir(d):
        raise ArtifactError(f"{adir}/Overrides.toml: override for {name!r} points to {d}, which is not a directory")
    return d


__all__ = ["load_overrides", "override_dir"]
