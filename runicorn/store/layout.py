"""Names and records of the storage layout (``schema/README.md``, "Storage layout"; ref
files: ``schema/refs.md``): blob and ref records, ref file names and their reading,
quarantining a file, and the writer-directory naming recovery relies on.

Every part of the store uses these; this module imports no other part of the store.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runicorn.errors import RefError
from runicorn.fsutil import atomic_write_bytes, lock_held
from runicorn.hashing import is_sha256_hex

if TYPE_CHECKING:
    from runicorn.store.store import Store

DEFAULT_GC_GRACE_SECONDS = 3600.0
KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
WRITER_STALE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its SHA-256 and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Ref:
    """A named root that keeps a tree alive."""

    kind: str
    name: str
    tree: str
    created_at: float
    meta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class TreeInfo:
    """What the index knows of a stored tree: its size, how many refs name it (and
    which), and whether a live writer holds it against gc."""

    tree: str
    file_count: int
    total_size: int
    refcount: int
    held: bool
    refs: tuple[tuple[str, str], ...]


def ref_filename(name: str) -> str:
    """File name for a ref: percent-encoded name, or a digest when too long."""
    encoded = quote(name, safe="")
    if len(encoded) > 200:
        import hashlib

        encoded = "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return encoded + ".json"


def check_ref(kind: str, name: str) -> None:
    """Refuse a ref kind or name the layout cannot hold.

    Raises:
        RefError: bad kind or name.
    """
    if not KIND_RE.match(kind or ""):
        raise RefError(f"ref kind {kind!r} must match {KIND_RE.pattern}")
    if not name or "\x00" in name or "\n" in name or len(name) > 4096:
        raise RefError(f"ref name {name!r} must be 1-4096 characters without NUL or newline")


def read_ref_file(path: str | Path, dir_fd: int | None = None) -> dict[str, Any] | None:
    """A ref file's record, or None when it is missing or damaged (``path`` relative to
    the folder ``dir_fd`` when given: gc reads every ref file, a thousand opens by name
    below one open folder cost a fraction of opening each by its whole path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK, dir_fd=dir_fd)  # (a FIFO reads as empty)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        chunks = [os.read(fd, 1 << 16)]  # (a ref file is a few hundred bytes: one read)
        while len(chunks[-1]) == 1 << 16:
            chunks.append(os.read(fd, 1 << 16))
        record = json.loads(b"".join(chunks).decode("utf-8"))
    except (IsADirectoryError, BlockingIOError):
        return None
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    finally:
        os.close(fd)
    if not isinstance(record, dict) or not is_sha256_hex(record.get("tree")):
        return None
    return record


def row_to_ref(row: tuple[Any, ...]) -> Ref:
    """A :class:`Ref` from a ``refs`` row ``(kind, name, tree, created_at, meta)``."""
    kind, name, tree, created_at, meta = row
    return Ref(kind, name, tree, float(created_at), json.loads(meta or "{}"))


def quarantine(store: Store, path: Path, why: str) -> Path:
    """Move ``path`` into ``archive/quarantine/`` under a name saying ``why``; return where."""
    store.quarantine_dir.mkdir(parents=True, exist_ok=True)
    dest = store.quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{why}-{path.name}-{os.urandom(3).hex()}"
    os.replace(path, dest)
    return dest


def writer_alive(d: Path) -> bool:
    """Whether a live process holds the lock of writer directory ``d`` (``w-<...>/lock``):
    its staging area, holds and batches are in use, not left for recovery."""
    return lock_held(d / "lock") is True


WORKERS_MARK = "workers"  # in a writer folder: its lock was passed to worker processes
WORKERS_DIE_SECONDS = 2.0  # how long recovery waits for the workers of a dead writer


def workers_dying(d: Path) -> bool:
    """Whether writer folder ``d`` (``w-<pid>-<hex>``) passed its lock to worker processes
    and its own process is gone: the workers, killed with it, still hold the lock for a
    moment (or, where they cannot be killed with it, until their batch ends)."""
    if not (d / WORKERS_MARK).exists():
        return False
    try:
        os.kill(int(d.name.split("-")[1]), 0)
    except (IndexError, ValueError, ProcessLookupError):
        return True
    except PermissionError:
        pass
    return False


def nascent_owner_alive(d: Path) -> bool:
    """Whether the process that is creating staging dir ``n-<pid>-<hex>`` may still live."""
    try:
        pid = int(d.name.split("-")[1])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    try:
        return time.time() - d.stat().st_mtime < WRITER_STALE_SECONDS
    except FileNotFoundError:
        return True


def file_size(path: str) -> int:
    """The size of ``path``, or -1 when it is not there."""
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file stands at blobs/<aa>
        return -1


def blob_files_off(
    blobs_dir: str | os.PathLike[str], blobs: Iterable[tuple[str, int]], *, first: bool = False
) -> list[str]:
    """The blobs of ``blobs`` (``(sha256, size)`` pairs) whose file under ``blobs_dir`` is
    missing or has another size, each once, in hash order; with ``first``, at most one of
    them (an early "no").

    One ``stat`` per blob, each resolving one name below its ``blobs/<aa>`` folder, which
    is opened once (not the whole path again; measured a fifth faster than path-based
    stats at 100,000 blobs, and sorting the hashes to visit the folders in turn cost more
    than it saved).  Raises nothing: a folder that cannot be opened (or a file where it
    belongs) counts its blobs as off.
    """
    off: list[str] = []
    top = _open_dir(blobs_dir, None)
    if top < 0:
        off = sorted({sha for sha, _ in blobs})
        return off[:1] if first else off
    base = f"{os.fspath(blobs_dir)}/"
    fds: dict[str, int] = {}
    stat_ = os.stat
    try:
        for sha, size in blobs:
            prefix = sha[:2]
            fd = fds.get(prefix)
            if fd is None:
                fd = fds[prefix] = _open_dir(prefix, top)
            try:
                if fd >= 0:
                    if stat_(sha, dir_fd=fd).st_size == size:
                        continue
                elif fd == _NO_FD_LEFT and stat_(f"{base}{prefix}/{sha}").st_size == size:
                    continue
            except OSError:
                pass
            off.append(sha)
            if first:
                break
    finally:
        for fd in fds.values():
            if fd >= 0:
                os.close(fd)
        os.close(top)
    return sorted(set(off))


# Beside ``blobs/``: present once a blob file was ever hard-linked out of the store (a
# hard-linked restore, an installed artifact), so a blob's size can change without its
# folder changing; snapshots then stat every blob they vouch for (no seal is trusted).
LINKED_OUT = "blobs-linked-out"
# Beside ``blobs/``: written when the store is created, so its blobs were hard-linked out
# only with LINKED_OUT written first.  A store made before this bookkeeping has no such
# file: its blobs may have been linked out unrecorded, so it counts as marked.
LINKS_TRACKED = "blobs-links-tracked"


def store_archive(blobs_dir: str | os.PathLike[str]) -> Path | None:
    """The store's ``archive/`` when ``blobs_dir`` is a store's ``archive/blobs`` (its index
    beside it), else None (a folder of blobs handed to a restore on its own)."""
    blobs = Path(os.path.realpath(blobs_dir))  # (a store reached through a symlink is still a store)
    archive = blobs.parent
    if blobs.name != "blobs" or archive.name != "archive" or not (archive / "index.sqlite3").is_file():
        return None
    return archive


def note_blobs_linked_out(blobs_dir: str | os.PathLike[str]) -> None:
    """Mark, durably and before the first link, that blobs of ``blobs_dir`` are about to be
    hard-linked out of it.  Raises nothing: a store this process cannot write (read-only)
    is one no snapshot of this process writes to either."""
    archive = store_archive(blobs_dir)
    if archive is None or os.path.lexists(archive / LINKED_OUT):
        return
    try:
        atomic_write_bytes(archive / LINKED_OUT, b"", mode=0o444)
    except OSError:
        pass


def note_links_tracked(archive: str | os.PathLike[str]) -> None:
    """Record, in a new store's ``archive/`` (before it holds a blob), that every hard link
    out of its blobs is marked (:func:`note_blobs_linked_out`).

    Raises:
        OSError: the file cannot be written.
    """
    atomic_write_bytes(Path(archive) / LINKS_TRACKED, b"", mode=0o444)


def blobs_linked_out(blobs_dir: str | os.PathLike[str]) -> bool:
    """Whether :func:`note_blobs_linked_out` ever marked ``blobs_dir``, or its store is
    older than that bookkeeping (no :data:`LINKS_TRACKED`): then nobody knows."""
    archive = os.path.dirname(os.path.abspath(blobs_dir))
    return os.path.lexists(os.path.join(archive, LINKED_OUT)) or not os.path.lexists(
        os.path.join(archive, LINKS_TRACKED)
    )


def blob_folder_states(blobs_dir: str | os.PathLike[str]) -> dict[str, tuple[int, int, int, int]]:
    """``(dev, ino, mtime_ns, ctime_ns)`` of each ``blobs/<aa>`` folder there is, by prefix.

    A folder whose state is unchanged had no file added, removed or renamed in it since
    (its timestamps move with every change of its entries; ``ctime`` cannot be put back).
    Raises nothing: a folder that cannot be read is left out.
    """
    states: dict[str, tuple[int, int, int, int]] = {}
    try:
        with os.scandir(blobs_dir) as it:
            for entry in it:
                if len(entry.name) != 2:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    states[entry.name] = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
    except OSError:
        pass
    return states


_NO_FD_LEFT = -2  # _open_dir: the process is out of descriptors, resolve whole paths instead


def _open_dir(path: str | os.PathLike[str], dir_fd: int | None) -> int:
    """A descriptor to resolve names below the folder ``path``; -1 when it cannot be opened,
    ``_NO_FD_LEFT`` when the process has no descriptor to spare.

    O_RDONLY measured faster for ``stat`` below it than O_PATH, which is the fallback for
    a folder that may be searched but not listed."""
    for flags in (os.O_RDONLY, getattr(os, "O_PATH", 0)):
        try:
            return os.open(path, flags | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dir_fd)
        except PermissionError:
            continue
        except OSError as exc:
            return _NO_FD_LEFT if exc.errno in (errno.EMFILE, errno.ENFILE) else -1
    return -1


def move_if_exists(src: Path, dest: Path) -> None:
    """Rename ``src`` to ``dest`` (creating its folder) unless ``src`` is gone."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    except FileNotFoundError:
        pass
