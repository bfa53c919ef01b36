"""Run deletion: a run's directory, refs and row, then the trees and blobs only it used.

A deletion renames the run directory aside first (its commit point); what a killed
deletion left is finished by the store's recovery (:func:`finish_interrupted_deletions`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runicorn.errors import RunicornError, option
from runicorn.fsutil import abandoned, atomic_write_json, lock_dir, remove_tree
from runicorn.store import open_store

if TYPE_CHECKING:
    from runicorn.store.gc import PlannedBlobs

DELETING_MARK = ".rn-deleting-"


def _trustworthy_index(store: Any, run_id: str, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Make sure the index agrees with the files before deleting the run by it.

    Returns ``(notes, problems)``: what was done, and what still disagrees (then
    nothing may be deleted).  A missing or unreadable index was already rebuilt when
    the store opened.  Here a cheap consistency check (no manifest is parsed) catches an
    index that opens but under-counts references: ref files and manifests against the
    index, and the refcounts of what the deletion could free (the run's trees, the pages
    they reach, the blobs those name), so it looks rows up in proportion to the run (plus
    one scan of the links, which are not indexed by blob).  It runs
    inside a write transaction, so a writer between writing a file and its COMMIT is
    never mistaken for damage.  Any real difference rebuilds the index from the files;
    the rebuild keeps what live writers hold and what damaged files protected -- never
    "no entry, so orphaned".
    """
    from runicorn.store.verify import index_disagreements

    def run_trees() -> list[str]:
        return [r.tree for r in store.list_refs("run") if r.name.startswith(run_id + "/")]

    problems = index_disagreements(store, run_trees())
    if not problems:
        return [], []
    report = store.rebuild_index()
    left = index_disagreements(store, run_trees())
    if dry_run:
        done = (
            f"dry run: index rebuilt from the files before planning ({'; '.join(problems)}); no run content was changed"
        )
    else:
        done = f"index rebuilt before deleting ({'; '.join(problems)})"
    return [done, *report.get("notes", [])], left


def _plan(
    store: Any, run_id: str, refs: list[Any], dry_run: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], PlannedBlobs]:
    """Which of the run's trees go and which blobs only they use, as if its refs were gone.

    Mirrors ``Store.gc(grace_seconds=0, trees=...)`` after the refs are deleted, so a dry
    run reports exactly what the real deletion does: a tree (or blob) a live writer holds
    is kept (listed in ``kept`` with ``held_by_writer``), as gc keeps it.  The blobs are
    planned for a dry run only (a real deletion's gc plans them again, under its lock).
    """
    mine: dict[str, int] = {}
    for r in refs:
        mine[r.tree] = mine.get(r.tree, 0) + 1
    orphaned: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    doomed: list[str] = []
    # gc's own plan, limited to the run's trees, as if the run's refs were gone: one read
    # snapshot gives each tree's refs and holds and the blobs only the doomed trees use.
    plan = store.gc_plan(mine, refs_gone=[(r.kind, r.name) for r in refs], collect=dry_run)
    prefix = run_id + "/"
    for r in refs:
        info = plan.infos.get(r.tree)
        refcount, files, size = (info.refcount, info.file_count, info.total_size) if info else (0, 0, 0)
        asset = {
            "ref": f"{r.kind}/{r.name}",
            "tree": r.tree,
            "role": r.meta.get("role"),
            "file_count": files,
            "total_size_bytes": size,
        }
        # As gc decides: a tree goes when no other ref names it and no live writer holds it.
        held = info is not None and info.held
        if refcount <= mine[r.tree] and held:
            kept.append({**asset, "shared_with": [], "held_by_writer": True})
        elif refcount <= mine[r.tree]:
            orphaned.append(asset)
            if r.tree not in doomed:
                doomed.append(r.tree)
        else:
            others = [
                f"{k}/{n}"
                for k, n in (info.refs if info else ())
                if not (k == "run" and (n == run_id or n.startswith(prefix)))
            ]
            kept.append({**asset, "shared_with": others})
    return orphaned, kept, sorted(doomed), plan.blobs


def _count_files(root: Path) -> int:
    n = 0
    for _, dirs, files in os.walk(root):
        n += len(files)
    return n


def _live_writer_pid(run_dir: Path) -> int | None:
    """The pid of another live process on this host still writing the run, else None.

    A run counts as live while ``status.json`` says ``running`` and the process named in
    ``meta.json`` (same hostname) exists.  The calling process itself is never counted.
    """
    import socket

    from runicorn.runs.index import read_meta, read_status

    if read_status(run_dir) != "running":
        return None
    meta = read_meta(run_dir) or {}
    pid = meta.get("pid")
    if meta.get("hostname") != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool):
        return None
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid  # exists, owned by someone else
    except OSError:
        return None
    return pid


def delete_run_completely(
    run_id: str, storage_root: Path, dry_run: bool = False, *, force: bool = False, list_blobs: bool = True
) -> dict[str, Any]:
    """Delete a run's directory and refs, then the trees and blobs nothing else references.

    A blob shared with any other tree is never deleted, and only the run's own
    ``runs/<run_id>`` directory is removed (parents stay).  The index is verified (and
    rebuilt from the files if it disagrees) before anything is deleted.  ``dry_run``
    reports exactly what the real call then does, without changing anything.

    Returns the seed's keys: ``success``, ``run_id``, ``run_dir_deleted``,
    ``orphaned_assets`` (the run's trees that go), ``kept_assets`` (shared ones, with
    ``shared_with``), ``blobs_deleted``, ``manifests_deleted``, ``outputs_deleted``
    (files in the run directory plus rolling output versions), ``bytes_freed``, ``errors``; plus ``dry_run``,
    ``run_dir``, ``tree_ids`` and ``blob_ids``.  An unknown run gives ``success: False``
    and an error saying it was not found.

    A run still being written (``status.json`` says ``running`` and its process, on this
    host, is alive) is refused with ``success: False`` unless ``force`` is true; a run
    whose process died is deleted normally.

    ``list_blobs=False``: ``blob_ids`` is None (the count and bytes stay), so deleting a
    run of a million files does not hold a million names to return.
    """
    from runicorn.runs.index import find_run_dir, valid_run_id

    result: dict[str, Any] = {
        "success": False,
        "run_id": run_id,
        "dry_run": dry_run,
        "run_dir": None,
        "run_dir_deleted": False,
        "orphaned_assets": [],
        "kept_assets": [],
        "blobs_deleted": 0,
        "manifests_deleted": 0,
        "outputs_deleted": 0,
        "bytes_freed": 0,
        "tree_ids": [],
        "blob_ids": [] if list_blobs else None,
        "errors": [],
        "notes": [],
    }
    if not valid_run_id(run_id):
        result["errors"].append(f"run {run_id!r} not found (not a valid run id)")
        return result
    store = open_store(Path(storage_root).expanduser())
    result["notes"], disagree = _trustworthy_index(store, run_id, dry_run)
    if disagree:
        result["errors"].append(
            f"{store.archive}: the index disagrees with the files even after a rebuild "
            f"({'; '.join(disagree)}); nothing was deleted: fix or remove the damaged "
            "files, then run `runicorn verify --repair`"
        )
        return result
    run_dir = find_run_dir(store, run_id)
    prefix = run_id + "/"
    refs = [r for r in store.list_refs("run") if r.name.startswith(prefix)]
    if run_dir is None and not refs:
        result["errors"].append(f"run {run_id} not found under {store.root}")
        return result
    if run_dir is not None and not force:
        pid = _live_writer_pid(run_dir)
        if pid is not None:
            result["run_dir"] = str(run_dir)
            result["errors"].append(
                f"run {run_id} is still running (pid {pid}); pass {option('force')} to delete it anyway"
            )
            return result
    orphaned, kept, doomed, blobs = _plan(store, run_id, refs, dry_run)
    # Files in the run directory plus the run's rolling output versions (refs run/<id>/output/...).
    outputs = (_count_files(run_dir) if run_dir is not None else 0) + sum(
        1 for r in refs if r.name.startswith(f"{run_id}/output/")
    )
    result.update(
        run_dir=str(run_dir) if run_dir else None, orphaned_assets=orphaned, kept_assets=kept, outputs_deleted=outputs
    )
    if dry_run:
        result.update(
            success=True,
            run_dir_deleted=run_dir is not None,
            manifests_deleted=len(doomed),
            tree_ids=doomed,
            blobs_deleted=len(blobs),
            blob_ids=blobs.names() if list_blobs else None,
            bytes_freed=blobs.total_size(),
        )
        return result
    trash: Path | None = None
    lock: int | None = None
    note: Path | None = None
    if run_dir is not None:
        # Renamed aside first, before anything is deleted: the run disappears at once, and
        # a directory that cannot be moved leaves the run (refs, trees, row) untouched.
        # The rename is the commit point.  The directory stays locked and named in a note
        # of this writer until the end: if this process is killed, the store's recovery
        # (or gc, for a directory without a note) finishes the deletion.
        trash = run_dir.parent / f".{run_id}{DELETING_MARK}{os.urandom(4).hex()}"
        try:
            lock = lock_dir(run_dir)
            note = store.writer_dir() / f"deleting-{os.urandom(6).hex()}.json"
            atomic_write_json(note, {"run_id": run_id, "trash": str(trash)})
            os.rename(run_dir, trash)
        except OSError as exc:
            if lock is not None:
                os.close(lock)
            if note is not None:
                note.unlink(missing_ok=True)
            result["errors"].append(
                f"{run_dir}: could not move the run directory aside ({exc.strerror}); nothing was deleted"
            )
            return result
        result["run_dir_deleted"] = True
    for r in refs:
        store.delete_ref(r.kind, r.name)
    report = {
        "trees_deleted": 0,
        "blobs_deleted": 0,
        "bytes_freed": 0,
        "tree_ids": [],
        "blob_ids": [] if list_blobs else None,
    }
    if doomed:
        try:
            report = store.gc(grace_seconds=0, trees=doomed, list_blobs=list_blobs)
        except RunicornError as exc:
            # The refs are gone, so a later gc may collect the trees; nothing was lost.
            result["errors"].append(f"the run's content was kept: {exc}")
    result.update(
        manifests_deleted=report["trees_deleted"],
        tree_ids=report["tree_ids"],
        blobs_deleted=report["blobs_deleted"],
        blob_ids=report["blob_ids"],
        bytes_freed=report["bytes_freed"],
    )
    if trash is not None:
        try:
            remove_tree(trash)
        except OSError as exc:
            result["errors"].append(
                f"{trash}: the run directory was moved here but could not be removed "
                f"({exc.strerror}); delete it by hand"
            )
    store.run_rows.delete(run_id)
    if lock is not None:
        os.close(lock)
    if note is not None:
        note.unlink(missing_ok=True)
    result["success"] = not result["errors"]
    return result


def interrupted_deletions(store: Any) -> list[tuple[str, Path]]:
    """``(run_id, directory)`` of every ``.<run>.rn-deleting-*`` directory below the store's
    runs that no live process is deleting (a delete-run was killed after its commit point)."""
    from runicorn.runs.index import iter_runs_parents, valid_run_id

    found = []
    for runs in iter_runs_parents(store.root):
        try:
            with os.scandir(runs) as it:
                names = [e.name for e in it if DELETING_MARK in e.name and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            run_id = name[1:].split(DELETING_MARK, 1)[0]
            if name.startswith(".") and valid_run_id(run_id) and abandoned(runs / name):
                found.append((run_id, runs / name))
    return sorted(found)


def finish_interrupted_deletions(store: Any, *, dry_run: bool = False, **_: Any) -> list[str]:
    """Finish the run deletions a killed ``delete-run`` left (see :func:`interrupted_deletions`):
    the run's refs and row go, then its directory; its trees become collectable.  A run
    whose directory is back under its own name keeps its refs.  Runs before every gc (and
    an index rebuild); a dry run only reports.  Returns one line per deletion."""
    lines = []
    for run_id, trash in interrupted_deletions(store):
        if dry_run:
            lines.append(f"would finish the interrupted deletion of run {run_id} ({trash})")
            continue
        if not (trash.parent / run_id).exists():
            store.drop_run(run_id)
        remove_tree(trash)
        lines.append(f"finished the interrupted deletion of run {run_id} ({trash})")
    return lines


__all__ = ["delete_run_completely", "interrupted_deletions", "finish_interrupted_deletions", "DELETING_MARK"]
