"""The one place that stages and renames: atomic, durable file writes.

Every file Runicorn writes reaches its final name by :func:`publish` (or the
helpers built on it): the bytes go to a temporary file in a staging directory on
the same filesystem, are fsynced, and only then renamed (or hard-linked) into place,
after which the parent directory is fsynced.  A reader never sees a half file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import IO, Any, Callable, Iterator

_libc: Any = None


# A batch of at most this many new files is made durable by an fsync of each (and of the
# folders that name them), a larger one by one syncfs.  syncfs also waits for every
# other dirty page of the filesystem: behind another process's unwritten 2 GiB, a
# one-file snapshot took 3.5 s instead of 0.14 s.
FEW_FILES = 8
FEW_DIRS = 2 * FEW_FILES


def few_to_sync(files: int, dirs: int = 0) -> bool:
    """Whether ``files`` files and ``dirs`` folders are few enough to fsync one by one
    (:func:`sync_written`) rather than with one ``syncfs``."""
    return files <= FEW_FILES and dirs <= FEW_DIRS


def sync_written(
    root: str | os.PathLike[str],
    files: Collection[str | os.PathLike[str]] = (),
    dirs: Collection[str | os.PathLike[str]] = (),
) -> None:
    """Make durable what a writer just changed on ``root``'s filesystem: the data of
    ``files`` and the entries (renames, links, unlinks) of the folders ``dirs``.

    A few (:func:`few_to_sync`) are fsynced one by one, files first; more take one
    :func:`syncfs` of ``root``, which costs about one fsync but also waits for every
    other process's unwritten data.

    Raises:
        OSError: the kernel reported a write-back error (EIO, ENOSPC, ...), here or in
            a background flush since the last sync.
    """
    if not few_to_sync(len(files), len(dirs)):
        syncfs(Path(root))
        return
    for f in files:
        fsync_file(f)
    for d in dirs:
        with contextlib.suppress(FileNotFoundError):  # removed since: nothing of it to keep
            fsync_dir(d)
    _raise_background_error()


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync the file at ``path`` (its data and size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so a rename or link inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (group commit).

    One ``syncfs`` after writing many small files costs about as much as one fsync,
    where per-file fsyncs would cost one each.  Falls back to ``os.sync`` only where
    ``syncfs`` does not exist.

    Raises:
        OSError: the kernel reported a write-back error (EIO, ENOSPC, ...), here or in
            a background flush since the last call (one still running is waited for).
    """
    _syncfs_now(path)
    _raise_background_error()


def _syncfs_now(path: Path) -> None:
    """:func:`syncfs` without looking at background flushes."""
    if _libc is None:
        _load_libc()
    if _libc and hasattr(_libc, "syncfs"):
        import ctypes

        fd = os.open(path, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                if err != errno.ENOSYS:
                    raise OSError(err, f"syncfs failed: {os.strerror(err)}", str(path))
                os.sync()
        finally:
            os.close(fd)
    else:
        os.sync()


def _raise_background_error() -> None:
    # An error a background flush saw is reported once, to whichever sync comes next:
    # the kernel reports a write-back error to one syncfs caller only.  A flush still
    # running is waited for first: the error it may yet see belongs to this sync.
    global _background_error
    with _background_sync:
        error, _background_error = _background_error, None
    if error is not None:
        raise error


_background_sync = threading.Lock()
_background_error: OSError | None = None


def syncfs_in_background(path: Path) -> None:
    """Start a :func:`syncfs` in a daemon thread unless one is already running.

    Writers call this as they stage data, so the disk writes what is staged so far
    while they go on reading; their own final ``syncfs`` then has little left to wait
    for (and raises any error the background flush met).  It never replaces that sync.
    """
    if not _background_sync.acquire(blocking=False):
        return

    def run() -> None:
        global _background_error
        try:
            _syncfs_now(path)
        except OSError as exc:
            _background_error = exc
        finally:
            _background_sync.release()

    try:
        threading.Thread(target=run, name="runicorn-syncfs", daemon=True).start()
    except BaseException:  # no thread (a resource limit): no flush, and the lock is free again
        _background_sync.release()
        raise


# Bytes written (and not yet synced) after which :func:`sync_ahead` starts a background
# flush: small enough that the disk is busy from the first seconds of a large write.
SYNC_AHEAD_BYTES = 8 << 20
_unsynced = 0
_unsynced_lock = threading.Lock()


def sync_ahead(path: Path, written: int) -> None:
    """Count ``written`` more bytes staged below ``path``; each time this process's writers
    (whichever thread, whatever batch) have staged :data:`SYNC_AHEAD_BYTES` since the
    last time, start :func:`syncfs_in_background`.

    The count belongs to the process, not to a call: a worker process is handed batches
    smaller than the step, and counted per batch it would never start a flush, leaving
    every byte to the final sync.
    """
    global _unsynced
    with _unsynced_lock:
        _unsynced += written
        if _unsynced < SYNC_AHEAD_BYTES:
            return
        _unsynced = 0
    syncfs_in_background(path)


def current_umask() -> int:
    """The process umask, read without changing it (other threads may be creating files)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no /proc: the only portable way, briefly
    os.umask(mask)
    return mask


def blob_perm(st_mode: int) -> int:
    """The permission of a blob stored from a file with ``st_mode``: read-only, and
    readable by group / others only if the source was (0444 for a 0644 file, 0400 for a
    0600 one).  Permissions are never widened by storing a file."""
    return 0o400 | (st_mode & 0o044)


def narrowed_perm(perm: int, blob_mode: int) -> int:
    """``perm`` (0644 or 0755, what a restore or an export would give) without the group /
    other bits of a blob that group / others may not read: a 0600 file comes back 0600."""
    if not blob_mode & 0o040:
        perm &= ~0o070
    if not blob_mode & 0o004:
        perm &= ~0o007
    return perm


def make_dir(path: Path, mode: int) -> bool:
    """Create one directory with exactly ``mode`` (whatever the umask); return False if
    it existed (its mode is left alone: an existing directory is the user's choice)."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return False
    if mode & current_umask() or mode & 0o7000:
        os.chmod(path, mode)
    return True


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now, without waiting.

    A later ``syncfs``/``fsync`` then finds most of the data already on disk, so the
    disk works while the caller goes on reading and hashing.  A no-op where
    ``sync_file_range`` is unavailable.
    """
    if _libc is None:
        _load_libc()
    if _libc and hasattr(_libc, "sync_file_range"):
        import ctypes

        _libc.sync_file_range(fd, ctypes.c_longlong(0), ctypes.c_longlong(0), _SYNC_FILE_RANGE_WRITE)


_SYNC_FILE_RANGE_WRITE = 2


def _load_libc() -> None:
    # ctypes is imported only by writers that sync: a read-only command starts faster
    # without it.  The C library is already loaded into the interpreter, so its symbols
    # are the process's own (dlopen(NULL)): ctypes.util.find_library would run
    # /sbin/ldconfig in a child process, tens of ms on every writing command.
    global _libc
    import ctypes

    try:
        _libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        _libc = False


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_renameat2: Any = None


def rename_noreplace(src: str, dst: str) -> bool:
    """Rename ``src`` to ``dst`` unless ``dst`` exists; return False (``src`` kept) if it does.

    Atomic where the kernel and filesystem support ``renameat2(RENAME_NOREPLACE)``;
    elsewhere a hard link then an unlink of ``src``, which never replaces ``dst`` either.

    Raises:
        OSError: as ``rename`` (a missing directory gives FileNotFoundError).
    """
    global _renameat2
    import ctypes

    if _renameat2 is None:
        if _libc is None:
            _load_libc()
        fn = getattr(_libc, "renameat2", None) if _libc else None
        if fn is not None:
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            fn.restype = ctypes.c_int
        _renameat2 = fn or False
    if _renameat2:
        if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), _RENAME_NOREPLACE) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
            raise OSError(err, os.strerror(err), src, None, dst)
    try:
        os.link(src, dst)
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP) or os.path.lexists(dst):
            raise
        os.rename(src, dst)  # no hard links here: checked, then renamed
        return True
    os.unlink(src)
    return True


def temp_name(prefix: str = "") -> str:
    """A collision-free file name for staging."""
    return f"{prefix}{os.getpid()}-{os.urandom(8).hex()}.part"


class StagedFile:
    """A file being written in a staging directory, published atomically.

    Use as a context manager: on an exception the staged file is removed.
    ``commit(dest)`` fsyncs, renames onto ``dest`` and fsyncs ``dest``'s directory.
    """

    def __init__(self, staging_dir: Path, *, mode: int = 0o644, prefix: str = "") -> None:
        self.path = staging_dir / temp_name(prefix)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = os.open(self.path, flags, mode)
        except FileNotFoundError:
            # Create the staging directory only when it is missing: checking it on every
            # file costs more than the file itself when many small files are staged.
            staging_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, flags, mode)
        self.file: IO[bytes] = os.fdopen(fd, "wb")
        self._done = False

    def __enter__(self) -> "StagedFile":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._done:
            self.discard()

    def finish(self, *, fsync: bool = True, mode: int | None = None) -> Path:
        """Close the file (fsync first unless a later group sync covers it)."""
        if not self.file.closed:
            self.file.flush()
            if fsync:
                os.fsync(self.file.fileno())
            if mode is not None:
                os.fchmod(self.file.fileno(), mode)
            self.file.close()
        return self.path

    def commit(self, dest: Path, *, fsync: bool = True, mode: int | None = None) -> Path:
        """Publish the staged file at ``dest`` atomically (replacing any old file)."""
        self.finish(fsync=fsync, mode=mode)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.path, dest)
        self._done = True
        if fsync:
            fsync_dir(dest.parent)
        return dest

    def hand_over(self, batch: "GroupCommit", dest: Path, key: str = "") -> None:
        """Close the file unsynced and leave its publication at ``dest`` to ``batch``,
        which syncs the whole batch with one :func:`syncfs` before renaming any of it."""
        self.finish(fsync=False)
        self._done = True
        batch.add(self.path, dest, key)

    def discard(self) -> None:
        """Remove the staged file."""
        if not self.file.closed:
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._done = True


class GroupCommit:
    """Publish many staged files with one flush: data durable first, then the renames.

    Per-file fsyncs cost one disk flush each; here :meth:`commit` runs one ``syncfs``
    over the filesystem (a few files: :func:`sync_written`) and only then renames every
    file into place, so a rename that survives a power loss always points at durable
    data.  The renames themselves are made durable by the caller, once, with
    :attr:`changed_dirs` (the folders they changed).  Thread-safe; files are handed over
    with :meth:`StagedFile.hand_over`.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_files: int = 4096,
        max_bytes: int = 1 << 30,
        keep: Callable[[Path, str], bool] | None = None,
        before_renames: Callable[[list[str]], None] | None = None,
    ) -> None:
        """``keep(dest, key)`` is asked just before each rename (False: not published);
        ``before_renames(keys)`` runs once per batch, after the data sync, before the renames."""
        self.root = root
        self.keep = keep
        self.before_renames = before_renames
        self.max_files = max_files
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: list[tuple[Path, Path, str]] = []
        self._bytes = 0
        self.failed: dict[str, OSError] = {}  # key -> why its rename failed
        self.refused: list[str] = []  # keys ``keep`` did not let be published
        self.changed_dirs: set[Path] = set()  # folders a rename or a new folder changed

    def add(self, staged: Path, dest: Path, key: str = "") -> None:
        """Queue ``staged`` (closed, complete) for ``dest``; commits when the batch is full."""
        size = os.stat(staged).st_size
        with self._lock:
            self._items.append((staged, dest, key))
            self._bytes += size
            full = len(self._items) >= self.max_files or self._bytes >= self.max_bytes
        if full:
            self.commit()

    def commit(self) -> None:
        """Flush the queued files' data, then rename each into place.

        A file whose rename fails is removed and recorded in :attr:`failed`; one that
        ``keep`` refuses is removed unpublished and recorded in :attr:`refused`.
        """
        with self._lock:
            items, self._items, self._bytes = self._items, [], 0
        if not items:
            return
        sync_written(self.root, [staged for staged, _, _ in items])
        if self.keep is not None:
            kept = []
            for staged, dest, key in items:
                if self.keep(dest, key):
                    kept.append((staged, dest, key))
                    continue
                with contextlib.suppress(OSError):
                    os.unlink(staged)
                with self._lock:
                    self.refused.append(key or str(dest))
            items = kept
        if self.before_renames is not None and items:
            self.before_renames([key for _, _, key in items])
        for staged, dest, key in items:
            try:
                folder = dest.parent
                if folder not in self.changed_dirs:
                    while not folder.is_dir():  # each folder made here changes its parent
                        self.changed_dirs.add(folder)
                        folder = folder.parent
                    self.changed_dirs.add(folder)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, dest)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(staged)
                with self._lock:
                    self.failed[key or str(dest)] = exc


def atomic_write_bytes(
    dest: Path, data: bytes | Iterable[bytes], *, staging_dir: Path | None = None, mode: int = 0o644
) -> Path:
    """Write ``data`` (bytes, or chunks of them) to ``dest`` atomically and durably.

    ``staging_dir`` defaults to ``dest``'s directory (always the same filesystem).
    """
    dest = Path(dest)
    staging = staging_dir if staging_dir is not None else dest.parent
    with StagedFile(staging, mode=mode, prefix="." + dest.name + ".") as staged:
        if isinstance(data, (bytes, bytearray, memoryview)):
            staged.file.write(data)
        else:
            staged.file.writelines(data)
        return staged.commit(dest)


def atomic_write_text(dest: Path, text: str, **kw: Any) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(dest, text.encode("utf-8"), **kw)


def atomic_write_json(dest: Path, obj: Any, *, indent: int | None = 2, **kw: Any) -> Path:
    """Write JSON atomically, keys sorted, newline terminated, UTF-8.

    A string holding lone surrogates (a file name that is not UTF-8, as ``os.fsdecode``
    gives it) cannot be UTF-8: the document is then written with ASCII escapes, which
    ``json.loads`` reads back to the same string.
    """
    text = json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=False) + "\n"
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = (json.dumps(obj, indent=indent, sort_keys=True, ensure_ascii=True) + "\n").encode("ascii")
    return atomic_write_bytes(dest, data, **kw)


def read_sized(fd: int, size: int) -> bytes:
    """The bytes of a file whose size is ``size`` (from ``fstat``): up to ``size + 1`` of
    them, so a file that grew meanwhile reads as longer; a short read before EOF (FUSE,
    network filesystems) is continued, and the usual case costs one ``read``.

    Raises:
        OSError: as ``os.read``.
    """
    data = os.read(fd, size + 1)
    while len(data) < size:
        more = os.read(fd, size + 1 - len(data))
        if not more:
            break
        data += more
    return data


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked).

    Raises:
        OSError: as ``os.write`` (ENOSPC on a full disk).
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_line_durable(path: Path, line: str) -> None:
    """Append ``line`` plus a newline to a log file (created if missing) and fsync it.

    One ``write`` with ``O_APPEND``, so concurrent appenders never interleave inside a
    line; the file is fsynced (and its directory, when the file was created) before this
    returns, so the line survives a crash from then on.
    """
    data = (line + "\n").encode("utf-8", "surrogateescape")
    path.parent.mkdir(parents=True, exist_ok=True)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        fsync_dir(path.parent)


def publish_link(staged: str | os.PathLike[str], dest: str | os.PathLike[str]) -> bool:
    """Hard-link a complete staged file to ``dest`` unless ``dest`` exists.

    Returns True if this call created ``dest``.  Never overwrites an existing file,
    which is how content-addressed objects stay write-once.  Falls back to an
    exclusive-create copy-free rename on filesystems without hard links.  A missing
    folder of ``dest`` is made (with the umask's mode: a caller for whom the mode
    matters makes it first).
    """
    for attempt in (1, 2):
        try:
            os.link(staged, dest)
            return True
        except FileExistsError:
            return False
        except FileNotFoundError:
            if not os.path.lexists(staged):
                if os.path.lexists(dest):
                    return False  # published already (by whoever moved the staged file)
                raise
            if attempt == 2:
                raise
            os.makedirs(os.path.dirname(os.fspath(dest)), exist_ok=True)
        except OSError:
            if os.path.lexists(dest):
                return False
            os.replace(staged, dest)
            return True
    raise AssertionError("unreachable")


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a directory tree of any depth (or a file), without recursion.

    Subdirectories are renamed up into the top directory as they are found, so the walk
    never goes deeper than one level: no RecursionError, no path longer than PATH_MAX,
    two descriptors at a time.  Symlinks are removed, never followed.  A missing path is
    not an error.

    Raises:
        OSError: an entry cannot be removed (permissions, I/O).
    """
    path = os.fspath(path)
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    except NotADirectoryError:
        os.unlink(path)
        return
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        os.unlink(path)  # a symlink
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        while True:
            with os.scandir(top) as it:
                names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
            if not names:
                break
            for name, is_dir in names:
                if not is_dir:
                    os.unlink(name, dir_fd=top)
                    continue
                fd = os.open(name, flags, dir_fd=top)
                try:
                    with os.scandir(fd) as it:
                        inner = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                    for sub, sub_is_dir in inner:
                        if sub_is_dir:
                            os.rename(sub, f".rn-flat-{os.urandom(8).hex()}", src_dir_fd=fd, dst_dir_fd=top)
                        else:
                            os.unlink(sub, dir_fd=fd)
                finally:
                    os.close(fd)
                os.rmdir(name, dir_fd=top)
    finally:
        os.close(top)
    os.rmdir(path)


def lock_dir(path: str | os.PathLike[str]) -> int:
    """Hold an exclusive ``flock`` on a directory this process just created; return the
    descriptor (closing it releases the lock, as a crash does).  Others learn whether
    its owner still lives with :func:`abandoned`."""
    import fcntl

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def abandoned(path: str | os.PathLike[str]) -> bool:
    """True when the directory exists and no live process holds its :func:`lock_dir` lock
    (its owner was killed, or finished without removing it)."""
    return lock_held(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW) is False


def lock_held(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> bool | None:
    """Whether a live process holds an ``flock`` on ``path`` (opened with ``flags``, never
    created); None when it is not there.  One that cannot be opened for another reason
    (permission, a loop) counts as held: the caller then leaves its owner's work alone.
    The probe takes the lock for an instant when it is free."""
    import fcntl

    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@contextlib.contextmanager
def open_locked(path: Path, *, shared: bool = False, blocking: bool = True) -> Iterator[int]:
    """Hold an ``flock`` on ``path`` (created if missing) for the duration.

    Raises:
        BlockingIOError: when ``blocking`` is False and the lock is held elsewhere.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        flags = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        if not blocking:
            flags |= fcntl.LOCK_NB
        fcntl.flock(fd, flags)
        yield fd
    finally:
        os.close(fd)
