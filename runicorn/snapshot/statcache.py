"""The snapshot stat cache: hashes of workspace files that did not change since they were read.

A row per workspace directory (``stat_cache_dirs``, ``schema/README.md``) holds its
regular files' names, their lstat fields (device, inode, size, mtime_ns, ctime_ns,
st_mode), the SHA-256 of each one's content and when each was hashed.

"Racily clean" rule: a file's cached hash is reused only when its lstat fields match its
row's *and* its mtime is at least ``RACY_NS`` older than the moment its hash was taken.
A file written in the same timestamp tick as the hash (or within the coarsest common
mtime granularity, FAT's 2 s) could change again without its mtime moving, so such an
entry is re-read; the re-read refreshes its time so the next snapshot can trust it.  A
row is *settled* when every file in it passes that test: a directory whose files match
its settled row exactly (the same names, every lstat field equal) is vouched for by one
comparison of bytes, not one per file.

With the rows, the cache keeps the leaf pages of the tree each root's last snapshot
stored (``schema/feature-tables.sql``, ``stat_cache_leaves``): where no file changed, the
next snapshot takes those leaves over instead of cutting its files into pages again.

And it keeps each root's *seal* (``stat_cache_seals``): the state of every ``blobs/<aa>``
folder when the root's last snapshot began checking its blobs (:class:`BlobCheck`).
"""

from __future__ import annotations

import os
import struct
import sys
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any

from runicorn.store.tree_format import LeafSpan
from runicorn.store.tree_lines import TreeLines

RACY_NS = 2_000_000_000
STAT_BYTES = 48  # a file's lstat fields in a row: six 64-bit integers
DIGEST_BYTES = 32
_STAT_FIELDS = attrgetter("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns", "st_mode")
_SWAP = sys.byteorder != "little"  # rows hold little-endian integers
_WRAP = 1 << 64


def pack_stats(stats: Sequence[os.stat_result]) -> bytes:
    """The lstat fields of ``stats`` as a row holds them: per file, its device, inode,
    size, mtime_ns, ctime_ns and st_mode, each a little-endian signed 64-bit integer (an
    inode or device number of 2**63 or more as its two's complement)."""
    layout = f"<{6 * len(stats)}q"
    try:
        return struct.pack(layout, *chain.from_iterable(map(_STAT_FIELDS, stats)))
    except struct.error:  # a number of 2**63 or more
        return struct.pack(layout, *[f - _WRAP if f >= 1 << 63 else f for st in stats for f in _STAT_FIELDS(st)])


def integers(data: bytes) -> array[int]:
    """A row's little-endian 64-bit integers (``stats``, ``recorded``)."""
    out = array("q")
    out.frombytes(data)
    if _SWAP:
        out.byteswap()
    return out


def cache_bounds(root: Path) -> tuple[str, str]:
    """``[lo, hi)``: every absolute path below ``root`` lies in it."""
    base = str(root).rstrip("/") + "/"
    return base, base[:-1] + "0"  # '0' sorts right after '/'


class CachedDir:
    """One directory's row, checked: what it says of the files it names.

    A row whose columns disagree in length (a damaged index) names no file."""

    __slots__ = ("dir", "names", "stats", "digests", "recorded", "settled", "_where")

    def __init__(self, row: tuple[Any, ...]) -> None:
        self.dir, names, stats, digests, recorded, settled = row
        count = names.count("/") + 1 if isinstance(names, str) and names else 0
        if not (
            isinstance(names, str)
            and isinstance(stats, bytes)
            and isinstance(digests, bytes)
            and isinstance(recorded, bytes)
            and len(stats) == STAT_BYTES * count
            and len(digests) == DIGEST_BYTES * count
            and len(recorded) == 8 * count
        ):
            names, stats, digests, recorded, settled = "", b"", b"", b"", 0
        self.names: str = names
        self.stats: bytes = stats
        self.digests: bytes = digests
        self.recorded = integers(recorded)
        self.settled = settled == 1
        self._where: dict[str, int] | None = None

    def vouches_for_all(self, names: str, stats: bytes) -> bool:
        """Whether the row vouches for every file of a directory whose regular files are
        ``names`` (joined by "/") with lstat fields ``stats`` (:func:`pack_stats`)."""
        return self.settled and names == self.names and stats == self.stats

    def vouch(self, name: str, stats: bytes, mtime_ns: int) -> tuple[bytes, int] | None:
        """The digest and hashing time the row holds for file ``name`` whose lstat fields
        are ``stats`` (one file's :func:`pack_stats`), if it vouches for it: the fields
        match and the file is not racily clean."""
        where = self._where
        if where is None:
            where = self._where = {n: k for k, n in enumerate(self.names.split("/"))} if self.names else {}
        k = where.get(name)
        if k is None or self.stats[k * STAT_BYTES : (k + 1) * STAT_BYTES] != stats:
            return None
        recorded = self.recorded[k]
        if not mtime_ns < recorded - RACY_NS:
            return None
        return self.digests[k * DIGEST_BYTES : (k + 1) * DIGEST_BYTES], recorded


def dirs_in_order(store: Any, root: Path) -> tuple[Iterator[tuple[Any, ...]], int]:
    """The stat cache rows of the directories below ``root`` (and of ``root``) in path
    order, read as they are consumed; and the cache's generation before them."""
    lo, hi = cache_bounds(root)
    return store.stat_cache.dirs_in_order(lo, hi)


def dir_row(directory: str, names: str, stats: bytes, digests: bytes, recorded: array[int]) -> tuple[Any, ...]:
    """The row of ``directory`` (absolute, ending in "/") whose regular files are
    ``names`` (joined by "/"), with lstat fields ``stats`` (:func:`pack_stats`), content
    ``digests`` and hashing times ``recorded`` (ns), each in the files' order."""
    mtimes = integers(stats)[3::6]
    settled = all(m < r - RACY_NS for m, r in zip(mtimes, recorded))
    times = array("q", recorded)
    if _SWAP:
        times.byteswap()
    return directory, names, stats, digests, times.tobytes(), int(settled)


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
    stale: Sequence[str],
    leaves: tuple[Mapping[str, LeafSpan], Sequence[LeafSpan]] | None = None,
    seal: Mapping[str, tuple[int, ...]] | None = None,
) -> None:
    """Drop the ``stale`` directories' rows and write ``updates`` (rows as :func:`dir_row`
    makes them), in one transaction; ``leaves`` (those :func:`known_leaves` gave, and
    those of the tree just stored) and ``seal`` (:attr:`BlobCheck.seal`) become
    ``root``'s, unless the cache moved past ``generation``."""
    store.stat_cache.update(updates, stale, root=str(root), generation=generation, leaves=leaves, seal=seal)


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


__all__ = [
    "RACY_NS",
    "BlobCheck",
    "CachedDir",
    "cache_bounds",
    "dir_row",
    "dirs_in_order",
    "integers",
    "known_leaves",
    "pack_stats",
    "record",
]
