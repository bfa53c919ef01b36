"""Installed folders ``artifacts/<tree>/`` against the store: what gc removes with the
trees it collects, what verify reports, what ``verify --repair`` does about it.

An installed folder is derived data (hard links into ``archive/blobs``, copies of
executables, recreated symlinks): its tree in the store is the truth.  gc removes the
folder of every tree it collects in the same run, crash-safely:

1. after the gc's COMMIT (the tree is gone from the index), under the tree's install
   lock (skipped when an installer holds it: that installer is putting the tree back),
   the folder is locked (``flock`` on the directory) and renamed to
   ``artifacts/.trash-<tree[:16]>-gc-<random>``;
2. the gc counts the bytes its removal frees and removes it, then lets go of the lock.

Killed anywhere, what remains is a folder whose tree is not in the store, or an unlocked
``.trash-*-gc-*`` folder: the next gc finishes both, and ``runicorn verify`` reports them
(``--repair`` removes them).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from runicorn.fsutil import abandoned, fsync_dir, lock_dir, open_locked, remove_tree
from runicorn.hashing import is_sha256_hex

GC_TRASH_MARK = "-gc-"


def _folders(store: Any) -> list[tuple[str, Path]]:
    """``(name, path)`` of what ``artifacts/`` holds, sorted; none when it does not exist."""
    try:
        names = sorted(os.listdir(store.artifacts_dir))
    except OSError:  # missing, not a folder, or not readable: nothing gc or verify can act on
        return []
    return [(n, store.artifacts_dir / n) for n in names]


def _is_tree_folder(name: str, path: Path) -> bool:
    return is_sha256_hex(name) and path.is_dir() and not path.is_symlink()


def _is_gc_trash(name: str, path: Path) -> bool:
    return name.startswith(".trash-") and GC_TRASH_MARK in name and path.is_dir() and not path.is_symlink()


def take_installed(store: Any, trees: list[str], *, dry_run: bool = False) -> list[tuple[Path, int | None]]:
    """The installed folders a gc removes: those of ``trees`` (just collected), of any
    tree not in the store, and ``.trash-*-gc-*`` folders whose remover died.

    A real run locks each folder and renames it to a trash name, and returns it with the
    lock's descriptor: the caller counts what removing it frees, removes it, and closes
    the descriptor.  A dry run returns the folders as they are (descriptor None).
    git-tree-sha1 links to a removed folder are removed.
    """
    wanted = set(trees)
    out: list[tuple[Path, int | None]] = []
    moved = False
    for name, path in _folders(store):
        if _is_gc_trash(name, path):
            if abandoned(path):
                if dry_run:
                    out.append((path, None))
                else:
                    try:
                        out.append((path, lock_dir(path)))
                    except OSError:
                        pass  # another gc took it meanwhile
            continue
        if not _is_tree_folder(name, path):
            continue
        if dry_run:
            if name in wanted or not store.has_tree(name):
                out.append((path, None))
            continue
        try:
            # The install lock: an installer holding it is putting this tree back, and
            # its folder is its own.  Checked again under the lock: it may be back.
            with open_locked(store.artifacts_dir / ".locks" / f"{name}.lock", blocking=False):
                if store.has_tree(name):
                    continue
                fd = lock_dir(path)
                trash = store.artifacts_dir / f".trash-{name[:16]}{GC_TRASH_MARK}{os.urandom(6).hex()}"
                try:
                    os.rename(path, trash)
                except BaseException:
                    os.close(fd)
                    raise
        except (BlockingIOError, FileNotFoundError):
            continue  # an installer or another gc is at it
        out.append((trash, fd))
        moved = True
    if not dry_run:
        for name, path in _folders(store):
            # git-tree-sha1 names are links to a tree folder; one whose folder went goes too
            if len(name) == 40 and path.is_symlink() and not (store.artifacts_dir / os.readlink(path)).is_dir():
                path.unlink(missing_ok=True)
                moved = True
        if moved:
            fsync_dir(store.artifacts_dir)
    return out


def remove_taken(taken: list[tuple[Path, int | None]]) -> list[str]:
    """Remove what :func:`take_installed` took and let go of its locks; return warnings
    for folders that could not be removed (the next gc tries again)."""
    warnings = []
    for path, fd in taken:
        try:
            remove_tree(path)
        except OSError as exc:
            warnings.append(f"{path}: could not be removed ({exc.strerror or exc}); the next gc tries again")
        finally:
            if fd is not None:
                os.close(fd)
    return warnings


# ---------------------------------------------------------------------- verify / repair
def folder_differences(store: Any, tree: str, folder: Path, *, deep: bool = False) -> list[str]:
    """How ``folder`` differs from the tree's manifest (empty: it matches).

    Paths, file types, sizes, executable bits and symlink targets are always compared; a
    plain file that is a hard link of its blob is that blob (verify checks blobs); other
    files are hashed with ``deep``.
    """
    from runicorn.errors import RunicornError
    from runicorn.hashing import sha256_file
    from runicorn.store import walk_files
    from runicorn.store.tree_format import MODE_EXEC, MODE_LINK

    entries = store.tree_entries(tree)
    try:
        found = {rel: (full, st) for rel, full, st in walk_files(folder)}
    except (RunicornError, OSError) as exc:
        return [f"cannot be read ({exc})"]
    out = [f"{rel}: missing" for rel in sorted(entries.keys() - found.keys())]
    out += [f"{rel}: not in the tree" for rel in sorted(found.keys() - entries.keys())]
    for rel in sorted(entries.keys() & found.keys()):
        e = entries[rel]
        full, st = found[rel]
        blob = store.blob_path(e.sha256)
        if e.mode == MODE_LINK:
            try:
                same = stat.S_ISLNK(st.st_mode) and os.fsencode(os.readlink(full)) == blob.read_bytes()
            except OSError:
                same = False
            if not same:
                out.append(f"{rel}: not the tree's symlink")
            continue
        if not stat.S_ISREG(st.st_mode):
            out.append(f"{rel}: not a regular file")
        elif st.st_size != e.size:
            out.append(f"{rel}: {st.st_size} bytes, the tree says {e.size}")
        elif bool(st.st_mode & 0o100) != (e.mode == MODE_EXEC):
            out.append(f"{rel}: executable bit differs from the tree")
        elif deep:
            try:
                bst = os.stat(blob)
                linked = (bst.st_dev, bst.st_ino) == (st.st_dev, st.st_ino)
            except OSError:
                linked = False
            if not linked and sha256_file(full) != e.sha256:
                out.append(f"{rel}: content differs from the tree")
    return out


def installed_problems(store: Any, *, deep: bool = False) -> list[dict[str, Any]]:
    """verify's findings about ``artifacts/``: folders of trees not in the store, folders
    left by a killed gc, folders whose files differ from their tree's manifest."""
    problems = []
    for name, path in _folders(store):
        if _is_gc_trash(name, path):
            if abandoned(path):
                problems.append(
                    {
                        "kind": "interrupted_removal",
                        "path": str(path),
                        "detail": f"{path} is left by a killed gc; `runicorn gc` (or verify --repair) removes it",
                    }
                )
        elif _is_tree_folder(name, path):
            if not store.has_tree(name):
                problems.append(
                    {
                        "kind": "orphan_installed",
                        "id": name,
                        "path": str(path),
                        "detail": f"{path}: installed folder of tree {name[:12]}, which is not in the "
                        "store; `runicorn gc` (or verify --repair) removes it",
                    }
                )
                continue
            diff = folder_differences(store, name, path, deep=deep)
            if diff:
                more = f" (and {len(diff) - 1} more)" if len(diff) > 1 else ""
                problems.append(
                    {
                        "kind": "installed_mismatch",
                        "id": name,
                        "path": str(path),
                        "detail": f"{path}: differs from tree {name[:12]}: {diff[0]}{more}; "
                        "verify --repair reinstalls it",
                    }
                )
    return problems


def repair_installed(store: Any) -> list[str]:
    """After an index rebuild: remove installed folders of trees not in the store and
    what a killed gc left; reinstall folders that differ from their tree when the store
    has every blob of it (the old folder is moved to ``archive/quarantine/``, never
    deleted, in case something of the user's is in it).  Returns what was done."""
    from runicorn.artifacts.materialize import materialize

    notes = []
    taken = take_installed(store, [])
    for path, _ in taken:
        notes.append(f"removed {path} (its tree is not in the store)")
    notes.extend(remove_taken(taken))
    for name, path in _folders(store):
        if not _is_tree_folder(name, path) or not store.has_tree(name):
            continue
        diff = folder_differences(store, name, path, deep=True)
        if not diff:
            continue
        entries = store.tree_entries(name)
        if not all(os.path.isfile(store.blob_path(e.sha256)) for e in entries.values()):
            notes.append(
                f"{path}: differs from tree {name[:12]} ({diff[0]}), but the store lacks blobs of "
                "the tree; left as it is"
            )
            continue
        try:
            with open_locked(store.artifacts_dir / ".locks" / f"{name}.lock", blocking=False):
                store.quarantine_dir.mkdir(parents=True, exist_ok=True)
                aside = store.quarantine(path, "installed-mismatch")
                materialize(store, name)
        except BlockingIOError:
            notes.append(f"{path}: differs from tree {name[:12]}, but an installer holds it; left as it is")
            continue
        except OSError as exc:
            notes.append(
                f"{path}: differs from tree {name[:12]} ({diff[0]}) and could not be reinstalled "
                f"({exc.strerror or exc})"
            )
            continue
        notes.append(
            f"{path}: differed from tree {name[:12]} ({diff[0]}); reinstalled, the old folder moved to {aside}"
        )
    return notes
