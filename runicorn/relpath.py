"""The one place that validates relative paths coming from manifests, archives and servers.

A *safe relative path* is a POSIX path that stays below the directory it is joined to:
not absolute, no ``..`` or ``.`` components, no empty components, no NUL or newline,
valid UTF-8, at most ``MAX_DEPTH`` components and ``MAX_PATH_BYTES`` bytes, each component
at most ``MAX_NAME_BYTES`` bytes.

The last two rules are the one rule for names and depth everywhere (snapshots, archives,
manifests, restores, sync): a name that is not UTF-8 (a lone surrogate after Python's
``surrogateescape`` decoding) cannot go into the index, a zip or a JSON manifest other
tools read, so it is refused before anything is written, naming the path; and a bounded
depth keeps every walk, staging directory and cleanup of a tree within the limits of the
operating system (``PATH_MAX``) and of the interpreter's recursion.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from runicorn.errors import UnsafePathError

MAX_DEPTH = 255  # components; documented in schema/manifest.md
MAX_PATH_BYTES = 4095  # UTF-8 bytes, as Linux PATH_MAX less its NUL
MAX_NAME_BYTES = 255  # UTF-8 bytes per component, as NAME_MAX: longer cannot be restored


def validate_relpath(rel: str, *, what: str = "path", portable: bool = False) -> str:
    """Return ``rel`` unchanged if it is a safe relative POSIX path.

    ``portable=True`` also refuses backslashes, which other platforms read as a
    separator (the sync manifest format requires this).

    Raises:
        UnsafePathError: if the path is empty, absolute, contains ``..``/``.``/empty
            components, a backslash-drive prefix, NUL or a newline (or, when
            ``portable``, a backslash), is not valid UTF-8, or is deeper than
            ``MAX_DEPTH`` / longer than ``MAX_PATH_BYTES`` / has a component longer than
            ``MAX_NAME_BYTES``.
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePathError(f"empty {what}")
    if "\x00" in rel or "\n" in rel or "\r" in rel:
        raise UnsafePathError(f"{what} {rel!r} contains NUL or a newline")
    if portable and "\\" in rel:
        raise UnsafePathError(f"{what} {rel!r} contains a backslash")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise UnsafePathError(f"{what} {rel!r} is absolute")
    parts = rel.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"{what} {rel!r} has a forbidden component {part!r}")
    check_name_and_depth(rel, len(parts), what=what)
    if len(rel) > MAX_NAME_BYTES // 4:  # shorter paths cannot hold a too-long name
        for part in parts:
            if len(part) > MAX_NAME_BYTES // 4 and len(part.encode("utf-8")) > MAX_NAME_BYTES:
                raise UnsafePathError(
                    f"{what} {short_repr(rel)} has a name of {len(part.encode('utf-8'))} "
                    f"bytes; the limit is {MAX_NAME_BYTES}"
                )
    return rel


def check_name_and_depth(rel: str, depth: int, *, what: str = "path") -> None:
    """Refuse a relative path that is not valid UTF-8 or is too deep or too long.

    ``depth`` is the number of components.  Walkers call this per directory (with the
    directory's own path) before descending, so nothing is written for a refused tree.

    Raises:
        UnsafePathError: naming the path (its raw bytes when not UTF-8).
    """
    if depth > MAX_DEPTH:
        raise UnsafePathError(f"{what} {short_repr(rel)} is {depth} levels deep; the limit is {MAX_DEPTH}")
    if rel.isascii():
        size = len(rel)
    else:
        try:
            size = len(rel.encode("utf-8"))
        except UnicodeEncodeError:
            raw = rel.encode("utf-8", "surrogateescape")
            raise UnsafePathError(
                f"{what} {short_repr(raw)} is not valid UTF-8; rename it (only UTF-8 names can be stored)"
            ) from None
    if size > MAX_PATH_BYTES:
        raise UnsafePathError(f"{what} {short_repr(rel)} is {size} bytes long; the limit is {MAX_PATH_BYTES}")


def check_names(prefix: str, names: str, *, what: str = "path") -> None:
    """Refuse a directory listing (``names``: the names joined by ``/``) below ``prefix``
    (the directory's relative path, ``""`` or ending in ``/``) that holds a name that is
    not UTF-8, or that lies too deep; one check per directory, cheap for ASCII names.

    Raises:
        UnsafePathError: as :func:`check_name_and_depth`, naming the offending path.
    """
    depth = prefix.count("/") + 1
    if depth > MAX_DEPTH and names:
        check_name_and_depth(prefix + names.split("/")[0], depth, what=what)
    if names.isascii():
        return
    try:
        names.encode("utf-8")
    except UnicodeEncodeError:
        for name in names.split("/"):
            check_name_and_depth(prefix + name, depth, what=what)


def short_repr(rel: str | bytes) -> str:
    """repr of a path, shortened in the middle when very long (one readable line)."""
    text = repr(rel)
    return text if len(text) <= 200 else text[:96] + "..." + text[-96:]


def parent_dirs(paths: Iterable[str]) -> set[str]:
    """Every folder the relative ``paths`` lie in, each once (``a`` and ``a/b`` for
    ``a/b/c``; none for a top-level name)."""
    dirs: set[str] = set()
    for p in paths:
        i = p.rfind("/")
        while i > 0 and p[:i] not in dirs:  # a folder seen before came with its parents
            dirs.add(p[:i])
            i = p.rfind("/", 0, i)
    return dirs


def safe_join(root: Path, rel: str, *, what: str = "path") -> Path:
    """Join a validated relative path onto ``root``.

    Raises:
        UnsafePathError: as :func:`validate_relpath`.
    """
    return root.joinpath(*validate_relpath(rel, what=what).split("/"))


def ensure_no_symlink_parents(root: Path, rel: str) -> None:
    """Refuse a path whose existing parent components below ``root`` are symlinks.

    Used before writing ``root/rel`` so a write can never travel through a link.

    Raises:
        UnsafePathError: if a parent component is a symlink or not a directory.
    """
    current = root
    parts = validate_relpath(rel).split("/")
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"path {rel!r} passes through a symlink at {part!r}")
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"path {rel!r} passes through a non-directory at {part!r}")
