"""Migration of a schema-4 store's trees to pages (``schema/pages.md``, "Migration").

Index schema 5 (:mod:`runicorn.store.index`) adds the page tables next to the old
``tree_entries``; this module then moves each tree over, one at a time, each step
resumable: its pages are written, then its manifest is replaced by a version-2 one,
then one transaction indexes the pages, records them on the tree's row and drops its
``tree_entries`` rows.  A crash between steps leaves the tree readable both ways (the
tree id never changes, so refs, locks and remotes are untouched); the next open goes
on.  When no tree is left, ``tree_entries`` is dropped.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

from runicorn.errors import CorruptManifestError
from runicorn.fsutil import atomic_write_bytes
from runicorn.store.tree_format import (
    TreeEntry,
    build_paged_manifest,
    build_pages,
    compute_tree_id,
    manifest_bytes,
    parse_manifest,
    path_key,
)

if TYPE_CHECKING:
    from runicorn.store.store import Store

BATCH = 200


def migrate_trees(store: Store) -> list[str]:
    """Move every schema-4 tree to pages; return one note (empty when nothing to do).

    A tree whose index rows do not reproduce its id is moved from its manifest; one
    whose manifest does not either is left as it is, rows and all (they keep its
    blobs), and named.
    """
    if not store.index.has_table("tree_entries"):
        return []
    count = store.index.scalar("SELECT COUNT(*) FROM trees WHERE pages IS NULL") or 0
    if count:
        # Once per store, and it can take a while for big trees: say so, and that it is safe.
        print(
            f"runicorn: moving {count} tree(s) of {store.root} to the page format (index schema 5), once; "
            "interrupting is safe",
            file=sys.stderr,
        )
    moved = 0
    left: list[str] = []
    while True:
        todo = [
            str(r[0])
            for r in store.index.query(
                "SELECT tree FROM trees WHERE pages IS NULL AND tree > ? ORDER BY tree LIMIT ?",
                (left[-1] if left else "", BATCH),
            )
        ]
        if not todo:
            break
        for tree in todo:
            if migrate_tree(store, tree):
                moved += 1
            else:
                left.append(tree)
    if not left:
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE pages IS NULL LIMIT 1").fetchone() is None:
                c.execute("DROP TABLE IF EXISTS tree_entries")
    notes = [f"migrated {moved} tree(s) to pages (index schema 5)"] if moved else []
    if left:
        notes.append(
            f"{len(left)} tree(s) kept in the old format because their index rows are damaged, "
            f"e.g. {left[0]}; run `runicorn verify --repair`"
        )
    return notes


def migrate_tree(store: Store, tree: str) -> bool:
    """Move one tree to pages, from its index rows or, when they do not reproduce its id
    (a damaged index), from its manifest; False when neither does."""
    rows = store.index.query("SELECT path, blob, mode, size FROM tree_entries WHERE tree = ?", (tree,))
    rows.sort(key=lambda r: path_key(r[0]))
    entries = {p: TreeEntry(b, m, s) for p, b, m, s in rows}
    if compute_tree_id(entries) != tree:
        try:
            _, entries = parse_manifest(
                store.manifest_path(tree).read_bytes(),
                origin=store.manifest_path(tree),
                expected_tree=tree,
                load_page=store.load_page,
            )
        except (OSError, CorruptManifestError):
            return False
    from runicorn.store.trees import index_tree, summary_of, write_pages

    pages = build_pages(entries)
    write_pages(store, pages, [p for p in pages.pages if not store.page_path(p).exists()])
    created_at, source = _old_header(store, tree)
    total = sum(e.size for e in entries.values())
    manifest = build_paged_manifest(tree, pages, len(entries), total, source=source, created_at=created_at)
    path = store.manifest_path(tree)
    if path.exists():
        atomic_write_bytes(path, manifest_bytes(manifest), staging_dir=store.writer_dir(), mode=0o444)
    with store.index.write() as c:
        row = c.execute("SELECT pages FROM trees WHERE tree = ?", (tree,)).fetchone()
        if row is None or row[0] is not None:
            return True  # collected or migrated meanwhile
        index_tree(store, c, tree, summary_of(entries), pages, time.time())
        c.execute("DELETE FROM tree_entries WHERE tree = ?", (tree,))
    return True


def _old_header(store: Store, tree: str) -> tuple[Any, Any]:
    """``created_at`` and ``source`` of a tree's current manifest (None when unreadable)."""
    try:
        data = json.loads(store.manifest_path(tree).read_bytes().decode("utf-8", "surrogateescape"))
        return data.get("created_at"), data.get("source")
    except (OSError, ValueError, AttributeError, CorruptManifestError):
        return None, None
