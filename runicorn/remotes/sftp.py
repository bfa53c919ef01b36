"""The SFTP backend (``sftp://[USER@]HOST[:PORT]/PATH``), through :mod:`runicorn.ssh`.

Create-only writes: the object is written to ``tmp/``, fsynced on the server
(``fsync@openssh.com``), and moved with the plain SFTP ``rename``, which OpenSSH's
sftp-server refuses when the target exists (it links, then unlinks); ``remote add`` probes
that.  SFTP has no directory fsync, so the rename itself is as durable as the server's
filesystem makes it.  Each thread gets its own SFTP channel on one SSH
connection.  Compare-and-swap takes a mutex object (:func:`runicorn.remotes.backend.mutex_cas`).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from runicorn.remotes.backend import CHUNK, ObjectInfo, mutex_cas, put_large_staged, read_chunks, read_object
from runicorn.remotes.errors import RemoteError


class SftpBackend:
    # One SFTP channel per thread: OpenSSH allows 10 sessions per connection by default
    # (MaxSessions), and the lock refresher needs one too.
    max_jobs = 6

    def __init__(self, host: str, port: int | None, user: str | None, root: str, url: str) -> None:
        from runicorn import ssh

        accept = os.environ.get("RUNICORN_SSH_ACCEPT_NEW_HOST_KEY", "") not in ("", "0")
        self.client = ssh.connect(host, port, user, accept_new_host_key=accept)
        self.url = url
        self.root = root.rstrip("/") or "/"
        self._local = threading.local()
        self._channels: list[Any] = []
        self._lock = threading.Lock()
        self._dirs: set[str] = set()
        self.fsync_supported: bool | None = None  # unknown until the first upload
        self.fsyncs = 0  # files fsynced on the server (tests read it)
        path = ""
        for part in self.root.strip("/").split("/"):  # the remote's root, created when missing
            path += "/" + part
            try:
                self.sftp.stat(path)
            except FileNotFoundError:
                try:
                    self.sftp.mkdir(path)
                except OSError as exc:
                    raise RemoteError(f"{url}: cannot create {path} ({exc})") from None

    @property
    def sftp(self) -> Any:
        ch = getattr(self._local, "sftp", None)
        if ch is None:
            ch = self.client.open_sftp()
            self._local.sftp = ch
            with self._lock:
                self._channels.append(ch)
        return ch

    def _p(self, key: str) -> str:
        return posixpath.join(self.root, key)

    def get(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str] | None:
        return read_object(lambda: self.sftp.open(self._p(key), "rb"), max_bytes)

    def get_chunks(self, key: str) -> Iterator[bytes]:
        def opener() -> Any:
            f = self.sftp.open(self._p(key), "rb")
            f.prefetch()  # pipelined reads: one round trip is not paid per chunk
            return f

        return read_chunks(opener, f"{self.url}/{key}")

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = self.sftp.stat(self._p(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size or 0, float(st.st_mtime or 0), "")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        top = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        stack = [top]
        while stack:
            rel = stack.pop()
            try:
                entries = self.sftp.listdir_attr(self._p(rel) if rel else self.root)
            except FileNotFoundError:
                continue
            for a in sorted(entries, key=lambda a: a.filename):
                key = f"{rel}/{a.filename}" if rel else a.filename
                if stat.S_ISDIR(a.st_mode or 0):
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        stack.append(key)
                elif key.startswith(prefix):
                    yield ObjectInfo(key, a.st_size or 0, float(a.st_mtime or 0), "")

    def _mkdirs(self, rel_dir: str) -> None:
        if rel_dir in self._dirs:
            return
        path = self.root
        for part in rel_dir.split("/"):
            path = posixpath.join(path, part)
            try:
                self.sftp.mkdir(path)
            except OSError:
                pass  # exists (or a real problem the next write reports)
        self._dirs.add(rel_dir)

    def fsync(self, f: Any) -> bool:
        """Ask the server to fsync an open file (OpenSSH's ``fsync@openssh.com``; paramiko
        has no call for it).  Returns False when the server lacks the extension (then the
        bytes are as durable as its page cache), remembered for the connection.

        Raises:
            OSError: the server failed the fsync.
        """
        from paramiko.sftp import CMD_EXTENDED

        if self.fsync_supported is False:
            return False
        f.flush()
        # Collect the acks of the pipelined writes first: a failed write surfaces here, and
        # paramiko would otherwise wait later for acks our own request already read past.
        pending = getattr(f, "_reqs", None)
        while pending:
            self.sftp._read_response(pending.popleft())
        try:
            self.sftp._request(CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as exc:
            if "unsupported" not in str(exc).lower():
                raise
            self.fsync_supported = False
            return False
        self.fsync_supported = True
        with self._lock:
            self.fsyncs += 1
        return True

    def _stage(self, data: bytes | Path) -> str:
        self._mkdirs("tmp")
        tmp = self._p(f"tmp/{os.getpid()}-{os.urandom(8).hex()}.part")
        with self.sftp.open(tmp, "wb") as f:
            f.set_pipelined(True)
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    while chunk := src.read(CHUNK):
                        f.write(chunk)
            else:
                f.write(data)
            self.fsync(f)
        return tmp

    def put_create(self, key: str, data: bytes | Path) -> bool:
        dest = self._p(key)
        if self.head(key) is not None:
            return False
        tmp = self._stage(data)
        try:
            for attempt in range(2):
                try:
                    self.sftp.rename(tmp, dest)  # plain rename: fails when dest exists
                    return True
                except OSError:
                    if self.head(key) is not None:
                        return False
                    if attempt:
                        raise
                    self._mkdirs(posixpath.dirname(key))
            return False
        finally:
            try:
                self.sftp.remove(tmp)
            except OSError:
                pass

    def put_cas(self, key: str, data: bytes, expected: str | None) -> str:
        return mutex_cas(self, key, data, expected)

    def put_large(
        self, key: str, path: Path, size: int, sha: str, resume: Any, on_bytes: Callable[[int], None] | None = None
    ) -> tuple[bool, int, int]:
        return put_large_staged(self, key, path, size, sha, resume, on_bytes)

    def partial_size(self, name: str) -> int | None:
        info = self.head(name)
        return None if info is None else info.size

    def read_range(self, name: str, offset: int, n: int) -> bytes:
        with self.sftp.open(self._p(name), "rb") as f:
            f.seek(offset)
            return f.read(n)

    @contextlib.contextmanager
    def open_partial(self, name: str, offset: int) -> Iterator[Any]:
        self._mkdirs("tmp")
        with self.sftp.open(self._p(name), "r+b" if offset else "wb") as f:
            if offset:
                f.truncate(offset)
                f.seek(offset)
            f.set_pipelined(True)
            f.sync = lambda: self.fsync(f)
            yield f

    def publish_partial(self, name: str, key: str) -> bool:
        for attempt in range(2):
            try:
                self.sftp.rename(self._p(name), self._p(key))  # plain rename: refused when key exists
                return True
            except OSError:
                if self.head(key) is not None:
                    self.delete(name)
                    return False
                if attempt:
                    raise
                self._mkdirs(posixpath.dirname(key))
        return False

    def move_aside(self, key: str) -> str | None:
        self._mkdirs("tmp")
        aside = f"tmp/aside-{os.urandom(8).hex()}"
        try:
            self.sftp.rename(self._p(key), self._p(aside))
        except OSError:
            if self.head(key) is None:
                return None
            raise
        return aside

    def restore(self, aside: str, key: str) -> bool:
        try:
            self.sftp.rename(self._p(aside), self._p(key))  # plain rename: refused when key exists
        except OSError:
            if self.head(key) is not None:
                return False
            raise
        return True

    def put_replace(self, key: str, data: bytes) -> None:
        self._mkdirs(posixpath.dirname(key))
        tmp = self._stage(data)
        try:
            self.sftp.posix_rename(tmp, self._p(key))
        except OSError:
            self.sftp.remove(tmp)
            raise

    def delete(self, key: str) -> None:
        try:
            self.sftp.remove(self._p(key))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        with self._lock:
            for ch in self._channels:
                try:
                    ch.close()
                except Exception:  # noqa: BLE001 - closing a dead channel
                    pass
            self._channels.clear()
        self.client.close()
