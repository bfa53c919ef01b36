"""The ``lstat`` fields kept per file when a walk lists many: :class:`FileStat`.

An ``os.stat_result`` holds about twenty fields, each its own object: some 600 bytes
per file, the largest part of a 100,000-file snapshot's memory.  A scan keeps the six
fields a snapshot compares with its stat cache and stores, and shares the values most
files have in common (their device, their mode).
"""

from __future__ import annotations

import os
from typing import NamedTuple


class FileStat(NamedTuple):
    """What a snapshot uses of a file's ``lstat`` (named as ``os.stat_result`` names them)."""

    st_mode: int
    st_size: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_ino: int
    st_dev: int

    @property
    def st_mtime(self) -> float:
        """The modification time in seconds (as ``os.stat_result.st_mtime``)."""
        return self.st_mtime_ns / 1e9


class FileStats:
    """Makes :class:`FileStat` values of ``os.stat_result`` ones, sharing the device and mode
    objects across the files of one walk (each would otherwise be an int of its own)."""

    def __init__(self) -> None:
        self._shared: dict[int, int] = {}

    def of(self, st: os.stat_result) -> FileStat:
        """The compact form of ``st``."""
        share = self._shared.setdefault
        mode, dev = st.st_mode, st.st_dev
        return _new(
            FileStat, (share(mode, mode), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, share(dev, dev))
        )


# Skips NamedTuple's Python-level __new__ (the scan makes one per file).
_new = tuple.__new__

__all__ = ["FileStat", "FileStats"]
