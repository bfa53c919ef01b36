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

``put_large(key, path, size, sha, resume, on_bytes)`` uploads a blob larger than one part
so that an interrupted upload resumes (:mod:`runicorn.remotes.resume`): S3 by a multipart
upload, file and SFTP by :func:`put_large_staged` (a partial file in ``tmp/`` continued
from its verified length).  It returns ``(created, bytes_sent, bytes_resumed)``.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Protocol

from runicorn.hashing import new_sha256, sha256_bytes
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
    return sha256_bytes(data)


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

    mutex = f"{LOCKS}mutex-{sha256_bytes(key.encode())[:32]}.json"
    record = dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "key": key})
    deadline = time.monotonic() + 2 * MUTEX_STALE_SECONDS
    while not backend.put_create(mutex, record):
        import json

        got = backend.get(mutex, 4096)
        try:
            holder = json.loads(got[0]) if got else None
        except ValueError:
            holder = {}
        if got is not None and (
            not isinstance(holder, dict)
            or time.time() - float(holder.get("time", 0)) > MUTEX_STALE_SECONDS
            or _dead_here(holder)
        ):
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


def _verified_length(backend: Any, staged: str, path: Path, verified: int) -> int:
    """How much of a staged partial file can be kept: the length recorded after its last
    fsync, if the file still has it and its last piece equals the local bytes there."""
    if verified <= 0:
        return 0
    have = backend.partial_size(staged)
    if have is None or have < verified:
        return 0
    n = min(CHUNK, verified)
    with open(path, "rb") as f:
        f.seek(verified - n)
        local = f.read(n)
    return verified if backend.read_range(staged, verified - n, n) == local else 0


def put_large_staged(
    backend: Any, key: str, path: Path, size: int, sha: str, resume: Any, on_bytes: Callable[[int], None] | None = None
) -> tuple[bool, int, int]:
    """Create-only upload of a large local blob through a partial file in ``tmp/``, fsynced
    and recorded in ``resume`` every part, so a killed upload continues from there.

    Raises:
        IntegrityError: the local file is not ``size`` bytes hashing to ``sha`` (nothing is published).
        RemoteError / OSError: the remote failed.
    """
    from runicorn.errors import IntegrityError
    from runicorn.remotes.resume import part_size

    rec = resume.load(remote=backend.url, key=key, size=size) if resume is not None else None
    if rec is not None and not str(rec.get("staged", "")).startswith("tmp/partial-"):
        rec = None
    if backend.head(key) is not None:  # already there (another pusher, or our killed self)
        if rec is not None:
            backend.delete(rec["staged"])
        if resume is not None:
            resume.clear()
        return False, 0, 0
    if rec is None:
        rec = {
            "remote": backend.url,
            "key": key,
            "size": size,
            "verified": 0,
            "staged": f"tmp/partial-{sha[:16]}-{os.urandom(6).hex()}",
        }
        if resume is not None:
            resume.save(rec)
    staged = rec["staged"]
    start = _verified_length(backend, staged, path, int(rec.get("verified") or 0))
    if on_bytes is not None and start:
        on_bytes(start)  # progress counts the kept prefix as done
    part = part_size()
    h = new_sha256()
    pos = 0
    with open(path, "rb") as src:
        while pos < start and (chunk := src.read(min(CHUNK, start - pos))):
            h.update(chunk)  # the kept prefix is hashed too: the whole blob is checked
            pos += len(chunk)
        with backend.open_partial(staged, start) as out:
            checkpoint = pos
            while chunk := src.read(CHUNK):
                h.update(chunk)
                out.write(chunk)
                pos += len(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
                if pos - checkpoint >= part:
                    out.sync()
                    checkpoint = rec["verified"] = pos
                    if resume is not None:
                        resume.save(rec)
            out.sync()
    if pos != size or h.hexdigest() != sha:
        backend.delete(staged)
        if resume is not None:
            resume.clear()
        raise IntegrityError(
            f"{path}: local blob is damaged (size or sha256 differs); run "
            "`runicorn verify --deep`; nothing of it was published"
        )
    placed = backend.publish_partial(staged, key)
    if resume is not None:
        resume.clear()
    return placed, pos - start, start


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


class _PartialFile:
    """A staged partial file of a file remote, open for appending."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, data: bytes) -> None:
        from runicorn.fsutil import write_all

        write_all(self.fd, data)

    def sync(self) -> None:
        os.fsync(self.fd)

    def __enter__(self) -> "_PartialFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)


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

    def put_large(
        self, key: str, path: Path, size: int, sha: str, resume: Any, on_bytes: Callable[[int], None] | None = None
    ) -> tuple[bool, int, int]:
        return put_large_staged(self, key, path, size, sha, resume, on_bytes)

    def partial_size(self, name: str) -> int | None:
        try:
            return os.stat(self._path(name)).st_size
        except FileNotFoundError:
            return None

    def read_range(self, name: str, offset: int, n: int) -> bytes:
        with open(self._path(name), "rb") as f:
            f.seek(offset)
            return f.read(n)

    def open_partial(self, name: str, offset: int) -> "_PartialFile":
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path(name), os.O_WRONLY | os.O_CREAT, 0o644)  # read-only once published
        try:
            os.ftruncate(fd, offset)
            os.lseek(fd, offset, os.SEEK_SET)
        except BaseException:
            os.close(fd)
            raise
        return _PartialFile(fd)

    def publish_partial(self, name: str, key: str) -> bool:
        from runicorn.fsutil import fsync_dir, rename_noreplace

        dest, staged = self._path(key), self._path(name)
        os.chmod(staged, 0o444)  # as every published object
        dest.parent.mkdir(parents=True, exist_ok=True)
        placed = rename_noreplace(str(staged), str(dest))
        if placed:
            fsync_dir(dest.parent)
        else:
            staged.unlink()
        return placed

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
