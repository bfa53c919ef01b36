"""Trees in the store: putting them (manifest intent, then manifest and rows in one
transaction, ``schema/README.md`` "Write protocol"), reading them and resolving id prefixes.
The manifest format itself is :mod:`runicorn.store.tree_format` (``schema/manifest.md``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runicorn.errors import BlobNotFoundError, RunicornError, TreeNotFoundError
from runicorn.fsutil import StagedFile, fsync_dir, publish_link
from runicorn.hashing import is_sha256_hex
from runicorn.store.layout import BlobInfo, TreeInfo
from runicorn.store.rows import insert_tree_rows
from runicorn.store.tree_format import (
    MODE_LINK,
    TreeEntry,
    build_manifest,
    compute_tree_id,
    manifest_bytes,
    normalize_entries,
    parse_manifest,
)
from runicorn.store.walk import scan_directory

if TYPE_CHECKING:
    from runicorn.store.store import Store


def has_tree(store: Store, tree: str) -> bool:
    """:meth:`Store.has_tree`."""
    return store.index.scalar("SELECT 1 FROM trees WHERE tree = ?", (tree,)) is not None


def tree_infos(store: Store, trees: Iterable[str], c: Any = None) -> dict[str, TreeInfo]:
    """:meth:`Store.tree_info` of several trees (in transaction ``c``, else one read
    snapshot); unknown trees are left out."""
    if c is None:
        with store.index.read() as c:
            return tree_infos(store, trees, c)
    out: dict[str, TreeInfo] = {}
    for tree in dict.fromkeys(trees):
        row = c.execute("SELECT file_count, total_size, refcount FROM trees WHERE tree = ?", (tree,)).fetchone()
        if row is None:
            continue
        held = c.execute("SELECT 1 FROM holds WHERE sha256 = ? LIMIT 1", (tree,)).fetchone() is not None
        refs = tuple(
            (str(k), str(n))
            for k, n in c.execute("SELECT kind, name FROM refs WHERE tree = ? ORDER BY kind, name", (tree,)).fetchall()
        )
        out[tree] = TreeInfo(tree, int(row[0]), int(row[1]), int(row[2]), held, refs)
    return out


def touch_tree(store: Store, tree: str) -> bool:
    """:meth:`Store.touch_tree`."""
    with store.index.write() as c:
        if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
            return False
        c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (time.time(), tree))
    return True


def kept_by(store: Store, tree: str, kind: str, name: str) -> bool:
    """:meth:`Store.tree_kept_by`."""
    with store.index.read() as c:
        return (
            c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is not None
            and c.execute("SELECT 1 FROM refs WHERE kind = ? AND name = ? AND tree = ?", (kind, name, tree)).fetchone()
            is not None
        )


def put_tree(
    store: Store,
    entries: Mapping[str, Any],
    *,
    source: str | None = None,
    ref: tuple[str, str] | None = None,
    ref_meta: Mapping[str, Any] | None = None,
) -> str:
    """:meth:`Store.put_tree`."""
    norm = normalize_entries(entries)
    tree = compute_tree_id(norm)
    if store.index.scalar("SELECT 1 FROM trees WHERE tree = ?", (tree,)) and store.manifest_path(tree).exists():
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (time.time(), tree))
                store.holds.hold(c, tree)
                store.holds.release(c, {e.sha256 for e in norm.values()})
                existing = True
            else:
                existing = False
        if existing:
            if ref is not None:
                store.set_ref(ref[0], ref[1], tree, meta=ref_meta)
            return tree
    manifest = build_manifest(tree, norm, source=source)
    staged = StagedFile(store.writer_dir(), mode=0o600)
    try:
        staged.file.write(manifest_bytes(manifest))
        staged.finish(fsync=True, mode=0o444)
    except BaseException:
        staged.discard()
        raise
    intent = staged.path.with_name(f"tree-{tree}.json")
    os.replace(staged.path, intent)
    try:
        commit_tree(store, intent, tree, norm)
    finally:
        intent.unlink(missing_ok=True)
    if ref is not None:
        store.set_ref(ref[0], ref[1], tree, meta=ref_meta)
    return tree


def commit_tree(store: Store, intent: Path, tree: str, norm: Mapping[str, TreeEntry]) -> None:
    """Publish the manifest intent and index the tree, held for this writer, in one
    transaction; the holds on its blobs go (the tree keeps them now).

    Raises:
        BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
    """
    now = time.time()
    shas = {e.sha256 for e in norm.values()}
    with store.index.write() as c:
        dest = store.manifest_path(tree)
        if not dest.exists():
            publish_link(intent, dest)
            fsync_dir(dest.parent)
        if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
            c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (now, tree))
        else:
            # One set query, not a round trip per blob: trees can have 100k entries.
            known = {
                row[0]
                for row in c.execute(
                    "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted(shas)),),
                )
            }
            missing = sorted(shas - known)
            if missing:
                err = BlobNotFoundError(f"tree {tree}: {len(missing)} blob(s) not in the store, e.g. {missing[0]}")
                err.missing = missing  # type: ignore[attr-defined]
                raise err
            insert_tree_rows(c, tree, norm, now)
        store.holds.hold(c, tree)
        store.holds.release(c, shas)


def get_manifest(store: Store, tree: str) -> dict[str, Any]:
    """:meth:`Store.get_manifest`."""
    path = store.manifest_path(tree)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}") from None
    manifest, _ = parse_manifest(data, origin=path, expected_tree=tree)
    return manifest


def tree_entries(store: Store, tree: str) -> dict[str, TreeEntry]:
    """:meth:`Store.tree_entries`."""
    rows = store.index.query("SELECT path, blob, mode, size FROM tree_entries WHERE tree = ?", (tree,))
    if not rows and not has_tree(store, tree):
        raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}")
    return {p: TreeEntry(b, m, s) for p, b, m, s in rows}


def resolve_tree(store: Store, prefix: str, *, hold: bool = False) -> str:
    """:meth:`Store.resolve_tree`."""
    tree = _resolve_prefix(store, prefix)
    if hold:
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
                raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}")
            store.holds.hold(c, tree)
    return tree


def _resolve_prefix(store: Store, prefix: str) -> str:
    prefix = prefix.lower()
    if is_sha256_hex(prefix):
        if has_tree(store, prefix):
            return prefix
        raise TreeNotFoundError(f"tree {prefix} is not in the store at {store.root}")
    if len(prefix) < 6 or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise TreeNotFoundError(f"{prefix!r} is not a tree id (give at least 6 hex digits)")
    from runicorn.names import SHOWN, unique_prefix

    # A range scan of the primary key: a few rows however many trees there are.
    rows = store.index.query(
        "SELECT tree FROM trees WHERE tree >= ? AND tree < ? ORDER BY tree LIMIT ?", (prefix, prefix + "g", SHOWN + 1)
    )
    tree = unique_prefix(prefix, [str(r[0]) for r in rows], what="tree")
    if tree is None:
        raise TreeNotFoundError(f"tree prefix {prefix!r} matches no trees in the store at {store.root}")
    return tree


def ingest_directory(store: Store, root: Path, *, source: str | None = None, include: Any = None) -> str:
    """:meth:`Store.ingest_directory`."""
    if not root.is_dir():
        raise RunicornError(f"{root}: not a directory")
    files, links = scan_directory(root, include)
    infos = store.ingest_files([full for _, full, _ in files])
    entries: dict[str, TreeEntry] = {}
    for (rel, _, mode), info in zip(files, infos):
        entries[rel] = TreeEntry(info.sha256, mode, info.size)
    stored: dict[bytes, BlobInfo] = {}
    for rel, target in links:
        # Once per distinct target: each ingest is one hold, and put_tree lets go of one.
        info = stored.get(target) or stored.setdefault(target, store.ingest_bytes(target))
        entries[rel] = TreeEntry(info.sha256, MODE_LINK, info.size)
    return put_tree(store, entries, source=source if source is not None else str(root.absolute()))
