"""Checkout: a tree restored into an existing directory, every displaced file kept first."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from runicorn.errors import RunicornError, UnsafePathError
from runicorn.fsutil import current_umask, sync_written
from runicorn.relpath import parent_dirs, safe_join
from runicorn.restore.source import store_root_of
from runicorn.restore.staging import RESTORE_MARK
from runicorn.store import refkinds
from runicorn.store.tree_format import MODE_EXEC, MODE_LINK, TreeEntry, path_key

BACKUP_REF_KIND = refkinds.RESTORE_BACKUP
BackupCallback = Callable[[dict[str, Any]], None]


def _is_git(rel: str) -> bool:
    return ".git" in rel.split("/")


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class Checkout:
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
            raise UnsafePathError(
                f"{self.target}: lies inside a .git directory; a restore never changes "
                f".git (restore into an empty directory)"
            )
        dirs = sorted(parent_dirs(self.entries), key=path_key)
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
                raise UnsafePathError(
                    f"{self.target}: the tree names {rel!r}; a restore into an existing "
                    f"directory never writes inside .git (restore into an empty one)"
                )
            parent = rel.rpartition("/")[0]
            if parent and (
                parent in blocked or parent in self.displace or any(a in self.displace for a in _ancestors(parent))
            ):
                self.to_write.append(rel)
                continue
            st = self._lstat(rel)
            if st is None:
                self.to_write.append(rel)
                continue
            if (
                stat.S_ISREG(st.st_mode)
                and entry.mode != MODE_LINK
                and st.st_size == entry.size
                and (entry.mode == MODE_EXEC) == bool(st.st_mode & 0o100)
                and sha256_file(os.path.join(self.target, rel)) == entry.sha256
            ):
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
            raise UnsafePathError(
                f"{self.target / rel}: a special file (not a regular file, symlink or "
                f"directory) is where the tree has a path; move it away first"
            )

    def _check_dir_free_of_git(self, rel: str) -> None:
        for dirpath, dirnames, filenames in os.walk(self.target / rel):
            if ".git" in dirnames or ".git" in filenames:
                raise UnsafePathError(
                    f"{self.target / rel}: restoring would replace this directory, which holds a .git; refused"
                )
            for name in filenames:
                p = os.path.join(dirpath, name)
                if not (os.path.islink(p) or os.path.isfile(p)):
                    raise UnsafePathError(f"{p}: a special file is in the way of the tree; move it away first")

    def _scan_extra(self) -> None:
        """With ``delete``: every file outside ``.git`` that the tree does not name goes."""
        from runicorn.store.walk import walk_files

        def include(rel: str, is_dir: bool) -> bool:
            return (
                not rel.split("/")[-1] == ".git"
                and not rel.split("/")[-1].startswith(RESTORE_MARK)
                and rel not in self.displace
            )

        for rel, _full, _st in walk_files(self.target, include):
            if rel in self.entries or rel in self.displace:
                continue
            if any(a in self.displace for a in _ancestors(rel)):
                continue
            self.displace[rel] = "removed"

    def _files_to_capture(self) -> list[tuple[str, Path]]:
        """Every regular file and symlink that will be replaced or removed (below displaced dirs too)."""
        from runicorn.store.walk import walk_files

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
        from runicorn.store.cache import open_store
        from runicorn.store.tree_format import TreeEntry as Entry, mode_of

        store_root = store_root_of(blob_root)
        if store_root == blob_root or not (store_root / "archive").is_dir():
            raise RunicornError(
                f"{self.target}: {len(files)} file(s) would be replaced or removed, but "
                f"{blob_root} is not the blobs directory of a store, so they cannot be "
                f"kept first; restore into an empty directory"
            )
        store = open_store(store_root)
        regular: list[tuple[str, Path]] = []
        entries: dict[str, Entry] = {}
        links: dict[bytes, Any] = {}
        with store.lease() as lease:  # what the backup stores is held until its tree (and ref) is
            for rel, full in files:
                st = os.lstat(full)
                self.captured[rel] = _stat_key(st)
                if stat.S_ISLNK(st.st_mode):
                    target = os.fsencode(os.readlink(full))
                    info = links.get(target) or links.setdefault(target, store.ingest_bytes(target, lease=lease))
                    entries[rel] = Entry(info.sha256, MODE_LINK, info.size)
                else:
                    regular.append((rel, full))
            infos = store.ingest_files([full for _, full in regular], lease=lease)
            for (rel, full), info in zip(regular, infos):
                entries[rel] = Entry(info.sha256, mode_of(self.captured[rel][0]), info.size)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            name = f"{stamp}-{os.urandom(4).hex()}"
            meta = {
                "target": str(self.target),
                "files": len(entries),
                "removed": sum(1 for k in self.displace.values() if k == "removed"),
            }
            tree = store.put_tree(
                entries, source=str(self.target), ref=(BACKUP_REF_KIND, name), ref_meta=meta, held=lease
            )
        import shlex

        command = (
            f"runicorn --storage {shlex.quote(str(store_root.absolute()))} restore {tree} "
            f"{shlex.quote(str(self.target))} --overwrite"
        )
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
                raise ChangedWhileReadingError(
                    f"{self.target / r}: changed while restoring; it was left as it is (run the restore again)"
                )

    def _same_as_captured(self, rel: str, aside: Path, home: Path) -> None:
        """A directory moved aside must hold exactly what was captured; else it goes back.

        Raises:
            ChangedWhileReadingError: something was added or changed in it meanwhile.
        """
        from runicorn.errors import ChangedWhileReadingError
        from runicorn.store.walk import walk_files

        try:
            now = {f"{rel}/{sub}": _stat_key(st) for sub, _, st in walk_files(aside)}
        except RunicornError:
            now = {}
        want = {r: k for r, k in self.captured.items() if r.startswith(rel + "/")}
        if now != want:
            os.rename(aside, home)
            raise ChangedWhileReadingError(
                f"{home}: changed while restoring; it was left as it is (run the restore again)"
            )

    def apply(self, staging: Path) -> None:
        """Change the target: remove, move aside, create directories, rename files in."""
        trash = staging / ".displaced"
        os.mkdir(trash, 0o700)
        n = 0
        touched_parents: set[str] = set()
        changed: set[str] = set()  # folders whose entries change ("" = the target)
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
            changed.add(rel.rpartition("/")[0])
            if kind == "removed":
                self.removed += 1
                touched_parents.add(rel.rpartition("/")[0])
        umask = current_umask()
        dirs = sorted(parent_dirs(self.to_write), key=path_key)
        for d in dirs:
            try:
                os.mkdir(safe_join(self.target, d), 0o755 & ~umask)
                changed.add(d.rpartition("/")[0])
            except FileExistsError:
                pass
        for rel in sorted(self.to_write, key=path_key):
            dest = safe_join(self.target, rel)
            if rel in self.displace:
                self.replaced += 1
            else:
                self.created += 1
            os.rename(staging / rel, dest)  # atomic per file; the old one was captured
            changed.add(rel.rpartition("/")[0])
        if self.delete:
            pruned = self._prune(touched_parents)
            changed = (changed | {d.rpartition("/")[0] for d in pruned}) - pruned
        # The renames and unlinks are durable when we report success (the files' bytes
        # were synced in the staging folder).
        sync_written(self.target, dirs=[self.target / d if d else self.target for d in sorted(changed)])

    def _prune(self, parents: set[str]) -> set[str]:
        """Remove directories emptied by ``delete`` (never one the tree needs); return them."""
        needed = parent_dirs(self.entries)
        removed: set[str] = set()
        for start in sorted(parents, key=lambda p: -p.count("/")):
            d = start
            while d and d not in needed:
                try:
                    os.rmdir(self.target / d)
                except OSError:
                    break
                removed.add(d)
                d = d.rpartition("/")[0]
        return removed


def _ancestors(rel: str) -> Iterator[str]:
    parts = rel.split("/")
    for i in range(1, len(parts)):
        yield "/".join(parts[:i])


__all__ = ["Checkout", "BACKUP_REF_KIND", "BackupCallback"]
