"""The index rows of the store's own objects (``schema/index.sql``): the one writer of
``blobs``, ``trees``/``tree_entries`` and ``refs`` rows shared by commit, recovery and
rebuild.  Each function runs inside the caller's write transaction ``c``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from runicorn.store.tree_format import TreeEntry


def insert_blob_rows(c: Any, rows: Iterable[tuple[str, int, float, float]], *, touch: bool = False) -> None:
    """Index blobs ``(sha256, size, created_at, touched_at)``.  A blob already indexed keeps
    its row, with ``touch`` its ``touched_at`` moves to the new one (a writer storing it
    again); without, it is left as it is (recovery adopting what a writer may have indexed)."""
    conflict = "DO UPDATE SET touched_at = excluded.touched_at" if touch else "DO NOTHING"
    c.executemany(
        "INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) VALUES (?, ?, 0, ?, ?) "
        f"ON CONFLICT (sha256) {conflict}",
        list(rows),
    )


def insert_tree_rows(c: Any, tree: str, entries: Mapping[str, TreeEntry], now: float) -> None:
    """Index tree ``tree`` with ``entries`` (a tree row already there gets the counts of
    these entries; its old entries must have been deleted by the caller)."""
    c.execute(
        "INSERT INTO trees (tree, file_count, total_size, refcount, created_at, touched_at) "
        "VALUES (?, ?, ?, 0, ?, ?) ON CONFLICT (tree) DO UPDATE SET "
        "file_count = excluded.file_count, total_size = excluded.total_size",
        (tree, len(entries), sum(e.size for e in entries.values()), now, now),
    )
    c.executemany(
        "INSERT INTO tree_entries (tree, path, blob, mode, size) VALUES (?, ?, ?, ?, ?)",
        [(tree, p, e.sha256, e.mode, e.size) for p, e in entries.items()],
    )


def upsert_ref_rows(c: Any, records: Iterable[Mapping[str, Any]], now: float, *, moved: bool = False) -> None:
    """Index refs from their records (``kind``, ``name``, ``tree``, ``created_at``, ``meta``,
    as in the ref files, ``schema/refs.md``).  ``moved``: the ref was just set, so an
    indexed row takes the new ``created_at`` too; otherwise (recovery, rebuild) the row's
    own ``created_at`` stays."""
    update = "tree = excluded.tree, " + ("created_at = excluded.created_at, " if moved else "") + "meta = excluded.meta"
    c.executemany(
        "INSERT INTO refs (kind, name, tree, created_at, meta) VALUES (?, ?, ?, ?, ?) "
        f"ON CONFLICT (kind, name) DO UPDATE SET {update}",
        [
            (
                r["kind"],
                r["name"],
                r["tree"],
                float(r.get("created_at", now)),
                json.dumps(r.get("meta", {}), sort_keys=True),
            )
            for r in records
        ],
    )
