"""What each remote is known to hold: the index's ``remote_objects``, ``remote_state`` and
``remote_refs`` tables (schema version 2).

A cache for ``runicorn push``: rows are written only after the remote confirmed an
object, and the object rows of a remote are dropped when its gc epoch changes (a remote
gc may have deleted what no remote ref reached).  Losing them costs requests, never data.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from runicorn.store.store import Store

BLOB = "blob"
TREE = "tree"


class RemoteCache:
    """The rows of one remote (identified by its canonical URL) in a store's index."""

    def __init__(self, store: "Store", remote: str) -> None:
        self.store = store
        self.remote = remote

    def known(self, kind: str, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` (of ``kind``: blob or tree) the remote is known to hold."""
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        rows = self.store.index.query(
            "SELECT id FROM remote_objects WHERE remote = ? AND kind = ? AND id IN (SELECT value FROM json_each(?))",
            (self.remote, kind, json.dumps(wanted)),
        )
        return {r[0] for r in rows}

    def record(self, kind: str, ids: Iterable[str]) -> None:
        """Remember that the remote holds ``ids`` (call only once it confirmed them)."""
        rows = [(self.remote, kind, i) for i in set(ids)]
        if rows:
            with self.store.index.write() as c:
                c.executemany("INSERT OR IGNORE INTO remote_objects (remote, kind, id) VALUES (?, ?, ?)", rows)

    def check_epoch(self, epoch: str) -> bool:
        """Note the remote's current gc epoch; drop the object rows if it changed.

        Returns True when the cached rows were kept.
        """
        with self.store.index.write() as c:
            row = c.execute("SELECT epoch FROM remote_state WHERE remote = ?", (self.remote,)).fetchone()
            if row is not None and row[0] == epoch:
                return True
            c.execute("DELETE FROM remote_objects WHERE remote = ?", (self.remote,))
            c.execute(
                "INSERT INTO remote_state (remote, epoch) VALUES (?, ?) "
                "ON CONFLICT (remote) DO UPDATE SET epoch = excluded.epoch",
                (self.remote, epoch),
            )
            return False

    def ref_state(self, kind: str, name: str) -> tuple[str, str] | None:
        """``(tree, etag)`` of the remote ref as this store last pushed or pulled it."""
        rows = self.store.index.query(
            "SELECT tree, etag FROM remote_refs WHERE remote = ? AND kind = ? AND name = ?", (self.remote, kind, name)
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def set_ref_state(self, kind: str, name: str, tree: str, etag: str) -> None:
        """Remember the remote ref's state after a push or pull."""
        with self.store.index.write() as c:
            c.execute(
                "INSERT INTO remote_refs (remote, kind, name, tree, etag) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (remote, kind, name) DO UPDATE SET tree = excluded.tree, etag = excluded.etag",
                (self.remote, kind, name, tree, etag),
            )

    def forget(self) -> None:
        """Drop every row of this remote (``runicorn remote remove``)."""
        with self.store.index.write() as c:
            for table in ("remote_objects", "remote_state", "remote_refs"):
                c.execute(f"DELETE FROM {table} WHERE remote = ?", (self.remote,))
