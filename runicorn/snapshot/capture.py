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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from runicorn.errors import (
    BlobNotFoundError,
    ChangedWhileReadingError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
)
from runicorn.filestat import FileStat, FileStats
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
# A file to read: its path relative to the root, its lstat, its mode (absolute paths are
# made when needed: one string fewer per file of a first snapshot).
_ToRead = tuple[str, FileStat, str]


class Captured(NamedTuple):
    """What :func:`capture_tree` stored: the tree, and what the snapshot reports of it."""

    tree: str
    entries: dict[str, TreeEntry] | None  # unless asked for, None
    files_read: int  # files hashed this time (the others came from the stat cache)
    total_bytes: int
    file_count: int
    mtimes: dict[str, float] | None  # each file's mtime, with the entries


def capture_tree(
    store: Any,
    root: Path,
    files: Iterable[tuple[str, str, os.stat_result]],
    *,
    source: str,
    progress: Progress | None = None,
    want_entries: bool = True,
    keeper: tuple[str, str | None] | None = None,
) -> Captured:
    """Put the scanned files into the store as a tree, using and updating the stat cache.

    ``files`` are ``(relpath, abspath, lstat)`` in path order, as
    :func:`runicorn.snapshot.scan.iter_workspace` yields them (consumed once, as they
    come: a file the stat cache vouches for costs its tree line only).  ``entries`` and
    ``mtimes`` are None unless ``want_entries``.  ``keeper`` is the ref (kind, name;
    None for the tree id) the caller will keep the tree alive with: when it already names
    the stored tree, nothing is written.

    Raises:
        RunicornError: a file vanished or changed while being read (naming it).
        (And whatever iterating ``files`` raises, before anything is stored.)
    """
    started_ns = time.time_ns()
    with cycle_gc_paused() as resume_gc:
        return _capture(store, root, files, started_ns, progress, want_entries, keeper, resume_gc)


def _capture(
    store: Any,
    root: Path,
    files: Iterable[tuple[str, str, os.stat_result]],
    started_ns: int,
    progress: Progress | None,
    want_entries: bool,
    keeper: tuple[str, str | None] | None,
    resume_gc: Callable[[], None],
) -> Captured:
    """:func:`capture_tree` with the cyclic collector paused (the slow path resumes it)."""
    # Per file the cache vouches for, only its tree line and its blob's size are kept.
    to_read: list[_ToRead] = []
    links: dict[str, bytes] = {}
    stale: list[tuple[str]] = []  # cache rows of files no longer in the workspace
    trusted_bytes = file_count = 0
    lines: list[tuple[str, str, str]] = []  # (path, mode, sha256) of trusted files, for the tree id
    sizes: dict[str, int] = {}  # sha256 -> size of the trusted files' blobs
    mtimes: dict[str, float] | None = {} if want_entries else None
    S_IFMT, IFLNK, racy = 0o170000, stat.S_IFLNK, RACY_NS
    compact = FileStats().of  # only the files kept to be read (a vouched one is compared only)
    # The files arrive in the cache's order and are merged with its rows as they are
    # read: a dict of every row would cost more memory than the files themselves.
    _, end = statcache.cache_bounds(root)
    past_end = (end,)  # after the last row: sorts after every path below root
    rows, generation = statcache.rows_in_order(store, root)
    next_row = rows.__next__
    row: tuple[Any, ...] = next(rows, past_end)
    for rel, full, st in files:
        file_count += 1
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
        if mtimes is not None:
            mtimes[rel] = st.st_mtime_ns / 1e9
        st_mode = st.st_mode
        if st_mode & S_IFMT == IFLNK:
            try:
                links[rel] = os.fsencode(os.readlink(full))
            except FileNotFoundError:
                raise RunicornError(f"{full}: vanished during the snapshot of {root}; try again") from None
            continue
        mode = MODE_EXEC if st_mode & 0o100 else MODE_FILE  # as mode_of, without the call
        if cached is None:
            to_read.append((rel, compact(st), mode))
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
            lines.append((rel, mode, sha))
            sizes[sha] = cached[3]
            trusted_bytes += cached[3]
        else:
            to_read.append((rel, compact(st), mode))
    while row is not past_end:
        stale.append((row[0],))
        row = next(rows, past_end)
    link_shas = {rel: sha256_bytes(t) for rel, t in links.items()}
    lines += [(rel, MODE_LINK, sha) for rel, sha in link_shas.items()]
    sizes.update({link_shas[rel]: len(t) for rel, t in links.items()})
    total = trusted_bytes + sum(len(t) for t in links.values())
    tree = None if to_read else _existing_tree(store, keeper, lines, sizes)
    if tree is not None:
        if stale:
            statcache.record(store, root, generation, [], stale)
        return Captured(tree, _entries(lines, sizes) if want_entries else None, 0, total, file_count, mtimes)
    if len(to_read) > _RESUME_GC_AFTER:
        resume_gc()  # reading many files makes garbage of its own (and may run long)
    captured = _Capture(store, root, started_ns, progress, lines, sizes, trusted_bytes, to_read, link_shas)
    captured.read_changed(links)
    tree, spans, known = captured.store_tree(statcache.known_leaves(store, root, generation) if lines else {})
    statcache.record(store, root, generation, captured.cache_rows(), stale, (known, spans))
    entries = _entries(lines, sizes) if want_entries else None
    return Captured(tree, entries, captured.files_read, captured.total, file_count, mtimes)


def _entries(lines: list[tuple[str, str, str]], sizes: dict[str, int]) -> dict[str, TreeEntry]:
    """The tree's entries (for a zip of it) from its lines and its blobs' sizes."""
    return {rel: TreeEntry(sha, mode, sizes[sha]) for rel, mode, sha in lines}


def _existing_tree(
    store: Any,
    keeper: tuple[str, str | None] | None,
    lines: list[tuple[str, str, str]],
    sizes: dict[str, int],
) -> str | None:
    """Fast path when the stat cache vouches for every file: the tree, if it is stored.

    ``lines`` (every file's ``(path, mode, sha256)``, sorted here in tree-id order) and
    ``sizes`` (their blobs' sizes) come from the caller's pass over the stat cache.
    None when the tree is not stored.

    The tree's existence is checked and
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
    return tree


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
        vouched_bytes: int,
        to_read: list[_ToRead],
        link_shas: dict[str, str],
    ) -> None:
        """``lines`` holds the lines of the files the cache vouches for (their blobs
        sized in ``sizes``, ``vouched_bytes`` in all) and of the links."""
        self.store, self.root, self.started_ns, self.progress = store, root, started_ns, progress
        self.base = os.path.join(str(root), "")  # root with one trailing separator, as the walk joins it
        self.lines, self.sizes = lines, sizes
        self.vouched_bytes = vouched_bytes
        self.read_bytes = 0  # of the files read and the links
        self.to_read = to_read
        # Each file read's hash, by path (its line and its cache row are made of it).
        self.read_shas: dict[str, str] = {}
        self.link_paths: list[str] = []
        self.held: set[str] = set()  # blobs this snapshot ingested (and so holds)
        self.total = 0  # of every file's size, once the tree is stored
        self.files_read = 0
        # ``sizes`` has the vouched files' blobs and the links' (stored again below).
        off = set(store.blob_files_off(sizes)) - set(link_shas.values())
        if off:
            self._forget(self._vouched_with(off))

    def _vouched_with(self, shas: set[str]) -> dict[str, str]:
        """The files the cache vouched for (not read this time) whose blob is one of
        ``shas``: path -> blob."""
        read = self.read_shas
        return {rel: sha for rel, mode, sha in self.lines if sha in shas and mode != MODE_LINK and rel not in read}

    def _forget(self, vouched: dict[str, str]) -> None:
        """Read the vouched files (path -> blob) again: their blobs are gone or damaged.

        Raises:
            RunicornError: one of them is no longer a regular file.
        """
        for rel, sha in vouched.items():
            full = self.base + rel
            try:
                st = FileStats().of(os.lstat(full))
            except FileNotFoundError:
                raise RunicornError(f"{full}: vanished during the snapshot of {self.root}; try again") from None
            if not stat.S_ISREG(st.st_mode):
                raise RunicornError(f"{full}: changed during the snapshot of {self.root}; try again")
            self.vouched_bytes -= self.sizes[sha]
            self.to_read.append((rel, st, mode_of(st.st_mode)))
        self.lines[:] = [line for line in self.lines if line[0] not in vouched]
        kept = {line[2] for line in self.lines}
        for sha in [s for s in self.sizes if s not in kept]:
            del self.sizes[sha]

    def read_changed(self, links: dict[str, bytes]) -> None:
        """Read the files to read (into the store, their lines added) and store the links."""
        self.link_paths = list(links)
        for target in dict.fromkeys(links.values()):
            info = self.store.ingest_bytes(target)  # its lines are in already
            self.held.add(info.sha256)
        self.read_bytes += sum(len(t) for t in links.values())
        self._read(self.to_read)

    def _read(self, items: list[_ToRead]) -> None:
        store, root, progress, base = self.store, self.root, self.progress, self.base
        lock = threading.Lock()
        # Progress in bytes: cached files count as done, symlinks are not counted.
        done = self.vouched_bytes
        total = done + sum(it[1].st_size for it in items)
        if progress:
            progress(done, total)

        def work(group: list[_ToRead]) -> None:
            nonlocal done
            for batch in _batches(group):
                try:
                    infos = store.ingest_files([base + rel for rel, _, _ in batch])
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
                    for (rel, _, mode), info in zip(batch, infos):
                        self.lines.append((rel, mode, info.sha256))
                        self.sizes[info.sha256] = info.size
                        self.held.add(info.sha256)
                        self.read_shas[rel] = info.sha256
                    read = sum(info.size for info in infos)
                    self.read_bytes += read
                    done += read
                    if progress:
                        progress(done, total)

        groups = share(items, worker_count(len(items), sum(it[1].st_size for it in items)), lambda it: it[1].st_size)
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
                again = self._vouched_with(gone)
                if not again or attempt == _COMMIT_ATTEMPTS - 1:
                    raise
                # A gc took them since they were checked: their files are read again.
                start = len(self.to_read)
                self._forget(again)
                self._read(self.to_read[start:])
        raise AssertionError("unreachable")

    def _changed(self, known: dict[str, LeafSpan]) -> list[int]:
        """The indices (in the sorted lines) of the lines not vouched for by the cache."""
        if not known or not (self.read_shas or self.link_paths):
            return []
        lines, read = self.lines, self.read_shas.keys() | self.link_paths
        if len(read) * 64 > len(lines):
            return [i for i, line in enumerate(lines) if line[0] in read]
        # Lines are in path-byte order (tree_id_of): bisect by the same key.
        return sorted(bisect_left(lines, path_key(rel), key=lambda line: path_key(line[0])) for rel in read)

    def cache_rows(self) -> Iterator[tuple[Any, ...]]:
        """The stat cache rows of the files read, made as they are written (a list of them
        would cost a tuple per file)."""
        shas, sizes, now = self.read_shas, self.sizes, self.started_ns
        base = self.base
        for rel, st, mode in self.to_read:
            sha = shas[rel]
            yield base + rel, st.st_dev, st.st_ino, sizes[sha], st.st_mtime_ns, st.st_ctime_ns, mode, sha, now


def _batches(items: list[_ToRead]) -> Iterable[list[_ToRead]]:
    # Batches bound the work lost on an error and give progress; each costs one group sync.
    batch: list[_ToRead] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[1].st_size
        if len(batch) >= _INGEST_BATCH_FILES or size >= _INGEST_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


__all__ = ["capture_tree"]
