"""Restore staging directories: where a restore writes before it renames into place."""

from __future__ import annotations

import os
from pathlib import Path

from runicorn.fsutil import abandoned, lock_dir, remove_tree


class Staging:
    """A private staging directory on the target's filesystem (so renames are atomic).

    Beside the target (``.<name>.rn-restore-<random>``), or inside it when the target
    is a mount point of its own.  Locked while in use and named in the store's writer
    directory: one left by a killed restore is removed by the next restore of the
    target or by the store's recovery.  ``close`` removes it.
    """

    def __init__(self, target: Path, blob_root: Path, fresh: bool) -> None:
        where, name = target.parent, f".{target.name}{RESTORE_MARK}{os.urandom(6).hex()}"
        if not fresh and os.stat(target).st_dev != os.stat(target.parent).st_dev:
            where, name = target, f"{RESTORE_MARK}{os.urandom(6).hex()}"
        self.path = where / name
        os.mkdir(self.path, 0o700)
        # Held until the end: a staging directory whose lock is free was left by a killed
        # restore, and the next restore of this target (or the store's recovery) removes it.
        self._lock: int | None = lock_dir(self.path)
        self._note, self._writer_lock = _note_staging(blob_root, self.path)

    @property
    def locks(self) -> tuple[int, ...]:
        """The descriptors of this staging folder's lock and of the lock of the writer whose
        note names it: a worker process writing here keeps both held while it lives."""
        return tuple(fd for fd in (self._lock, self._writer_lock) if fd is not None)

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


def _note_staging(blob_root: Path, staging: Path) -> tuple[Path | None, int | None]:
    """When restoring from a store this process may write, name the staging directory in
    the store's writer directory: if the restore is killed, the store's recovery (every
    command that opens it next; gc, verify) finds and removes it.  Returns the note and
    the descriptor holding that writer's lock (None, None: no note)."""
    from runicorn.store.layout import store_archive

    archive = store_archive(blob_root)
    if archive is None:
        return None, None
    from runicorn.fsutil import atomic_write_json
    from runicorn.store import open_store

    store = open_store(archive.parent)
    if store.read_only:
        return None, None
    note = store.writer_dir() / f"restore-{os.urandom(6).hex()}.json"
    atomic_write_json(note, {"staging": str(staging)})
    return note, store.writer_lock_fd


__all__ = ["Staging", "RESTORE_MARK", "sweep_abandoned_restores"]
