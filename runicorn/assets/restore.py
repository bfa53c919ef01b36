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
result lists them in ``missing_blobs`` (``success`` is False).  The restore holds a lock on
its staging directory; one left by a killed restore (lock free) is removed by the next
restore of the same target, and -- when restoring from a store -- by the store's recovery
(any command that opens the store next, ``gc`` included), which ``verify`` reports.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import stat
import threading
from pathlib import Path
from typing import Any, Callable

from runicorn.errors import BlobNotFoundError, IntegrityError, RunicornError, UnsafePathError, option
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


def _copy_fd(src: int, dst: int, size: int) -> int:
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src, dst, min(size - copied, 16 << 20))
            if n == 0:
                break
            copied += n
            start_writeback(dst)  # the disk starts while the next files are copied
        return copied
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while True:  # filesystems without copy_file_range (or across filesystems)
        chunk = os.read(src, 1 << 20)
        if not chunk:
            return copied
        write_all(dst, chunk)
        copied += len(chunk)


_SMALL = 1 << 20
_SYNC_AHEAD_BYTES = 8 << 20


def _write_file(blob: str, dest: str, entry: TreeEntry, how: str, umask: int) -> str:
    """Materialise one regular file; return how it was done (``copy``/``hardlink``/``reflink``).

    The file gets the recorded mode: 0644 or 0755, without the group / other bits when the
    blob is private (its source was), so a 0600 file comes back 0600.
    """
    if how == "hardlink" and entry.mode != MODE_EXEC:
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
                    copied = len(data)
                    write_all(dst, data)
                else:
                    copied = _copy_fd(src, dst, entry.size)
                done = "copy"
            if copied != entry.size:
                raise IntegrityError(f"blob {entry.sha256} ({blob}) has {os.fstat(src).st_size} bytes, "
                                     f"the manifest says {entry.size}")
            if perm & umask:
                os.fchmod(dst, perm)  # exact mode, whatever the umask (never wider than the blob's)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return done


def restore_from_manifest(manifest_path: Path, blob_root: Path, target_dir: Path, *,
                          overwrite: bool = False, link: str = "copy", sync: bool = True,
                          progress: Progress | None = None) -> dict[str, Any]:
    """Recreate the tree a manifest describes at ``target_dir``, all or nothing.

    ``link``: ``copy`` (default), ``hardlink`` (files share the read-only blob, so they
    stay read-only -- never make them writable, that would edit the store; executables
    and cross-device files are copied; ``runicorn verify`` reports a blob made writable), ``reflink`` (copy-on-write clone, error if the
    filesystem cannot), ``auto`` (reflink, else copy).  Modes and symlinks are restored
    as recorded.  With ``overwrite`` an existing target is replaced as a whole.
    Large trees are copied by a few threads; ``progress(done, total)`` is then called
    from them, one call at a time.  The restored tree is synced before it is renamed
    into place (``sync=False`` skips that: faster, but a power loss soon after may
    leave restored files empty).

    Returns ``success``, ``restored_count``, ``missing_blobs``, ``target_dir``, ``tree``,
    ``total_bytes``, ``link_mode`` and ``methods`` (files per method used).

    Raises:
        FileNotFoundError / CorruptManifestError: the manifest is missing or invalid.
        UnsafePathError: a manifest path would leave the target or pass through a symlink.
        TargetExistsError: the target exists, is not empty, and ``overwrite`` is False.
        IntegrityError: a blob has the wrong size (nothing is left behind).
        ValueError: an unknown ``link`` mode.
    """
    if link not in LINK_MODES:
        raise ValueError(f"link mode {link!r} is not one of {', '.join(LINK_MODES)}")
    manifest, entries = _read_manifest(manifest_path)
    blob_root = Path(blob_root).expanduser()
    target = Path(target_dir).expanduser().absolute()
    result: dict[str, Any] = {
        "success": False, "restored_count": 0, "missing_blobs": [], "target_dir": str(target),
        "tree": manifest["tree"], "total_bytes": 0, "link_mode": link, "methods": {},
    }
    # Missing blobs are found while copying (a missing one aborts the restore and then
    # all are listed): a stat of every blob up front costs as much as the small copies.
    _check_not_the_store(target, blob_root)
    _check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_abandoned_restores(target)
    staging = target.parent / f".{target.name}{RESTORE_MARK}{secrets.token_hex(6)}"
    os.mkdir(staging, 0o700)
    # Held until the end: a staging directory whose lock is free was left by a killed
    # restore, and the next restore of this target (or the store's recovery) removes it.
    staging_lock = lock_dir(staging)
    note = _note_staging(blob_root, staging)
    methods: dict[str, int] = {}
    try:
        dirs = sorted({"/".join(p.split("/")[:i]) for p in entries for i in range(1, p.count("/") + 1)},
                      key=path_key)
        for d in dirs:
            os.mkdir(safe_join(staging, d), 0o755)
        total = len(entries)
        blob_dir = str(blob_root)
        base = str(staging)
        umask = current_umask()
        done = 0
        lock = threading.Lock()

        def work(items: list[tuple[str, TreeEntry]]) -> None:
            nonlocal done
            counts: dict[str, int] = {}
            written = reported = 0
            for i, (rel, entry) in enumerate(items, 1):
                # Paths were validated by the manifest parser; validate again before any
                # write, as the one rule for every path that reaches the filesystem.
                dest = f"{base}/{validate_relpath(rel)}"
                sha = entry.sha256
                blob = f"{blob_dir}/{sha[:2]}/{sha}"
                try:
                    if entry.mode == MODE_LINK:
                        with open(blob, "rb") as f:
                            link_target = f.read(entry.size + 1)
                        if len(link_target) != entry.size or b"\0" in link_target:
                            raise IntegrityError(f"{blob}: the symlink target of {rel!r} is not {entry.size} "
                                                 f"bytes without NUL; nothing was restored")
                        os.symlink(os.fsdecode(link_target), dest)
                        how = "symlink"
                    else:
                        how = _write_file(blob, dest, entry, link, umask)
                except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file at blobs/<aa>
                    if not os.path.exists(blob):
                        raise _MissingBlob(sha) from None
                    raise
                counts[how] = counts.get(how, 0) + 1
                written += entry.size
                if written >= _SYNC_AHEAD_BYTES:
                    syncfs_in_background(staging)  # the final sync then has little left
                    written = 0
                if i - reported == 256 or i == len(items):
                    with lock:
                        done += i - reported
                        reported = i
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
            syncfs(staging)  # one group sync: the renamed tree is complete even after a crash
        _publish(staging, target, overwrite)
    except _MissingBlob:
        _discard(staging)
        missing = _missing(blob_root, entries)
        result["missing_blobs"] = missing
        result["errors"] = [f"{len(missing)} blob(s) missing from {blob_root}; nothing was restored"]
        return result
    except BaseException:
        _discard(staging)
        raise
    finally:
        os.close(staging_lock)
        if note is not None:
            note.unlink(missing_ok=True)
    result.update(success=True, restored_count=len(entries), methods=methods,
                  total_bytes=sum(e.size for e in entries.values()))
    return result


RESTORE_MARK = ".rn-restore-"


def _discard(staging: Path) -> None:
    try:
        remove_tree(staging)
    except OSError:
        pass  # left with its lock free: the next restore of the target removes it


def sweep_abandoned_restores(target: Path) -> list[str]:
    """Remove the staging directories of earlier restores of ``target`` that were killed
    (``.<name>.rn-restore-*`` beside it whose lock no live process holds); return them."""
    prefix = f".{target.name}{RESTORE_MARK}"
    removed = []
    try:
        with os.scandir(target.parent) as it:
            stale = [e.path for e in it if e.name.startswith(prefix) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return removed
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
    """Refuse a target that is, contains or lies inside the store (overwrite would delete it)."""
    store_root = blob_root.parent.parent if blob_root.name == "blobs" and blob_root.parent.name == "archive" \
        else blob_root
    t = os.path.realpath(target)
    for protected in {os.path.realpath(blob_root), os.path.realpath(store_root)}:
        if t == protected or protected.startswith(t.rstrip("/") + "/") or \
                t.startswith(os.path.realpath(blob_root).rstrip("/") + "/"):
            raise UnsafePathError(f"{target}: refusing to restore onto or around the store at {protected}")


def _check_target(target: Path, overwrite: bool) -> None:
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{target}: restore target is a symlink; give the real directory")
    if overwrite:
        return
    if not stat.S_ISDIR(st.st_mode):
        raise TargetExistsError(f"{target}: exists and is not a directory (pass {option('overwrite')} "
                                f"to replace it)")
    with os.scandir(target) as it:
        if any(True for _ in it):
            raise TargetExistsError(f"{target}: exists and is not empty (pass {option('overwrite')} "
                                    f"to replace it)")


def _publish(staging: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished staging directory onto the target (replacing it when allowed)."""
    try:
        os.rename(staging, target)  # also atomically replaces an empty directory
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR) or not overwrite:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                raise TargetExistsError(f"{target}: appeared while restoring and is not empty") from None
            raise
        aside = target.parent / f".{target.name}.rn-old-{secrets.token_hex(6)}"
        os.rename(target, aside)
        try:
            os.rename(staging, target)
        except BaseException as exc:
            # Something took the name in between: put the user's tree back, or say where it is.
            try:
                os.rename(aside, target)
            except OSError:
                raise RunicornError(f"{target}: the name was taken while restoring; your previous "
                                    f"directory is kept at {aside}") from exc
            raise
        fsync_dir(target.parent)
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink()
        return
    fsync_dir(target.parent)


def export_manifest_to_zip(manifest_path: Path, blob_root: Path, zip_path: Path) -> dict[str, Any]:
    """Write the tree a manifest describes to a zip (atomically), from the blobs.

    Returns ``success``, ``exported_count``, ``zip_path``, ``missing_blobs``, ``total_bytes``.
    When blobs are missing nothing is written.

    Raises:
        FileNotFoundError / CorruptManifestError: the manifest is missing or invalid.
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
    write_zip(lambda sha: _blob(blob_root, sha), entries, zip_path)
    result.update(success=True, exported_count=len(entries), total_bytes=sum(e.size for e in entries.values()))
    return result


def get_file_from_manifest(manifest_path: Path, blob_root: Path, rel_path: str) -> Path:
    """The blob file holding ``rel_path`` of the tree (read-only; copy it to modify).

    Raises:
        FileNotFoundError: ``rel_path`` is not in the manifest (naming both).
        BlobNotFoundError: the path is listed but its blob is missing.
        CorruptManifestError: the manifest is invalid.
    """
    _, entries = _read_manifest(manifest_path)
    entry = entries.get(str(rel_path).replace(os.sep, "/"))
    if entry is None:
        raise FileNotFoundError(errno.ENOENT, f"{rel_path!r} is not in manifest {manifest_path}", str(rel_path))
    blob = _blob(Path(blob_root).expanduser(), entry.sha256)
    if not blob.is_file():
        raise BlobNotFoundError(f"{rel_path!r} of {manifest_path}: blob {entry.sha256} is missing from {blob_root}")
    return blob


__all__ = ["load_manifest", "restore_from_manifest", "export_manifest_to_zip", "get_file_from_manifest",
           "LINK_MODES", "TargetExistsError"]
