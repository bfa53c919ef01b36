"""The object protocol every remote kind implements, and the shared-directory backend.

Operations (keys are ``/``-separated, relative to the remote's root):

* ``get(key, max_bytes)`` -> ``(bytes, etag)`` or None (at most ``max_bytes + 1`` bytes are
  read, so an object larger than expected is detected without reading it all);
  ``get_chunks(key)`` streams a large object
* ``head(key)`` / ``list(prefix)`` -> :class:`ObjectInfo`
* ``put_create(key, data)``: create-only (False when the key exists; never overwrites)
* ``put_cas(key, data, expected)``: compare-and-swap on the etag (``expected=None``: the key
  must not exist); raises :class:`RemoteConflictError` when the object changed
* ``put_replace(key, data)``: unconditional (lock refreshes only); ``delete(key)``

File and SFTP remotes have no conditional writes, so their compare-and-swap takes a
mutex object (created create-only, stale after :data:`MUTEX_STALE_SECONDS`) around the
read-compare-write; their etag is the SHA-256 of the object's bytes.  They also have
``move_aside(key)`` (rename to a fresh ``tmp/`` name) and ``restore(aside, key)``
(rename back, create-only), with which a stale mutex is broken rename-then-check.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Protocol

from runicorn.remotes.errors import RemoteConflictError, RemoteError

CHUNK = 1 << 20
MUTEX_STALE_SECONDS = 30.0


class ObjectInfo(NamedTuple):
    key: str
    size: int
    mtime: float  # unix seconds, last write
    etag: str


class Backend(Protocol):
    url: str  # canonical URL, for messages and the index

    def get(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str] | None: ...
    def get_chunks(self, key: str) -> Iterator[bytes]: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str) -> Iterator[ObjectInfo]: ...
    def put_create(self, key: str, data: bytes | Path) -> bool: ...
    def put_cas(self, key: str, data: bytes, expected: str | None) -> str: ...
    def put_replace(self, key: str, data: bytes) -> None: ...
    def delete(self, key: str) -> None: ...
    def close(self) -> None: ...


def content_etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_object(opener: Callable[[], Any], max_bytes: int | None) -> tuple[bytes, str] | None:
    """Read a whole object (at most ``max_bytes + 1`` bytes) from a file-like ``opener()``;
    None when it does not exist.  The etag is the SHA-256 of the bytes."""
    try:
        with opener() as f:
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    except FileNotFoundError:
        return None
    return data, content_etag(data)


def read_chunks(opener: Callable[[], Any], where: str) -> Iterator[bytes]:
    """Stream an object from a file-like ``opener()`` in :data:`CHUNK` pieces.

    Raises:
        RemoteError: the object does not exist.
    """
    try:
        f = opener()
    except FileNotFoundError:
        raise RemoteError(f"{where}: missing on the remote") from None
    with f:
        while chunk := f.read(CHUNK):
            yield chunk


def mutex_cas(backend: "Backend", key: str, data: bytes, expected: str | None) -> str:
    """Compare-and-swap for backends without conditional writes: under a mutex object.

    Raises:
        RemoteConflictError: the object is not in the expected state.
        RemoteBusyError: the mutex stays held by a live holder.
    """
    from runicorn.remotes.errors import RemoteBusyError
    from runicorn.remotes.layout import LOCKS, dumps

    mutex = f"{LOCKS}mutex-{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"
    record = dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "key": key})
    deadline = time.monotonic() + 2 * MUTEX_STALE_SECONDS
    while not backend.put_create(mutex, record):
        import json

        got = backend.get(mutex, 4096)
        try:
            holder = json.loads(got[0]) if got else None
        except ValueError:
            holder = {}
        if got is not None and (not isinstance(holder, dict) or time.time() - float(holder.get("time", 0)) >
                                MUTEX_STALE_SECONDS or _dead_here(holder)):
            _break_mutex(backend, mutex, got[1])  # its holder died mid-update; the update itself is atomic
            continue
        if time.monotonic() > deadline:
            raise RemoteBusyError(f"{backend.url}/{mutex}: held for over {2 * MUTEX_STALE_SECONDS:.0f}s")
        time.sleep(0.02)
    try:
        current = backend.get(key)
        if (current is None) != (expected is None) or (current is not None and current[1] != expected):
            raise RemoteConflictError(f"{backend.url}/{key}: changed by someone else")
        backend.put_replace(key, data)
        return content_etag(data)
    finally:
        backend.delete(mutex)


def _break_mutex(backend: "Backend", mutex: str, etag: str) -> None:
    """Remove a stale mutex only if it is still the one read (``etag``): rename it aside,
    then check what was moved.  A fresh mutex (another breaker was faster and took one) is
    renamed back create-only, so of two breakers at most one proceeds."""
    aside = backend.move_aside(mutex)  # type: ignore[attr-defined]
    if aside is None:
        return  # gone meanwhile
    moved = backend.get(aside, 4096)
    if moved is not None and moved[1] != etag and backend.restore(aside, mutex):  # type: ignore[attr-defined]
        return
    backend.delete(aside)


def _dead_here(holder: dict) -> bool:
    """True when ``holder`` names a process of this host that no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError, TypeError, OverflowError):
        return False
    return False


class FileBackend:
    """A remote in a local or network-mounted directory.

    Create-only by ``renameat2(RENAME_NOREPLACE)`` (else link + unlink) from ``tmp/``;
    every object is fsynced before it is published, and its directory after.
    """

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        self.tmp = root / "tmp"

    def _path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str] | None:
        return read_object(lambda: open(self._path(key), "rb"), max_bytes)

    def get_chunks(self, key: str) -> Iterator[bytes]:
        return read_chunks(lambda: open(self._path(key), "rb"), f"{self.url}/{key}")

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime, "")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        top = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root / top if top else self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for name in sorted(filenames):
                key = rel_dir + name
                if key.startswith(prefix):
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    yield ObjectInfo(key, st.st_size, st.st_mtime, "")

    def _stage(self, data: bytes | Path) -> Path:
        from runicorn.fsutil import StagedFile

        staged = StagedFile(self.tmp, mode=0o444)
        try:
            if isinstance(data, Path):
                with open(data, "rb") as src:
                    shutil.copyfileobj(src, staged.file, CHUNK)
            else:
                staged.file.write(data)
            staged.finish(fsync=True)
        except BaseException:
            staged.discard()
            raise
        return staged.path

    def put_create(self, key: str, data: bytes | Path) -> bool:
        from runicorn.fsutil import fsync_dir, rename_noreplace

        dest = self._path(key)
        if dest.exists():
            return False
        staged = self._stage(data)
        try:
            for _ in range(2):
                try:
                    placed = rename_noreplace(str(staged), str(dest))
                    break
                except FileNotFoundError:
                    dest.parent.mkdir(parents=True, exist_ok=True)
            else:
                raise RemoteError(f"{self.url}/{key}: cannot create its directory")
        finally:
            if staged.exists():
                staged.unlink()
        if placed:
            fsync_dir(dest.parent)
        return placed

    def put_cas(self, key: str, data: bytes, expected: str | None) -> str:
        return mutex_cas(self, key, data, expected)

    def move_aside(self, key: str) -> str | None:
        aside = f"tmp/aside-{os.urandom(8).hex()}"
        self.tmp.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(self._path(key), self._path(aside))
        except FileNotFoundError:
            return None
        return aside

    def restore(self, aside: str, key: str) -> bool:
        from runicorn.fsutil import rename_noreplace

        return rename_noreplace(str(self._path(aside)), str(self._path(key)))

    def put_replace(self, key: str, data: bytes) -> None:
        from runicorn.fsutil import atomic_write_bytes

        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(dest, data, staging_dir=self.tmp)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise

    def close(self) -> None:
        pass
