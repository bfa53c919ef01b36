"""The fallback path: walk the remote root over SFTP when no valid manifest exists.

Costs one ``listdir`` per directory plus a download per changed file, so it is slower
than a manifest, but it follows the same rules: names are validated, symlinks are not
followed, downloads are atomic, and deletions only touch files a previous sync wrote.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError, UnsafePathError
from runicorn.fsutil import atomic_write_json, open_locked, sync_written
from runicorn.hashing import sha256_bytes
from runicorn.sync.client.budget import unplanned_budget
from runicorn.sync.client.downloader import Downloader
from runicorn.sync.client.local_cache import RESERVED_TOP_LEVEL, SYNC_DIR
from runicorn.sync.client.report import SyncError, sync_stats
from runicorn.sync.client.sftp_io import CountingSFTP, OpCounter, set_nodelay
from runicorn.sync.client.written_ledger import (
    WrittenLedger,
    collision_message,
    foreign_files,
    remove_stale,
)
from runicorn.runs.ids import valid_run_id

log = logging.getLogger(__name__)

MAX_WALK_ENTRIES = 1_000_000


class WalkSyncClient:
    """Mirror every run under ``remote_root`` by listing directories."""

    def __init__(self, sftp_client: Any, remote_root: str, cache_dir: Path) -> None:
        self.sftp = CountingSFTP(sftp_client, OpCounter())
        self.remote_root = str(remote_root).rstrip("/") or "/"
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.run_of: dict[str, str] = {}  # file relpath -> its run directory (from walk)

    def _remote(self, rel: str) -> str:
        return f"{self.remote_root}/{rel}" if rel else self.remote_root

    def _list(self, rel: str) -> list[Any]:
        return [
            a
            for a in self.sftp.listdir_attr(self._remote(rel))
            if a.filename not in (".", "..")
            and not a.filename.startswith(".")
            and "/" not in a.filename
            and "\\" not in a.filename
        ]

    def walk(self) -> list[tuple[str, int, int]]:
        """``(relpath, size, mtime)`` of every regular file inside every run directory.

        Raises:
            RunicornError: if the remote tree is absurdly large.
        """
        files: list[tuple[str, int, int]] = []
        stack: list[tuple[str, int]] = [("", 0)]
        seen = 0
        while stack:
            rel, depth = stack.pop()
            for a in self._list(rel):
                seen += 1
                if seen > MAX_WALK_ENTRIES:
                    raise RunicornError(f"{self.remote_root}: more than {MAX_WALK_ENTRIES} entries")
                if not stat.S_ISDIR(a.st_mode or 0):
                    continue
                if not rel and a.filename in RESERVED_TOP_LEVEL:
                    log.warning("skipping %s: the name is reserved by the local store", a.filename)
                    continue
                child = f"{rel}/{a.filename}" if rel else a.filename
                if a.filename == "runs" and depth >= 2:
                    for run in self._list(child):
                        if stat.S_ISDIR(run.st_mode or 0) and valid_run_id(run.filename):
                            self._walk_run(f"{child}/{run.filename}", files)
                    continue
                stack.append((child, depth + 1))
        return files

    def _walk_run(self, run_rel: str, out: list[tuple[str, int, int]]) -> None:
        stack = [run_rel]
        while stack:
            d = stack.pop()
            for a in self._list(d):
                p = f"{d}/{a.filename}"
                mode = a.st_mode or 0
                if stat.S_ISDIR(mode):
                    stack.append(p)
                elif stat.S_ISREG(mode):
                    out.append((p, int(a.st_size or 0), int(a.st_mtime or 0)))
                    self.run_of[p] = run_rel

    def sync(self, progress_callback: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
        """Walk and mirror; returns the same statistics keys as the manifest client.

        Raises:
            IOError: the remote root cannot be listed.
            SyncError: another sync holds the cache.
        """
        start = time.monotonic()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        sync_dir = self.cache_dir / SYNC_DIR
        try:
            with open_locked(sync_dir / "lock", blocking=False):
                return self._sync_locked(progress_callback, start)
        except BlockingIOError:
            raise SyncError(f"{self.cache_dir}: another sync is running") from None

    def _sync_locked(self, progress: Callable[[int, int, str], None] | None, start: float) -> dict[str, Any]:
        sync_dir = self.cache_dir / SYNC_DIR
        shutil.rmtree(sync_dir / "tmp", ignore_errors=True)
        set_nodelay(self.sftp.raw)
        listing = self.walk()
        ledger = WrittenLedger(self.cache_dir)
        dl = Downloader(self.cache_dir, self.remote_root, ledger=ledger)
        stats = sync_stats("legacy")
        conflicts: list[str] = stats["conflicts"]
        collided: dict[str, bool] = {}
        todo: list[tuple[str, int, int]] = []
        for rel, size, mtime in listing:
            try:
                dest = dl.paths(rel)
                run = self.run_of[rel]
                if run not in collided:
                    foreign = foreign_files(self.cache_dir, run, ledger)
                    collided[run] = bool(foreign)
                    if foreign:  # a run made (or edited) here with the server run's id
                        conflicts.append(collision_message(run, foreign))
                        log.warning("%s", conflicts[-1])
            except UnsafePathError as exc:
                log.warning("skipping %s: %s", rel, exc)
                stats["failed_count"] += 1
                continue
            if collided[run]:
                continue
            try:
                st = os.lstat(dest)
            except FileNotFoundError:
                pass
            else:
                if not ledger.owns(rel, st):
                    conflicts.append(f"{rel}: a local file sync did not write; left alone")
                    continue
                if st.st_size == size and int(st.st_mtime) == mtime:
                    stats["files_unchanged"] += 1
                    continue
            todo.append((rel, size, mtime))
        need = sum(size for _, size, _ in todo)
        free = shutil.disk_usage(self.cache_dir).free
        if need > free:
            raise SyncError(f"{self.cache_dir}: sync needs {need} bytes but only {free} are free")
        import paramiko

        dl.budget = unplanned_budget(free, need)
        for i, (rel, size, mtime) in enumerate(todo, 1):
            try:
                r = dl.fetch_full(self.sftp, rel, size, float(mtime), None)
            except (OSError, EOFError, RunicornError, paramiko.SSHException) as exc:
                log.warning("sync of %s failed: %s", rel, exc)
                stats["failed_count"] += 1
            else:
                stats["files_synced"] += 1
                stats["full_count"] += 1
                stats["bytes_downloaded"] += r.received
            if progress is not None:
                progress(i, len(todo), rel)
        for rel, err in dl.commit().items():  # data durable, then renamed into place
            log.warning("sync of %s failed: %s", rel, err)
            stats["failed_count"] += 1
            stats["files_synced"] -= 1
            stats["full_count"] -= 1
        dl.settle()
        ledger.save()
        for rel in dl.refused:  # a local file appeared (or changed) meanwhile
            conflicts.append(f"{rel}: changed locally during the sync; left alone")
            stats["files_synced"] -= 1
            stats["full_count"] -= 1
        if stats["failed_count"] == 0:
            cursor_path = (
                sync_dir / "servers" / sha256_bytes(f"legacy\0{self.remote_root}".encode())[:16] / "legacy_cursor.json"
            )
            try:
                tracked = json.loads(cursor_path.read_bytes()).get("files", {})
            except (OSError, ValueError, AttributeError):
                tracked = {}
            listed = {rel for rel, _, _ in listing}
            if not isinstance(tracked, dict):
                tracked = {}
            changed = set(dl.batch.changed_dirs)  # folders the sync's renames changed
            stats["files_deleted"] = remove_stale(self.cache_dir, tracked, listed, ledger, changed)
            files: dict[str, list[int]] = {}
            for rel in listed:
                try:
                    st = os.lstat(dl.paths(rel))
                except (OSError, UnsafePathError):
                    continue
                if ledger.owns(rel, st):  # only what sync wrote; "unchanged" is not "ours"
                    files[rel] = [st.st_size, st.st_mtime_ns]
            sync_written(self.cache_dir, dirs=changed)  # the bytes were durable before the renames
            ledger.save()
            atomic_write_json(
                cursor_path, {"remote_root": self.remote_root, "synced_at": time.time(), "files": files}, indent=None
            )
        stats["sftp_requests"] = self.sftp.counter.value
        stats["sftp_wire_requests"] = self.sftp.wire_requests
        stats["duration"] = time.monotonic() - start
        return stats
