"""Capture into the store: scanned workspace files become a stored tree.

Files the stat cache (:mod:`runicorn.snapshot.statcache`) vouches for are not read
again; when it vouches for all of them and their tree is stored, nothing is written.
The rest are ingested in few large batches (one group sync each) by a few threads,
and the tree's pages are cut again only where they hold a file that was read: the
leaves of the root's last tree are taken over elsewhere.
"""

from __future__ import annotations

import os
import stat
from bisect import bisect_left
import threading
import time
from collections.abc import Callable, Iterable
from operator import itemgetter
from pathlib import Path
from typing import Any

from runicorn.errors import (
    BlobNotFoundError,
    ChangedWhileReadingError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
)
from runicorn.filestat import FileStat
from runicorn.hashing import sha256_bytes
from runicorn.snapshot import statcache
from runicorn.snapshot.scan import cycle_gc_paused
from runicorn.snapshot.statcache import RACY_NS
from runicorn.store.tree_format import (
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    LeafSpan,
    TreeEntry,
    build_pages_from_lines,
    mode_of,
    path_key,
    tree_id_of,
)
from runicorn.workers import run_groups, share, worker_count

# Commits of one snapshot when gc keeps taking blobs the stat cache vouched for.
_COMMIT_ATTEMPTS = 3
# The slow path lets the cyclic collector run again only when it reads more files than
# this: its first run would walk every object of the scan (tenths of a second at
# 100,000 files) for a few files' worth of garbage.
_RESUME_GC_AFTER = 4096
# One batch = one group commit (two syncfs calls).  Few, large batches let the disk
# write back large files while small ones are read; the store bounds its memory itself.
_INGEST_BATCH_FILES = 16384
_INGEST_BATCH_BYTES = 2 << 30

Progress = Callable[[int, int], None]


def capture_tree(
    store: Any,
    root: Path,
    files: list[tuple[str, str, FileStat]],
    *,
    source: str,
    progress: Progress | None = None,
    want_entries: bool = True,
    keeper: tuple[str, str | None] | None = None,
) -> tuple[str, dict[str, TreeEntry] | None, int, int]:
    """Put the scanned files into the store as a tree, using and updating the stat cache.

    Returns ``(tree, entries, files_read, total_bytes)``; ``entries`` is None unless
    ``want_entries``.
    ``keeper`` is the ref (kind, name; None for the tree id) the caller will keep the
    tree alive with: when it already names the stored tree, nothing is written.
    ``files`` is sorted in place (by absolute path, the stat cache's order).

    Raises:
        RunicornError: a file vanished or changed while being read (naming it).
    """
    started_ns = time.time_ns()
    with cycle_gc_paused() as resume_gc:
        return _capture(store, root, files, started_ns, progress, want_entries, keeper, resume_gc)


def _capture(
    store: Any,
    root: Path,
    files: list[tuple[str, str, FileStat]],
    started_ns: int,
    progress: Progress | None,
    want_entries: bool,
    keeper: tuple[str, str | None] | None,
    resume_gc: Callable[[], None],
) -> tuple[str, dict[str, TreeEntry] | None, int, int]:
    """:func:`capture_tree` with the cyclic collector paused (the slow path resumes it)."""
    # Per file, only what the fast path needs: the scan's own tuple and its hash (two
    # parallel lists), the tree id's line, the blob's size.  The slow path builds more.
    vouched: list[tuple[str, str, FileStat]] = []
    vouched_shas: list[str] = []
    to_read: list[tuple[str, str, FileStat, str]] = []
    links: dict[str, bytes] = {}
    stale: list[tuple[str]] = []  # cache rows of files no longer in the workspace
    trusted_bytes = 0
    lines: list[tuple[str, str, str]] = []  # (path, mode, sha256) of trusted files, for the tree id
    sizes: dict[str, int] = {}  # sha256 -> size of the trusted files' blobs
    S_IFMT, IFLNK, racy = 0o170000, stat.S_IFLNK, RACY_NS
    # The files in the cache's order, merged with its rows as they are read: a dict of
    # every row would cost more memory than the scan itself.
    files.sort(key=itemgetter(1))
    _, end = statcache.cache_bounds(root)
    past_end = (end,)  # after the last row: sorts after every path below root
    with statcache.rows_in_order(store, root) as (rows, generation):
        next_row = rows.__next__
        row: tuple[Any, ...] = next(rows, past_end)
        for item in files:
            rel, full, st = item
            while row[0] < full:  # rows passed over name files that are gone
                stale.append((row[0],))
                try:
                    row = next_row()
                except StopIteration:
                    row = past_end
            if row[0] == full:
                cached: tuple[Any, ...] | None = row
                try:
                    row = next_row()
                except StopIteration:
                    row = past_end
            else:
                cached = None
            st_mode = st.st_mode
            if st_mode & S_IFMT == IFLNK:
                try:
                    links[rel] = os.fsencode(os.readlink(full))
                except FileNotFoundError:
                    raise RunicornError(f"{full}: vanished during the snapshot of {root}; try again") from None
                continue
            mode = MODE_EXEC if st_mode & 0o100 else MODE_FILE  # as mode_of, without the call
            if cached is None:
                to_read.append((rel, full, st, mode))
                continue
            # cached: path, dev, ino, size, mtime_ns, ctime_ns, mode, sha256, recorded_ns
            mtime = st.st_mtime_ns
            if (
                cached[4] == mtime
                and cached[3] == st.st_size
                and cached[2] == st.st_ino
                and cached[1] == st.st_dev
                and cached[5] == st.st_ctime_ns
                and cached[6] == mode
                and mtime < cached[8] - racy
            ):
                sha = cached[7]
                vouched.append(item)
                vouched_shas.append(sha)
                lines.append((rel, mode, sha))
                sizes[sha] = cached[3]
                trusted_bytes += cached[3]
            else:
                to_read.append((rel, full, st, mode))
        while row is not past_end:
            stale.append((row[0],))
            row = next(rows, past_end)
    link_shas = {rel: sha256_bytes(t) for rel, t in links.items()}
    lines += [(rel, MODE_LINK, sha) for rel, sha in link_shas.items()]
    sizes.update({link_shas[rel]: len(t) for rel, t in links.items()})
    total = trusted_bytes + sum(len(t) for t in links.values())
    found = (
        None
        if to_read
        else _existing_tree(store, vouched, vouched_shas, links, link_shas, want_entries, keeper, lines, sizes)
    )
    if found is not None:
        if stale:
            statcache.record(store, root, generation, [], stale)
        tree, entries = found
        return tree, entries, 0, total
    if len(to_read) > _RESUME_GC_AFTER:
        resume_gc()  # reading many files makes garbage of its own (and may run long)
    captured = _Capture(
        store, root, started_ns, progress, lines, sizes, (vouched, vouched_shas, trusted_bytes), to_read, link_shas
    )
    captured.read_changed(links)
    tree, spans, known = captured.store_tree(statcache.known_leaves(store, root, generation) if lines else {})
    statcache.record(store, root, generation, captured.updates, stale, (known, spans))
    entries = captured.entries() if want_entries else None
    return tree, entries, captured.files_read, captured.total


def _existing_tree(
    store: Any,
    vouched: list[tuple[str, str, FileStat]],
    vouched_shas: list[str],
    links: dict[str, bytes],
    link_shas: dict[str, str],
    want_entries: bool,
    keeper: tuple[str, str | None] | None,
    lines: list[tuple[str, str, str]],
    sizes: dict[str, int],
) -> tuple[str, dict[str, TreeEntry] | None] | None:
    """Fast path when the stat cache vouches for every file: (tree, entries) if stored.

    ``vouched`` (the scanned files the cache vouches for) and ``vouched_shas`` (their
    hashes) are parallel lists; ``lines`` (every file's ``(path, mode, sha256)``, sorted
    here in tree-id order) and ``sizes`` (their blobs' sizes) come from the caller's pass
    over the stat cache.  None when the tree is not stored.

    ``entries`` is None unless ``want_entries``.  The tree's existence is checked and
    its ``touched_at`` bumped in one write transaction, so a concurrent gc either ran
    before (and the tree is gone: slow path) or must wait the grace period; its blobs
    are protected by the tree itself.  When the ref that will keep the tree alive
    (``keeper``: kind and name, with the tree id in place of ``None`` as name) already
    names it, no gc can take it, so a read suffices and nothing is written.

    A stored tree is returned only when it is restorable: every blob and page file is
    there with the size the index records (one ``stat`` per blob and page).  A lost, quarantined or resized
    blob sends the snapshot down the slow path, which re-reads exactly those files from
    the workspace and so stores their bytes again.
    """
    # Paths come from our own directory walk (already checked), so no re-validation here.
    tree = tree_id_of(lines)
    if not os.path.exists(store.manifest_path(tree)):
        return None
    if not _blob_files_intact(store, sizes) or not _blob_files_intact(store, store.tree_page_sizes(tree)):
        return None  # (the tree's pages live among the blobs)
    if keeper is None or not _kept_by(store, tree, keeper):
        if not store.touch_tree(tree):
            return None
    if not want_entries:
        return tree, None
    entries = {rel: TreeEntry(sha, mode_of(st.st_mode), st.st_size) for (rel, _, st), sha in zip(vouched, vouched_shas)}
    entries.update({rel: TreeEntry(link_shas[rel], MODE_LINK, len(t)) for rel, t in links.items()})
    return tree, entries


def _blob_files_intact(store: Any, sizes: dict[str, int]) -> bool:
    """Whether every blob of ``sizes`` (sha256 -> size) is in ``blobs/`` with its size.

    One ``stat`` per distinct blob: the unchanged re-snapshot stays a metadata pass, and
    the blob files are in the same page cache as the index.  (Their bytes are checked by
    ``runicorn verify --deep`` and by every reader, :mod:`runicorn.store.reader`.)
    """
    return not store.blob_files_off(sizes, first=True)


def _kept_by(store: Any, tree: str, keeper: tuple[str, str | None]) -> bool:
    """Whether the tree is stored and the ref ``keeper`` names it, in one read snapshot."""
    kind, name = keeper
    return bool(store.tree_kept_by(tree, kind, name or tree))


class _Capture:
    """The slow path: check the vouched files' blobs, read the rest, store the tree.

    The blobs the stat cache vouches for get one ``stat`` each (a lost or resized file is
    read again) and no hold: the transaction that commits the tree checks that the index
    still has every blob of the leaves it lacks, and the files of any a gc took meanwhile
    are read again and the tree committed again.  Leaves of the root's last tree that
    hold no file read this time are taken over, not cut again
    (:func:`runicorn.store.tree_format.build_pages_from_lines`), so a one-file change
    costs the pages on its path, not a pass over every file's line.
    """

    def __init__(
        self,
        store: Any,
        root: Path,
        started_ns: int,
        progress: Progress | None,
        lines: list[tuple[str, str, str]],
        sizes: dict[str, int],
        vouched: tuple[list[tuple[str, str, FileStat]], list[str], int],
        to_read: list[tuple[str, str, FileStat, str]],
        link_shas: dict[str, str],
    ) -> None:
        """``vouched``: the files the cache vouches for, their hashes (parallel lists)
        and their total size."""
        self.store, self.root, self.started_ns, self.progress = store, root, started_ns, progress
        self.lines, self.sizes = lines, sizes
        self._vouched_lists = vouched[:2]
        self._vouched: dict[str, tuple[tuple[str, str, FileStat], str]] | None = None
        self.vouched_bytes = vouched[2]
        self.read_bytes = 0  # of the files read and the links
        self.to_read = to_read
        self.read_paths: set[str] = set()  # paths whose line comes from a read, not the cache
        self.held: set[str] = set()  # blobs this snapshot ingested (and so holds)
        self.updates: list[tuple[Any, ...]] = []
        self.total = 0  # of every file's size, once the tree is stored
        self.files_read = 0
        # ``sizes`` has the vouched files' blobs and the links' (stored again below).
        off = set(store.blob_files_off(sizes)) - set(link_shas.values())
        if off:
            self._forget({rel for rel, (_, sha) in self.vouched.items() if sha in off})

    @property
    def vouched(self) -> dict[str, tuple[tuple[str, str, FileStat], str]]:
        """The files the cache vouches for (and whose blobs are in place), by path:
        ``((rel, full, lstat), sha256)``; built only when one has to be read again."""
        if self._vouched is None:
            self._vouched = {item[0]: (item, sha) for item, sha in zip(*self._vouched_lists)}
        return self._vouched

    def _forget(self, rels: set[str]) -> None:
        """Read the vouched files ``rels`` again (their blobs are gone or damaged)."""
        for rel in rels:
            (rel, full, st), _ = self.vouched.pop(rel)
            self.vouched_bytes -= st.st_size
            self.to_read.append((rel, full, st, mode_of(st.st_mode)))
        self.lines[:] = [line for line in self.lines if line[0] not in rels]
        kept = {line[2] for line in self.lines}
        for sha in [s for s in self.sizes if s not in kept]:
            del self.sizes[sha]

    def read_changed(self, links: dict[str, bytes]) -> None:
        """Read the files to read (into the store, their lines added) and store the links."""
        for rel in links:
            self.read_paths.add(rel)
        for target in dict.fromkeys(links.values()):
            info = self.store.ingest_bytes(target)  # its lines are in already
            self.held.add(info.sha256)
        self.read_bytes += sum(len(t) for t in links.values())
        self._read(self.to_read)

    def _read(self, items: list[tuple[str, str, FileStat, str]]) -> None:
        store, root, progress = self.store, self.root, self.progress
        lock = threading.Lock()
        # Progress in bytes: cached files count as done, symlinks are not counted.
        done = self.vouched_bytes
        total = done + sum(it[2].st_size for it in items)
        if progress:
            progress(done, total)

        def work(group: list[tuple[str, str, FileStat, str]]) -> None:
            nonlocal done
            for batch in _batches(group):
                try:
                    infos = store.ingest_files([full for _, full, _, _ in batch])
                except FileNotFoundError as exc:
                    raise RunicornError(
                        f"{exc.filename}: vanished during the snapshot of {root}; nothing was recorded, try again"
                    ) from None
                except ChangedWhileReadingError as exc:
                    raise RunicornError(f"{exc}; nothing was recorded, try again") from None
                except (StorageFullError, StoreWriteError):
                    raise  # the store's side, not the source's: its own message says so
                except OSError as exc:
                    raise RunicornError(
                        f"{exc.filename or root}: cannot be read ({exc.strerror}); "
                        f"exclude it in .rnignore or fix its permissions"
                    ) from None
                with lock:
                    for (rel, full, st, mode), info in zip(batch, infos):
                        self.lines.append((rel, mode, info.sha256))
                        self.sizes[info.sha256] = info.size
                        self.held.add(info.sha256)
                        self.read_paths.add(rel)
                        self.updates.append(
                            (
                                full,
                                st.st_dev,
                                st.st_ino,
                                info.size,
                                st.st_mtime_ns,
                                st.st_ctime_ns,
                                mode,
                                info.sha256,
                                self.started_ns,
                            )
                        )
                    read = sum(info.size for info in infos)
                    self.read_bytes += read
                    done += read
                    if progress:
                        progress(done, total)

        groups = share(items, worker_count(len(items), sum(it[2].st_size for it in items)), lambda it: it[2].st_size)
        run_groups(work, groups)
        self.files_read += len(items)

    def store_tree(self, known: dict[str, LeafSpan]) -> tuple[str, list[LeafSpan], dict[str, LeafSpan]]:
        """Store the tree of the lines: ``(tree, its leaves, the known leaves used)``.

        Raises:
            BlobNotFoundError: gc keeps taking blobs the cache vouched for.
        """
        for attempt in range(_COMMIT_ATTEMPTS):
            tree = tree_id_of(self.lines)  # sorts the lines in tree-id order
            pages, spans = build_pages_from_lines(self.lines, self.sizes, known=known, changed=self._changed(known))
            self.total = self.vouched_bytes + self.read_bytes
            try:
                self.store.put_tree_pages(
                    tree,
                    pages,
                    file_count=len(self.lines),
                    total_size=self.total,
                    blobs=self.sizes.keys(),
                    source=str(self.root),
                    held=self.held,
                )
                return tree, spans, known
            except BlobNotFoundError as exc:
                gone = set(getattr(exc, "missing", ()))
                again = {rel for rel, (_, sha) in self.vouched.items() if sha in gone}
                if not again or attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                # A gc took them since they were checked: their files are read again.
                start = len(self.to_read)
                self._forget(again)
                self._read(self.to_read[start:])
        raise AssertionError("unreachable")

    def _changed(self, known: dict[str, LeafSpan]) -> list[int]:
        """The indices (in the sorted lines) of the lines not vouched for by the cache."""
        if not known or not self.read_paths:
            return []
        lines, read = self.lines, self.read_paths
        if len(read) * 64 > len(lines):
            return [i for i, line in enumerate(lines) if line[0] in read]
        # Lines are in path-byte order (tree_id_of): bisect by the same key.
        return sorted(bisect_left(lines, path_key(rel), key=lambda line: path_key(line[0])) for rel in read)

    def entries(self) -> dict[str, TreeEntry]:
        """The tree's entries (for a zip of it)."""
        sizes = self.sizes
        return {rel: TreeEntry(sha, mode, sizes[sha]) for rel, mode, sha in self.lines}


def _batches(items: list[tuple[str, str, FileStat, str]]) -> Iterable[list[tuple[str, str, FileStat, str]]]:
    # Batches bound the work lost on an error and give progress; each costs one group sync.
    batch: list[tuple[str, str, FileStat, str]] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[2].st_size
        if len(batch) >= _INGEST_BATCH_FILES or size >= _INGEST_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


__all__ = ["capture_tree"]
