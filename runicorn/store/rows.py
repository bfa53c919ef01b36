"""The index rows of the store's own objects (``schema/index.sql``): the one writer of
``blobs``, ``pages`` (with their links), ``trees`` and ``refs`` rows shared by commit,
recovery, migration and rebuild.  Each function runs inside the caller's write
transaction ``c``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from itertools import groupby
from operator import itemgetter
from typing import Any

from runicorn.store.tree_format import TreePages


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


def missing_pages(c: Any, pages: TreePages) -> list[str]:
    """The pages of ``pages`` the index has no row for (in ``pages.pages`` order)."""
    known = {
        row[0]
        for row in c.execute(
            "SELECT page FROM pages WHERE page IN (SELECT value FROM json_each(?))", (json.dumps(list(pages.pages)),)
        )
    }
    return [p for p in pages.pages if p not in known]


def insert_page_rows(c: Any, pages: TreePages, new: list[str], now: float) -> None:
    """Index the pages ``new`` of ``pages`` (none indexed yet; their files in place) with
    their links, rows before links so every count lands (``schema/index.sql``)."""
    if not new:
        return
    c.executemany(
        "INSERT INTO pages (page, leaf, entries, size, refcount, created_at) VALUES (?, ?, ?, ?, 0, ?)",
        [(pid, int(pid in pages.leaves), pages.pages[pid].count(b"\n") - 1, len(pages.pages[pid]), now) for pid in new],
    )
    insert_links(c, pages, new)


def insert_links(c: Any, pages: TreePages, ids: list[str]) -> None:
    """Index what pages ``ids`` of ``pages`` name (their rows exist, their links not)."""
    blob_links: list[tuple[str, str, int]] = []
    child_links: list[tuple[str, str]] = []
    for pid in ids:
        leaf = pid in pages.leaves
        links = pages.links(pid)
        if leaf:
            blob_links.extend((pid, blob, n) for blob, n in links.items())
        else:
            child_links.extend((pid, child) for child in links)
    # In blob order: the blob index and the refcounts are then updated page by page,
    # and each blob's links are next to each other (summed as they come, no dict).
    blob_links.sort(key=itemgetter(1))
    c.executemany("INSERT INTO page_blobs (page, blob, n) VALUES (?, ?, ?)", blob_links)
    c.executemany(
        "UPDATE blobs SET refcount = refcount + ? WHERE sha256 = ?",
        ((sum(link[2] for link in same), blob) for blob, same in groupby(blob_links, itemgetter(1))),
    )
    c.executemany("INSERT INTO page_children (page, child) VALUES (?, ?)", child_links)


def delete_links(c: Any, ids_json: str) -> None:
    """Delete the links of the pages of the JSON list ``ids_json``, each blob they name
    counted down by its links' ``n`` in one statement (``schema/index.sql``)."""
    c.execute(
        "UPDATE blobs SET refcount = refcount - lost.n FROM (SELECT blob, SUM(n) AS n FROM page_blobs "
        "WHERE page IN (SELECT value FROM json_each(?1)) GROUP BY blob) AS lost WHERE blobs.sha256 = lost.blob",
        (ids_json,),
    )
    c.execute("DELETE FROM page_blobs WHERE page IN (SELECT value FROM json_each(?))", (ids_json,))
    c.execute("DELETE FROM page_children WHERE page IN (SELECT value FROM json_each(?))", (ids_json,))


def relink_pages(c: Any, pages: TreePages, ids: list[str]) -> None:
    """Replace the links of indexed pages ``ids`` by what their bytes say (a rebuild:
    rows lost or damaged are written again; counts are recounted after)."""
    for i in range(0, len(ids), 500):
        delete_links(c, json.dumps(ids[i : i + 500]))
    insert_links(c, pages, ids)


def insert_tree_rows(c: Any, tree: str, pages: TreePages, file_count: int, total_size: int, now: float) -> None:
    """Index tree ``tree`` stored as ``pages`` (all indexed already).  A tree row already
    there (a schema-4 tree being migrated, a rebuild) gets these counts and pages."""
    c.execute(
        "INSERT INTO trees (tree, file_count, total_size, refcount, created_at, touched_at, depth, pages) "
        "VALUES (?, ?, ?, 0, ?, ?, ?, ?) ON CONFLICT (tree) DO UPDATE SET "
        "file_count = excluded.file_count, total_size = excluded.total_size, "
        "depth = excluded.depth, pages = excluded.pages",
        (tree, file_count, total_size, now, now, pages.depth, json.dumps(pages.top)),
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
