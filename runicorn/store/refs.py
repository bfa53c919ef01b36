"""Refs: named roots that keep trees alive (file format ``schema/refs.md``; written with an
intent like every object, ``schema/README.md`` "Write protocol")."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runicorn.errors import RefError, TreeNotFoundError, option
from runicorn.fsutil import atomic_write_json, fsync_dir
from runicorn.store.layout import Ref, check_ref, read_ref_file, row_to_ref
from runicorn.store.rows import upsert_ref_rows

if TYPE_CHECKING:
    from runicorn.store.store import Store


def set_ref(
    store: Store,
    kind: str,
    name: str,
    tree: str,
    *,
    meta: Mapping[str, Any] | None = None,
    move: bool = True,
    force_option: str = "force",
) -> Ref:
    """:meth:`Store.set_ref`."""
    check_ref(kind, name)
    now = time.time()
    record: dict[str, Any] = {"kind": kind, "name": name, "tree": tree, "created_at": now, "meta": dict(meta or {})}
    intent = ref_intent(store, kind, name)
    try:
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
                raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}")
            if not move:
                old = c.execute("SELECT tree FROM refs WHERE kind = ? AND name = ?", (kind, name)).fetchone()
                if old is not None and old[0] != tree:
                    raise RefError(
                        f"{kind} {name!r} already names tree {old[0][:12]}; pass "
                        f"{option(force_option)} to move it to {tree[:12]}"
                    )
            atomic_write_json(store.ref_path(kind, name), record, staging_dir=store.writer_dir())
            upsert_ref_rows(c, [record], now, moved=True)
            c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (now, tree))
            # The ref keeps the tree now: every put of it by this process is done.
            store.holds.release(c, {tree}, every=True)
    finally:
        intent.unlink(missing_ok=True)
    return Ref(kind, name, tree, now, record["meta"])


def delete_ref(store: Store, kind: str, name: str) -> bool:
    """:meth:`Store.delete_ref`."""
    check_ref(kind, name)
    intent = ref_intent(store, kind, name)
    try:
        with store.index.write() as c:
            existed = c.execute("SELECT 1 FROM refs WHERE kind = ? AND name = ?", (kind, name)).fetchone() is not None
            path = store.ref_path(kind, name)
            if path.exists():
                path.unlink()
                fsync_dir(path.parent)
                existed = True
            c.execute("DELETE FROM refs WHERE kind = ? AND name = ?", (kind, name))
    finally:
        intent.unlink(missing_ok=True)
    return existed


def ref_intent(store: Store, kind: str, name: str) -> Path:
    """Write the intent ``ref-<hex>.json`` naming the ref about to change; return it."""
    intent = store.writer_dir() / f"ref-{os.urandom(8).hex()}.json"
    atomic_write_json(intent, {"kind": kind, "name": name})
    return intent


def get_ref(store: Store, kind: str, name: str) -> Ref | None:
    """:meth:`Store.get_ref`."""
    rows = store.index.query(
        "SELECT kind, name, tree, created_at, meta FROM refs WHERE kind = ? AND name = ?", (kind, name)
    )
    return row_to_ref(rows[0]) if rows else None


def list_refs(store: Store, kind: str | None = None, *, tree: str | None = None) -> list[Ref]:
    """:meth:`Store.list_refs`."""
    sql = "SELECT kind, name, tree, created_at, meta FROM refs WHERE 1"
    params: list[Any] = []
    if kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    if tree is not None:
        sql += " AND tree = ?"
        params.append(tree)
    return [row_to_ref(r) for r in store.index.query(sql + " ORDER BY kind, name", params)]


def sync_ref_row(store: Store, c: Any, kind: str, name: str) -> None:
    """Make ref ``kind/name``'s row agree with its file (inside transaction ``c``)."""
    record = read_ref_file(store.ref_path(kind, name))
    if record is None:
        c.execute("DELETE FROM refs WHERE kind = ? AND name = ?", (kind, name))
    else:
        upsert_ref_rows(c, [{**record, "kind": kind, "name": name}], time.time())
