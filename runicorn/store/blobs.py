"""Blobs: staging, placing and committing them (``schema/README.md``, "Write protocol").

A blob is copied and hashed in one pass into the writer's directory, renamed to its intent
``blob-<sha>``, then placed at ``blobs/<aa>/<sha>`` and indexed (held for this writer) in one
transaction by :func:`commit_blobs`, the commit of every ingest (single files here, batches
in :mod:`runicorn.store.ingest`, which also writes small blobs straight to their final
names).  :func:`adopt_staged_blob` is the recovery of one intent.
"""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from runicorn.errors import IntegrityError, RunicornError, StorageFullError
from runicorn.fsutil import (
    StagedFile,
    blob_perm,
    fsync_dir,
    fsync_file,
    make_dir,
    publish_link,
    rename_noreplace,
    sync_written,
    syncfs,
)
from runicorn.hashing import check_unchanged, copy_and_hash, sha256_file
from runicorn.store.layout import BlobInfo, blob_files_off, quarantine
from runicorn.store.rows import insert_blob_rows

if TYPE_CHECKING:
    from runicorn.store.holds import Lease
    from runicorn.store.store import Store


def stage_stream(store: Store, src: IO[bytes], *, origin: str, perm: int = 0o444) -> tuple[Path, str, int]:
    """Copy ``src`` into the writer's directory while hashing it; return ``(intent, sha, size)``.

    Raises:
        StorageFullError: no space left (``origin`` names the source).
    """
    staged = StagedFile(store.writer_dir(), mode=0o600)
    try:
        sha, size = copy_and_hash(src, staged.file)
        staged.finish(fsync=False, mode=perm)
    except OSError as exc:
        staged.discard()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFullError(f"{store.root}: no space left on device while storing {origin}") from None
        raise
    except BaseException:
        staged.discard()
        raise
    intent = staged.path.with_name(f"blob-{sha}")
    os.replace(staged.path, intent)
    return intent, sha, size


def stage_file(store: Store, path: Path, expected_sha256: str | None) -> tuple[Path, str, int, int]:
    """Stage one regular file; return ``(intent, sha, size, perm)``.

    Raises:
        ChangedWhileReadingError: the file changed while read.
        IntegrityError: ``expected_sha256`` given and different.
        RunicornError: not a regular file.
    """
    with open(path, "rb") as src:
        before = os.fstat(src.fileno())
        if not stat.S_ISREG(before.st_mode):
            raise RunicornError(f"{path}: not a regular file")
        perm = blob_perm(before.st_mode)
        intent, sha, size = stage_stream(store, src, origin=str(path), perm=perm)
        try:
            check_unchanged(path, before, src.fileno())
        except BaseException:
            os.unlink(intent)
            raise
    if expected_sha256 is not None and sha != expected_sha256:
        os.unlink(intent)
        raise IntegrityError(f"{path}: sha256 is {sha}, expected {expected_sha256}")
    return intent, sha, size, perm


def ingest_file(store: Store, path: Path, *, expected_sha256: str | None = None) -> BlobInfo:
    """:meth:`Store.ingest_file`."""
    intent, sha, size, perm = stage_file(store, path, expected_sha256)
    fsync_file(intent)
    commit_blobs(store, [(intent, sha, size)], group=False, perms={sha: perm})
    return BlobInfo(sha, size)


def ingest_bytes(store: Store, data: bytes, lease: Lease | None = None) -> BlobInfo:
    """:meth:`Store.ingest_bytes`."""
    intent, sha, size = stage_stream(store, io.BytesIO(data), origin="<bytes>")
    commit_blobs(store, [(intent, sha, size)], group=False, fsync_data=True, lease=lease)
    return BlobInfo(sha, size)


def ingest_stream(store: Store, src: IO[bytes], *, expected_sha256: str | None = None, perm: int = 0o444) -> BlobInfo:
    """:meth:`Store.ingest_stream`."""
    intent, sha, size = stage_stream(store, src, origin="<stream>", perm=perm)
    if expected_sha256 is not None and sha != expected_sha256:
        os.unlink(intent)
        raise IntegrityError(f"stream sha256 is {sha}, expected {expected_sha256}")
    commit_blobs(store, [(intent, sha, size)], group=False, fsync_data=True, perms={sha: perm})
    return BlobInfo(sha, size)


def place_blob(store: Store, c: Any, intent: Path | str, sha: str, size: int, *, move: bool = False) -> str | None:
    """Put a staged blob at ``blobs/<aa>/<sha>`` unless a good copy is there, inside write
    transaction ``c``; return the directory to sync, or None when nothing was placed.

    A copy the index has a row for (same size) is good.  A copy without a row may be one
    a writer created in place and has not committed (``schema/README.md``, "Batches"), or
    a leftover: it is good only when its bytes hash to ``sha``, and is then fsynced (with
    its folder) before this writer relies on it.  A copy that is not good is quarantined
    and replaced.  The intent is hard-linked (it stays, for recovery, until the caller's
    COMMIT) or, with ``move``, renamed (a batch whose journal names it); an existing file
    is never overwritten.

    Raises:
        RunicornError: the destination keeps appearing and vanishing, or the store
            refused the write (see :meth:`Store.write_error`).
    """
    parent = f"{store.blobs_dir}/{sha[:2]}"
    dest = f"{parent}/{sha}"
    try:
        for _ in range(3):
            try:
                placed = rename_noreplace(str(intent), dest) if move else publish_link(Path(intent), Path(dest))
            except (FileNotFoundError, NotADirectoryError):
                if os.path.isdir(parent):
                    raise
                if os.path.lexists(parent):
                    # A file (or link) stands where the prefix folder belongs: set it aside,
                    # never delete it, so the blob can land and the store stays usable.
                    quarantine(store, Path(parent), "not-a-folder")
                make_dir(Path(parent), store.dir_mode)  # first blob under this prefix
                continue
            if placed:
                return parent
            try:
                flaw = _copy_flaw(c, dest, sha, size)
            except FileNotFoundError:
                continue  # collected meanwhile: try again
            if flaw is None:
                return None
            quarantine(store, Path(dest), flaw)
    except RunicornError:
        raise
    except OSError as exc:
        raise store.write_error(exc, parent) from None
    raise RunicornError(f"{dest}: cannot be placed (it keeps appearing and vanishing)")


def _copy_flaw(c: Any, dest: str, sha: str, size: int) -> str | None:
    """What is wrong with the file at ``dest`` as blob ``sha`` of ``size`` bytes
    (``size-mismatch``, ``corrupt``), or None when it is good and durable (see
    :func:`place_blob`).

    Raises:
        FileNotFoundError: it is gone.
    """
    st = os.stat(dest)
    if st.st_size != size:
        return "size-mismatch"
    row = c.execute("SELECT size FROM blobs WHERE sha256 = ?", (sha,)).fetchone()
    if row is not None and row[0] == size:
        return None
    if sha256_file(Path(dest)) != sha:
        return "corrupt"
    if st.st_mode & 0o222:
        os.chmod(dest, blob_perm(st.st_mode))  # read-only, as every blob, once the store uses it
    fsync_file(dest)
    fsync_dir(os.path.dirname(dest))
    return None


def commit_blobs(
    store: Store,
    staged: list[tuple[Path | str, str, int]],
    *,
    group: bool,
    fsync_data: bool = False,
    move: bool = False,
    perms: Mapping[str, int] | None = None,
    lease: Lease | None = None,
    placed: Mapping[str, int] | None = None,
    by_range: bool = False,
) -> None:
    """Place staged blobs and index them, held for this writer (under ``lease``, else a
    lease of their own), in one transaction.

    ``group``: the data is already flushed and many directories change, so one
    ``syncfs`` makes the placements durable.  ``move``: rename the intents (a batch
    whose journal names them) instead of linking them.  ``perms``: blobs whose
    source was private; a copy already in ``blobs/`` is narrowed to that permission
    (:func:`narrow_blobs`).  ``placed``: blobs (sha256 -> size) a batch created at their
    final names and made durable; they are checked to be still there, then indexed and
    held with the others.  ``by_range`` (with ``lease``): when every row is new, hold them
    by one ``hold_ranges`` row, which only the lease lets go of.  Intents still present
    are removed after COMMIT.

    Raises:
        RunicornError: a blob of ``placed`` is gone or has another size (nothing is indexed).
    """
    if fsync_data:
        for intent, _, _ in staged:
            fsync_file(intent)
    store.writer_dir()  # created and locked before this process holds anything
    now = time.time()
    unique = {sha: (intent, sha, size) for intent, sha, size in staged}
    moved: set[str] = set()
    rows = [(sha, size, now, now) for _, sha, size in unique.values()]
    if placed:
        rows += [(sha, size, now, now) for sha, size in placed.items() if sha not in unique]
    with store.index.write() as c:
        if placed:
            _check_placed(store, placed)
        dirs: set[str] = set()
        for intent, sha, size in unique.values():
            d = place_blob(store, c, intent, sha, size, move=move)
            if d is not None:
                dirs.add(d)
                if move:
                    moved.add(sha)
        if group and dirs:
            syncfs(store.blobs_dir)
        else:
            sync_written(store.blobs_dir, dirs=dirs)
        if perms:
            narrow_blobs(store, perms)
        new, first, last = insert_blob_rows(c, rows, touch=True)
        if by_range and lease is not None and new == len(rows):
            store.holds.acquire_rows(c, first, last, lease)  # one row, not a row per blob
        else:  # named one by one, or some were stored already (another writer): a row each
            store.holds.acquire(c, [sha for sha, _, _, _ in rows], lease)
    for intent, sha, _ in staged:
        if sha not in moved:
            try:
                os.unlink(intent)
            except FileNotFoundError:
                pass


def _check_placed(store: Store, placed: Mapping[str, int]) -> None:
    """Under the index lock, before their rows: the blobs a batch created in place are
    all still there with their size.  (gc and a repair leave the files a live batch's
    journal names alone, gc unlinks no file written after its journal, and a writer that
    sets aside such a file caught mid-write puts the same content in its place: what
    this catches is a hand or damage.)

    Raises:
        RunicornError: one is gone or has another size.
    """
    off = blob_files_off(store.blobs_dir, placed.items())
    if off:
        raise RunicornError(
            f"{store.blob_path(off[0])}: the blob file vanished or changed right after it was "
            f"written ({len(off)} of this batch); nothing of the batch was indexed; store it again"
        )


def narrow_blobs(store: Store, perms: Mapping[str, int]) -> None:
    """:meth:`Store.narrow_blobs`."""
    blobs_dir = str(store.blobs_dir)
    for sha, perm in perms.items():
        if perm & 0o044 == 0o044:
            continue
        path = f"{blobs_dir}/{sha[:2]}/{sha}"
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
            if mode & 0o044 & ~perm:
                os.chmod(path, mode & ~(0o044 & ~perm))
        except FileNotFoundError:
            pass


def hold_blobs(store: Store, shas: Iterable[str], lease: Lease | None = None) -> set[str]:
    """:meth:`Store.hold_blobs`."""
    store.writer_dir()  # created and locked before this process holds anything
    now = time.time()
    wanted = sorted(set(shas))
    with store.index.write() as c:
        # One set query and two batched statements: this runs for every file a
        # stat cache vouches for, so it must not cost a round trip per blob.
        known = dict(
            c.execute(
                "SELECT sha256, size FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))", (json.dumps(wanted),)
            ).fetchall()
        )
        # The file must be there with the indexed size, else the caller writes it
        # again (and the damaged file is moved aside when the new one is placed).
        off = set(blob_files_off(store.blobs_dir, known.items()))
        present = [s for s in wanted if s in known and s not in off]
        c.executemany("UPDATE blobs SET touched_at = ? WHERE sha256 = ?", [(now, s) for s in present])
        store.holds.acquire(c, present, lease)
    return set(wanted) - set(present)


def adopt_staged_blob(store: Store, c: Any, f: Path, sha: str) -> str:
    """Recovery of a dead writer's blob intent ``f`` inside transaction ``c``: re-hash it,
    place it and index it (unheld); return what was done."""
    if sha256_file(f) != sha:
        return f"discarded torn staged blob {sha[:12]}"
    st = f.stat()
    size = st.st_size
    os.chmod(f, blob_perm(st.st_mode))  # read-only, never more readable than staged
    if place_blob(store, c, f, sha, size) is not None:
        fsync_dir(store.blob_path(sha).parent)
    now = time.time()
    insert_blob_rows(c, [(sha, size, now, now)])
    return f"adopted blob {sha[:12]}"
