"""Workspace snapshots: capture a directory into the store (and optionally a zip).

A snapshot walks the workspace (:mod:`runicorn.snapshot.scan`), drops what the ignore
rules exclude (:mod:`runicorn.snapshot.ignore`), reuses hashes from the stat cache for
files that did not change (:mod:`runicorn.snapshot.statcache`), ingests the rest and
records the result as a tree (:mod:`runicorn.snapshot.capture`).  The zip, when asked
for, is written from the stored blobs (:mod:`runicorn.treezip`), so it always holds
exactly the tree that was recorded even if the workspace changes meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError
from runicorn.gitinfo import GitQuery
from runicorn.snapshot.capture import capture_tree
from runicorn.snapshot.ignore import IGNORE_CACHE, IgnoreRules, read_ignore_file
from runicorn.snapshot.scan import iter_workspace_dirs, store_dirs
from runicorn.treezip import write_zip

DEFAULT_MAX_TOTAL_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_FILES = 200_000

Progress = Callable[[int, int], None]


def snapshot_workspace(
    root: Path,
    out_zip: Path | None,
    *,
    ignore_file: str = ".rnignore",
    extra_excludes: list[str] | None = None,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    force_snapshot: bool = False,
    storage: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    run_id: str | None = None,
    name: str | None = None,
    message: str | None = None,
    force_pin: bool = False,
) -> dict[str, Any]:
    """Capture a workspace into the store as a tree, and write ``out_zip`` if given.

    Returns the seed's keys ``workspace_root``, ``archive_path``, ``format``,
    ``file_count``, ``total_bytes`` plus ``tree``, ``manifest_path``, ``files_read``
    (files hashed this time; the rest came from the stat cache), ``ref``, ``name``,
    ``message``, ``git`` (commit, branch, dirty of the workspace's git checkout, or
    None), ``excluded_count`` (files and directories the ignore rules left out; an
    excluded directory counts once, its contents are never listed) and
    ``created_rnignore`` (a default ``.rnignore`` was written this time).

    ``name`` pins the tree as ``pin/<name>`` (instead of a pin named after the tree),
    with ``message`` and ``git`` in the pin's meta; a name that already pins another
    tree is moved only with ``force_pin``.

    The tree is kept alive by a ref: ``run/<run_id>/code`` for ``run_id`` or when
    ``out_zip`` lies in a run directory, else a pin named after the tree
    (``runicorn unpin <tree>`` drops it).  ``storage`` picks the store and
    ``progress(done, total)`` is called with bytes as files are hashed.

    Raises:
        ValueError: more than ``max_files`` files or ``max_total_bytes`` bytes would
            be captured and ``force_snapshot`` is False.
        RefError: ``name`` pins another tree and ``force_pin`` is False, or is not a valid
            ref name (checked before anything is read).
        RunicornError: ``root`` is not a directory, an ignore file is unreadable, or
            a file changed or vanished while read (nothing is recorded then).
    """
    from runicorn.store import open_store

    root = Path(root).expanduser()
    if not root.is_dir():
        raise RunicornError(f"{root}: workspace root is not a directory")
    root = root.resolve()
    store = open_store(storage)
    if name is not None:
        store.check_ref("pin", name)
    out_abs = Path(out_zip).expanduser().absolute() if out_zip is not None else None
    had_ignore_file = (root / ignore_file).exists()
    rules = IgnoreRules(root, read_ignore_file(root, ignore_file), extra_excludes, cache=store.archive / IGNORE_CACHE)
    created_rnignore = not had_ignore_file and (root / ignore_file).is_file()
    skip_dirs = store_dirs(store)
    skip_files = {str(out_abs)} if out_abs is not None else set()
    if out_abs is not None and out_abs.parent.exists():
        skip_files.add(str(out_abs.parent.resolve() / out_abs.name))
    counts = {"excluded": 0}
    # git status walks the same files: it runs beside this walk, not after it.
    git_query = GitQuery(root)
    try:
        walk = iter_workspace_dirs(
            root,
            rules,
            skip_dirs=skip_dirs,
            skip_files=skip_files,
            max_files=max_files,
            max_total_bytes=max_total_bytes,
            force=force_snapshot,
            run_root=str(store.root.resolve()) + os.sep,
            counts=counts,
        )
        # A plain snapshot is kept by the pin named after its tree (see _keep_alive).
        keeper = ("pin", None) if out_abs is None and run_id is None and name is None else None
        # The walk is consumed as the stat cache is compared with it (in path order).
        captured = capture_tree(
            store, root, walk, source=str(root), progress=progress, want_entries=out_abs is not None, keeper=keeper
        )
        tree = captured.tree
        rules.save()
        git = git_query.result()
    finally:
        git_query.close()
    if name is not None:
        meta = {"source": str(root), "message": message, "git": git}
        store.set_ref(
            "pin",
            name,
            tree,
            meta={k: v for k, v in meta.items() if v is not None},
            move=force_pin,
            force_option="force_pin",
        )
        ref = f"pin/{name}"
        if run_id is not None or out_abs is not None:
            _keep_alive(store, tree, out_abs, root, run_id)
    else:
        ref = _keep_alive(store, tree, out_abs, root, run_id)
    archive_path = None
    if out_abs is not None:
        assert captured.entries is not None and captured.mtimes is not None  # asked for
        write_zip(store.blob_path, captured.entries, out_abs, captured.mtimes)
        archive_path = str(out_abs)
    return {
        "workspace_root": str(root),
        "archive_path": archive_path,
        "format": "zip" if out_abs is not None else "tree",
        "file_count": captured.file_count,  # one entry per captured file
        "total_bytes": captured.total_bytes,
        "tree": tree,
        "manifest_path": str(store.manifest_path(tree)),
        "files_read": captured.files_read,
        "ref": ref,
        "name": name,
        "message": message,
        "git": git,
        "excluded_count": counts["excluded"],
        "created_rnignore": created_rnignore,
    }


def _keep_alive(store: Any, tree: str, out_zip: Path | None, root: Path, run_id: str | None) -> str:
    """Reference the new tree so gc keeps it; return the ref as ``kind/name``: a run's code
    ref when the runs feature claims it (``run_id``, or the run whose folder holds
    ``out_zip``; asked through the store's extensions, so this package imports no run
    code), else the pin named after the tree."""
    if run_id is not None or out_zip is not None:
        from runicorn.store.extensions import registered

        for ext in registered():
            ref = ext.keep_code_tree(store, tree, run_id=run_id, near=out_zip, source=str(root))
            if ref is not None:
                return ref
    if store.get_ref("pin", tree) is None:
        store.pin(tree)
    return f"pin/{tree}"


__all__ = ["snapshot_workspace", "DEFAULT_MAX_TOTAL_BYTES", "DEFAULT_MAX_FILES"]
