"""Walks for :func:`runicorn.snapshot.capture.capture_tree` made from a test's own files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator

from runicorn.snapshot.scan import WalkedDir


def one_file_dirs(files: Iterable[tuple[str, str, os.stat_result]]) -> Iterator[tuple[WalkedDir, int, int]]:
    """A walk of ``(relpath, abspath, lstat)`` files as they come, each file as a directory
    of its own (entered, then its one file): a walk that fails or changes a file between
    two files does so at the same point as the files it is made of."""
    for rel, full, st in files:
        name = rel.rpartition("/")[2]
        directory = WalkedDir(
            rel[: len(rel) - len(name)], full[: len(full) - len(name)], [(name, st)], stat.S_ISLNK(st.st_mode)
        )
        yield directory, 0, 0
        yield directory, 0, 1
