"""Holds: how a live writer keeps blobs and trees it still uses safe from gc
(``schema/README.md``, "Holds").

Every hold belongs to a lease: one operation's claim, a number unique within the
writer.  The index keeps a row per (writer, lease, object), so it does the counting:
an object stays held while any lease of any live writer names it, and this process
keeps nothing per held object (a 1,000,000-file snapshot holds its new blobs without
a string, a set entry and a count for each of them).  The blob rows a batch adds under a
lease are held by one ``hold_ranges`` row, their id range, instead of a row each.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runicorn.store.store import Store


@dataclass(frozen=True, slots=True)
class Lease:
    """One operation's holds: released together (:meth:`Holds.release`), or with the
    writer when its process ends."""

    id: int


Held = Iterable[str] | Lease  # what a release lets go of: one hold on each id, or a lease


class Holds:
    """The holds of one store's writer in this process."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # Lease 0 is the rows a store of index schema 7 had (one per writer and object).
        self._lease_ids = itertools.count(1)

    def new_lease(self) -> Lease:
        """A lease no hold of this process has used yet."""
        return Lease(next(self._lease_ids))

    def hold(self, c: Any, object_id: str) -> None:
        """One more hold on ``object_id`` (inside the caller's transaction ``c``), under a
        lease of its own."""
        self.acquire(c, (object_id,))

    def acquire(self, c: Any, ids: Iterable[str], lease: Lease | None = None) -> None:
        """Hold each id (inside the caller's transaction ``c``) under ``lease``; without
        one, the call is an operation of its own: a fresh lease, so each id takes one
        more hold, let go of by one :meth:`release` naming it."""
        ids = list(ids)
        if not ids:
            return
        writer = self.store.writer_dir().name
        n = (lease or self.new_lease()).id
        c.executemany(
            "INSERT OR IGNORE INTO holds (writer, lease, sha256) VALUES (?, ?, ?)", [(writer, n, i) for i in ids]
        )

    def acquire_rows(self, c: Any, first: int, last: int, lease: Lease) -> None:
        """Hold the blob rows ``first..last`` (inside the caller's transaction ``c``, which
        added them, so no other row has an id in between) under ``lease``."""
        if last >= first:
            c.execute(
                "INSERT INTO hold_ranges (first, last, writer, lease) VALUES (?, ?, ?, ?)",
                (first, last, self.store.writer_dir().name, lease.id),
            )

    def release(self, c: Any, held: Held, *, every: bool = False) -> None:
        """Let go, inside transaction ``c``, of every hold of lease ``held``, or of one hold
        (``every``: all of this process's holds) on each id of ``held`` (a blob held by
        :meth:`acquire_rows` stays held until its lease goes)."""
        writer = self.store.current_writer
        if writer is None:
            return
        if isinstance(held, Lease):
            for table in ("holds", "hold_ranges"):
                c.execute(f"DELETE FROM {table} WHERE writer = ? AND lease = ?", (writer.name, held.id))
            return
        ids = json.dumps(sorted(set(held)))  # in key order: neighbouring rows, neighbouring pages
        if every:
            c.execute(
                "DELETE FROM holds WHERE writer = ? AND sha256 IN (SELECT value FROM json_each(?))", (writer.name, ids)
            )
        else:
            # One hold each: the row of the lowest lease holding it (one set statement, a
            # third of the time of a statement per id at 100,000).
            c.execute(
                "DELETE FROM holds WHERE writer = ?1 AND (lease, sha256) IN (SELECT min(lease), sha256 FROM holds "
                "WHERE writer = ?1 AND sha256 IN (SELECT value FROM json_each(?2)) GROUP BY sha256)",
                (writer.name, ids),
            )

    def release_holds(self, held: Held | None = None) -> None:
        """:meth:`release` in a transaction of its own (every hold of this process when
        ``held`` is None)."""
        writer = self.store.current_writer
        if writer is None:
            return
        with self.store.index.write() as c:
            if held is None:
                drop_writer_holds(c, writer.name)
            else:
                self.release(c, held)


def drop_writer_holds(c: Any, writer: str) -> None:
    """Drop every hold of ``writer`` (a writer folder's name), inside transaction ``c``."""
    for table in ("holds", "hold_ranges"):
        c.execute(f"DELETE FROM {table} WHERE writer = ?", (writer,))


def unhold_from_ranges(c: Any, shas_json: str) -> None:
    """Take the blobs of the JSON list ``shas_json`` out of the ranges holding them, inside
    transaction ``c``; the rest of each range stays held by its lease.  For a repair
    forgetting blobs whose files are gone: a range keeps its rows (``schema/index.sql``,
    trigger ``blobs_held_by_range``), and the writer holding them should find them
    missing, as with a hold by hash."""
    covered = c.execute(
        "SELECT r.first, r.last, r.writer, r.lease, b.id FROM blobs b JOIN hold_ranges r ON r.first = "
        "(SELECT MAX(first) FROM hold_ranges WHERE first <= b.id) "
        "WHERE b.sha256 IN (SELECT value FROM json_each(?)) AND r.last >= b.id ORDER BY b.id",
        (shas_json,),
    ).fetchall()
    holes: dict[tuple[int, int, str, int], list[int]] = {}
    for first, last, writer, lease, blob_id in covered:
        holes.setdefault((first, last, writer, lease), []).append(blob_id)
    for (first, last, writer, lease), out in holes.items():
        c.execute("DELETE FROM hold_ranges WHERE first = ?", (first,))
        low = first
        for blob_id in [*out, last + 1]:  # what lies between two holes stays held
            if blob_id > low:
                c.execute(
                    "INSERT INTO hold_ranges (first, last, writer, lease) VALUES (?, ?, ?, ?)",
                    (low, blob_id - 1, writer, lease),
                )
            low = blob_id + 1
