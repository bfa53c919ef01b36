"""Restoring trees from manifests: to a directory (copy or link), to a zip, or one file.

Safety rules, checked before anything is written:

* every manifest path is a safe relative path (no ``..``, not absolute, no NUL or
  newline) -- :func:`runicorn.relpath.validate_relpath`;
* no path lies below another entry (a file or a symlink), so nothing can be written
  through a restored symlink (enforced for every tree by the manifest parser);
* files are created with ``O_EXCL | O_NOFOLLOW`` inside a fresh staging directory.

A restore is all-or-nothing: everything is written into
``<parent>/.<name>.rn-restore-<random>`` on the target's filesystem, synced, and only
then renamed onto ``target_dir``.  If any blob is missing nothing is written and the
result lists them in ``missing_blobs`` (``success`` is False).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from runicorn.errors import BlobNotFoundError, DamagedBlobError, IntegrityError, RunicornError, UnsafePathError, option
from runicorn.fsutil import (
    abandoned,
    current_umask,
    fsync_dir,
    lock_dir,
    narrowed_perm,
    remove_tree,
    start_writeback,
    syncfs,
    syncfs_in_background,
    write_all,
)
from runicorn.hashing import is_sha256_hex
from runicorn.relpath import safe_join, validate_relpath
from runicorn.store.tree import MODE_EXEC, MODE_LINK, TreeEntry, parse_manifest, path_key
from runicorn.workers import run_groups, share, worker_count

LINK_MODES = ("copy", "hardlink", "reflink", "auto")
_FICLONE = 0x40049409
Progress = Callable[[int, int], None]


class TargetExistsError(RunicornError, FileExistsError):
    """The restore target exists and is not empty, and ``overwrite`` was not given."""


class _MissingBlob(Exception):
    """A blob vanished from the store: the restore stops and lists every missing one."""


def _read_manifest(manifest_path: Path) -> tuple[dict[str, Any], dict[str, TreeEntry]]:
    path = Path(manifest_path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "manifest not found", str(path)) from None
    return parse_manifest(data, origin=path)


def load_manifest(manifest_path: Path) -> dict[str, Any]:
    """Read and validate a manifest; return it (``manifest["files"]`` maps path -> entry).

    Raises:
        FileNotFoundError: no such file.
        CorruptManifestError: not a valid manifest (bad JSON, bad path, wrong tree id).
    """
    return _read_manifest(manifest_path)[0]


def _blob(blob_root: Path, sha: str) -> Path:
    if not is_sha256_hex(sha):
        raise UnsafePathError(f"{sha!r} is not a sha256 hex digest")
    return blob_root / sha[:2] / sha


def _missing(blob_root: Path, entries: dict[str, TreeEntry]) -> list[str]:
    return sorted({e.sha256 for e in entries.values() if not os.path.isfile(_blob(blob_root, e.sha256))})


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
    import hashlib

    h = hashlib.sha256() if copied == 0 else None
    while True:  # filesystems without copy_file_range (or across filesystems)
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return copied, h.hexdigest() if h is not None else None
        if h is not None:
            h.update(chunk)
        write_all(dst, chunk)
        copied += len(chunk)


_SMALL = 1 << 20
_SYNC_AHEAD_BYTES = 8 << 20


def _write_file(blob: str, dest: str, entry: TreeEntry, how: str, umask: int, rel: str = "") -> str:
    """Materialise one regular file; return how it was done (``copy``/``hardlink``/``reflink``).

    The file gets the recorded mode: 0644 or 0755, without the group / other bits when the
    blob is private (its source was), so a 0600 file comes back 0600.  The blob's size is
    checked whatever the method, and its hash where its bytes are read here (small files,
    copies across filesystems): :mod:`runicorn.store.reader`.

    Raises:
        DamagedBlobError: the blob's size or bytes differ from the tree (naming ``rel``).
    """
    from runicorn.store.reader import check_blob_file, check_bytes, wrong_size

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
                    data = os.read(src, entry.size + 1)
                    check_bytes(data, blob, entry.sha256, entry.size, what)
                    copied = len(data)
                    write_all(dst, data)
                else:
                    copied, sha = _copy_fd(src, dst, entry.size)
                    if copied == entry.size and sha is not None and sha != entry.sha256:
                        from runicorn.store.reader import wrong_hash

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


BACKUP_REF_KIND = "restore-backup"
BackupCallback = Callable[[dict[str, Any]], None]


def restore_from_manifest(manifest_path: Path, blob_root: Path, target_dir: Path, *,
                          overwrite: bool = False, link: str = "copy", sync: bool = True,
                          progress: Progress | None = None, delete: bool = False,
                          on_backup: BackupCallback | None = None) -> dict[str, Any]:
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
    manifest, entries = _read_manifest(manifest_path)
    blob_root = Path(blob_root).expanduser()
    target = Path(target_dir).expanduser().absolute()
    result: dict[str, Any] = {
        "success": False, "restored_count": 0, "missing_blobs": [], "target_dir": str(target),
        "tree": manifest["tree"], "total_bytes": 0, "link_mode": link, "methods": {},
        "created": 0, "replaced": 0, "unchanged": 0, "removed": 0, "backup": None,
    }
    # Missing blobs are found while copying (a missing one aborts the restore and then
    # all are listed): a stat of every blob up front costs as much as the small copies.
    _check_not_the_store(target, blob_root)
    fresh = _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned_restores(target)
    plan: _Checkout | None = None
    if not fresh:
        plan = _Checkout(target, entries, delete)
        plan.scan()  # refuses (.git, special files) before anything is written
    staging = _Staging(target, blob_root, fresh)
    methods: dict[str, int] = {}
    total_bytes = sum(e.size for e in entries.values())  # progress counts bytes
    try:
        wanted = entries if plan is None else {p: entries[p] for p in plan.to_write}
        methods = _materialise(wanted, staging.path, blob_root, link, sync, progress, total_bytes)
        if plan is None:
            try:
                _publish(staging.path, target)
            except TargetExistsError:
                if not overwrite:
                    raise
                # Someone filled it meanwhile: check out into it instead.
                staging.close()
                plan = _Checkout(target, entries, delete)
                plan.scan()
                staging = _Staging(target, blob_root, False)
                methods = _materialise({p: entries[p] for p in plan.to_write}, staging.path, blob_root,
                                       link, sync, progress, total_bytes)
        if plan is not None:
            result["backup"] = plan.capture(blob_root, on_backup)
            plan.apply(staging.path)
            result.update(created=plan.created, replaced=plan.replaced, unchanged=len(plan.unchanged),
                          removed=plan.removed)
        else:
            result["created"] = len(entries)
    except DamagedBlobError as exc:
        raise DamagedBlobError(f"{exc}; nothing was restored to {target}", sha256=exc.sha256, path=exc.path,
                               what=exc.what) from None
    except _MissingBlob:
        missing = _missing(blob_root, entries)
        result["missing_blobs"] = missing
        result["errors"] = [f"{len(missing)} blob(s) missing from {blob_root}; nothing was restored"]
        return result
    finally:
        staging.close()
    result.update(success=True, restored_count=len(entries), methods=methods,
                  total_bytes=sum(e.size for e in entries.values()))
    return result


_PROGRESS_BYTES = 8 << 20  # report progress at least this often (bytes written)


def _materialise(entries: dict[str, TreeEntry], staging: Path, blob_root: Path, link: str, sync: bool,
                 progress: Progress | None, total: int) -> dict[str, int]:
    """Write ``entries`` below the (empty) ``staging`` directory; return files per method.
    ``progress(done, total)`` counts bytes of the whole tree (``total``).

    Raises:
        _MissingBlob: a blob is missing (the caller lists them all).
    """
    methods: dict[str, int] = {}
    dirs = sorted({"/".join(p.split("/")[:i]) for p in entries for i in range(1, p.count("/") + 1)},
                  key=path_key)
    for d in dirs:
        os.mkdir(safe_join(staging, d), 0o755)
    from runicorn.store.reader import read_checked

    blob_dir = str(blob_root)
    base = str(staging)
    umask = current_umask()
    # Bytes: files a checkout leaves as they are count as done.
    done = total - sum(e.size for e in entries.values())
    lock = threading.Lock()

    def work(items: list[tuple[str, TreeEntry]]) -> None:
        nonlocal done
        counts: dict[str, int] = {}
        written = reported = unreported = 0
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
                        raise IntegrityError(f"{blob}: the symlink target of {rel!r} holds a NUL; "
                                             f"nothing was restored")
                    os.symlink(os.fsdecode(link_target), dest)
                    how = "symlink"
                else:
                    how = _write_file(blob, dest, entry, link, umask, rel)
            except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file at blobs/<aa>
                if not os.path.exists(blob):
                    raise _MissingBlob(sha) from None
                raise
            counts[how] = counts.get(how, 0) + 1
            written += entry.size
            if written >= _SYNC_AHEAD_BYTES:
                syncfs_in_background(staging)  # the final sync then has little left
                written = 0
            unreported += entry.size
            if i - reported == 256 or i == len(items) or unreported >= _PROGRESS_BYTES:
                with lock:
                    done += unreported
                    reported, unreported = i, 0
                    if progress is not None:
                        progress(done, total)
        with lock:
            for how, c in counts.items():
                methods[how] = methods.get(how, 0) + c

    items = list(entries.items())
    run_groups(work, share(items, worker_count(len(items), sum(e.size for e in entries.values())),
                           lambda it: it[1].size))
    os.chmod(staging, 0o755)
    if sync:
        syncfs(staging)  # one group sync: what is renamed into place is complete even after a crash
    return methods


class _Staging:
    """A private staging directory on the target's filesystem (so renames are atomic).

    Beside the target (``.<name>.rn-restore-<random>``), or inside it when the target
    is a mount point of its own.  Locked while in use and named in the store's writer
    directory: one left by a killed restore is removed by the next restore of the
    target or by the store's recovery.  ``close`` removes it.
    """

    def __init__(self, target: Path, blob_root: Path, fresh: bool) -> None:
        where, name = target.parent, f".{target.name}{RESTORE_MARK}{secrets.token_hex(6)}"
        if not fresh and os.stat(target).st_dev != os.stat(target.parent).st_dev:
            where, name = target, f"{RESTORE_MARK}{secrets.token_hex(6)}"
        self.path = where / name
        os.mkdir(self.path, 0o700)
        # Held until the end: a staging directory whose lock is free was left by a killed
        # restore, and the next restore of this target (or the store's recovery) removes it.
        self._lock: int | None = lock_dir(self.path)
        self._note = _note_staging(blob_root, self.path)

    def close(self) -> None:
        if self._lock is None:
            return
        _discard(self.path)
        os.close(self._lock)
        self._lock = None
        if self._note is not None:
            self._note.unlink(missing_ok=True)


RESTORE_MARK = ".rn-restore-"


def _discard(staging: Path) -> None:
    try:
        remove_tree(staging)
    except OSError:
        pass  # left with its lock free: the next restore of the target removes it


def sweep_abandoned_restores(target: Path) -> list[str]:
    """Remove the staging directories of earlier restores of ``target`` that were killed
    (``.<name>.rn-restore-*`` beside it, ``.rn-restore-*`` inside it, whose lock no live
    process holds); return them."""
    removed: list[str] = []
    stale: list[str] = []
    for where, prefix in ((target.parent, f".{target.name}{RESTORE_MARK}"), (target, RESTORE_MARK)):
        try:
            with os.scandir(where) as it:
                stale += [e.path for e in it if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
    for path in stale:
        if abandoned(path):
            remove_tree(path)
            removed.append(path)
    return removed


def _note_staging(blob_root: Path, staging: Path) -> Path | None:
    """When restoring from a store this process may write, name the staging directory in
    the store's writer directory: if the restore is killed, the store's recovery (every
    command that opens it next; gc, verify) finds and removes it."""
    archive = blob_root.parent
    if blob_root.name != "blobs" or archive.name != "archive" or not (archive / "index.sqlite3").is_file():
        return None
    from runicorn.fsutil import atomic_write_json
    from runicorn.store import open_store

    store = open_store(archive.parent)
    if store.read_only:
        return None
    note = store.writer_dir() / f"restore-{secrets.token_hex(6)}.json"
    atomic_write_json(note, {"staging": str(staging)})
    return note


def _check_not_the_store(target: Path, blob_root: Path) -> None:
    """Refuse a target that is, contains or lies inside the store."""
    store_root = _store_root(blob_root)
    t = os.path.realpath(target)
    for protected in {os.path.realpath(blob_root), os.path.realpath(store_root)}:
        if t == protected or protected.startswith(t.rstrip("/") + "/") or \
                t.startswith(os.path.realpath(blob_root).rstrip("/") + "/"):
            raise UnsafePathError(f"{target}: refusing to restore onto or around the store at {protected}")


def _store_root(blob_root: Path) -> Path:
    return blob_root.parent.parent if blob_root.name == "blobs" and blob_root.parent.name == "archive" \
        else blob_root


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
        raise TargetExistsError(f"{target}: exists and is not empty (pass {option('overwrite')} "
                                f"to check the tree out into it: only the paths it names are replaced)")
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


def _is_git(rel: str) -> bool:
    return ".git" in rel.split("/")


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class _Checkout:
    """Plan and apply a restore into an existing directory (see :func:`restore_from_manifest`).

    ``scan`` decides what changes: ``to_write`` (tree paths to create or replace),
    ``unchanged``, ``displace`` (target paths that must go -- captured first: files the
    tree replaces, files and directories in the way of the tree's directories or files,
    and with ``delete`` every other file).  ``capture`` stores them; ``apply`` changes
    the target, one atomic rename or unlink per path.
    """

    def __init__(self, target: Path, entries: dict[str, TreeEntry], delete: bool) -> None:
        self.target = target
        self.entries = entries
        self.delete = delete
        self.to_write: list[str] = []
        self.unchanged: list[str] = []
        self.displace: dict[str, str] = {}  # target relpath -> "file" | "dir"
        self.captured: dict[str, tuple[int, int, int, int, int]] = {}  # relpath -> stat key
        self.created = self.replaced = self.removed = 0
        self.removed_dirs: set[str] = set()

    def _lstat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(os.path.join(self.target, rel))
        except FileNotFoundError:
            return None

    def scan(self) -> None:
        """Decide what changes.

        Raises:
            UnsafePathError: a change would touch ``.git``, or a special file is in the way.
        """
        from runicorn.hashing import sha256_file

        if ".git" in self.target.parts:
            raise UnsafePathError(f"{self.target}: lies inside a .git directory; a restore never changes "
                                  f".git (restore into an empty directory)")
        dirs = sorted({"/".join(p.split("/")[:i]) for p in self.entries for i in range(1, p.count("/") + 1)},
                      key=path_key)
        blocked: set[str] = set()  # tree directories missing in the target (so is all below)
        for d in dirs:
            parent = d.rpartition("/")[0]
            if parent in blocked or parent in self.displace:
                blocked.add(d)
                continue
            st = self._lstat(d)
            if st is None:
                blocked.add(d)
            elif not stat.S_ISDIR(st.st_mode):
                self._displace(d, st)
        for rel, entry in sorted(self.entries.items(), key=lambda it: path_key(it[0])):
            if _is_git(rel):
                raise UnsafePathError(f"{self.target}: the tree names {rel!r}; a restore into an existing "
                                      f"directory never writes inside .git (restore into an empty one)")
            parent = rel.rpartition("/")[0]
            if parent and (parent in blocked or parent in self.displace or
                           any(a in self.displace for a in _ancestors(parent))):
                self.to_write.append(rel)
                continue
            st = self._lstat(rel)
            if st is None:
                self.to_write.append(rel)
                continue
            if stat.S_ISREG(st.st_mode) and entry.mode != MODE_LINK and st.st_size == entry.size \
                    and (entry.mode == MODE_EXEC) == bool(st.st_mode & 0o100) \
                    and sha256_file(os.path.join(self.target, rel)) == entry.sha256:
                self.unchanged.append(rel)
                continue
            if stat.S_ISLNK(st.st_mode) and entry.mode == MODE_LINK:
                from runicorn.hashing import sha256_bytes

                if sha256_bytes(os.fsencode(os.readlink(os.path.join(self.target, rel)))) == entry.sha256:
                    self.unchanged.append(rel)
                    continue
            self._displace(rel, st)
            self.to_write.append(rel)
        if self.delete:
            self._scan_extra()

    def _displace(self, rel: str, st: os.stat_result) -> None:
        if _is_git(rel):
            raise UnsafePathError(f"{self.target}: restoring would replace {rel!r}, inside .git; refused")
        if stat.S_ISDIR(st.st_mode):
            self._check_dir_free_of_git(rel)
            self.displace[rel] = "dir"
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            self.displace[rel] = "file"
        else:
            raise UnsafePathError(f"{self.target / rel}: a special file (not a regular file, symlink or "
                                  f"directory) is where the tree has a path; move it away first")

    def _check_dir_free_of_git(self, rel: str) -> None:
        for dirpath, dirnames, filenames in os.walk(self.target / rel):
            if ".git" in dirnames or ".git" in filenames:
                raise UnsafePathError(f"{self.target / rel}: restoring would replace this directory, which "
                                      f"holds a .git; refused")
            for name in filenames:
                p = os.path.join(dirpath, name)
                if not (os.path.islink(p) or os.path.isfile(p)):
                    raise UnsafePathError(f"{p}: a special file is in the way of the tree; move it away first")

    def _scan_extra(self) -> None:
        """With ``delete``: every file outside ``.git`` that the tree does not name goes."""
        from runicorn.store.store import walk_files

        def include(rel: str, is_dir: bool) -> bool:
            return not rel.split("/")[-1] == ".git" and not rel.split("/")[-1].startswith(RESTORE_MARK) \
                and rel not in self.displace

        for rel, _full, _st in walk_files(self.target, include):
            if rel in self.entries or rel in self.displace:
                continue
            if any(a in self.displace for a in _ancestors(rel)):
                continue
            self.displace[rel] = "removed"

    def _files_to_capture(self) -> list[tuple[str, Path]]:
        """Every regular file and symlink that will be replaced or removed (below displaced dirs too)."""
        from runicorn.store.store import walk_files

        out: list[tuple[str, Path]] = []
        for rel, kind in self.displace.items():
            full = self.target / rel
            if kind == "dir":
                out.extend((f"{rel}/{sub}", p) for sub, p, _ in walk_files(full))
            else:
                out.append((rel, full))
        return out

    def capture(self, blob_root: Path, on_backup: BackupCallback | None) -> dict[str, Any] | None:
        """Store everything that will be replaced or removed under a ``restore-backup`` ref.

        Raises:
            ChangedWhileReadingError: a file changed while read (nothing was changed).
        """
        files = self._files_to_capture()
        if not files:
            return None
        from runicorn.store.store import open_store
        from runicorn.store.tree import TreeEntry as Entry, mode_of

        store_root = _store_root(blob_root)
        if store_root == blob_root or not (store_root / "archive").is_dir():
            raise RunicornError(f"{self.target}: {len(files)} file(s) would be replaced or removed, but "
                                f"{blob_root} is not the blobs directory of a store, so they cannot be "
                                f"kept first; restore into an empty directory")
        store = open_store(store_root)
        regular: list[tuple[str, Path]] = []
        entries: dict[str, Entry] = {}
        links: dict[bytes, Any] = {}
        for rel, full in files:
            st = os.lstat(full)
            self.captured[rel] = _stat_key(st)
            if stat.S_ISLNK(st.st_mode):
                target = os.fsencode(os.readlink(full))
                # Once per distinct target: each ingest is one hold, and put_tree lets go of one.
                info = links.get(target) or links.setdefault(target, store.ingest_bytes(target))
                entries[rel] = Entry(info.sha256, MODE_LINK, info.size)
            else:
                regular.append((rel, full))
        infos = store.ingest_files([full for _, full in regular])
        for (rel, full), info in zip(regular, infos):
            entries[rel] = Entry(info.sha256, mode_of(self.captured[rel][0]), info.size)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{secrets.token_hex(4)}"
        meta = {"target": str(self.target), "files": len(entries),
                "removed": sum(1 for k in self.displace.values() if k == "removed")}
        tree = store.put_tree(entries, source=str(self.target), ref=(BACKUP_REF_KIND, name), ref_meta=meta)
        import shlex

        command = (f"runicorn --storage {shlex.quote(str(store_root.absolute()))} restore {tree} "
                   f"{shlex.quote(str(self.target))} --overwrite")
        info_ = {"ref": f"{BACKUP_REF_KIND}/{name}", "tree": tree, "files": len(entries), "command": command}
        if on_backup is not None:
            on_backup(info_)
        return info_

    def _unchanged_since_capture(self, rel: str) -> None:
        from runicorn.errors import ChangedWhileReadingError

        sub = [(r, k) for r, k in self.captured.items() if r == rel or r.startswith(rel + "/")]
        for r, key in sub:
            st = self._lstat(r)
            if st is None or _stat_key(st) != key:
                raise ChangedWhileReadingError(f"{self.target / r}: changed while restoring; it was left "
                                               f"as it is (run the restore again)")

    def _same_as_captured(self, rel: str, aside: Path, home: Path) -> None:
        """A directory moved aside must hold exactly what was captured; else it goes back.

        Raises:
            ChangedWhileReadingError: something was added or changed in it meanwhile.
        """
        from runicorn.errors import ChangedWhileReadingError
        from runicorn.store.store import walk_files

        try:
            now = {f"{rel}/{sub}": _stat_key(st) for sub, _, st in walk_files(aside)}
        except RunicornError:
            now = {}
        want = {r: k for r, k in self.captured.items() if r.startswith(rel + "/")}
        if now != want:
            os.rename(aside, home)
            raise ChangedWhileReadingError(f"{home}: changed while restoring; it was left as it is "
                                           f"(run the restore again)")

    def apply(self, staging: Path) -> None:
        """Change the target: remove, move aside, create directories, rename files in."""
        trash = staging / ".displaced"
        os.mkdir(trash, 0o700)
        n = 0
        touched_parents: set[str] = set()
        # Paths that go: files are unlinked, directories moved into the staging trash
        # (captured already; the trash is deleted with the staging directory).
        for rel, kind in sorted(self.displace.items(), key=lambda it: path_key(it[0]), reverse=True):
            self._unchanged_since_capture(rel)
            full = self.target / rel
            if kind == "dir":
                aside = trash / str(n)
                n += 1
                os.rename(full, aside)
                self._same_as_captured(rel, aside, full)
            else:
                os.unlink(full)
            if kind == "removed":
                self.removed += 1
                touched_parents.add(rel.rpartition("/")[0])
        umask = current_umask()
        dirs = sorted({"/".join(p.split("/")[:i]) for p in self.to_write for i in range(1, p.count("/") + 1)},
                      key=path_key)
        for d in dirs:
            try:
                os.mkdir(safe_join(self.target, d), 0o755 & ~umask)
            except FileExistsError:
                pass
        for rel in sorted(self.to_write, key=path_key):
            dest = safe_join(self.target, rel)
            if rel in self.displace:
                self.replaced += 1
            else:
                self.created += 1
            os.rename(staging / rel, dest)  # atomic per file; the old one was captured
        if self.delete:
            self._prune(touched_parents)
        syncfs(self.target)  # the renames and unlinks are durable when we report success

    def _prune(self, parents: set[str]) -> None:
        """Remove directories emptied by ``delete`` (never one the tree needs)."""
        needed = {"/".join(p.split("/")[:i]) for p in self.entries for i in range(1, p.count("/") + 1)}
        for start in sorted(parents, key=lambda p: -p.count("/")):
            d = start
            while d and d not in needed:
                try:
                    os.rmdir(self.target / d)
                except OSError:
                    break
                d = d.rpartition("/")[0]


def _ancestors(rel: str) -> Iterator[str]:
    parts = rel.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


def export_manifest_to_zip(manifest_path: Path, blob_root: Path, zip_path: Path) -> dict[str, Any]:
    """Write the tree a manifest describes to a zip (atomically), from the blobs.

    Returns ``success``, ``exported_count``, ``zip_path``, ``missing_blobs``, ``total_bytes``.
    When blobs are missing nothing is written.  Every blob is checked while it is
    streamed into the zip: its size, then its hash.

    Raises:
        FileNotFoundError / CorruptManifestError: the manifest is missing or invalid.
        DamagedBlobError (an IntegrityError): a blob is truncated, grown or altered,
            naming the blob and the file; no zip is written (an existing one is kept).
    """
    from runicorn.assets.snapshot import write_zip

    manifest, entries = _read_manifest(manifest_path)
    blob_root = Path(blob_root).expanduser()
    zip_path = Path(zip_path).expanduser().absolute()
    result: dict[str, Any] = {"success": False, "exported_count": 0, "zip_path": str(zip_path),
                              "missing_blobs": [], "tree": manifest["tree"], "total_bytes": 0}
    missing = _missing(blob_root, entries)
    if missing:
        result["missing_blobs"] = missing
        result["errors"] = [f"{len(missing)} blob(s) missing from {blob_root}; no zip was written"]
        return result
    try:
        write_zip(lambda sha: _blob(blob_root, sha), entries, zip_path)
    except DamagedBlobError as exc:
        raise DamagedBlobError(f"{exc}; {zip_path} was not written", sha256=exc.sha256, path=exc.path,
                               what=exc.what) from None
    result.update(success=True, exported_count=len(entries), total_bytes=sum(e.size for e in entries.values()))
    return result


def get_file_from_manifest(manifest_path: Path, blob_root: Path, rel_path: str) -> Path:
    """The blob file holding ``rel_path`` of the tree (read-only; copy it to modify).

    The blob's size is checked against the manifest (its bytes are not read here).

    Raises:
        FileNotFoundError: ``rel_path`` is not in the manifest (naming both).
        BlobNotFoundError: the path is listed but its blob is missing.
        DamagedBlobError (an IntegrityError): the blob's size differs from the manifest's.
        CorruptManifestError: the manifest is invalid.
    """
    from runicorn.store.reader import check_blob_file

    _, entries = _read_manifest(manifest_path)
    entry = entries.get(str(rel_path).replace(os.sep, "/"))
    if entry is None:
        raise FileNotFoundError(errno.ENOENT, f"{rel_path!r} is not in manifest {manifest_path}", str(rel_path))
    blob = _blob(Path(blob_root).expanduser(), entry.sha256)
    try:
        check_blob_file(blob, entry.sha256, entry.size, f"{rel_path!r} of {manifest_path}")
    except BlobNotFoundError:
        raise BlobNotFoundError(f"{rel_path!r} of {manifest_path}: blob {entry.sha256} is missing from "
                                f"{blob_root}") from None
    return blob


__all__ = ["load_manifest", "restore_from_manifest", "export_manifest_to_zip", "get_file_from_manifest",
           "LINK_MODES", "TargetExistsError", "BACKUP_REF_KIND"]
