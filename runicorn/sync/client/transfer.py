"""SFTP transfer primitives shared by the manifest and legacy sync paths.

* :class:`CountingSFTP` wraps a paramiko ``SFTPClient`` and counts operations: every
  open/stat/listdir/read/readv/close call is one operation.  A ``read``/``readv`` call
  may travel as several pipelined protocol requests of at most 32 KiB; those are
  reported separately as *wire requests* (paramiko's request counter).
* Downloads are atomic: bytes go to a staged file under ``<cache>/.runicorn-sync/tmp``,
  get the server's mtime, and are renamed into place in batches (group commit: one
  ``syncfs`` makes a batch's data durable before any of it is renamed, so after a power
  loss a file never has the right size and mtime over lost data).  Appends are
  copy-on-append: the local copy plus the new bytes are written to a staged file which
  then replaces the old one, so a crash leaves either the old or the new file, never a
  spliced one.  The copy is local I/O, cheap next to the network, and keeps the rule
  "a file is replaced whole or not at all" without any journal.
* Sync replaces or removes only bytes it wrote itself and that are still what it wrote:
  :class:`WrittenLedger` (``<cache>/.runicorn-sync/written.json``) records each file it
  published as ``(size, mtime_ns, inode)``.  A local file it did not write, or that
  changed since, is never overwritten or deleted, and a server run whose local directory
  holds such a file (a run made here, or edited here) is reported and left alone.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError, UnsafePathError
from runicorn.fsutil import GroupCommit, StagedFile, atomic_write_json
from runicorn.hashing import sha256_bytes
from runicorn.sync.manifest import TAIL_WINDOW
from runicorn.sync.manifest import tail_hash as file_tail_hash
from runicorn.sync.manifest_schema import MAX_FILE_SIZE
from runicorn.relpath import ensure_no_symlink_parents, validate_relpath

SINGLE_READ_MAX = 32768  # paramiko's largest single read request
READ_WINDOW = 8 << 20  # bytes requested per pipelined readv call; bounds memory per worker
OVERLAP = 4096  # bytes re-read before an append to prove the local copy is a prefix
SYNC_DIR = ".runicorn-sync"
# Top-level names under the storage root that belong to the store itself (runicorn.store
# keeps blobs, manifests and its index under archive/, pinned artifacts under artifacts/).
# Runs from a server project with one of these names are skipped, never merged in.
RESERVED_TOP_LEVEL = frozenset({SYNC_DIR, ".runicorn", "archive", "artifacts"})
# A file that changed after the manifest was made is downloaded as it is now, but the
# server decides that size: it may exceed the manifest's size by at most this much
# (a quarter of the listed size, at least MIN_GROWTH, at most MAX_GROWTH) ...
MIN_GROWTH = 16 << 20
MAX_GROWTH = 1 << 30


def growth_allowance(listed_size: int) -> int:
    """How many bytes beyond its manifest size a changed file may have grown."""
    return min(MAX_GROWTH, max(MIN_GROWTH, listed_size // 4))


class ByteBudget:
    """... and all such growth together must fit in the free space the sync did not plan
    for (thread-safe; shared by every transfer of one sync)."""

    def __init__(self, total: int) -> None:
        self.left = max(0, total)
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) if they do not fit."""
        with self._lock:
            if n > self.left:
                return False
            self.left -= n
            return True


def unplanned_budget(free: int, need: int) -> ByteBudget:
    """What files grown since the manifest may use: the free space the plan leaves,
    minus a margin (a tenth of it, at most 64 MiB) so a sync never fills the disk."""
    spare = max(0, free - need)
    return ByteBudget(spare - min(64 << 20, spare // 10))


class SyncError(RunicornError):
    """A sync could not run (lock held, disk full, unusable cache)."""


class FileChangedError(RunicornError):
    """A server file no longer matches what the manifest says about it."""


class OpCounter:
    """A thread-safe operation counter."""

    def __init__(self) -> None:
        self._n = 0
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        with self._lock:
            self._n += n

    @property
    def value(self) -> int:
        return self._n


class CountingFile:
    """An ``SFTPFile`` whose calls are counted."""

    def __init__(self, f: Any, counter: OpCounter) -> None:
        self._f = f
        self._c = counter

    def read(self, size: int) -> bytes:
        self._c.add()
        return bytes(self._f.read(size))

    def readv(self, chunks: list[tuple[int, int]]) -> Iterator[bytes]:
        self._c.add()
        return iter(list(self._f.readv(chunks)))

    def seek(self, offset: int) -> None:
        self._f.seek(offset)  # client-side only: no request

    def stat(self) -> Any:
        self._c.add()
        return self._f.stat()

    def close(self) -> None:
        self._c.add()
        self._f.close()

    def __enter__(self) -> "CountingFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CountingSFTP:
    """A paramiko ``SFTPClient`` whose operations are counted into a shared counter."""

    def __init__(self, sftp: Any, counter: OpCounter | None = None) -> None:
        self.raw = sftp
        self.counter = counter or OpCounter()
        self._start_requests = int(getattr(sftp, "request_number", 0))

    def open(self, path: str, mode: str = "rb") -> CountingFile:
        self.counter.add()
        return CountingFile(self.raw.open(path, mode), self.counter)

    def stat(self, path: str) -> Any:
        self.counter.add()
        return self.raw.stat(path)

    def listdir_attr(self, path: str) -> list[Any]:
        self.counter.add()
        return list(self.raw.listdir_attr(path))

    @property
    def wire_requests(self) -> int:
        """Protocol requests this client sent since it was wrapped."""
        return int(getattr(self.raw, "request_number", 0)) - self._start_requests


def sync_stats(method: str, **kw: Any) -> dict[str, Any]:
    """The statistics every sync returns (the seed's keys), zeroed, updated with ``kw``."""
    stats: dict[str, Any] = {
        "files_synced": 0, "bytes_downloaded": 0, "incremental_count": 0,
        "full_count": 0, "failed_count": 0, "duration": 0.0, "manifest_revision": None,
        "skipped": False, "reason": "", "sftp_requests": 0, "sftp_wire_requests": 0,
        "files_deleted": 0, "files_unchanged": 0, "manifest_bytes": 0, "method": method,
        "conflicts": [],  # runs and files left alone because sync did not write them
    }
    stats.update(kw)
    return stats


def set_nodelay(sftp_client: Any) -> None:
    """Disable Nagle on the SSH socket under ``sftp_client`` (best effort).

    Without it every request that follows a large response waits for the peer's
    delayed ACK (~4 ms on Linux), which dominates syncs made of many small files.
    """
    import socket

    try:
        sock = sftp_client.get_channel().get_transport().sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def read_range(f: CountingFile, offset: int, length: int) -> Iterator[bytes]:
    """Yield the bytes of [offset, offset+length); stops early at end of file.

    Small ranges are one read request; larger ones are pipelined ``readv`` windows so a
    hostile size never makes us queue more than one window of requests.
    """
    if length <= 0:
        return
    if length <= SINGLE_READ_MAX:
        f.seek(offset)
        data = f.read(length)
        if data:
            yield data
        return
    end = offset + length
    pos = offset
    while pos < end:
        n = min(READ_WINDOW, end - pos)
        got = 0
        for piece in f.readv([(pos, n)]):
            got += len(piece)
            if piece:
                yield piece
        pos += got
        if got < n:
            return


def mtime_ns(mtime: float) -> int:
    return int(round(mtime * 1e9))


def same_mtime(st: os.stat_result, mtime: float) -> bool:
    # JSON floats carry ~microsecond precision for current epochs.
    return abs(st.st_mtime_ns - mtime_ns(mtime)) <= 2000


class CachePaths:
    """Where server paths land in the cache, checking each parent directory only once."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._root = str(cache)
        self._checked: set[str] = set()
        self._memo: dict[str, Path] = {}

    def __call__(self, rel: str) -> Path:
        """Where ``rel`` lands in the cache, refusing paths that could leave it.

        Raises:
            UnsafePathError: absolute, ``..``, bookkeeping area, or through a symlink.
        """
        dest = self._memo.get(rel)
        if dest is not None:
            return dest
        validate_relpath(rel, what="server path")
        if rel.split("/", 1)[0] in RESERVED_TOP_LEVEL:
            raise UnsafePathError(f"server path {rel!r} targets the store's own directories")
        parent = rel.rpartition("/")[0]
        if parent not in self._checked:
            ensure_no_symlink_parents(self.cache, rel)
            while parent and parent not in self._checked:
                self._checked.add(parent)
                parent = parent.rpartition("/")[0]
        dest = Path(os.path.join(self._root, rel))
        self._memo[rel] = dest
        return dest


@dataclass
class FetchResult:
    """What one file transfer did."""

    received: int  # bytes that came over the wire
    kind: str  # "full" or "incremental"


class Downloader:
    """Atomic file downloads into a cache directory (one instance per sync)."""

    def __init__(self, cache: Path, remote_root: str, budget: ByteBudget | None = None,
                 paths: CachePaths | None = None, ledger: "WrittenLedger | None" = None) -> None:
        self.cache = cache
        # Unplanned bytes (files grown since the manifest) this sync may still write.
        self.budget = budget if budget is not None else ByteBudget(0)
        self.remote_root = remote_root.rstrip("/") or "/"
        self.staging = cache / SYNC_DIR / "tmp"
        self.paths = paths if paths is not None else CachePaths(cache)
        self.ledger = ledger if ledger is not None else WrittenLedger(cache)
        self.staged: dict[str, list[int]] = {}  # rel -> ledger record of its staged file
        self.batch = GroupCommit(cache, keep=self._may_replace, before_renames=self._note_written)
        self.wasted = 0  # bytes received then thrown away (file changed since the manifest)

    def remote(self, rel: str) -> str:
        return f"{self.remote_root}/{rel}" if self.remote_root != "/" else f"/{rel}"

    def _publish(self, staged: StagedFile, rel: str, dest: Path, mtime_ns_: int) -> None:
        staged.finish(fsync=False)
        os.utime(staged.path, ns=(mtime_ns_, mtime_ns_))
        if dest.is_dir() and not dest.is_symlink():
            raise UnsafePathError(f"{dest}: a directory is in the way of a server file")
        with self.ledger.lock:
            self.staged[rel] = WrittenLedger.record(os.lstat(staged.path))  # the rename keeps it
        staged.hand_over(self.batch, dest, rel)  # renamed by commit(), after one syncfs

    def _may_replace(self, dest: Path, rel: str) -> bool:
        """Asked just before the rename: only a missing file or one sync wrote, unchanged."""
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return True
        return self.ledger.owns(rel, st)

    def _note_written(self, rels: list[str]) -> None:
        """Record what is about to be renamed into place, durably, before the renames: a
        crash right after them still leaves every file sync wrote known as its own."""
        with self.ledger.lock:
            for rel in rels:
                self.ledger.add(rel, self.staged[rel])
        self.ledger.save()

    def commit(self) -> dict[str, OSError]:
        """Make every fetched file durable, then rename it into place.

        Call after the transfers (the caller's final ``syncfs`` makes the renames
        durable).  Returns the files whose rename failed: they did not arrive.  Files
        whose local copy sync did not write (or that changed since) are not replaced:
        see :attr:`refused`.
        """
        self.batch.commit()
        for rel in self.batch.refused:
            self.staged.pop(rel, None)
        return dict(self.batch.failed)

    @property
    def refused(self) -> list[str]:
        """Files not published because the local copy is not sync's own (left alone)."""
        return list(self.batch.refused)

    def settle(self) -> None:
        """After :meth:`commit`: the ledger keeps only each published file's final record."""
        for rel in self.staged:
            if rel in self.batch.failed:
                continue
            try:
                st = os.lstat(self.paths(rel))
            except (OSError, UnsafePathError):
                continue
            if WrittenLedger.record(st) == self.staged[rel]:
                self.ledger.settle(rel, st)

    def fetch_full(self, sftp: CountingSFTP, rel: str, size: int, mtime: float,
                   tail_hash: str | None) -> FetchResult:
        """Download ``rel`` whole, as the manifest describes it, then publish it.

        When the server file no longer matches (shorter, or a different tail), the file
        changed after the manifest was made: fetch its current state instead.

        Raises:
            OSError, paramiko.SSHException: transport failures (the caller retries later).
            UnsafePathError: the destination is unsafe.
        """
        dest = self.paths(rel)
        received = 0
        with StagedFile(self.staging, prefix="f.") as staged:
            tail = bytearray()
            with sftp.open(self.remote(rel), "rb") as f:
                for piece in read_range(f, 0, size):
                    received += len(piece)
                    staged.file.write(piece)
                    tail += piece
                    if len(tail) > 2 * TAIL_WINDOW:
                        del tail[:-TAIL_WINDOW]
            tail_bytes = bytes(tail[-TAIL_WINDOW:]) if size else b""
            ok = received == size and (tail_hash is None or sha256_bytes(tail_bytes) == tail_hash)
            if ok:
                self._publish(staged, rel, dest, mtime_ns(mtime))
                return FetchResult(received, "full")
        return FetchResult(received + self.fetch_current(sftp, rel, size), "full")

    def fetch_current(self, sftp: CountingSFTP, rel: str, listed_size: int) -> int:
        """Download whatever ``rel`` is now (size and mtime from the open handle).

        ``listed_size`` is what the manifest (or listing) said, which the sync planned
        disk space for.  The current size may exceed it by :func:`growth_allowance`, and
        the excess must fit in the sync's :class:`ByteBudget`.

        Raises:
            FileChangedError: if the file grew too much, does not fit on the disk, or
                changes while read (the file fails; the next sync retries it).
        """
        dest = self.paths(rel)
        received = 0
        with StagedFile(self.staging, prefix="c.") as staged:
            with sftp.open(self.remote(rel), "rb") as f:
                st = f.stat()
                if st.st_size is None or st.st_size > MAX_FILE_SIZE:
                    raise FileChangedError(f"{rel}: server reports an unusable size")
                extra = st.st_size - listed_size
                if extra > growth_allowance(listed_size):
                    raise FileChangedError(
                        f"{rel}: is {st.st_size} bytes on the server but the manifest lists "
                        f"{listed_size}; growth beyond {growth_allowance(listed_size)} bytes is "
                        f"refused (regenerate the manifest, then sync again)")
                if extra > 0 and not self.budget.take(extra):
                    raise FileChangedError(
                        f"{rel}: grew by {extra} bytes since the manifest, more than the "
                        f"{self.budget.left} bytes of free space this sync has left")
                for piece in read_range(f, 0, st.st_size):
                    received += len(piece)
                    staged.file.write(piece)
            if received != st.st_size:
                raise FileChangedError(f"{rel}: changed on the server while being read")
            self._publish(staged, rel, dest, int(st.st_mtime or 0) * 1_000_000_000)
        return received

    def fetch_append(self, sftp: CountingSFTP, rel: str, local_size: int, size: int,
                     mtime: float, tail_hash: str | None) -> FetchResult:
        """Fetch only the bytes after ``local_size``, proving the local copy is a prefix.

        One read starts ``OVERLAP`` bytes before the local end; if those bytes differ from
        the local copy's end the file was rewritten, not appended, and it is downloaded
        whole.  The result is checked against ``tail_hash`` before it replaces the local
        copy (copy-on-append, see module docstring).
        """
        dest = self.paths(rel)
        k = min(local_size, OVERLAP)
        start = local_size - k
        with open(dest, "rb") as lf:
            lf.seek(start)
            local_end = lf.read(k)
        received = 0
        with StagedFile(self.staging, prefix="a.") as staged:
            head = bytearray()
            ok = len(local_end) == k
            with sftp.open(self.remote(rel), "rb") as f:
                pieces = read_range(f, start, size - start)
                for piece in pieces:
                    received += len(piece)
                    if len(head) < k:
                        need = k - len(head)
                        head += piece[:need]
                        piece = piece[need:]
                        if len(head) == k:
                            if bytes(head) != local_end:
                                ok = False
                                break
                            with open(dest, "rb") as lf:
                                _copy_prefix(lf, staged.file, local_size)
                    if piece:
                        staged.file.write(piece)
            if ok and received == size - start:
                staged.finish(fsync=False)
                if tail_hash is None or file_tail_hash(staged.path, size) == tail_hash:
                    self._publish(staged, rel, dest, mtime_ns(mtime))
                    return FetchResult(received, "incremental")
        # Rewritten, truncated or changed since the manifest: never splice, fetch whole.
        full = self.fetch_full(sftp, rel, size, mtime, tail_hash)
        return FetchResult(received + full.received, "full")


def _copy_prefix(src: Any, dst: Any, n: int) -> None:
    src.seek(0)
    remaining = n
    while remaining:
        buf = src.read(min(remaining, 1 << 20))
        if not buf:
            raise FileChangedError("local copy shrank during an append")
        dst.write(buf)
        remaining -= len(buf)


def remove_stale(cache: Path, tracked: Iterable[str], keep: set[str], ledger: "WrittenLedger") -> int:
    """Delete files a previous sync wrote that the server no longer lists.

    Only files the ledger says sync wrote, and still exactly as written (size, mtime,
    inode), are removed, so local files and local edits survive; empty parent
    directories are pruned up to the cache root.
    """
    removed = 0
    paths = CachePaths(cache)
    for rel in tracked:
        if rel in keep:
            continue
        try:
            dest = paths(rel)
            st = os.lstat(dest)
        except (OSError, UnsafePathError):
            ledger.forget(rel)
            continue
        if not ledger.owns(rel, st):
            continue
        os.unlink(dest)
        ledger.forget(rel)
        removed += 1
        parent = dest.parent
        while parent != cache and cache in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent
    return removed


class WrittenLedger:
    """What sync itself wrote into a cache: ``relpath -> [[size, mtime_ns, inode], ...]``.

    Stored in ``<cache>/.runicorn-sync/written.json`` and shared by every sync into the
    cache (manifest and legacy, any server); the cache's sync lock serialises them.  A
    record is added, durably, *before* its file is renamed into place (the rename keeps
    size, mtime and inode), and the older record of the same path is dropped once the
    rename is done, so after a crash at any instant the file on disk matches one of them.
    A file sync skipped as unchanged is never recorded.
    """

    VERSION = 1

    def __init__(self, cache: Path) -> None:
        self.path = cache / SYNC_DIR / "written.json"
        self.lock = threading.RLock()
        self.files: dict[str, list[list[int]]] = {}
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return  # none yet (or unreadable: then nothing local counts as sync's own)
        files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == self.VERSION else None
        if isinstance(files, dict):
            for rel, recs in files.items():
                if isinstance(rel, str) and isinstance(recs, list):
                    good = [r for r in recs if isinstance(r, list) and len(r) == 3
                            and all(isinstance(x, int) for x in r)]
                    if good:
                        self.files[rel] = good

    @staticmethod
    def record(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def owns(self, rel: str, st: os.stat_result) -> bool:
        """True if ``st`` is a regular file sync wrote at ``rel`` and nobody changed since."""
        if not stat.S_ISREG(st.st_mode):
            return False
        with self.lock:
            return self.record(st) in self.files.get(rel, [])

    def add(self, rel: str, rec: list[int]) -> None:
        with self.lock:
            recs = self.files.setdefault(rel, [])
            if rec not in recs:
                recs.append(rec)
                del recs[:-3]

    def settle(self, rel: str, st: os.stat_result) -> None:
        with self.lock:
            self.files[rel] = [self.record(st)]

    def forget(self, rel: str) -> None:
        with self.lock:
            self.files.pop(rel, None)

    def save(self) -> None:
        """Write the ledger atomically (and durably)."""
        with self.lock:
            doc = {"version": self.VERSION, "files": {k: list(v) for k, v in self.files.items()}}
        atomic_write_json(self.path, doc, indent=None)


def foreign_files(cache: Path, run_dir: str, ledger: WrittenLedger, limit: int = 3) -> list[str]:
    """Up to ``limit`` entries below the local ``run_dir`` that sync did not write (or that
    changed since): any such entry makes a server run with that id a collision.

    Raises:
        UnsafePathError: ``run_dir`` is not a safe relative path.
    """
    validate_relpath(run_dir, what="run directory")
    top = os.path.join(cache, run_dir)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        return [run_dir]
    out: list[str] = []
    stack = [(top, run_dir)]
    while stack and len(out) < limit:
        d, rel_d = stack.pop()
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            rel = f"{rel_d}/{e.name}"
            est = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                stack.append((e.path, rel))
            elif not ledger.owns(rel, est):
                out.append(rel)
                if len(out) >= limit:
                    break
    return out


def collision_message(run_dir: str, foreign: list[str]) -> str:
    return (f"run {run_dir} exists locally with files sync did not write or that changed since "
            f"(e.g. {foreign[0]}); the server's run was not synced and the local one was left alone")


class _Collector:
    """Receives paramiko's asynchronous responses for the pipeline (see PipelinedFetcher)."""

    def __init__(self) -> None:
        self.inbox: list[tuple[int, Any, int]] = []

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        self.inbox.append((t, msg, num))


@dataclass
class PipeItem:
    """One small file for the pipeline."""

    rel: str
    size: int
    mtime: float
    tail_hash: str | None


class PipelinedFetcher:
    """Download many small files over ONE SFTP channel with requests in flight together.

    Round trips, not bandwidth, dominate syncs of many small files; a worker pool of
    synchronous clients still pays one round trip per request per worker.  Here the
    opens, reads and closes of up to ``window`` files are on the wire at once.  It uses
    paramiko's request/response plumbing (``_async_request``/``_read_response``), the same
    one its own prefetching uses.  Counted operations: open, read (all chunks of the
    file, like a prefetching read) and close, i.e. 3 per file; wire requests are exact.

    Files that do not come back exactly as the manifest describes (changed since) are
    returned in ``retry`` for the careful one-by-one path.
    """

    MAX_SIZE = 256 << 10  # bigger files use pipelined readv windows one by one
    # Bytes asked for per read request: one request for most run files.  OpenSSH's
    # sftp-server answers up to ~255 KiB; a server answering less gets follow-up reads.
    READ_SIZE = 128 << 10

    def __init__(self, sftp: CountingSFTP, downloader: Downloader, window: int = 64,
                 writers: int = 2) -> None:
        self.sftp = sftp
        self.dl = downloader
        self.window = window
        self.writers = writers
        self._retry_lock = threading.Lock()

    def run(self, items: list[PipeItem], done_cb: Any) -> tuple[list[PipeItem], list[PipeItem]]:
        """Fetch ``items``; calls ``done_cb(item, FetchResult | Exception)`` per file
        (from writer threads: creating files costs as much as fetching them, so local
        writes overlap the network).

        Returns ``(retry, untouched)``: files to fetch carefully, and files never started
        because the connection failed.
        """
        from concurrent.futures import ThreadPoolExecutor

        if not items:
            return [], []
        # Bounds the bytes waiting for a writer.
        slots = threading.BoundedSemaphore(4 * self.window)
        with ThreadPoolExecutor(max_workers=self.writers,
                                thread_name_prefix="runicorn-write") as ex:
            def finish(it: PipeItem, data: bytes | None, err: str | None,
                       retry: list[PipeItem], cb: Any) -> None:
                slots.acquire()

                def job() -> None:
                    try:
                        self._finish(it, data, err, retry, cb)
                    except Exception as exc:  # noqa: BLE001 - never lose a file's outcome
                        cb(it, exc)
                    finally:
                        slots.release()
                ex.submit(job)
            return self._run(items, done_cb, finish)

    def _run(self, items: list[PipeItem], done_cb: Any,
             finish: Any) -> tuple[list[PipeItem], list[PipeItem]]:
        from paramiko.sftp import (
            CMD_CLOSE,
            CMD_DATA,
            CMD_HANDLE,
            CMD_OPEN,
            CMD_READ,
            SFTP_FLAG_READ,
            int64,
        )
        from paramiko.sftp_attr import SFTPAttributes

        raw = self.sftp.raw
        col = _Collector()
        # num -> (kind, item index, offset, length asked)
        pending: dict[int, tuple[str, int, int, int]] = {}
        bufs: dict[int, dict[int, bytes]] = {}
        handles: dict[int, bytes] = {}
        reads_left: dict[int, int] = {}
        failed: dict[int, str] = {}
        retry: list[PipeItem] = []
        next_i = 0
        open_files = 0

        def send(kind: str, i: int, off: int, n: int, t: int, *args: Any) -> None:
            pending[raw._async_request(col, t, *args)] = (kind, i, off, n)  # noqa: SLF001

        def start(i: int) -> None:
            self.sftp.counter.add()
            send("open", i, 0, 0, CMD_OPEN, self.dl.remote(items[i].rel), SFTP_FLAG_READ,
                 SFTPAttributes())

        def close(i: int) -> None:
            send("close", i, 0, 0, CMD_CLOSE, handles.pop(i))

        try:
            while next_i < len(items) and open_files < self.window:
                start(next_i)
                next_i += 1
                open_files += 1
            while pending:
                raw._read_response()  # noqa: SLF001 - dispatches into col
                inbox, col.inbox = col.inbox, []
                for t, msg, num in inbox:
                    kind, i, off, n = pending.pop(num)
                    it = items[i]
                    if kind == "open":
                        if t != CMD_HANDLE:
                            failed[i] = "open failed"
                            open_files -= 1
                            finish(it, None, failed.pop(i), retry, done_cb)
                            continue
                        handles[i] = msg.get_binary()
                        bufs[i] = {}
                        self.sftp.counter.add(2)  # the whole-file read and the close
                        reads_left[i] = 0
                        pos = 0
                        while pos < it.size:
                            step = min(self.READ_SIZE, it.size - pos)
                            send("read", i, pos, step, CMD_READ, handles[i], int64(pos), step)
                            reads_left[i] += 1
                            pos += step
                        if not reads_left[i]:
                            close(i)
                    elif kind == "read":
                        got = msg.get_binary() if t == CMD_DATA else b""
                        if got:
                            bufs[i][off] = got
                        if 0 < len(got) < n and i not in failed:
                            # The server answered with less than asked (its own read
                            # limit): ask for the rest before closing.
                            rest = n - len(got)
                            send("read", i, off + len(got), rest, CMD_READ, handles[i],
                                 int64(off + len(got)), rest)
                            continue
                        if not got:
                            failed.setdefault(i, "short read")
                        reads_left[i] -= 1
                        if reads_left[i] == 0:
                            close(i)
                    else:  # close
                        open_files -= 1
                        reads_left.pop(i, None)
                        chunks = bufs.pop(i, {})
                        data = b"".join(chunks[k] for k in sorted(chunks))
                        finish(it, data, failed.pop(i, None), retry, done_cb)
                    while next_i < len(items) and open_files < self.window:
                        start(next_i)
                        next_i += 1
                        open_files += 1
        except Exception:
            # Connection trouble: whatever was not finished is reported as untouched.
            return retry, items[next_i:] + [items[i] for i in sorted(
                {i for _, i, _, _ in pending.values()})]
        return retry, []

    def _finish(self, it: PipeItem, data: bytes | None, err: str | None,
                retry: list[PipeItem], done_cb: Any) -> None:
        if data is None or err is not None or len(data) != it.size or (
                it.tail_hash is not None
                and sha256_bytes(data[-TAIL_WINDOW:] if it.size else b"") != it.tail_hash):
            with self._retry_lock:
                if data is not None:
                    self.dl.wasted += len(data)
                retry.append(it)
            return
        try:
            dest = self.dl.paths(it.rel)
            with StagedFile(self.dl.staging, prefix="p.") as staged:
                staged.file.write(data)
                self.dl._publish(staged, it.rel, dest, mtime_ns(it.mtime))  # noqa: SLF001
        except (OSError, RunicornError) as exc:
            done_cb(it, exc)
            return
        done_cb(it, FetchResult(len(data), "full"))
