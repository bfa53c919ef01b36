"""The snapshot stat cache: hashes of workspace files that did not change since they were read.

"Racily clean" rule: a file's cached hash is reused only when its (dev, inode, size,
mtime_ns, mode) match the cache row *and* its mtime is at least ``RACY_NS`` older than
the moment its hash was taken.  A file written in the same timestamp tick as the hash
(or within the coarsest common mtime granularity, FAT's 2 s) could change again without
its mtime moving, so such an entry is re-read; the re-read refreshes ``recorded_ns`` so
the next snapshot can trust it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

RACY_NS = 2_000_000_000


def _cache_bounds(root: Path) -> tuple[str, str]:
    base = str(root).rstrip("/") + "/"
    return base, base[:-1] + "0"  # '0' sorts right after '/'


def cached_rows(store: Any, root: Path) -> dict[str, tuple[Any, ...]]:
    """The stat cache rows of the files below ``root``, by absolute path: ``(path, dev, ino,
    size, mtime_ns, ctime_ns, mode, sha256, recorded_ns)``."""
    lo, hi = _cache_bounds(root)
    return store.stat_cache.rows(lo, hi)


def record(store: Any, updates: Sequence[tuple[Any, ...]], stale: Sequence[tuple[str]]) -> None:
    """Drop the ``stale`` paths' rows and write ``updates`` (rows as :func:`cached_rows` gives
    them), in one transaction."""
    store.stat_cache.update(updates, [p for (p,) in stale])


__all__ = ["RACY_NS", "cached_rows", "record"]
