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

And it keeps each root's *seal* (``stat_cache_seals``): the state of every ``blobs/<aa>``
folder when the root's last snapshot began checking its blobs (:class:`BlobCheck`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from runicorn.store.tree_format import LeafSpan
from runicorn.store.tree_lines import TreeLines

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
    seal: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Drop the ``stale`` paths' rows and write ``updates`` (rows as :func:`rows_in_order` gives
    them), in one transaction; ``leaves`` (those :func:`known_leaves` gave, and those of
    the tree just stored) and ``seal`` (:attr:`BlobCheck.seal`) become ``root``'s, unless
    the cache moved past ``generation``."""
    store.stat_cache.update(
        updates, [p for (p,) in stale], root=str(root), generation=generation, leaves=leaves, seal=seal
    )


class BlobCheck:
    """Which blobs a snapshot of ``root`` must ``stat`` to know they are still in place.

    Made before the check starts.  A root's seal is recorded only by a snapshot that saw
    every blob its stat cache rows name in place after that moment (checked, or trusted
    as below, or stored by itself), and only for folders whose ``ctime`` was then at least
    ``RACY_NS`` old (a change in the same timestamp tick could leave it as it was).  Any
    later writer of rows checks its own blobs.  So while a folder keeps the state sealed,
    every blob of the root's rows in it is still there: no file came or went in it.  A
    symlink's blob has no row: it is always checked.  Nothing is trusted in a store whose
    blobs were ever hard-linked out (a blob's size could change with no change of its
    folder; ``Store.blob_folder_states``).
    """

    def __init__(self, store: Any, root: Path, generation: int) -> None:
        self.sealed: dict[str, tuple[int, ...]] = store.stat_cache.seal(str(root), generation)
        now = time.time_ns()
        states = store.blob_folder_states()
        #: prefixes (``aa``) of the folders whose blobs need no ``stat``
        self.trusted = frozenset(p for p, state in self.sealed.items() if states.get(p) == state)
        #: what to record as the root's seal once its blobs are all known to be in place
        self.seal: dict[str, tuple[int, ...]] = {p: st for p, st in states.items() if st[3] < now - RACY_NS}

    def unchecked(self, lines: TreeLines, always: Iterable[tuple[str, int]] = ()) -> Iterable[tuple[str, int]]:
        """The ``(sha256, size)`` pairs of the blobs of ``lines`` outside the trusted
        folders, then ``always`` (the symlinks' blobs: no cache row vouches for them)."""
        return chain(lines.blob_sizes(skip_prefixes=self.trusted), always)

    def reseal(self, store: Any, root: Path, generation: int) -> None:
        """Record :attr:`seal` when it differs from the one read (a snapshot that stored
        nothing: its blobs were all seen in place)."""
        if self.seal != self.sealed:
            store.stat_cache.reseal(str(root), generation, self.seal)


__all__ = ["RACY_NS", "BlobCheck", "cache_bounds", "known_leaves", "record", "rows_in_order"]
