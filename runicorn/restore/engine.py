"""Restoring trees from manifests: to a directory (copy or link), to a zip, or one file.

Safety rules, checked for each entry before it (or a folder for it) is written:

* every manifest path is a safe relative path (no ``..``, not absolute, no NUL or
  newline) -- :func:`runicorn.relpath.validate_relpath`;
* no path lies below another entry (a file or a symlink), so nothing can be written
  through a restored symlink (enforced for every tree by the manifest parser);
* files are created with ``O_EXCL | O_NOFOLLOW`` inside a fresh staging directory.

A large tree's entries are read from its pages while the first are written; what
concerns the whole (its file count, its tree id) is checked before anything is renamed
into place, so a manifest that fails late leaves nothing either.

A restore is all-or-nothing: everything is written into
``<parent>/.<name>.rn-restore-<random>`` on the target's filesystem, synced, and only
then renamed onto ``target_dir``.  If any blob is missing nothing is written and the
result lists them in ``missing_blobs`` (``success`` is False).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from runicorn.errors import (
    CorruptManifestError,
    DamagedBlobError,
    IntegrityError,
    RunicornError,
    UnsafePathError,
    option,
)
from runicorn.gcpause import cycle_gc_paused
from runicorn.fsutil import (
    current_umask,
    few_to_sync,
    fsync_dir,
    narrowed_perm,
    read_sized,
    start_writeback,
    sync_ahead,
    sync_written,
    syncfs,
    write_all,
)
from runicorn.hashing import new_sha256
from runicorn.relpath import parent_dirs, safe_join, validate_relpath
from runicorn.restore.checkout import BACKUP_REF_KIND, BackupCallback, Checkout
from runicorn.restore.source import missing_blobs, open_manifest_file, store_root_of
from runicorn.restore.staging import Staging, sweep_abandoned_restores
from runicorn.store.layout import note_blobs_linked_out
from runicorn.store.reader import check_blob_file, check_bytes, read_checked, wrong_hash, wrong_size
from runicorn.store.tree_format import MODE_EXEC, MODE_LINK, ManifestEntries, TreeEntry, path_key
from runicorn.workers import batches, processes_for, run_groups, share_files, worker_count

if TYPE_CHECKING:
    from runicorn.worker_processes import Serving

LINK_MODES = ("copy", "hardlink", "reflink", "auto")
_FICLONE = 0x40049409
Progress = Callable[[int, int], None]


class TargetExistsError(RunicornError, FileExistsError):
    """The restore target exists and is not empty, and ``overwrite`` was not given."""


class _MissingBlob(Exception):
    """A blob vanished from the store: the restore stops and lists every missing one."""


def _copy_fd(src: int, dst: int, size: int) -> tuple[int, str | None]:
    """Copy ``size`` bytes; return ``(bytes copied, sha256 of them or None)``.

    The kernel copies (``copy_file_range``) where it can: those bytes never pass through
    here, so they are not hashed.  Where it cannot (another filesystem) they are read
    and written here, and hashed on the way (a blob read through is checked whole).
    """
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src, dst, min(size - copied, 16 << 20))
            if n == 0:
                break
            copied += n
            start_writeback(dst)  # the disk starts while the next files are copied
        return copied, None
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    h = new_sha256() if copied == 0 else None
    while True:  # filesystems without copy_file_range (or across filesystems)
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return copied, h.hexdigest() if h is not None else None
        if h is not None:
            h.update(chunk)
        write_all(dst, chunk)
        copied += len(chunk)


_SMALL = 1 << 20


def _write_file(blob: str, dest: str, entry: TreeEntry, how: str, umask: int, rel: str = "") -> str:
    """Materialise one regular file; return how it was done (``copy``/``hardlink``/``reflink``).

    The file gets the recorded mode: 0644 or 0755, without the group / other bits when the
    blob is private (its source was), so a 0600 file comes back 0600.  The blob's size is
    checked whatever the method, and its hash where its bytes are read here (small files,
    copies across filesystems): :mod:`runicorn.store.reader`.

    Raises:
        DamagedBlobError: the blob's size or bytes differ from the tree (naming ``rel``).
    """
    what = repr(rel)
    if how == "hardlink" and entry.mode != MODE_EXEC:
        check_blob_file(blob, entry.sha256, entry.size, what)
        # Blobs are read-only and shared; an executable would need the blob's mode changed, so it is copied.
        try:
            os.link(blob, dest, follow_symlinks=False)
            return "hardlink"
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
                raise
    src = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
    try:
        perm = narrowed_perm(0o755 if entry.mode == MODE_EXEC else 0o644, os.fstat(src).st_mode)
        dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, perm)
        try:
            done = ""
            if how in ("reflink", "auto"):
                import fcntl

                try:
                    fcntl.ioctl(dst, _FICLONE, src)
                    done = "reflink"
                    copied = os.fstat(dst).st_size
                except OSError as exc:
                    if how == "reflink":
                        raise RunicornError(
                            f"{dest}: the filesystem cannot reflink ({exc.strerror}); use --link copy or auto"
                        ) from None
            if not done:
                if entry.size <= _SMALL:
                    data = read_sized(src, entry.size)
                    check_bytes(data, blob, entry.sha256, entry.size, what)
                    copied = len(data)
                    write_all(dst, data)
                else:
                    copied, sha = _copy_fd(src, dst, entry.size)
                    if copied == entry.size and sha is not None and sha != entry.sha256:
                        raise wrong_hash(blob, entry.sha256, sha, what)
                done = "copy"
            if copied != entry.size:
                raise wrong_size(blob, entry.sha256, os.fstat(src).st_size, entry.size, what)
            if perm & umask:
                os.fchmod(dst, perm)  # exact mode, whatever the umask (never wider than the blob's)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return done


def restore_from_manifest(
    manifest_path: Path,
    blob_root: Path,
    target_dir: Path,
    *,
    overwrite: bool = False,
    link: str = "copy",
    sync: bool = True,
    progress: Progress | None = None,
    delete: bool = False,
    on_backup: BackupCallback | None = None,
) -> dict[str, Any]:
    """Recreate the tree a manifest describes at ``target_dir``.

    ``link``: ``copy`` (default), ``hardlink`` (files share the read-only blob, so they
    stay read-only -- never make them writable, that would edit the store; executables
    and cross-device files are copied; ``runicorn verify`` reports a blob made writable), ``reflink`` (copy-on-write clone, error if the
    filesystem cannot), ``auto`` (reflink, else copy).  Modes and symlinks are restored
    as recorded.

    A missing or empty target is created all or nothing (staged, then renamed).  An
    existing non-empty target needs ``overwrite`` and is then *checked out*: only the
    paths the tree names are replaced (files already identical are left as they are);
    every other file stays, and ``.git`` is never touched.  ``delete=True`` (implies
    ``overwrite``) also removes the files the tree does not name (outside ``.git``).
    Before anything in the target changes, every file that will be replaced or removed
    is captured into the store under the ref ``restore-backup/<name>`` (kept until that
    ref is deleted); ``on_backup(info)`` is called with it first, and ``result["backup"]``
    holds ``ref``, ``tree``, ``files`` and ``command`` (the CLI line that puts them back).

    Large trees are copied by a few threads; ``progress(done, total)`` (bytes of the
    tree written so far, and in all) is then called from them, one call at a time.  The restored tree is synced before it is renamed
    into place (``sync=False`` skips that: faster, but a power loss soon after may
    leave restored files empty).

    Returns ``success``, ``restored_count``, ``missing_blobs``, ``target_dir``, ``tree``,
    ``total_bytes``, ``link_mode``, ``methods`` (files per method used), ``created``,
    ``replaced``, ``unchanged``, ``removed`` (counts) and ``backup`` (or None).

    Raises:
        FileNotFoundError / CorruptManifestError: the manifest is missing or invalid.
        UnsafePathError: a manifest path would leave the target or pass through a symlink,
            or the checkout would have to change something inside a ``.git`` directory.
        TargetExistsError: the target exists, is not empty, and ``overwrite`` is False
            (or it is not a directory).
        DamagedBlobError (an IntegrityError): a blob has the wrong size, or bytes read
            here do not hash to its name -- naming the blob and the file (nothing is left
            behind; the target is unchanged).
        ChangedWhileReadingError: a file of the target changed while it was captured or
            before it was replaced (it is left as it is; the backup is kept).
        ValueError: an unknown ``link`` mode.
    """
    if link not in LINK_MODES:
        raise ValueError(f"link mode {link!r} is not one of {', '.join(LINK_MODES)}")
    overwrite = overwrite or delete
    manifest, opened = open_manifest_file(manifest_path, blob_root)
    # A large tree's entries are read while its files are written (a fresh target, a
    # leaf page at a time: _materialise); any other restore reads them all first.
    streamed = opened.paged and processes_for(opened.file_count) > 0
    entries = opened.entries if streamed else _read_all(opened)
    blob_root = Path(blob_root).expanduser()
    target = Path(target_dir).expanduser().absolute()
    result: dict[str, Any] = {
        "success": False,
        "restored_count": 0,
        "missing_blobs": [],
        "target_dir": str(target),
        "tree": manifest["tree"],
        "total_bytes": 0,
        "link_mode": link,
        "methods": {},
        "created": 0,
        "replaced": 0,
        "unchanged": 0,
        "removed": 0,
        "backup": None,
    }
    # Missing blobs are found while copying (a missing one aborts the restore and then
    # all are listed): a stat of every blob up front costs as much as the small copies.
    _check_not_the_store(target, blob_root)
    fresh = _check_target(target, overwrite)
    made = _missing_folders(target.parent)  # taken away again if the manifest fails late
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned_restores(target)
    plan: Checkout | None = None
    if not fresh:
        entries = _read_all(opened)
        plan = Checkout(target, entries, delete)
        plan.scan()  # refuses (.git, special files) before anything is written
    staging = Staging(target, blob_root, fresh)
    methods: dict[str, int] = {}
    # Progress counts bytes (of a tree read meanwhile: as its manifest declares them).
    total_bytes = _declared_size(manifest) if not opened.finished else sum(e.size for e in entries.values())
    try:
        # A tree being read is handed over as it is; a checkout writes only what it must.
        wanted: dict[str, TreeEntry] | ManifestEntries = entries if opened.finished else opened
        if plan is not None:
            wanted = {p: entries[p] for p in plan.to_write}
        methods = _materialise(wanted, staging.path, blob_root, link, sync, progress, total_bytes, staging.locks)
        total_bytes = sum(e.size for e in entries.values())
        if plan is None:
            try:
                _publish(staging.path, target)
            except TargetExistsError:
                if not overwrite:
                    raise
                # Someone filled it meanwhile: check out into it instead.
                staging.close()
                plan = Checkout(target, entries, delete)
                plan.scan()
                staging = Staging(target, blob_root, False)
                methods = _materialise(
                    {p: entries[p] for p in plan.to_write},
                    staging.path,
                    blob_root,
                    link,
                    sync,
                    progress,
                    total_bytes,
                    staging.locks,
                )
        if plan is not None:
            result["backup"] = plan.capture(blob_root, on_backup)
            plan.apply(staging.path)
            result.update(
                created=plan.created, replaced=plan.replaced, unchanged=len(plan.unchanged), removed=plan.removed
            )
        else:
            result["created"] = len(entries)
    except DamagedBlobError as exc:
        raise DamagedBlobError(
            f"{exc}; nothing was restored to {target}", sha256=exc.sha256, path=exc.path, what=exc.what
        ) from None
    except CorruptManifestError as exc:  # a page read while the first files were written
        staging.close()
        for folder in reversed(made):
            with contextlib.suppress(OSError):  # not empty: someone else's now
                os.rmdir(folder)
        raise CorruptManifestError(f"{exc}; nothing was restored to {target}") from None
    except _MissingBlob:
        missing = missing_blobs(blob_root, _read_all(opened))
        result["missing_blobs"] = missing
        result["errors"] = [f"{len(missing)} blob(s) missing from {blob_root}; nothing was restored"]
        return result
    finally:
        staging.close()
    result.update(success=True, restored_count=len(entries), methods=methods, total_bytes=total_bytes)
    return result


def _read_all(opened: ManifestEntries) -> dict[str, TreeEntry]:
    """Every entry of an opened manifest, read (and checked) now if not yet.

    Raises:
        CorruptManifestError: as :meth:`ManifestEntries.read_all`.
    """
    if opened.finished:
        return opened.entries
    with cycle_gc_paused():  # an object or more per file, all kept
        return opened.read_all()


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` of ``folder`` would create, outermost first."""
    missing: list[Path] = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing[::-1]


def _declared_size(manifest: dict[str, Any]) -> int:
    """The bytes a manifest says its files hold (a figure for progress only: 0 if absent)."""
    size = manifest.get("total_size_bytes")
    return size if type(size) is int and size >= 0 else 0


_PROGRESS_BYTES = 8 << 20  # report progress at least this often (bytes written)


def _materialise(
    wanted: dict[str, TreeEntry] | ManifestEntries,
    staging: Path,
    blob_root: Path,
    link: str,
    sync: bool,
    progress: Progress | None,
    total: int,
    locks: Sequence[int] = (),
) -> dict[str, int]:
    """Write ``wanted`` below the (empty) ``staging`` directory; return files per method.
    ``wanted``: the entries, or an opened manifest whose entries are read (and checked)
    a leaf page at a time while worker processes write those read before (each batch's
    folders made first), its last checks (file count, tree id) done before this returns.
    ``progress(done, total)`` counts bytes of the whole tree (``total``).  Many files are
    written by worker processes (:mod:`runicorn.worker_processes`), which keep ``locks``
    (the staging folder's, the writer's) held while they live.

    Raises:
        _MissingBlob: a blob is missing (the caller lists them all).
        CorruptManifestError: a page of an opened manifest is missing or damaged, or an
            entry or the whole is wrong (what was written is the caller's to discard).
    """
    methods: dict[str, int] = {}
    # Before the first link (see the function); for a manifest read meanwhile, once its
    # first page has passed the checks (one refused at once leaves the store unmarked).
    first = (lambda: note_blobs_linked_out(blob_root)) if link == "hardlink" else None
    feed = _Feed(wanted, staging, first)
    base = str(staging)
    # Bytes: files a checkout leaves as they are count as done.
    done = total - sum(e.size for e in wanted.values()) if isinstance(wanted, dict) else 0
    lock = threading.Lock()

    def took(counts: dict[str, int], written: int) -> None:
        nonlocal done
        with lock:
            for how, c in counts.items():
                methods[how] = methods.get(how, 0) + c
            done += written
            if progress is not None:
                progress(done, max(done, total))
        if sync:
            # Here, not in the writers: a flush this process starts reports its error to
            # the final sync below (one a worker process started would end with it).
            sync_ahead(staging, written)  # the final sync then has little left

    writer = _EntryWriter(str(blob_root), base, link, current_umask())

    def in_threads() -> None:
        items = feed.rest()
        groups = share_files(items, worker_count(len(items), sum(e.size for _, e in items)), lambda it: it[1].size)
        run_groups(lambda group: writer.write(group, took), groups)

    processes = processes_for(len(wanted) if isinstance(wanted, dict) else wanted.file_count)
    if processes:
        from runicorn.worker_processes import Results, in_processes

        def take(results: Results) -> None:
            for _, (counts, written) in results:
                took(counts, written)

        serve = "runicorn.restore.engine:serve_writes"
        with cycle_gc_paused():  # the entries of a manifest read meanwhile: all kept
            groups = [feed.batches() for _ in range(processes)]
            in_processes(serve, writer, groups, _payload, take, in_threads=in_threads, pass_fds=locks)
    else:
        in_threads()
    entries = feed.finish()
    if progress is not None and not isinstance(wanted, dict) and done != total:
        progress(done, done)  # the declared size was wrong (it is not checked): the bar ends full
    os.chmod(staging, 0o755)
    if sync:
        # What is renamed into place is complete even after a crash: a few files and
        # their folders are fsynced, more take one group sync.
        if few_to_sync(len(entries), len(feed.dirs) + 1):
            files = [f"{base}/{rel}" for rel, entry in entries.items() if entry.mode != MODE_LINK]
            sync_written(staging, files, [f"{base}/{d}" for d in feed.dirs] + [base])
        else:
            syncfs(staging)
    return methods


class _Feed:
    """The entries a restore writes, in batches for its writers, with the folders each
    batch needs made before it is given (in path order: parents first).  From an opened
    manifest, the entries are read a leaf page at a time as batches are asked for
    (:meth:`batches`, shared by the threads feeding the worker processes)."""

    def __init__(
        self, wanted: dict[str, TreeEntry] | ManifestEntries, staging: Path, first: Callable[[], None] | None = None
    ) -> None:
        """``first()`` is called before the first batch is given."""
        self._first = first
        self._staging = staging
        self._wanted = wanted
        self._lock = threading.Lock()
        self.dirs: set[str] = set()
        if isinstance(wanted, dict):
            self._entries: Iterator[tuple[str, TreeEntry]] = iter(wanted.items())
        else:
            self._entries = (entry for chunk in wanted.chunks() for entry in chunk)
        size_of: Callable[[tuple[str, TreeEntry]], int] = lambda it: it[1].size  # noqa: E731
        self._batches = batches(self._entries, size_of, _PROCESS_BATCH_FILES, _PROCESS_BATCH_BYTES)

    def batches(self) -> Iterator[list[tuple[str, TreeEntry]]]:
        """The next batches, each once whichever caller takes it.

        Raises:
            CorruptManifestError: as :meth:`ManifestEntries.chunks`.
        """
        while batch := self._take():
            yield batch

    def rest(self) -> list[tuple[str, TreeEntry]]:
        """Every entry not given yet, as one list.

        Raises:
            CorruptManifestError: as :meth:`ManifestEntries.chunks`.
        """
        return [entry for batch in self.batches() for entry in batch]

    def finish(self) -> dict[str, TreeEntry]:
        """Every entry (all given: an opened manifest's last checks passed).

        Raises:
            CorruptManifestError: as :meth:`ManifestEntries.read_all`.
        """
        if self._take():
            raise RuntimeError("a restore ended before every entry was written")
        return self._wanted if isinstance(self._wanted, dict) else self._wanted.read_all()

    def _take(self) -> list[tuple[str, TreeEntry]]:
        with self._lock:
            batch = next(self._batches, [])
            if batch and self._first is not None:
                self._first()
                self._first = None
            new = parent_dirs(rel for rel, _ in batch) - self.dirs
            for d in sorted(new, key=path_key):
                os.mkdir(safe_join(self._staging, d), 0o755)
            self.dirs |= new
            return batch


_PROCESS_BATCH_FILES = 1024  # a worker process's batch: the step of the progress it reports
_PROCESS_BATCH_BYTES = 16 << 20


def _payload(batch: list[tuple[str, TreeEntry]]) -> list[tuple[str, str, str, int]]:
    # Tuples: a third of the pickling of the entries themselves.
    return [(rel, e.sha256, e.mode, e.size) for rel, e in batch]


class _EntryWriter:
    """Writes tree entries from the blobs below a staging folder (in this process's
    threads, or in a worker process: it travels to one as its setup)."""

    def __init__(self, blob_dir: str, base: str, link: str, umask: int) -> None:
        self.blob_dir, self.base, self.link, self.umask = blob_dir, base, link, umask

    def write(self, items: Sequence[tuple[str, TreeEntry]], took: Callable[[dict[str, int], int], None]) -> None:
        """Write ``items`` (path, entry); ``took(files per method, bytes)`` every few
        hundred files and at the end.

        Raises:
            _MissingBlob: a blob is missing.
            DamagedBlobError: a blob's size or bytes differ from the tree.
        """
        base, blob_dir, link, umask = self.base, self.blob_dir, self.link, self.umask
        counts: dict[str, int] = {}
        reported = unreported = 0
        for i, (rel, entry) in enumerate(items, 1):
            # Paths were validated by the manifest parser; validate again before any
            # write, as the one rule for every path that reaches the filesystem.
            dest = f"{base}/{validate_relpath(rel)}"
            sha = entry.sha256
            blob = f"{blob_dir}/{sha[:2]}/{sha}"
            try:
                if entry.mode == MODE_LINK:
                    link_target = read_checked(blob, sha, entry.size, repr(rel))
                    if b"\0" in link_target:
                        raise IntegrityError(f"{blob}: the symlink target of {rel!r} holds a NUL; nothing was restored")
                    os.symlink(os.fsdecode(link_target), dest)
                    how = "symlink"
                else:
                    how = _write_file(blob, dest, entry, link, umask, rel)
            except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file at blobs/<aa>
                if not os.path.exists(blob):
                    raise _MissingBlob(sha) from None
                raise
            counts[how] = counts.get(how, 0) + 1
            unreported += entry.size
            if i - reported == 256 or i == len(items) or unreported >= _PROGRESS_BYTES:
                took(counts, unreported)
                counts, reported, unreported = {}, i, 0


def serve_writes(writer: _EntryWriter) -> Serving:
    """In a worker process: each batch of ``(path, sha256, mode, size)`` is written by
    ``writer``, answered with ``(files per method, bytes)``."""

    def handle(batch: list[tuple[str, str, str, int]]) -> tuple[dict[str, int], int]:
        counts: dict[str, int] = {}
        total = 0

        def took(more: dict[str, int], written: int) -> None:
            nonlocal total
            for how, c in more.items():
                counts[how] = counts.get(how, 0) + c
            total += written

        writer.write([(rel, TreeEntry(sha, mode, size)) for rel, sha, mode, size in batch], took)
        return counts, total

    return handle, lambda: None


def _check_not_the_store(target: Path, blob_root: Path) -> None:
    """Refuse a target that is, contains or lies inside the store."""
    store_root = store_root_of(blob_root)
    t = os.path.realpath(target)
    for protected in {os.path.realpath(blob_root), os.path.realpath(store_root)}:
        if (
            t == protected
            or protected.startswith(t.rstrip("/") + "/")
            or t.startswith(os.path.realpath(blob_root).rstrip("/") + "/")
        ):
            raise UnsafePathError(f"{target}: refusing to restore onto or around the store at {protected}")


def _check_target(target: Path, overwrite: bool) -> bool:
    """True when the target is missing or an empty directory (a fresh, all-or-nothing restore).

    Raises:
        UnsafePathError: the target is a symlink.
        TargetExistsError: not a directory, or not empty without ``overwrite``.
    """
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return True
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{target}: restore target is a symlink; give the real directory")
    if not stat.S_ISDIR(st.st_mode):
        raise TargetExistsError(f"{target}: exists and is not a directory; move it away first")
    with os.scandir(target) as it:
        if not any(True for _ in it):
            return True
    if not overwrite:
        raise TargetExistsError(
            f"{target}: exists and is not empty (pass {option('overwrite')} "
            f"to check the tree out into it: only the paths it names are replaced)"
        )
    return False


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished staging directory onto the missing or empty target.

    Raises:
        TargetExistsError: the target was filled meanwhile.
    """
    try:
        os.rename(staging, target)  # also atomically replaces an empty directory
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise TargetExistsError(f"{target}: appeared while restoring and is not empty") from None
        raise
    fsync_dir(target.parent)


__all__ = ["restore_from_manifest", "LINK_MODES", "TargetExistsError", "BACKUP_REF_KIND"]
