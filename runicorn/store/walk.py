"""Walking a directory as a tree sees it: the one walk behind every ``tree-sha256`` of a
directory (``schema/tree-id.md``), and that id computed without storing."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError, UnsafePathError
from runicorn.hashing import copy_and_hash, sha256_bytes
from runicorn.relpath import check_names
from runicorn.store.tree_format import MODE_LINK, TreeEntry, compute_tree_id, mode_of


def scan_directory(root: Path, include: Any = None) -> tuple[list[tuple[str, Path, str]], list[tuple[str, bytes]]]:
    """What a tree of ``root`` is made of: ``files`` as ``(relpath, path, mode)`` and
    ``links`` as ``(relpath, target bytes)`` (see :func:`walk_files`).

    The one directory walk behind every ``tree-sha256`` of a directory:
    :meth:`Store.ingest_directory` stores it, ``runicorn.artifacts.tree_hash`` only hashes it.
    """
    files: list[tuple[str, Path, str]] = []
    links: list[tuple[str, bytes]] = []
    for rel, full, st in walk_files(root, include):
        if stat.S_ISLNK(st.st_mode):
            links.append((rel, os.fsencode(os.readlink(full))))
        else:
            files.append((rel, full, mode_of(st.st_mode)))
    return files, links


def directory_tree_id(root: Path, include: Any = None) -> str:
    """The ``tree-sha256`` a directory has now (what :meth:`Store.ingest_directory` would
    return), computed without storing anything.

    Raises:
        RunicornError / UnsafePathError: a name a tree cannot hold (see :func:`walk_files`).
        OSError: ``root`` or a file below it cannot be read.
    """
    files, links = scan_directory(root, include)
    entries: dict[str, TreeEntry] = {}
    for rel, full, mode in files:
        with open(full, "rb") as f:
            sha, size = copy_and_hash(f, None)
        entries[rel] = TreeEntry(sha, mode, size)
    for rel, target in links:
        entries[rel] = TreeEntry(sha256_bytes(target), MODE_LINK, len(target))
    return compute_tree_id(entries)


def walk_files(root: Path, include: Any = None) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield ``(relpath, path, lstat)`` for regular files and symlinks below ``root``.

    Symlinks are never followed; other file types are skipped.  ``include(rel, is_dir)``
    may prune.  Paths containing a newline are refused (they cannot be in a tree), and
    so are names that are not UTF-8 and trees deeper than ``runicorn.relpath.MAX_DEPTH``.

    Raises:
        RunicornError / UnsafePathError: such a name, naming it.
    """
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if "\n" in rel:
                raise RunicornError(f"{Path(entry.path)}: file names with a newline cannot be stored")
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue
            if include is not None and not include(rel, is_dir):
                continue
            try:
                # Before anything is read: a name that is not UTF-8, or too deep, stores nothing.
                check_names(prefix, entry.name)
            except UnsafePathError as exc:
                raise UnsafePathError(f"{root}: {exc}; nothing was stored") from None
            if is_dir:
                stack.append((Path(entry.path), rel + "/"))
            else:
                yield rel, Path(entry.path), st
