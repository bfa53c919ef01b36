"""Many small files over one SFTP channel, their requests in flight together."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from runicorn.errors import RunicornError
from runicorn.fsutil import StagedFile
from runicorn.hashing import sha256_bytes
from runicorn.sync.client.downloader import Downloader, FetchResult, mtime_ns
from runicorn.sync.client.sftp_io import CountingSFTP
from runicorn.sync.manifest import TAIL_WINDOW


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

    def __init__(self, sftp: CountingSFTP, downloader: Downloader, window: int = 64, writers: int = 2) -> None:
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
        with ThreadPoolExecutor(max_workers=self.writers, thread_name_prefix="runicorn-write") as ex:

            def finish(it: PipeItem, data: bytes | None, err: str | None, retry: list[PipeItem], cb: Any) -> None:
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

    def _run(self, items: list[PipeItem], done_cb: Any, finish: Any) -> tuple[list[PipeItem], list[PipeItem]]:
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
            send("open", i, 0, 0, CMD_OPEN, self.dl.remote(items[i].rel), SFTP_FLAG_READ, SFTPAttributes())

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
                            send("read", i, off + len(got), rest, CMD_READ, handles[i], int64(off + len(got)), rest)
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
            return retry, items[next_i:] + [items[i] for i in sorted({i for _, i, _, _ in pending.values()})]
        return retry, []

    def _finish(self, it: PipeItem, data: bytes | None, err: str | None, retry: list[PipeItem], done_cb: Any) -> None:
        if (
            data is None
            or err is not None
            or len(data) != it.size
            or (it.tail_hash is not None and sha256_bytes(data[-TAIL_WINDOW:] if it.size else b"") != it.tail_hash)
        ):
            with self._retry_lock:
                if data is not None:
                    self.dl.wasted += len(data)
                retry.append(it)
            return
        try:
            dest = self.dl.paths(it.rel)
            with StagedFile(self.dl.staging, prefix="p.") as staged:
                staged.file.write(data)
                self.dl.publish(staged, it.rel, dest, mtime_ns(it.mtime))
        except (OSError, RunicornError) as exc:
            done_cb(it, exc)
            return
        done_cb(it, FetchResult(len(data), "full"))
