"""The snapshot stat cache: hashes of workspace files that did not change since they were read.

"Racily clean" rule: a file's cached hash is reused only when its (dev, inode, size,
mtime_ns, mode) match the cache row *and* its mtime is at least ``RACY_NS`` older than
the moment its hash was taken.  A file written in the same timestamp tick as the hash
(or within the coarsest common mtime granularity, FAT's 2 s) could change again without
its mtime moving, so such an entry is re-read; the re-read refreshes ``recorded_ns`` so
the next snapshot can trust it.

With the rows, the cache keeps the leaf pages of the tree each root's last snapshot
stored (``schema/feature-tables.sql``, ``stat_cache_leaves``): where no file changed, the
next snapshot takes those leaves over instead of cutting its files into pages again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from runicorn.store.tree_format import LeafSpan

RACY_NS = 2_000_000_000


def cache_bounds(root: Path) -> tuple[str, str]:
    """``[lo, hi)``: every absolute path below ``root`` lies in it."""
    base = str(root).rstrip("/") + "/"
    return base, base[:-1] + "0"  # '0' sorts right after '/'


def rows_in_order(store: Any, root: Path) -> tuple[Iterator[tuple[Any, ...]], int]:
    """The stat cache rows of the files below ``root`` in absolute path order: ``(path, dev,
    ino, size, mtime_ns, ctime_ns, mode, sha256, recorded_ns)``, read as they are consumed;
    and the cache's generation before them."""
    lo, hi = cache_bounds(root)
    return store.stat_cache.rows_in_order(lo, hi)


def known_leaves(store: Any, root: Path, generation: int) -> dict[str, LeafSpan]:
    """The leaves of ``root``'s last stored tree by first path, while the cache is still
    at ``generation`` (else none)."""
    leaves: dict[str, LeafSpan] = store.stat_cache.leaves(str(root), generation)
    return leaves


def record(
    store: Any,
    root: Path,
    generation: int,
    updates: Iterable[tuple[Any, ...]],
    stale: Sequence[tuple[str]],
    leaves: tuple[Mapping[str, LeafSpan], Sequence[LeafSpan]] | None = None,
) -> None:
    """Drop the ``stale`` paths' rows and write ``updates`` (rows as :func:`rows_in_order` gives
    them), in one transaction; ``leaves`` (those :func:`known_leaves` gave, and those of
    the tree just stored) become ``root``'s, unless the cache moved past ``generation``."""
    store.stat_cache.update(updates, [p for (p,) in stale], root=str(root), generation=generation, leaves=leaves)


__all__ = ["RACY_NS", "cache_bounds", "known_leaves", "record", "rows_in_order"]
