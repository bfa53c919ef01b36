"""Atomic downloads of server files into the local directory.

Bytes go to a staged file under ``<cache>/.runicorn-sync/tmp``, get the server's mtime, and
are renamed into place in batches (group commit: one ``syncfs``, or an fsync of each of a
few files, makes a batch's data durable before any of it is renamed, so after a power loss a
file never has the right size and mtime over lost data).  Appends are copy-on-append: the
local copy plus the new bytes are written to a staged file which then replaces the old one,
so a crash leaves either the old or the new file, never a spliced one.  The copy is local I/O, cheap next to the network, and keeps the
rule "a file is replaced whole or not at all" without any journal.  Only files sync wrote
itself are replaced (see :mod:`.written_ledger`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runicorn.errors import UnsafePathError
from runicorn.fsutil import GroupCommit, StagedFile
from runicorn.hashing import sha256_bytes
from runicorn.sync.client.budget import ByteBudget, growth_allowance
from runicorn.sync.client.local_cache import SYNC_DIR, CachePaths
from runicorn.sync.client.report import FileChangedError
from runicorn.sync.client.sftp_io import CountingSFTP, read_range
from runicorn.sync.client.written_ledger import WrittenLedger
from runicorn.sync.manifest import TAIL_WINDOW
from runicorn.sync.manifest import tail_hash as file_tail_hash
from runicorn.sync.manifest_schema import MAX_FILE_SIZE

OVERLAP = 4096  # bytes re-read before an append to prove the local copy is a prefix


def mtime_ns(mtime: float) -> int:
    return int(round(mtime * 1e9))


def same_mtime(st: os.stat_result, mtime: float) -> bool:
    # JSON floats carry ~microsecond precision for current epochs.
    return abs(st.st_mtime_ns - mtime_ns(mtime)) <= 2000


@dataclass
class FetchResult:
    """What one file transfer did."""

    received: int  # bytes that came over the wire
    kind: str  # "full" or "incremental"


class Downloader:
    """Atomic file downloads into a cache directory (one instance per sync)."""

    def __init__(
        self,
        cache: Path,
        remote_root: str,
        budget: ByteBudget | None = None,
        paths: CachePaths | None = None,
        ledger: "WrittenLedger | None" = None,
    ) -> None:
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

    def publish(self, staged: StagedFile, rel: str, dest: Path, mtime_ns_: int) -> None:
        """Hand a fully written staged file to this sync's batch, to become ``dest``.

        Raises:
            UnsafePathError: a directory is in the way.
        """
        staged.finish(fsync=False)
        os.utime(staged.path, ns=(mtime_ns_, mtime_ns_))
        if dest.is_dir() and not dest.is_symlink():
            raise UnsafePathError(f"{dest}: a directory is in the way of a server file")
        with self.ledger.lock:
            self.staged[rel] = WrittenLedger.record(os.lstat(staged.path))  # the rename keeps it
        staged.hand_over(self.batch, dest, rel)  # renamed by commit(), once its data is durable

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

        Call after the transfers (the caller then makes the renames durable: the
        folders they changed are ``self.batch.changed_dirs``).  Returns the files whose
        rename failed: they did not arrive.  Files whose local copy sync did not write (or
        that changed since) are not replaced: see :attr:`refused`.
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

    def fetch_full(self, sftp: CountingSFTP, rel: str, size: int, mtime: float, tail_hash: str | None) -> FetchResult:
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
                self.publish(staged, rel, dest, mtime_ns(mtime))
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
                        f"refused (regenerate the manifest, then sync again)"
                    )
                if extra > 0 and not self.budget.take(extra):
                    raise FileChangedError(
                        f"{rel}: grew by {extra} bytes since the manifest, more than the "
                        f"{self.budget.left} bytes of free space this sync has left"
                    )
                for piece in read_range(f, 0, st.st_size):
                    received += len(piece)
                    staged.file.write(piece)
            if received != st.st_size:
                raise FileChangedError(f"{rel}: changed on the server while being read")
            self.publish(staged, rel, dest, int(st.st_mtime or 0) * 1_000_000_000)
        return received

    def fetch_append(
        self, sftp: CountingSFTP, rel: str, local_size: int, size: int, mtime: float, tail_hash: str | None
    ) -> FetchResult:
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
                    self.publish(staged, rel, dest, mtime_ns(mtime))
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
