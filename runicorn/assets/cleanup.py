"""The seed's cleanup functions: the store's gc, and run deletion (:mod:`runicorn.runs.delete`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runicorn.runs.delete import delete_run_completely
from runicorn.store import open_store


def cleanup_orphaned_blobs(storage_root: Path, dry_run: bool = False, *, grace_seconds: float = 0.0) -> dict[str, Any]:
    """Remove blobs (and trees) that nothing references; report what went.

    Built on the store's gc: unreferenced means "no tree names it" for a blob and
    "no ref names it" for a tree, answered from the index.  Blobs a live writer is
    still using are never taken.  Returns the seed's keys: ``orphaned_blobs``,
    ``bytes_freed``, ``dry_run``, plus ``trees_deleted``, ``blob_ids`` and ``errors``.
    """
    store = open_store(Path(storage_root).expanduser())
    report = store.gc(grace_seconds=grace_seconds, dry_run=dry_run)
    return {
        "success": True,
        "dry_run": dry_run,
        "orphaned_blobs": report["blobs_deleted"],
        "bytes_freed": report["bytes_freed"],
        "trees_deleted": report["trees_deleted"],
        "blob_ids": report["blob_ids"],
        "errors": [],
    }


__all__ = ["cleanup_orphaned_blobs", "delete_run_completely"]
