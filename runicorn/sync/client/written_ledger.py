"""What run sync wrote into the local directory, so it replaces or removes only its own files.

:class:`WrittenLedger` (``<cache>/.runicorn-sync/written.json``) records each file sync
published as ``(size, mtime_ns, inode)``.  A local file it did not write, or that changed
since, is never overwritten or deleted, and a server run whose local directory holds such a
file (a run made here, or edited here) is reported and left alone.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path

from runicorn.errors import UnsafePathError
from runicorn.fsutil import atomic_write_json
from runicorn.relpath import validate_relpath
from runicorn.sync.client.local_cache import SYNC_DIR, CachePaths


def remove_stale(
    cache: Path, tracked: Iterable[str], keep: set[str], ledger: "WrittenLedger", changed: set[Path] | None = None
) -> int:
    """Delete files a previous sync wrote that the server no longer lists; return how many.

    Only files the ledger says sync wrote, and still exactly as written (size, mtime,
    inode), are removed, so local files and local edits survive; empty parent
    directories are pruned up to the cache root.  The folders that lost an entry are
    added to ``changed`` (to be synced by the caller).
    """
    changed = set() if changed is None else changed
    removed = 0
    paths = CachePaths(cache)
    for rel in tracked:
        if rel in keep:
            continue
        try:
            dest = paths(rel)
            st = os.lstat(dest)
        except (OSError, UnsafePathError):
            ledger.forget(rel)
            continue
        if not ledger.owns(rel, st):
            continue
        os.unlink(dest)
        ledger.forget(rel)
        removed += 1
        parent = dest.parent
        changed.add(parent)
        while parent != cache and cache in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            changed.discard(parent)
            parent = parent.parent
            changed.add(parent)
    return removed


class WrittenLedger:
    """What sync itself wrote into a cache: ``relpath -> [[size, mtime_ns, inode], ...]``.

    Stored in ``<cache>/.runicorn-sync/written.json`` and shared by every sync into the
    cache (manifest and legacy, any server); the cache's sync lock serialises them.  A
    record is added, durably, *before* its file is renamed into place (the rename keeps
    size, mtime and inode), and the older record of the same path is dropped once the
    rename is done, so after a crash at any instant the file on disk matches one of them.
    A file sync skipped as unchanged is never recorded.
    """

    VERSION = 1

    def __init__(self, cache: Path) -> None:
        self.path = cache / SYNC_DIR / "written.json"
        self.lock = threading.RLock()
        self.files: dict[str, list[list[int]]] = {}
        try:
            doc = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return  # none yet (or unreadable: then nothing local counts as sync's own)
        files = doc.get("files") if isinstance(doc, dict) and doc.get("version") == self.VERSION else None
        if isinstance(files, dict):
            for rel, recs in files.items():
                if isinstance(rel, str) and isinstance(recs, list):
                    good = [
                        r for r in recs if isinstance(r, list) and len(r) == 3 and all(isinstance(x, int) for x in r)
                    ]
                    if good:
                        self.files[rel] = good

    @staticmethod
    def record(st: os.stat_result) -> list[int]:
        return [st.st_size, st.st_mtime_ns, st.st_ino]

    def owns(self, rel: str, st: os.stat_result) -> bool:
        """True if ``st`` is a regular file sync wrote at ``rel`` and nobody changed since."""
        if not stat.S_ISREG(st.st_mode):
            return False
        with self.lock:
            return self.record(st) in self.files.get(rel, [])

    def add(self, rel: str, rec: list[int]) -> None:
        with self.lock:
            recs = self.files.setdefault(rel, [])
            if rec not in recs:
                recs.append(rec)
                del recs[:-3]

    def settle(self, rel: str, st: os.stat_result) -> None:
        with self.lock:
            self.files[rel] = [self.record(st)]

    def forget(self, rel: str) -> None:
        with self.lock:
            self.files.pop(rel, None)

    def save(self) -> None:
        """Write the ledger atomically (and durably)."""
        with self.lock:
            doc = {"version": self.VERSION, "files": {k: list(v) for k, v in self.files.items()}}
        atomic_write_json(self.path, doc, indent=None)


def foreign_files(cache: Path, run_dir: str, ledger: WrittenLedger, limit: int = 3) -> list[str]:
    """Up to ``limit`` entries below the local ``run_dir`` that sync did not write (or that
    changed since): any such entry makes a server run with that id a collision.

    Raises:
        UnsafePathError: ``run_dir`` is not a safe relative path.
    """
    validate_relpath(run_dir, what="run directory")
    top = os.path.join(cache, run_dir)
    try:
        st = os.lstat(top)
    except FileNotFoundError:
        return []
    if not stat.S_ISDIR(st.st_mode):
        return [run_dir]
    out: list[str] = []
    stack = [(top, run_dir)]
    while stack and len(out) < limit:
        d, rel_d = stack.pop()
        with os.scandir(d) as it:
            entries = list(it)
        for e in entries:
            rel = f"{rel_d}/{e.name}"
            est = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(est.st_mode):
                stack.append((e.path, rel))
            elif not ledger.owns(rel, est):
                out.append(rel)
                if len(out) >= limit:
                    break
    return out


def collision_message(run_dir: str, foreign: list[str]) -> str:
    return (
        f"run {run_dir} exists locally with files sync did not write or that changed since "
        f"(e.g. {foreign[0]}); the server's run was not synced and the local one was left alone"
    )
