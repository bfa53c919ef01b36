"""Capture into the store: scanned workspace files become a stored tree.

Files the stat cache (:mod:`runicorn.snapshot.statcache`) vouches for are not read
again; when it vouches for all of them and their tree is stored, nothing is written.
The rest are ingested in few large batches (one group sync each) by a few threads, or,
once the walk has found enough files to read, by worker processes that start reading
beside the walk (:class:`_EarlyRead`); and the tree's pages are cut again only where
they hold a file that was read: the leaves of the root's last tree are taken over elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from runicorn.errors import (
    BlobNotFoundError,
    ChangedWhileReadingError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
)
from runicorn.gcpause import cycle_gc_paused
from runicorn.hashing import sha256_bytes
from runicorn.snapshot import statcache
from runicorn.snapshot.scan import WalkedDir
from runicorn.store.tree_format import (
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    LeafSpan,
    TreeEntry,
    build_pages_from_lines,
    mode_of,
)
from runicorn.store.holds import Lease
from runicorn.store.tree_lines import TreeLines
from runicorn.workers import (
    PROCESSES_FROM_FILES,
    batches,
    processes_for,
    run_groups,
    share_indices,
    worker_count,
)

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
_PROCESS_BATCH_FILES = 4096
# Files to read the walk must have found for worker processes to start reading beside it.
_READ_EARLY_FROM = PROCESSES_FROM_FILES
_PROCESS_BATCH_BYTES = 256 << 20

Progress = Callable[[int, int], None]
_B = TypeVar("_B")  # a batch, as the reading gives it back


class _ToRead:
    """The files to read: each one's line in the tree's :class:`TreeLines` (its path, size
    and mode are there)."""

    __slots__ = ("line",)

    def __init__(self) -> None:
        self.line = array("I")  # a workspace has far fewer than 2**32 files

    def __len__(self) -> int:
        return len(self.line)

    def add(self, line: int) -> None:
        self.line.append(line)

    def renumber(self, moved: list[int]) -> None:
        """Follow the lines to their places after :meth:`TreeLines.sort`."""
        self.line = array("I", (moved[i] for i in self.line))


class _DirRecord:
    """A directory whose stat cache row is written again (it differs from its row, or
    had none): its regular files' names (joined by "/") and lstat fields
    (:func:`statcache.pack_stats`) as the walk found them, its row as read (or None; let
    go of once every file of the directory has been met), and for each file in turn its
    line and hashing time (None while every one is this snapshot's: a first snapshot
    keeps no time per file)."""

    __slots__ = ("base", "names", "stats", "row", "count", "lines", "recorded", "next")

    def __init__(self, base: str, names: str, stats: bytes, count: int, row: statcache.CachedDir | None) -> None:
        self.base, self.names, self.stats, self.count, self.row = base, names, stats, count, row
        self.lines = array("I")
        self.recorded: array[int] | None = None
        self.next = 0  # the position of the next regular file among the directory's

    def renumber(self, moved: list[int]) -> None:
        """Follow the lines to their places after :meth:`TreeLines.sort`."""
        self.lines = array("I", (moved[i] for i in self.lines))


def _dir_rows(lines: TreeLines, rewrite: list[_DirRecord], started_ns: int) -> Iterator[tuple[Any, ...]]:
    """The stat cache rows of the directories ``rewrite`` (their files' blobs known; a
    file without a time of its own was hashed by this snapshot, begun at ``started_ns``)."""
    for record in rewrite:
        recorded = record.recorded if record.recorded is not None else array("q", [started_ns]) * len(record.lines)
        yield statcache.dir_row(record.base, record.names, record.stats, lines.digests_at(record.lines), recorded)


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
    walk: Iterable[tuple[WalkedDir, int, int]],
    *,
    source: str,
    progress: Progress | None = None,
    want_entries: bool = True,
    keeper: tuple[str, str | None] | None = None,
) -> Captured:
    """Put the scanned files into the store as a tree, using and updating the stat cache.

    ``walk`` gives the workspace's directories and their files in path order, as
    :func:`runicorn.snapshot.scan.iter_workspace_dirs` does (consumed once, as it comes:
    a directory whose row vouches for all its files costs one comparison, a file the
    stat cache vouches for its tree line only).  ``entries`` and
    ``mtimes`` are None unless ``want_entries``.  ``keeper`` is the ref (kind, name;
    None for the tree id) the caller will keep the tree alive with: when it already names
    the stored tree, nothing is written.

    Raises:
        RunicornError: a file vanished or changed while being read (naming it).
        (And whatever iterating ``walk`` raises: no tree is stored, and what was read
        beside the walk is let go of, gc's to collect.)
    """
    started_ns = time.time_ns()
    with cycle_gc_paused() as resume_gc:
        return _capture(store, root, walk, started_ns, progress, want_entries, keeper, resume_gc)


def _capture(
    store: Any,
    root: Path,
    walk: Iterable[tuple[WalkedDir, int, int]],
    started_ns: int,
    progress: Progress | None,
    want_entries: bool,
    keeper: tuple[str, str | None] | None,
    resume_gc: Callable[[], None],
) -> Captured:
    """:func:`capture_tree` with the cyclic collector paused (the slow path resumes it)."""
    # Every file gets its line as the walk meets it (in tree order): the files of a
    # directory its row vouches for all at once, a file the row vouches for its line
    # only, one to read also a place among the files to read.
    lines = TreeLines()
    to_read = _ToRead()
    links: dict[int, bytes] = {}  # line -> target of each symlink (stored again each time)
    stale: list[str] = []  # rows of directories that hold no file now
    rewrite: list[_DirRecord] = []  # directories whose row is written again
    trusted_bytes = file_count = 0
    mtimes: dict[str, float] | None = {} if want_entries else None
    S_IFMT, IFLNK, EXEC, STAT, DIGEST = 0o170000, stat.S_IFLNK, 0o100, statcache.STAT_BYTES, statcache.DIGEST_BYTES
    # The directories arrive in the cache's order and are merged with its rows as they
    # are read: a dict of every row would cost more memory than the files themselves.
    _, end = statcache.cache_bounds(root)
    past_end = (end,)  # after the last row: sorts after every directory below root
    rows, generation = statcache.dirs_in_order(store, root)
    row: tuple[Any, ...] = next(rows, past_end)
    with contextlib.ExitStack() as held:
        early: _EarlyRead | None = None  # reading beside the walk, once it has found enough
        read_early_from = _READ_EARLY_FROM
        try:
            for directory, start, stop in walk:
                if start == stop:  # the walk enters the directory
                    base = directory.base
                    while row[0] < base:  # rows passed over are of directories gone
                        stale.append(row[0])
                        row = next(rows, past_end)
                    cached = None
                    if row[0] == base:
                        cached = statcache.CachedDir(row)
                        row = next(rows, past_end)
                    files = directory.files
                    regular = files
                    if directory.has_links:
                        regular = [(name, st) for name, st in files if st.st_mode & S_IFMT != IFLNK]
                    if not regular:
                        if cached is not None:
                            stale.append(base)
                        directory.state = None
                        continue
                    names = "/".join([name for name, _ in regular])
                    packed = statcache.pack_stats([st for _, st in regular])
                    row_holds = cached is not None and cached.vouches_for_all(names, packed)
                    if row_holds and regular is files:
                        directory.state = cached
                        continue
                    # Met file by file: a folder that differs from its row (then written
                    # again), or one whose symlinks come between its files (each link
                    # read; the row stands as it is).
                    directory.state = _DirRecord(base, names, packed, len(regular), cached)
                    if not row_holds:
                        rewrite.append(directory.state)
                    continue
                file_count += stop - start
                state, prefix, run = directory.state, directory.prefix, directory.files[start:stop]
                if mtimes is not None:
                    for name, st in run:
                        mtimes[prefix + name] = st.st_mtime_ns / 1e9
                if type(state) is statcache.CachedDir:  # vouched for, every file
                    fields = statcache.integers(state.stats[start * STAT : stop * STAT])
                    sizes = fields[2::6]
                    lines.extend_files(
                        [prefix + name for name, _ in run],
                        bytes(map(bool, map(EXEC.__and__, fields[5::6]))),
                        state.digests[start * DIGEST : stop * DIGEST],
                        sizes,
                    )
                    trusted_bytes += sum(sizes)
                    continue
                for name, st in run:
                    rel = prefix + name
                    st_mode = st.st_mode
                    if st_mode & S_IFMT == IFLNK:
                        full = directory.base + name
                        try:
                            target = os.fsencode(os.readlink(full))
                        except FileNotFoundError:
                            raise RunicornError(f"{full}: vanished during the snapshot of {root}; try again") from None
                        links[lines.add(rel, MODE_LINK, sha256_bytes(target), len(target))] = target
                        continue
                    assert state is not None  # (a directory with a regular file has one)
                    mode = MODE_EXEC if st_mode & EXEC else MODE_FILE  # as mode_of, without the call
                    k = state.next
                    state.next = k + 1
                    row_of_dir = state.row
                    vouched = None
                    if row_of_dir is not None:
                        vouched = row_of_dir.vouch(name, state.stats[k * STAT : (k + 1) * STAT], st.st_mtime_ns)
                        if k + 1 == state.count:
                            state.row = None  # every file met: its row is no longer needed
                    if vouched is not None:
                        if state.recorded is None:
                            state.recorded = array("q", [started_ns]) * k
                        state.lines.append(lines.add_digest(rel, mode, vouched[0], st.st_size))
                        state.recorded.append(vouched[1])
                        trusted_bytes += st.st_size
                        continue
                    if state.recorded is not None:
                        state.recorded.append(started_ns)
                    if early is not None:
                        with early.lock:  # its batches fill lines in meanwhile
                            line = lines.add_open(rel, mode, st.st_size)
                            to_read.add(line)
                        state.lines.append(line)
                        early.add(len(to_read) - 1, directory.base + name, st.st_size)
                        continue
                    line = lines.add_open(rel, mode, st.st_size)
                    to_read.add(line)
                    state.lines.append(line)
                    if len(to_read) == read_early_from:
                        processes = processes_for(read_early_from)
                        if processes:
                            resume_gc()  # reading many files makes garbage of its own (and may run long)
                            lease = held.enter_context(store.lease())
                            early = _EarlyRead(store, root, lease, processes, lines, to_read)
                            early.add_found()
            while row is not past_end:
                stale.append(row[0])
                row = next(rows, past_end)
            if early is not None:
                early.end_walk()
            with early.lock if early is not None else contextlib.nullcontext():
                moved = lines.sort()
                if moved is not None:
                    to_read.renumber(moved)
                    links = {moved[i]: target for i, target in links.items()}
                    for record in rewrite:
                        record.renumber(moved)
            total = trusted_bytes + sum(len(t) for t in links.values())
            check = statcache.BlobCheck(store, root, generation)
            tree = (
                None
                if to_read
                else _existing_tree(store, keeper, lines, check, [(lines.sha(i), lines.size(i)) for i in links])
            )
            if tree is not None:
                if stale or rewrite:
                    statcache.record(store, root, generation, _dir_rows(lines, rewrite, started_ns), stale)
                else:
                    check.reseal(store, root, generation)
                return Captured(tree, lines.entries() if want_entries else None, 0, total, file_count, mtimes)
            if early is None and len(to_read) > _RESUME_GC_AFTER:
                resume_gc()  # reading many files makes garbage of its own (and may run long)
            # What the snapshot stores is held under one lease, let go of when the tree (or a
            # failure) ends it: no string or count per blob is kept here.
            lease = early.lease if early is not None else held.enter_context(store.lease())
            captured = _Capture(
                store, root, started_ns, progress, lines, trusted_bytes, to_read, links, check, lease, early
            )
            captured.read_changed(early)
            tree, spans, known = captured.store_tree(statcache.known_leaves(store, root, generation) if lines else {})
        except BaseException:
            if early is not None:
                early.abort()  # its workers end after their batch, before the lease lets go
            raise
    # A row that vouched for bytes its file does not hold goes, unless written again: the
    # folder's files are read once more next time, not that file every time.
    stale.extend(captured.misvouched())
    statcache.record(store, root, generation, _dir_rows(lines, rewrite, started_ns), stale, (known, spans), check.seal)
    entries = lines.entries() if want_entries else None
    return Captured(tree, entries, captured.files_read, captured.total, file_count, mtimes)


def _existing_tree(
    store: Any,
    keeper: tuple[str, str | None] | None,
    lines: TreeLines,
    check: statcache.BlobCheck,
    link_blobs: list[tuple[str, int]],
) -> str | None:
    """Fast path when the stat cache vouches for every file: the tree, if it is stored.

    ``lines`` (every file's, in tree-id order) come from the caller's pass over the
    stat cache.  None when the tree is not stored.

    The tree's existence is checked and
    its ``touched_at`` bumped in one write transaction, so a concurrent gc either ran
    before (and the tree is gone: slow path) or must wait the grace period; its blobs
    are protected by the tree itself.  When the ref that will keep the tree alive
    (``keeper``: kind and name, with the tree id in place of ``None`` as name) already
    names it, no gc can take it, so a read suffices and nothing is written.

    A stored tree is returned only when it is restorable: every blob and page file is
    there with the size the index records (one ``stat`` per page, per symlink's blob
    (``link_blobs``) and per blob outside the folders ``check`` trusts).  A lost, quarantined or resized
    blob sends the snapshot down the slow path, which re-reads exactly those files from
    the workspace and so stores their bytes again.
    """
    # Paths come from our own directory walk (already checked), so no re-validation here.
    tree = lines.tree_id()
    if not os.path.exists(store.manifest_path(tree)):
        return None
    if not _blob_files_intact(store, check.unchecked(lines, link_blobs)) or not _blob_files_intact(
        store, store.tree_page_sizes(tree).items()
    ):
        return None  # (the tree's pages live among the blobs)
    if keeper is None or not _kept_by(store, tree, keeper):
        if not store.touch_tree(tree):
            return None
    return tree


def _blob_files_intact(store: Any, blobs: Iterable[tuple[str, int]]) -> bool:
    """Whether every blob of ``blobs`` (``(sha256, size)`` pairs) is in ``blobs/`` with its size.

    One ``stat`` per blob: the unchanged re-snapshot stays a metadata pass, and
    the blob files are in the same page cache as the index.  (Their bytes are checked by
    ``runicorn verify --deep`` and by every reader, :mod:`runicorn.store.reader`.)
    """
    return not store.blob_files_off(blobs, first=True)


def _kept_by(store: Any, tree: str, keeper: tuple[str, str | None]) -> bool:
    """Whether the tree is stored and the ref ``keeper`` names it, in one read snapshot."""
    kind, name = keeper
    return bool(store.tree_kept_by(tree, kind, name or tree))


def _fill_in(lines: TreeLines, to_read: _ToRead, batch: Sequence[int], infos: list[tuple[str, int]]) -> int:
    """Fill in the blobs read (``(sha256, size)`` each) of the files at positions ``batch``
    among ``to_read``; the bytes they hold.  (The caller holds the lock guarding the lines.)"""
    line_of = to_read.line
    for k, (sha, size) in zip(batch, infos):
        lines.set_blob(line_of[k], sha, size)
    return sum(size for _, size in infos)


def _from_source(
    ingested: Iterator[tuple[_B, list[tuple[str, int]]]], root: Path
) -> Iterator[tuple[_B, list[tuple[str, int]]]]:
    """The batches of ``ingested`` as they come; an error of the workspace's files is
    raised as a RunicornError naming the file and what to do.

    Raises:
        RunicornError: a file vanished, changed while read, or cannot be read.
        StorageFullError, StoreWriteError: the store's side (their own message says so).
    """
    while True:
        try:
            item = next(ingested, None)
        except FileNotFoundError as exc:
            raise RunicornError(
                f"{exc.filename}: vanished during the snapshot of {root}; nothing was recorded, try again"
            ) from None
        except ChangedWhileReadingError as exc:
            raise RunicornError(f"{exc}; nothing was recorded, try again") from None
        except (StorageFullError, StoreWriteError):
            raise
        except OSError as exc:
            raise RunicornError(
                f"{exc.filename or root}: cannot be read ({exc.strerror}); "
                f"exclude it in .rnignore or fix its permissions"
            ) from None
        if item is None:
            return
        yield item


class _EarlyRead:
    """The files to read, given to worker processes while the walk still finds them.

    A first snapshot of a large workspace (or one with many new files) would otherwise
    walk it all before the first file is read, with one core busy; here the workers start,
    and read, beside the walk.  The walk adds each file to read (:meth:`add`); every
    :data:`_PROCESS_BATCH_FILES` files (or :data:`_PROCESS_BATCH_BYTES`) make a batch,
    taken from one queue by whichever worker is free; the queue holds a few batches
    at most, so the walk waits for the workers rather than holding every path.

    Each batch read is filled in to the snapshot's lines at once, under :attr:`lock`,
    which the walk holds while it adds a line to read and while it sorts the lines (the
    sort moves what was filled in with its line).  A failure of the reading stops the
    walk at its next batch; a failure of the walk (or an interrupt) stops the workers
    after their batch (:meth:`abort`).  What they stored stays held under the
    snapshot's lease until the snapshot ends, as the blobs of any snapshot.
    """

    def __init__(
        self, store: Any, root: Path, lease: Lease, processes: int, lines: TreeLines, to_read: _ToRead
    ) -> None:
        self.store, self.root, self.lease, self.processes = store, root, lease, processes
        self.lines, self.to_read = lines, to_read
        #: held by whoever changes the lines or the files to read while the batches come
        self.lock = threading.Lock()
        self.given = 0  # files put in batches so far
        self.read_bytes = 0  # what the batches read before a capture took over the counting
        self._ks = array("I")
        self._paths: list[str] = []
        self._bytes = 0
        self._queue: deque[tuple[array[int], list[str]]] = deque()
        self._ready = threading.Condition()
        self._closed = False  # no more batches: the walk ended, or the reading was stopped
        self._capture: _Capture | None = None
        self.error: BaseException | None = None
        # Set once the workers are reaped.  Waited for instead of the thread: a join cut
        # short by Ctrl-C can leave the thread marked as ended (CPython 3.11), and this
        # process would then end, and its workers with it, in the middle of their batch.
        self._ended = threading.Event()
        threading.Thread(target=self._run, name="runicorn-early-read", daemon=True).start()

    def add_found(self) -> None:
        """Read the files to read found before the reading started (called once, by the
        walk, after it holds this object: waiting for the queue here can be interrupted,
        and the walk must then stop the workers).

        Raises:
            the reading's error, once it has stopped.
        """
        base = os.path.join(str(self.root), "")  # root with one trailing separator, as the walk joins it
        lines = self.lines
        for k, line in enumerate(self.to_read.line):
            self.add(k, base + lines.paths[line], lines.size(line))

    # ---------------------------------------------------------------- the walk's side
    def add(self, k: int, path: str, size: int) -> None:
        """Read the file at position ``k`` among the files to read (``path``, ``size`` bytes).

        Raises:
            the reading's error, once it has stopped.
        """
        self._ks.append(k)
        self._paths.append(path)
        self._bytes += size
        if len(self._ks) >= _PROCESS_BATCH_FILES or self._bytes >= _PROCESS_BATCH_BYTES:
            self._give()

    def _give(self) -> None:
        batch = (self._ks, self._paths)
        self._ks, self._paths, self._bytes = array("I"), [], 0
        with self._ready:
            while len(self._queue) >= 2 * self.processes and not self._closed:
                self._ready.wait()
            if not self._closed:
                self._queue.append(batch)
                self.given += len(batch[0])
                self._ready.notify_all()
                return
        self._ended.wait()  # stopped by a failure of the reading: its error, once it has ended
        assert self.error is not None
        raise self.error

    def end_walk(self) -> None:
        """Give the last files: the walk has found them all.

        Raises:
            the reading's error, once it has stopped.
        """
        if self._ks:
            self._give()
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def attach(self, capture: _Capture) -> None:
        """Let ``capture`` take in and count the batches from now on (called under
        :attr:`lock`, which it has as its own)."""
        self._capture = capture

    def wait(self) -> None:
        """Wait for the reading to end.

        Raises:
            whatever the reading raised (a RunicornError naming the file, a store error).
        """
        self._ended.wait()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        """Stop: the workers end after the batch they have, and this waits for them, even
        through a second Ctrl-C (ending now would let the lease go and the store close,
        recovering the writer's folder, while they still write into it)."""
        self._stop()
        while True:
            try:
                self._ended.wait()
                return
            except KeyboardInterrupt:
                continue

    # ---------------------------------------------------------------- the reading's side
    def _stop(self) -> None:
        with self._ready:
            self._closed = True
            self._queue.clear()
            self._ready.notify_all()

    def _batches(self) -> Iterator[tuple[array[int], list[str]]]:
        """One worker's batches: taken from the queue until it is closed and empty."""
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return
                batch = self._queue.popleft()
                self._ready.notify_all()
            yield batch

    def _work(self, ingested: Iterator[tuple[tuple[array[int], list[str]], list[tuple[str, int]]]]) -> None:
        try:
            for (ks, _), infos in _from_source(ingested, self.root):
                with self.lock:
                    capture = self._capture
                    if capture is None:
                        self.read_bytes += _fill_in(self.lines, self.to_read, ks, infos)
                        continue
                capture.take(ks, infos)
        except BaseException:
            self._stop()  # the walk stops at its next batch, the other workers after theirs
            raise

    def _in_this_process(self) -> Iterator[tuple[tuple[array[int], list[str]], list[tuple[str, int]]]]:
        for batch in self._batches():
            infos = self.store.ingest_files(batch[1], lease=self.lease)
            yield batch, [(info.sha256, info.size) for info in infos]

    def _run(self) -> None:
        from runicorn.store.ingest_processes import ingest_in_processes

        def in_threads() -> None:
            threads = worker_count(_READ_EARLY_FROM, 0)  # (at least that many files: a large job)
            run_groups(lambda _: self._work(self._in_this_process()), range(threads))

        try:
            groups = [self._batches() for _ in range(self.processes)]
            ingest_in_processes(self.store, self.lease, groups, itemgetter(1), self._work, in_threads)
        except BaseException as exc:
            self.error = exc
            self._stop()
        finally:
            self._ended.set()


class _Capture:
    """The slow path: check the vouched files' blobs, read the rest, store the tree.

    The blobs the stat cache vouches for get one ``stat`` each, except in the blob folders
    the root's seal trusts (:class:`runicorn.snapshot.statcache.BlobCheck`; a lost or
    resized file is read again), and no hold: the transaction that commits the tree checks that the index
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
        lines: TreeLines,
        vouched_bytes: int,
        to_read: _ToRead,
        links: dict[int, bytes],
        check: statcache.BlobCheck,
        lease: Lease,
        early: _EarlyRead | None = None,
    ) -> None:
        """``lines`` holds every file's line in tree-id order: those of the files the
        cache vouches for (``vouched_bytes`` in all) and of the links with their blob, those
        of ``to_read`` open (unless ``early`` read them); ``links`` has each link's target
        by line; ``check`` says which vouched blobs need a ``stat``; what is read is held
        under ``lease``."""
        self.store, self.root, self.started_ns, self.progress = store, root, started_ns, progress
        self.base = os.path.join(str(root), "")  # root with one trailing separator, as the walk joins it
        self.lines = lines
        self.vouched_bytes = vouched_bytes
        self.read_bytes = 0  # of the files read and the links
        self.to_read = to_read
        self.links = links
        self.lease = lease  # what it ingests is held under it
        self.total = 0  # of every file's size, once the tree is stored
        self.files_read = 0
        #: the vouched files read again (their blob gone), by line: the folder (absolute,
        #: ending in "/") and the digest its row vouched for
        self.forgotten: dict[int, tuple[str, bytes]] = {}
        # Progress in bytes: cached files count as done, symlinks are not counted.
        self._lock = early.lock if early is not None else threading.Lock()
        self._done = vouched_bytes
        self._total = vouched_bytes
        # The vouched files' blobs (the links' are stored again below; the files to read
        # have none yet).
        off = set(store.blob_files_off(check.unchecked(lines))) - {lines.sha(i) for i in links}
        if off:
            self._forget(self._vouched_with(off))

    def _vouched_with(self, shas: set[str]) -> list[int]:
        """The lines of the files the cache vouched for (not read this time) whose blob
        is one of ``shas``."""
        read = set(self.to_read.line)
        return [
            i
            for i, (_, mode, sha, _) in enumerate(self.lines.items())
            if sha in shas and mode != MODE_LINK and i not in read
        ]

    def _forget(self, vouched: list[int]) -> None:
        """Read the vouched files (by line) again: their blobs are gone or damaged.

        Raises:
            RunicornError: one of them is no longer a regular file.
        """
        lines = self.lines
        for i in vouched:
            full = self.base + lines.paths[i]
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                raise RunicornError(f"{full}: vanished during the snapshot of {self.root}; try again") from None
            if not stat.S_ISREG(st.st_mode):
                raise RunicornError(f"{full}: changed during the snapshot of {self.root}; try again")
            self.forgotten[i] = (full[: full.rindex("/") + 1], lines.digests_at([i]))
            self.vouched_bytes -= lines.size(i)
            self._done -= lines.size(i)
            lines.set_mode(i, mode_of(st.st_mode))
            lines.set_size(i, st.st_size)
            self.to_read.add(i)

    def read_changed(self, early: _EarlyRead | None = None) -> None:
        """Read the files to read (into the store, their lines filled in) and store the
        links; those ``early`` was given are read by it (this waits for them)."""
        for target in dict.fromkeys(self.links.values()):
            self.store.ingest_bytes(target, lease=self.lease)  # its lines are in already
        self.read_bytes += sum(len(t) for t in self.links.values())
        start = 0
        if early is not None:
            start = early.given
            with self._lock:  # early's own: no batch is taken in meanwhile
                # Every file to read: those given to it, and any whose blob turned out gone.
                self._total = self._done + sum(self.lines.size(line) for line in self.to_read.line)
                self._done += early.read_bytes
                self.read_bytes += early.read_bytes
                early.attach(self)
            early.wait()
            self.files_read += start
        self._read(range(start, len(self.to_read)))

    def _read(self, items: range) -> None:
        """Read the files to read at positions ``items``."""
        store, base = self.store, self.base
        lines, to_read = self.lines, self.to_read

        def size_of(k: int) -> int:
            return lines.size(to_read.line[k])

        with self._lock:
            self._total = self._done + sum(map(size_of, items))
            if self.progress:
                self.progress(self._done, self._total)

        def paths_of(batch: list[int]) -> list[str]:
            return [base + lines.paths[to_read.line[k]] for k in batch]

        def in_this_process(group: Sequence[int]) -> Iterator[tuple[list[int], list[tuple[str, int]]]]:
            # Batches bound the work lost on an error and give progress; each costs one group sync.
            for batch in batches(group, size_of, _INGEST_BATCH_FILES, _INGEST_BATCH_BYTES):
                infos = store.ingest_files(paths_of(batch), lease=self.lease)
                yield batch, [(info.sha256, info.size) for info in infos]

        def work(ingested: Iterator[tuple[list[int], list[tuple[str, int]]]]) -> None:
            for batch, infos in _from_source(ingested, self.root):
                self.take(batch, infos)

        def in_threads() -> None:
            groups = share_indices(items, worker_count(len(items), self._total - self._done), size_of)
            run_groups(lambda g: work(in_this_process(g)), groups)

        processes = processes_for(len(items))
        if processes:
            from runicorn.store.ingest_processes import ingest_in_processes

            # Smaller batches than in threads: a worker told to stop (another one failed)
            # ends its batch first, and a batch bounds how long that takes.
            groups = [
                batches(g, size_of, _PROCESS_BATCH_FILES, _PROCESS_BATCH_BYTES)
                for g in share_indices(items, processes, size_of)
            ]
            ingest_in_processes(store, self.lease, groups, paths_of, work, in_threads)
        else:
            in_threads()
        self.files_read += len(items)

    def take(self, batch: Sequence[int], infos: list[tuple[str, int]]) -> None:
        """Fill in the blobs read for the files at positions ``batch`` (``(sha256, size)``
        each), and say how far the reading is."""
        with self._lock:
            read = _fill_in(self.lines, self.to_read, batch, infos)
            self.read_bytes += read
            self._done += read
            if self.progress:
                self.progress(self._done, self._total)

    def store_tree(self, known: dict[str, LeafSpan]) -> tuple[str, list[LeafSpan], dict[str, LeafSpan]]:
        """Store the tree of the lines: ``(tree, its leaves, the known leaves used)``.

        Raises:
            BlobNotFoundError: gc keeps taking blobs the cache vouched for.
        """
        for attempt in range(_COMMIT_ATTEMPTS):
            tree = self.lines.tree_id()
            pages, spans = build_pages_from_lines(self.lines, known=known, changed=self._changed(known))
            self.total = self.vouched_bytes + self.read_bytes
            try:
                self.store.put_tree_pages(
                    tree,
                    pages,
                    file_count=len(self.lines),
                    total_size=self.total,
                    source=str(self.root),
                    held=self.lease,
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
                self._read(range(start, len(self.to_read)))
        raise AssertionError("unreachable")

    def misvouched(self) -> list[str]:
        """The folders of the vouched files read again whose bytes are not what their row
        said (a damaged row): those rows are wrong, not merely their blobs gone."""
        lines = self.lines
        return sorted({folder for i, (folder, digest) in self.forgotten.items() if lines.digests_at([i]) != digest})

    def _changed(self, known: dict[str, LeafSpan]) -> list[int]:
        """The indices (in the sorted lines) of the lines not vouched for by the cache."""
        if not known or not (self.to_read or self.links):
            return []
        return sorted({*self.to_read.line, *self.links})


__all__ = ["capture_tree"]
