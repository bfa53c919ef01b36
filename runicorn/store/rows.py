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

import apsw

from runicorn.store.holds import unhold_from_ranges
from runicorn.store.tree_format import TreePages


def insert_blob_rows(
    c: Any, rows: Iterable[tuple[str, int, float, float]], *, touch: bool = False
) -> tuple[int, int, int]:
    """Index blobs ``(sha256, size, created_at, touched_at)``.  A blob already indexed keeps
    its row, with ``touch`` its ``touched_at`` moves to the new one (a writer storing it
    again); without, it is left as it is (recovery adopting what a writer may have indexed).

    Returns ``(count, first, last)``: how many rows are new, and the least and largest
    of their ids (every row in ``first..last`` is one of them; ``last < first`` when none
    is)."""
    conflict = "DO UPDATE SET touched_at = excluded.touched_at" if touch else "DO NOTHING"
    # Ids only grow (AUTOINCREMENT): the rows above the largest id before are the new ones.
    last = c.execute("SELECT COALESCE(MAX(id), 0) FROM blobs").fetchone()[0]
    c.executemany(
        "INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) VALUES (?, ?, 0, ?, ?) "
        f"ON CONFLICT (sha256) {conflict}",
        list(rows),
    )
    count, size, first, top = c.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MIN(id), 1), COALESCE(MAX(id), 0) FROM blobs WHERE id > ?",
        (last,),
    ).fetchone()
    _add_to_totals(c, count, size)
    return count, first, top


def delete_blob_rows(c: Any, shas_json: str) -> None:
    """Drop the rows of the blobs of the JSON list ``shas_json`` (no link may name them)."""
    gone = c.execute("DELETE FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?)) RETURNING size", (shas_json,))
    sizes = [size for (size,) in gone]
    _add_to_totals(c, -len(sizes), -sum(sizes))


def _add_to_totals(c: Any, count: int, size: int) -> None:
    """Keep ``totals`` (``schema/index.sql``) as blob rows come and go."""
    if count:
        c.executemany(
            "UPDATE totals SET value = value + ? WHERE name = ?", ((count, "blob_count"), (size, "blob_bytes"))
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


def insert_page_rows(
    c: Any,
    pages: TreePages,
    new: list[str],
    now: float,
    *,
    lost_ok: bool = False,
    missing: list[str] | None = None,
) -> None:
    """Index the pages ``new`` of ``pages`` (none indexed yet) with their links, rows
    before links so every count lands (``schema/index.sql``); ``lost_ok`` and
    ``missing``: see :func:`insert_links`.  The pages' files must be in place before the
    transaction commits."""
    if not new:
        return
    c.executemany(
        "INSERT INTO pages (page, leaf, entries, size, refcount, created_at) VALUES (?, ?, ?, ?, 0, ?)",
        [(pid, int(pid in pages.leaves), *pages.shape(pid), now) for pid in new],
    )
    insert_links(c, pages, new, lost_ok=lost_ok, missing=missing)


# Hashes looked up per statement by blob_row_ids.
_LOOKUP_CHUNK = 16384
# Links indexed at a time by insert_links: its memory is a group's, whatever the tree's size.
LINK_GROUP = 16384


def blob_row_ids(c: Any, shas: list[str]) -> dict[str, int]:
    """The row ids of the indexed blobs among ``shas`` (best sorted: neighbouring lookups
    share index pages), by SHA-256; the keys are the caller's own strings."""
    found: dict[str, int] = {}
    for start in range(0, len(shas), _LOOKUP_CHUNK):
        chunk = shas[start : start + _LOOKUP_CHUNK]
        rows = c.execute(
            "SELECT j.key, b.id FROM json_each(?) j JOIN blobs b ON b.sha256 = j.value", (json.dumps(chunk),)
        )
        found.update((chunk[k], row_id) for k, row_id in rows)
    return found


def insert_links(
    c: Any, pages: TreePages, ids: list[str], *, lost_ok: bool = False, missing: list[str] | None = None
) -> None:
    """Index what pages ``ids`` of ``pages`` name (their rows exist, their links not).

    A link names its blob by the blob's row id, or by its ``lost_blobs`` row's id negated
    (``schema/index.sql``, version 7).  ``lost_ok`` (a rebuild or a migration): a blob
    the store does not hold is named as lost (a ``lost_blobs`` row), to be counted again
    when it is stored.  Without it every blob must have its row: one that has none is
    appended to ``missing`` (its links left out: the caller then rolls the transaction
    back), or without ``missing`` raises.

    The leaves' links are indexed a group of about :data:`LINK_GROUP` at a time (their
    blobs' row ids looked up, the link rows sorted and inserted, the counts raised), so
    a tree of a million files costs no more memory here than one of 16,384.

    Raises:
        apsw.ConstraintError: without ``lost_ok`` or ``missing``, a blob has no row.
    """
    leaves = [pid for pid in ids if pid in pages.leaves]
    nodes = [pid for pid in ids if pid not in pages.leaves]
    row_of = page_row_ids(c, ids + [child for pid in nodes for child in pages.links(pid)])
    group: list[tuple[str, int, int]] = []
    for pid in leaves:
        row = row_of[pid]
        group.extend((sha, row, n) for sha, n in pages.links(pid).items())
        if len(group) >= LINK_GROUP:
            _insert_link_group(c, group, lost_ok, missing)
            group = []
    if group:
        _insert_link_group(c, group, lost_ok, missing)
    c.executemany(
        "INSERT INTO page_children (page, child) VALUES (?, ?)",
        [(row_of[p], row_of[child]) for p in nodes for child in pages.links(p)],
    )


def _insert_link_group(c: Any, links: list[tuple[str, int, int]], lost_ok: bool, missing: list[str] | None) -> None:
    """:func:`insert_links` for one group of ``(sha256, page row, n)`` links."""
    named = sorted({sha for sha, _, _ in links})  # in index order: neighbouring lookups share pages
    blob_ids = blob_row_ids(c, named)
    if len(blob_ids) < len(named):
        lost = [sha for sha in named if sha not in blob_ids]
        if lost_ok:
            c.execute(  # ("WHERE true": without it, SQLite reads ON CONFLICT as a join's ON)
                "INSERT INTO lost_blobs (sha256) SELECT value FROM json_each(?) WHERE true "
                "ON CONFLICT (sha256) DO NOTHING",
                (json.dumps(lost),),
            )
            blob_ids.update(
                c.execute(
                    "SELECT sha256, -id FROM lost_blobs WHERE sha256 IN (SELECT value FROM json_each(?))",
                    (json.dumps(lost),),
                )
            )
        elif missing is not None:
            missing.extend(lost)
        else:
            raise apsw.ConstraintError(f"page_blobs.blob: blob {lost[0]} has no row in the index")
    del named
    # By blob id: the refcount updates (by row id) walk the blobs in order, and each
    # blob's links are next to each other (summed as they come).
    id_links = [(blob_ids[sha], row, n) for sha, row, n in links if sha in blob_ids]
    del blob_ids
    id_links.sort()
    c.executemany("INSERT INTO page_blobs (blob, page, n) VALUES (?, ?, ?)", id_links)
    c.executemany(
        "UPDATE blobs SET refcount = refcount + ? WHERE id = ?",
        ((sum(link[2] for link in same), blob) for blob, same in groupby(id_links, itemgetter(0)) if blob > 0),
    )


def page_row_ids(c: Any, pages: list[str]) -> dict[str, int]:
    """The row ids of the indexed pages among ``pages`` (hex ids), by page."""
    return dict(
        c.execute("SELECT page, id FROM pages WHERE page IN (SELECT value FROM json_each(?))", (json.dumps(pages),))
    )


# The rows of the pages of a JSON list of page ids (``?1``).
PAGE_ROWS = "(SELECT id FROM pages WHERE page IN (SELECT value FROM json_each(?1)))"


def delete_links(c: Any, ids_json: str) -> None:
    """Delete the links of the pages of the JSON list ``ids_json``, each blob they name
    counted down by its links' ``n`` in one statement (``schema/index.sql``)."""
    c.execute(
        "UPDATE blobs SET refcount = refcount - lost.n FROM (SELECT blob, SUM(n) AS n FROM page_blobs "
        f"WHERE page IN {PAGE_ROWS} GROUP BY blob) AS lost WHERE blobs.id = lost.blob",
        (ids_json,),
    )
    c.execute(f"DELETE FROM page_blobs WHERE page IN {PAGE_ROWS}", (ids_json,))
    c.execute(f"DELETE FROM page_children WHERE page IN {PAGE_ROWS}", (ids_json,))


def drop_unnamed_lost_blobs(c: Any) -> None:
    """Forget lost blobs no link names any more (after links were deleted)."""
    c.execute(  # ("l.blob < 0": through the index of the links naming lost blobs)
        "DELETE FROM lost_blobs WHERE NOT EXISTS (SELECT 1 FROM page_blobs l WHERE l.blob = -lost_blobs.id AND l.blob < 0)"
    )


def forget_blobs(c: Any, shas: list[str]) -> None:
    """Drop the rows of blobs the store no longer holds (their files are gone): the links
    naming one name it as lost from now on (``schema/index.sql``, version 7), and a writer
    whose range held one finds it missing.  The links are not indexed by blob: each group
    of 10,000 blobs costs two scans of them."""
    for i in range(0, len(shas), 10_000):
        chunk = json.dumps(shas[i : i + 10_000])
        c.execute(
            "INSERT INTO lost_blobs (sha256) SELECT b.sha256 FROM blobs b WHERE b.sha256 IN "
            "(SELECT value FROM json_each(?1)) AND b.id IN (SELECT blob FROM page_blobs WHERE blob IN "
            "(SELECT id FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?1)))) "
            "ON CONFLICT (sha256) DO NOTHING",
            (chunk,),
        )
        c.execute(
            "UPDATE page_blobs SET blob = -(SELECT g.id FROM lost_blobs g JOIN blobs b ON b.sha256 = g.sha256 "
            "WHERE b.id = page_blobs.blob) WHERE blob IN (SELECT id FROM blobs WHERE sha256 IN "
            "(SELECT value FROM json_each(?)))",
            (chunk,),
        )
        unhold_from_ranges(c, chunk)
        delete_blob_rows(c, chunk)


def relink_pages(c: Any, pages: TreePages, ids: list[str]) -> None:
    """Replace the links of indexed pages ``ids`` by what their bytes say (a rebuild:
    rows lost or damaged are written again, a blob without a row is named as lost;
    counts are recounted after)."""
    for i in range(0, len(ids), 500):
        delete_links(c, json.dumps(ids[i : i + 500]))
    insert_links(c, pages, ids, lost_ok=True)


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
