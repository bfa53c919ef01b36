"""The one place that validates relative paths coming from manifests, archives and servers.

A *safe relative path* is a POSIX path that stays below the directory it is joined to:
not absolute, no ``..`` or ``.`` components, no empty components, no NUL or newline.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runicorn.errors import UnsafePathError


def validate_relpath(rel: str, *, what: str = "path", portable: bool = False) -> str:
    """Return ``rel`` unchanged if it is a safe relative POSIX path.

    ``portable=True`` also refuses backslashes, which other platforms read as a
    separator (the sync manifest format requires this).

    Raises:
        UnsafePathError: if the path is empty, absolute, contains ``..``/``.``/empty
            components, a backslash-drive prefix, NUL or a newline (or, when
            ``portable``, a backslash).
    """
    if not isinstance(rel, str) or not rel:
        raise UnsafePathError(f"empty {what}")
    if "\x00" in rel or "\n" in rel or "\r" in rel:
        raise UnsafePathError(f"{what} {rel!r} contains NUL or a newline")
    if portable and "\\" in rel:
        raise UnsafePathError(f"{what} {rel!r} contains a backslash")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise UnsafePathError(f"{what} {rel!r} is absolute")
    for part in rel.split("/"):
        if part in ("", ".", ".."):
            raise UnsafePathError(f"{what} {rel!r} has a forbidden component {part!r}")
    return rel


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
