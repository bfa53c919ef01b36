"""Writing ``Runicorn.toml``: tomlkit (comments and layout survive), atomic, locked.

Every change is a read-modify-write under an ``flock`` on ``.<toml name>.lock``, so two
binders at once both land; the new text is validated with the reader before the
atomic rename, so a bug can never leave a file the reader rejects.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from runicorn.artifacts.platform import describe, entry_platform, make_platform, platform_key
from runicorn.errors import ArtifactError, TomlFormatError, option
from runicorn.fsutil import atomic_write_text, open_locked
from runicorn.hashing import is_sha256_hex, is_tree_id

_TAG_ORDER = ("os", "arch", "libc")


def _downloads(download_info: Iterable[Any] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for item in download_info or ():
        if isinstance(item, Mapping) and item.get("remote"):
            # a runicorn remote: the tree id is the checksum, no archive involved
            d: dict[str, Any] = {"remote": str(item["remote"])}
            if item.get("endpoint"):
                d["endpoint"] = str(item["endpoint"])
            out.append(d)
            continue
        if isinstance(item, Mapping):
            d = {"url": item.get("url"), "sha256": item.get("sha256")}
            if item.get("size") is not None:
                d["size"] = item["size"]
        else:
            seq = list(item)
            if len(seq) not in (2, 3):
                raise ArtifactError(f"download info {item!r} must be (url, sha256) or (url, sha256, size)")
            d = {"url": seq[0], "sha256": seq[1]}
            if len(seq) == 3 and seq[2] is not None:
                d["size"] = seq[2]
        if not isinstance(d["url"], str) or not d["url"]:
            raise ArtifactError(f"download info {item!r}: 'url' must be a non-empty string")
        if isinstance(d["sha256"], str):
            d["sha256"] = d["sha256"].lower()  # upper case accepted, written normalised
        if not is_sha256_hex(d["sha256"]):
            raise ArtifactError(f"download info {item!r}: 'sha256' must be 64 hex digits")
        out.append(d)
    return out


def _entry_table(tree: str, downloads: list[dict[str, Any]], lazy: bool, tags: Mapping[str, str] | None) -> Any:
    import tomlkit

    t = tomlkit.table()
    if tags:
        for k in sorted(tags, key=lambda k: (_TAG_ORDER.index(k) if k in _TAG_ORDER else 9, k)):
            t.add(k, tags[k])
    t.add("git-tree-sha1" if len(tree) == 40 else "tree-sha256", tree)
    if lazy:
        t.add("lazy", True)
    if downloads:
        aot = tomlkit.aot()
        for d in downloads:
            dt = tomlkit.table()
            for k in ("url", "sha256", "size", "remote", "endpoint"):
                if k in d:
                    dt.add(k, d[k])
            aot.append(dt)
        dt.add(tomlkit.nl())  # a blank line after the new table keeps the file readable
        t.add("download", aot)
    else:
        t.add(tomlkit.nl())
    return t


def _update_in_place(table: Any, tree: str, downloads: list[dict[str, Any]], lazy: bool) -> None:
    """Re-point an existing table (a forced re-bind) keeping its comments and layout."""
    fresh = _entry_table(tree, downloads, lazy, None)
    for key in ("tree-sha256", "git-tree-sha1", "lazy", "download"):
        if key in table and key not in fresh:
            del table[key]
    for key in ("tree-sha256", "git-tree-sha1", "lazy", "download"):
        if key in fresh:
            table[key] = fresh[key]


def _check_tree(tree: str) -> None:
    if not is_tree_id(tree):
        raise ArtifactError(f"{tree!r} is not a tree id (64 hex digits) or git-tree-sha1 (40 hex digits)")


def _edit(toml_path: str, change: Any) -> None:
    """Apply ``change(doc)`` to the file under its lock and write it back atomically."""
    import tomlkit
    from tomlkit.exceptions import ParseError

    from runicorn.artifacts.toml_read import forget, parse_toml_bytes

    path = Path(toml_path)
    # A hidden sibling lock: next to the file so every binder (whatever its storage root)
    # agrees on it, hidden so it does not clutter the project.
    with open_locked(path.with_name(f".{path.name}.lock")):
        try:
            text = path.read_text("utf-8")
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            text, mode = "", 0o644
        if text.strip():
            # Refuse to build on a broken file; first, so the depth bound of the one
            # TOML reader applies before tomlkit (which recurses the same way) parses it.
            parse_toml_bytes(text.encode("utf-8"), str(path))
        try:
            doc = tomlkit.parse(text)
        except ParseError as exc:
            raise TomlFormatError(f"{path}: not valid TOML: {exc}") from None
        except RecursionError:
            raise TomlFormatError(f"{path}: not valid TOML: nested too deeply") from None
        change(doc)
        new = tomlkit.dumps(doc)
        parse_toml_bytes(new.encode("utf-8"), str(path))
        atomic_write_text(path, new, mode=mode)
        forget(str(path))


def bind_artifact(
    toml: str | os.PathLike[str],
    name: str,
    tree: str,
    *,
    download_info: Iterable[Any] | None = None,
    lazy: bool = False,
    force: bool = False,
    platform: Mapping[str, Any] | None = None,
    storage: str | os.PathLike[str] | None = None,
) -> None:
    """Bind ``name`` to ``tree`` in a TOML file (created if missing).

    ``platform`` makes the binding one ``[[name]]`` variant (``os`` and ``arch``
    required).  ``download_info`` is a list of ``{"url", "sha256", "size"?}`` mappings or
    ``(url, sha256[, size])`` tuples.

    Raises:
        ArtifactError: bad name/tree/download info, or ``name`` (that platform) already
            bound and ``force`` not given.
        TomlFormatError: the existing file is malformed (it is left untouched).
    """
    from runicorn.artifacts.locate import forget_lookups
    from runicorn.artifacts.toml_read import is_artifact_name

    toml_path = os.path.abspath(os.fspath(toml))
    if not is_artifact_name(name):
        raise ArtifactError(f"{toml_path}: artifact name {name!r} must be letters, digits, '_', '.', '+', '-'")
    _check_tree(tree)
    downloads = _downloads(download_info)
    tags = make_platform(platform) if platform is not None else None
    if tags is not None:
        for k in ("os", "arch"):
            if k not in tags:
                raise ArtifactError(f"{toml_path}: artifact {name!r}: a platform binding needs {k!r}")

    def change(doc: Any) -> None:
        import tomlkit

        table = _entry_table(tree, downloads, lazy, tags)
        existing = doc.get(name)
        if tags is None:
            if existing is not None and not force:
                raise ArtifactError(f"{toml_path}: artifact {name!r} is already bound; use {option('force')}")
            if existing is not None and isinstance(existing, dict):
                _update_in_place(existing, tree, downloads, lazy)
            elif existing is not None:
                doc[name] = table
            else:
                doc.add(name, table)
            return
        key = platform_key(tags)
        if existing is None:
            aot = tomlkit.aot()
            aot.append(table)
            doc.add(name, aot)
            return
        if not isinstance(existing, list):
            if not force:
                raise ArtifactError(
                    f"{toml_path}: artifact {name!r} is bound without a platform; "
                    f"use {option('force')} to replace it with platform variants"
                )
            aot = tomlkit.aot()
            aot.append(table)
            doc[name] = aot
            return
        for i, variant in enumerate(existing):
            if _variant_key(variant) == key:
                if not force:
                    raise ArtifactError(
                        f"{toml_path}: artifact {name!r} is already bound for platform "
                        f"{describe(tags)}; use {option('force')} to replace it"
                    )
                _update_in_place(variant, tree, downloads, lazy)
                return
        existing.append(table)

    store = _record_usage(toml_path, storage)
    _edit(toml_path, change)
    forget_lookups()
    _after_write(store, toml_path)


def _variant_key(variant: Any) -> str:
    """The normalised platform key of a written variant (``"5"`` and ``"5.0.0"`` agree)."""
    try:
        return platform_key(entry_platform(dict(variant)))
    except ArtifactError:
        return ""  # a tag Julia refuses: never equal to a platform being bound


def unbind_artifact(
    toml: str | os.PathLike[str],
    name: str,
    *,
    platform: Mapping[str, Any] | None = None,
    storage: str | os.PathLike[str] | None = None,
) -> None:
    """Remove ``name`` (or only its variant for ``platform``) from a TOML file.

    Raises:
        ArtifactError: ``name`` (that platform) is not bound.
        TomlFormatError: the file is malformed or missing.
    """
    toml_path = os.path.abspath(os.fspath(toml))
    if not os.path.exists(toml_path):
        raise TomlFormatError(f"{toml_path}: no such artifacts file")
    tags = make_platform(platform) if platform is not None else None

    def change(doc: Any) -> None:
        if name not in doc:
            from runicorn.names import did_you_mean

            raise ArtifactError(f"{toml_path}: no artifact named {name!r}{did_you_mean(name, map(str, doc))}")
        if tags is None:
            del doc[name]
            return
        existing = doc[name]
        if not isinstance(existing, list):
            raise ArtifactError(f"{toml_path}: artifact {name!r} has no platform variants")
        key = platform_key(tags)
        for i, variant in enumerate(existing):
            if _variant_key(variant) == key:
                del existing[i]
                if not len(existing):
                    del doc[name]
                return
        raise ArtifactError(f"{toml_path}: artifact {name!r} has no variant for platform {describe(tags)}")

    store = _record_usage(toml_path, storage)
    _edit(toml_path, change)
    _after_write(store, toml_path)


def _record_usage(toml_path: str, storage: str | os.PathLike[str] | None) -> Any:
    """Log the file in the usage log *before* it is written: a crash between the two
    must never leave bindings gc does not know about."""
    from runicorn.artifacts.install import record_usage
    from runicorn.store import open_store

    store = open_store(storage)
    record_usage(store, toml_path)
    return store


def _after_write(store: Any, toml_path: str) -> None:
    from runicorn.artifacts.gcroots import refresh_file

    refresh_file(store, toml_path)
