"""Capture into the store: scanned workspace files become a stored tree.

Files the stat cache (:mod:`runicorn.snapshot.statcache`) vouches for are not read
again; when it vouches for all of them and their tree is stored, nothing is written.
The rest are ingested in few large batches (one group sync each) by a few threads.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runicorn.errors import (
    BlobNotFoundError,
    ChangedWhileReadingError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
)
from runicorn.hashing import sha256_bytes
from runicorn.snapshot import statcache
from runicorn.snapshot.scan import cycle_gc_paused
from runicorn.snapshot.statcache import RACY_NS
from runicorn.store.tree_format import MODE_EXEC, MODE_FILE, MODE_LINK, TreeEntry, mode_of, tree_id_of
from runicorn.workers import run_groups, share, worker_count

# Commits of one snapshot when gc keeps taking blobs the stat cache vouched for.
_COMMIT_ATTEMPTS = 3
# One batch = one group commit (two syncfs calls).  Few, large batches let the disk
# write back large files while small ones are read; the store bounds its memory itself.
_INGEST_BATCH_FILES = 16384
_INGEST_BATCH_BYTES = 2 << 30

Progress = Callable[[int, int], None]


def capture_tree(
    store: Any,
    root: Path,
    files: list[tuple[str, str, os.stat_result]],
    *,
    source: str,
    progress: Progress | None = None,
    want_entries: bool = True,
    keeper: tuple[str, str | None] | None = None,
) -> tuple[str, dict[str, TreeEntry] | None, int, int]:
    """Put the scanned files into the store as a tree, using and updating the stat cache.

    Returns ``(tree, entries, files_read, total_bytes)``; ``entries`` is None when
    ``want_entries`` is False and the tree was already stored (nothing was read).
    ``keeper`` is the ref (kind, name; None for the tree id) the caller will keep the
    tree alive with: when it already names the stored tree, nothing is written.

    Raises:
        RunicornError: a file vanished or changed while being read (naming it).
    """
    started_ns = time.time_ns()
    with cycle_gc_paused() as resume_gc:
        return _capture(store, root, files, started_ns, progress, want_entries, keeper, resume_gc)


def _capture(
    store: Any,
    root: Path,
    files: list[tuple[str, str, os.stat_result]],
    started_ns: int,
    progress: Progress | None,
    want_entries: bool,
    keeper: tuple[str, str | None] | None,
    resume_gc: Callable[[], None],
) -> tuple[str, dict[str, TreeEntry] | None, int, int]:
    """:func:`capture_tree` with the cyclic collector paused (the slow path resumes it)."""
    cached = statcache.cached_rows(store, root)
    # Per file, only what the fast path needs: the scan's own tuple and its hash (two
    # parallel lists), the tree id's line, the blob's size.  The slow path builds more.
    vouched: list[tuple[str, str, os.stat_result]] = []
    vouched_shas: list[str] = []
    to_read: list[tuple[str, str, os.stat_result, str]] = []
    links: dict[str, bytes] = {}
    hits = 0  # files with a cache row: when all rows are hit, none is stale
    trusted_bytes = 0
    lines: list[tuple[str, str, str]] = []  # (path, mode, sha256) of trusted files, for the tree id
    sizes: dict[str, int] = {}  # sha256 -> size of the trusted files' blobs
    get, S_IFMT, IFLNK, racy = cached.get, 0o170000, stat.S_IFLNK, RACY_NS
    for item in files:
        rel, full, st = item
        st_mode = st.st_mode
        if st_mode & S_IFMT == IFLNK:
            try:
                links[rel] = os.fsencode(os.readlink(full))
            except FileNotFoundError:
                raise RunicornError(f"{full}: vanished during the snapshot of {root}; try again") from None
            hits += full in cached
            continue
        mode = MODE_EXEC if st_mode & 0o100 else MODE_FILE  # as mode_of, without the call
        row = get(full)
        if row is None:
            to_read.append((rel, full, st, mode))
            continue
        hits += 1
        # row: path, dev, ino, size, mtime_ns, ctime_ns, mode, sha256, recorded_ns
        mtime = st.st_mtime_ns
        if (
            row[4] == mtime
            and row[3] == st.st_size
            and row[2] == st.st_ino
            and row[1] == st.st_dev
            and row[5] == st.st_ctime_ns
            and row[6] == mode
            and mtime < row[8] - racy
        ):
            sha = row[7]
            vouched.append(item)
            vouched_shas.append(sha)
            lines.append((rel, mode, sha))
            sizes[sha] = row[3]
            trusted_bytes += row[3]
        else:
            to_read.append((rel, full, st, mode))
    found = (
        _existing_tree(store, vouched, vouched_shas, links, want_entries, keeper, lines, sizes, trusted_bytes)
        if not to_read
        else None
    )
    updates: list[tuple[Any, ...]] = []
    entries: dict[str, TreeEntry] | None
    if found is None:
        trusted = {full: (rel, full, st, sha) for (rel, full, st), sha in zip(vouched, vouched_shas)}
        resume_gc()  # reading files makes garbage of its own (and may run long)
        tree, entries, updates = _ingest(store, root, files, trusted, to_read, links, started_ns, progress)
        total = sum(e.size for e in entries.values())
    else:
        tree, entries, total = found
    stale: list[tuple[str]] = []
    if hits < len(cached):
        seen = {full for _, full, _ in files}
        stale = [(p,) for p in cached if p not in seen]
    if updates or stale:
        statcache.record(store, updates, stale)
    return tree, entries, len(to_read), total


def _existing_tree(
    store: Any,
    vouched: list[tuple[str, str, os.stat_result]],
    vouched_shas: list[str],
    links: dict[str, bytes],
    want_entries: bool,
    keeper: tuple[str, str | None] | None,
    lines: list[tuple[str, str, str]],
    sizes: dict[str, int],
    trusted_bytes: int,
) -> tuple[str, dict[str, TreeEntry] | None, int] | None:
    """Fast path when the stat cache vouches for every file: (tree, entries, total bytes) if stored.

    ``vouched`` (the scanned files the cache vouches for) and ``vouched_shas`` (their
    hashes) are parallel lists; ``lines`` (their ``(path, mode, sha256)``, consumed),
    ``sizes`` (their blobs' sizes, consumed) and ``trusted_bytes`` (their total size)
    come from the caller's pass over the stat cache.

    ``entries`` is None unless ``want_entries``.  The tree's existence is checked and
    its ``touched_at`` bumped in one write transaction, so a concurrent gc either ran
    before (and the tree is gone: slow path) or must wait the grace period; its blobs
    are protected by the tree itself.  When the ref that will keep the tree alive
    (``keeper``: kind and name, with the tree id in place of ``None`` as name) already
    names it, no gc can take it, so a read suffices and nothing is written.

    A stored tree is returned only when it is restorable: every blob and page file is
    there with the size the index records (one ``stat`` per blob and page).  A lost, quarantined or resized
    blob sends the snapshot down the slow path, which re-reads exactly those files from
    the workspace (``Store.hold_blobs`` finds them) and so stores their bytes again.
    """
    # Paths come from our own directory walk (already checked), so no re-validation here.
    link_shas = {rel: sha256_bytes(t) for rel, t in links.items()}
    lines += [(rel, MODE_LINK, sha) for rel, sha in link_shas.items()]
    tree = tree_id_of(lines)
    if not os.path.exists(store.manifest_path(tree)):
        return None
    sizes.update({link_shas[rel]: len(t) for rel, t in links.items()})
    sizes.update(store.tree_page_sizes(tree))  # the tree's pages live among the blobs
    if not _blob_files_intact(store, sizes):
        return None
    if keeper is None or not _kept_by(store, tree, keeper):
        if not store.touch_tree(tree):
            return None
    total = trusted_bytes + sum(len(t) for t in links.values())
    if not want_entries:
        return tree, None, total
    entries = {rel: TreeEntry(sha, mode_of(st.st_mode), st.st_size) for (rel, _, st), sha in zip(vouched, vouched_shas)}
    entries.update({rel: TreeEntry(link_shas[rel], MODE_LINK, len(t)) for rel, t in links.items()})
    return tree, entries, total


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


def _ingest(
    store: Any,
    root: Path,
    files: list[tuple[str, str, os.stat_result]],
    trusted: dict[str, tuple[str, str, os.stat_result, str]],
    to_read: list[tuple[str, str, os.stat_result, str]],
    links: dict[str, bytes],
    started_ns: int,
    progress: Progress | None,
) -> tuple[str, dict[str, TreeEntry], list[tuple[Any, ...]]]:
    """Slow path: check cached blobs, read changed files, store links, record the tree.

    The blobs the stat cache vouches for get one ``stat`` each (a lost or resized file is
    read again) and no hold: the transaction that commits the tree checks that the index
    still has every blob, and the files of any a gc took meanwhile are read again and
    the tree committed again.  So a one-file change writes no row per unchanged file.
    """
    entries: dict[str, TreeEntry] = {}
    if trusted:
        off = set(store.blob_files_off({t[3]: t[2].st_size for t in trusted.values()}))
        for full, (rel, _, st, sha) in list(trusted.items()):
            if sha in off:
                del trusted[full]
                to_read.append((rel, full, st, mode_of(st.st_mode)))
    for rel, _, st, sha in trusted.values():
        entries[rel] = TreeEntry(sha, mode_of(st.st_mode), st.st_size)
    updates: list[tuple[Any, ...]] = []
    # Progress in bytes: cached files count as done, symlinks are not counted.
    done = sum(t[2].st_size for t in trusted.values())
    total = done + sum(it[2].st_size for it in to_read)
    if progress:
        progress(done, total)
    lock = threading.Lock()

    def work(group: list[tuple[str, str, os.stat_result, str]]) -> None:
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
                    entries[rel] = TreeEntry(info.sha256, mode, info.size)
                    updates.append(
                        (
                            full,
                            st.st_dev,
                            st.st_ino,
                            info.size,
                            st.st_mtime_ns,
                            st.st_ctime_ns,
                            mode,
                            info.sha256,
                            started_ns,
                        )
                    )
                done += sum(info.size for info in infos)
                if progress:
                    progress(done, total)

    def read(items: list[tuple[str, str, os.stat_result, str]]) -> None:
        groups = share(items, worker_count(len(items), sum(it[2].st_size for it in items)), lambda it: it[2].st_size)
        run_groups(work, groups)

    read(to_read)
    for rel, target in links.items():
        info = store.ingest_bytes(target)
        entries[rel] = TreeEntry(info.sha256, MODE_LINK, info.size)
    for attempt in range(_COMMIT_ATTEMPTS):
        try:
            tree = store.put_tree(entries, source=str(root), walked=True)
            break
        except BlobNotFoundError as exc:
            gone = set(getattr(exc, "missing", ()))
            again = [(rel, full, st, mode_of(st.st_mode)) for full, (rel, _, st, sha) in trusted.items() if sha in gone]
            if not again or attempt == _COMMIT_ATTEMPTS - 1:
                raise
            for _, full, _, _ in again:
                del trusted[full]
            to_read.extend(again)
            read(again)  # a gc took them since they were checked: their files are read again
    return tree, entries, updates


def _batches(items: list[tuple[str, str, os.stat_result, str]]) -> Iterable[list[tuple[str, str, os.stat_result, str]]]:
    # Batches bound the work lost on an error and give progress; each costs one group sync.
    batch: list[tuple[str, str, os.stat_result, str]] = []
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
