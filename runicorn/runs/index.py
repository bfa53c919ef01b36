"""The ``runs`` table of the index: one row per run directory, rebuilt from disk on demand.

Run directories (``<storage_root>/<path>/runs/<run_id>/meta.json``) are the source of
truth; the table only makes "where is run X" and "list the runs" a lookup.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runicorn.runs.ids import valid_run_id

if TYPE_CHECKING:
    from runicorn.store.store import Store

# Top-level names of a storage root that hold the store, not runs.
RESERVED_TOP = frozenset({"archive", "artifacts", ".runicorn"})
_MAX_DEPTH = 8


def read_meta(run_dir: Path) -> dict[str, Any] | None:
    """A run directory's ``meta.json``, or None when missing or unreadable."""
    try:
        meta = json.loads((run_dir / "meta.json").read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) else None


def read_status(run_dir: Path) -> str:
    try:
        status = json.loads((run_dir / "status.json").read_text("utf-8")).get("status")
    except (OSError, ValueError, AttributeError, RecursionError):
        return "unknown"
    return str(status) if status else "unknown"


def upsert_run(store: Store, run_id: str, path: str, run_dir: Path, status: str, created_at: float) -> None:
    store.run_rows.upsert(run_id, path, os.path.relpath(run_dir, store.root), status, created_at)


def iter_runs_parents(root: Path) -> list[Path]:
    """Every ``.../runs/`` directory (below a project path) of a storage root.

    Does not descend into the store's own folders, hidden folders or past ``_MAX_DEPTH``.
    """
    found: list[Path] = []
    stack: list[tuple[Path, int]] = [(root, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = [e for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for child in children:
            if depth == 0 and child.name in RESERVED_TOP:
                continue
            if child.name == "runs" and depth > 0:
                found.append(Path(child.path))
            elif depth < _MAX_DEPTH and not child.name.startswith("."):
                stack.append((Path(child.path), depth + 1))
    return sorted(found)


def iter_run_dirs(root: Path) -> list[Path]:
    """Every ``.../runs/<run_id>/`` with a ``meta.json`` below a storage root.

    Does not descend into run directories themselves, nor into the store's own folders.
    """
    found: list[Path] = []
    for runs_dir in iter_runs_parents(root):
        try:
            with os.scandir(runs_dir) as runs:
                for r in runs:
                    if (
                        r.is_dir(follow_symlinks=False)
                        and valid_run_id(r.name)
                        and os.path.isfile(os.path.join(r.path, "meta.json"))
                    ):
                        found.append(Path(r.path))
        except OSError:
            pass
    return sorted(found)


def rebuild_runs(store: Store) -> int:
    """Re-derive the runs table from the run directories on disk; return how many runs.

    The runs extension (``runicorn.extensions``) runs it after an index rebuild.
    """
    rows = _scan_rows(store)
    # Not every row replaced: a run created (directory, meta.json and row in one
    # transaction) after the scan above must keep its row.  Only rows whose run
    # directory is gone go.
    store.run_rows.replace(rows, lambda rel: (store.root / rel / "meta.json").is_file())
    return len(rows)


def _scan_rows(store: Store) -> list[tuple[str, str, str, str | None, float]]:
    """The runs table's rows as the run directories on disk give them."""
    rows: list[tuple[str, str, str, str | None, float]] = []
    for run_dir in iter_run_dirs(store.root):
        meta = read_meta(run_dir) or {}
        run_id = run_dir.name
        path = meta.get("path") or os.path.relpath(run_dir.parent.parent, store.root)
        created = meta.get("created_at")
        try:
            created_at = float(created) if created is not None else run_dir.stat().st_mtime
        except (TypeError, ValueError):
            created_at = run_dir.stat().st_mtime
        rows.append((run_id, str(path), os.path.relpath(run_dir, store.root), read_status(run_dir), created_at))
    return rows


def find_run_dir(store: Store, run_id: str, *, rescan: bool = True) -> Path | None:
    """The directory of run ``run_id``, from the index (rescanning the disk if unknown)."""
    if not valid_run_id(run_id):
        return None
    for attempt in (0, 1):
        rel = store.run_rows.run_dir(run_id)
        if rel is not None:
            candidate = store.root / rel
            # Only a real '<...>/runs/<run_id>' directory below the root counts.
            if (
                candidate.name == run_id
                and candidate.parent.name == "runs"
                and not candidate.is_symlink()
                and (candidate / "meta.json").is_file()
                and os.path.realpath(candidate).startswith(os.path.realpath(store.root) + os.sep)
            ):
                return candidate
        if attempt == 0 and rescan and not store.read_only:
            rebuild_runs(store)
        else:
            break
    return None


def run_for_path(store: Store, path: Path) -> str | None:
    """The run id whose directory (below this store's root) contains ``path``, if any."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(store.root)
    except ValueError:
        return None
    parts = rel.parts
    for i in range(1, len(parts) - 1):
        if parts[i] == "runs" and valid_run_id(parts[i + 1]):
            run_dir = store.root.joinpath(*parts[: i + 2])
            if (run_dir / "meta.json").is_file():
                return parts[i + 1]
    return None


def list_runs(store: Store) -> list[dict[str, Any]]:
    """All indexed runs (rescanning the disk first so the list is complete; on a read-only
    store the scan itself is the list)."""
    if store.read_only:
        rows = sorted(_scan_rows(store), key=lambda r: (r[4], r[0]))
    else:
        rebuild_runs(store)
        rows = store.run_rows.all()
    return [
        {"run_id": r, "path": p, "run_dir": str(store.root / d), "status": s, "created_at": t} for r, p, d, s, t in rows
    ]


__all__ = ["rebuild_runs", "find_run_dir", "run_for_path", "list_runs", "valid_run_id", "iter_run_dirs"]
