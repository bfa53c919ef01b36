"""fsck for the store (``runicorn verify``) and rebuilding the index from files (``--repair``)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.fsutil import atomic_write_bytes, blob_perm, make_dir
from runicorn.hashing import sha256_bytes, is_sha256_hex, sha256_file
from runicorn.store.extensions import registered
from runicorn.store.index import has_table
from runicorn.store.ingest import blobs_being_written, sync_adopted_blobs
from runicorn.store.layout import nascent_owner_alive, quarantine, read_ref_file, ref_filename, writer_alive
from runicorn.store.rows import (
    PAGE_ROWS,
    drop_unnamed_lost_blobs,
    forget_blobs,
    insert_blob_rows,
    relink_pages,
    upsert_ref_rows,
)
from runicorn.store.tree_format import (
    LEAF_HEADER,
    MANIFEST_PAGED,
    NODE_HEADER,
    TreeEntry,
    TreePages,
    build_paged_manifest,
    build_pages,
    compute_tree_id,
    manifest_bytes,
    normalize_entries,
    parse_leaf,
    parse_manifest,
    parse_node,
    read_entries,
)
from runicorn.store.trees import REACHED_PAGES, index_tree, summary_of, write_pages

if TYPE_CHECKING:
    from runicorn.store.store import Store


def _problem(kind: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "detail": detail, **extra}


def _iter_sharded(top: Path, suffix: str) -> Iterator[tuple[Path, str | None]]:
    """Yield ``(path, id)`` for files under ``top/<aa>/<id><suffix>``; id is None for
    anything that does not belong there (a stray)."""
    for sub in _entries(top):
        if not sub.is_dir() or sub.is_symlink():
            yield sub, None
            continue
        for f in sub.iterdir():
            object_id = f.name[: len(f.name) - len(suffix)] if f.name.endswith(suffix) else ""
            ok = is_sha256_hex(object_id) and object_id[:2] == sub.name and f.is_file()
            yield f, object_id if ok else None


def _entries(top: Path) -> list[Path]:
    """The entries of one of the store's folders; none when it is missing or not a folder
    (verify reports that once, see :func:`_layout_problems`)."""
    try:
        return sorted(top.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _layout_problems(store: Store) -> list[dict[str, Any]]:
    """The store's own folders that are missing or are not folders."""
    out = []
    for d in (store.blobs_dir, store.manifests_dir, store.refs_dir, store.tmp_dir):
        if not d.is_dir() or d.is_symlink():
            what = "is missing" if not os.path.lexists(d) else "is not a folder"
            out.append(_problem("bad_layout", f"{d} {what}", path=str(d)))
    return out


def _iter_blob_files(store: Store) -> Iterator[tuple[Path, str | None]]:
    return _iter_sharded(store.blobs_dir, "")


def _iter_manifest_files(store: Store) -> Iterator[tuple[Path, str | None]]:
    return _iter_sharded(store.manifests_dir, ".json")


def _iter_ref_files(store: Store) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Each file below ``refs/`` (its path as a string: gc reads them all) with its record,
    None when it is damaged, misplaced, or not a file in a kind's folder."""
    for kind_dir in _entries(store.refs_dir):
        if not kind_dir.is_dir() or kind_dir.is_symlink():
            yield str(kind_dir), None
            continue
        kind = kind_dir.name
        fd = os.open(kind_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for name in os.listdir(fd):
                record = read_ref_file(name, dir_fd=fd)
                if record is not None and (
                    record.get("kind") != kind or ref_filename(str(record.get("name", ""))) != name
                ):
                    record = None
                yield f"{kind_dir}/{name}", record
        finally:
            os.close(fd)


# Recounts the kept counts should equal, and entries naming no blob: the same
# queries for the full verify and the quick check before a run deletion.
# Links are not indexed by blob (index.sql, version 9): a blob's recount comes from one
# grouped scan of them, joined to the blobs.
_BLOB_LINK_SUMS = "SELECT blob, SUM(n) AS total FROM page_blobs WHERE blob > 0 GROUP BY blob"
_OLD_BLOB_RECOUNT = " + (SELECT COUNT(*) FROM tree_entries e WHERE e.blob = b.sha256)"
# What names each page (nodes and trees), in one grouped scan: ``page_children`` has no
# index by child.
_PAGE_NAMERS = (
    "SELECT id, SUM(n) AS n FROM (SELECT child AS id, COUNT(*) AS n FROM page_children GROUP BY child "
    "UNION ALL SELECT p.id, COUNT(*) FROM trees t, json_each(t.pages) j JOIN pages p ON p.page = j.value "
    "WHERE t.pages IS NOT NULL GROUP BY p.id) GROUP BY id"
)
_BAD_PAGE_COUNTS = (
    f"SELECT p.page, p.refcount, COALESCE(r.n, 0) AS n FROM pages p LEFT JOIN ({_PAGE_NAMERS}) r "
    "ON r.id = p.id WHERE p.refcount != COALESCE(r.n, 0)"
)
_BAD_TREE_COUNTS = (
    "SELECT t.tree, t.refcount, (SELECT COUNT(*) FROM refs r WHERE r.tree = t.tree) AS n "
    "FROM trees t WHERE t.refcount != n"
)
# Links naming nothing: a leaf's blob without a row (a lost one: its sha256; an id no row
# has, which only damage leaves: 'blob_row'), a node's child page without a row (damage
# too: 'page_row') or a tree's top page without a row.
_DANGLING_ENTRIES = (
    "SELECT p.page, COALESCE(g.sha256, l.blob), CASE WHEN g.id IS NULL THEN 'blob_row' ELSE 'blob' END "
    "FROM page_blobs l JOIN pages p ON p.id = l.page LEFT JOIN lost_blobs g ON g.id = -l.blob WHERE NOT EXISTS "
    "(SELECT 1 FROM blobs b WHERE b.id = l.blob) "
    "UNION ALL SELECT p.page, l.child, 'page_row' FROM page_children l JOIN pages p ON p.id = l.page "
    "WHERE NOT EXISTS (SELECT 1 FROM pages c WHERE c.id = l.child) "
    "UNION ALL SELECT t.tree, j.value, 'page' FROM trees t, json_each(t.pages) j WHERE t.pages IS NOT NULL "
    "AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.page = j.value)"
)


def _has_old_trees(c: Any) -> bool:
    """True while schema-4 ``tree_entries`` rows may count references too."""
    return has_table(c, "tree_entries")


def _blob_recounts(c: Any) -> str:
    """The query of every blob's ``(id, sha256, refcount, recount)``."""
    recount = "COALESCE(r.total, 0)" + (_OLD_BLOB_RECOUNT if _has_old_trees(c) else "")
    return (
        f"SELECT b.id AS id, b.sha256 AS sha256, b.refcount AS refcount, {recount} AS recount "
        f"FROM blobs b LEFT JOIN ({_BLOB_LINK_SUMS}) r ON r.blob = b.id"
    )


def _bad_blob_counts(c: Any) -> str:
    """The query of the blobs whose refcount is not their recount: ``(sha256, refcount, recount)``."""
    return f"SELECT sha256, refcount, recount FROM ({_blob_recounts(c)}) WHERE refcount != recount"


def ref_files_vs_index(store: Store, c: Any) -> tuple[list[str], list[str]]:
    """Compare the ref files on disk with the index's refs (ref files are few).

    Run inside a write transaction of the index: every writer changes a ref file and its
    row in one transaction, so outside of damage (or a lost WAL) they always agree.
    Returns ``(problems, warnings)``: a ref file the index lacks or disagrees with, an
    indexed ref without a file, or a damaged ref file the index has no copy of are
    problems; a damaged ref file whose ref the index still has is a warning (the
    index's copy keeps its tree until a person fixes or removes the file).
    """
    on_disk: dict[tuple[str, str], str] = {}
    damaged: list[Path] = []
    for found, record in _iter_ref_files(store):
        if record is None:
            damaged.append(Path(found))
        else:
            on_disk[(record["kind"], record["name"])] = record["tree"]
    indexed = {(k, n): t for k, n, t in c.execute("SELECT kind, name, tree FROM refs")}
    problems: list[str] = []
    warnings: list[str] = []
    covered: set[tuple[str, str]] = set()
    for path in damaged:
        copy = [
            key
            for key in indexed
            if key[0] == path.parent.name
            and ref_filename(key[1]) == path.name
            and path.parent.parent == store.refs_dir
            and key not in on_disk
        ]
        if copy:
            covered.update(copy)
            warnings.append(
                f"{path}: damaged ref file; the index's copy keeps tree {indexed[copy[0]]} "
                "until you fix or remove the file"
            )
        else:
            problems.append(f"{path}: damaged ref file the index has no copy of")
    differ = [k for k in on_disk.keys() | indexed.keys() if k not in covered and on_disk.get(k) != indexed.get(k)]
    if differ:
        kind, name = sorted(differ)[0]
        problems.append(
            f"{len(differ)} ref(s) differ from their files, e.g. {kind}/{name} "
            f"(file: {on_disk.get((kind, name))}, index: {indexed.get((kind, name))})"
        )
    return problems, warnings


# Quarantine tag of a damaged manifest nothing else describes: gc keeps what it may name.
DAMAGED_MANIFEST = "damaged-manifest"


def kept_by_damaged_manifests(store: Store) -> tuple[set[str] | None, list[str]]:
    """Blobs that damaged manifests set aside in ``quarantine/`` may name, and warnings.

    Every SHA-256 in a readable file is kept; an unreadable one (torn, not JSON) could
    name anything, so then None: gc collects no blob at all until a person deletes it.
    """
    import re

    kept: set[str] | None = set()
    warnings: list[str] = []
    try:
        found = sorted(p for p in store.quarantine_dir.iterdir() if f"-{DAMAGED_MANIFEST}-" in p.name)
    except FileNotFoundError:
        return kept, warnings
    for path in found:
        try:
            text = path.read_text("utf-8", errors="surrogateescape")
            json.loads(text)
        except (OSError, ValueError):
            kept = None
            warnings.append(
                f"{path}: damaged manifest set aside; it may name any blob, so gc collects no blob until you delete it"
            )
            continue
        shas = _with_what_pages_name(store, set(re.findall(r"[0-9a-f]{64}", text)))
        if kept is not None:
            kept |= shas
        warnings.append(
            f"{path}: damaged manifest set aside; gc keeps the {len(shas)} blob(s) it names until you delete it"
        )
    return kept, warnings


def _with_what_pages_name(store: Store, shas: set[str]) -> set[str]:
    """``shas`` and, for each that is an intact page file, everything below it: a version-2
    manifest names only its top pages, and those name the blobs."""
    out = set(shas)
    todo = list(shas)
    while todo:
        sha = todo.pop()
        try:
            data = store.load_page(sha)
        except (OSError, CorruptManifestError):
            continue
        if sha256_bytes(data) != sha:
            continue
        try:
            if data.startswith(LEAF_HEADER):
                children = [e.sha256 for _, e in parse_leaf(data, sha)]
            elif data.startswith(NODE_HEADER):
                children = parse_node(data, sha)
            else:
                continue
        except CorruptManifestError:
            continue
        for child in children:
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def files_vs_index(store: Store, c: Any) -> tuple[list[str], list[str]]:
    """What gc must check before deleting by the index (inside its write transaction).

    Ref files against the index's refs (:func:`ref_files_vs_index`), and manifests on
    disk the index does not know (a tree whose rows were lost, or a damaged manifest
    nobody has looked at): collecting by such an index could delete what they protect.
    Returns ``(problems, warnings)``.
    """
    problems, warnings = ref_files_vs_index(store, c)
    unindexed = [
        path
        for path, tree in _iter_manifest_files(store)
        if tree is None or c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None
    ]
    if unindexed:
        problems.append(f"{len(unindexed)} manifest file(s) not in the index, e.g. {unindexed[0]}")
    return problems, warnings


def index_disagreements(store: Store, trees: Iterable[str] | None = None) -> list[str]:
    """A cheap check that the index agrees with the files (no manifest is parsed).

    The manifests and ref files on disk must be exactly the trees and refs the index
    knows -- compared inside a write transaction, so no other writer is between changing
    a file and its COMMIT -- and, in a read transaction that blocks no writer, every tree
    must have as many entries as files and every stored refcount must equal a recount.
    ``trees``: recount only what a gc limited to those trees could delete (their refs,
    the pages they reach, the blobs those pages name), so a run deletion looks up rows in
    proportion to the run, not to the store (plus one scan of the links: they are not
    indexed by blob).
    Returns one line per kind of disagreement (empty: agrees).
    """
    with store.index.write() as c:
        problems, _ = files_vs_index(store, c)
    with store.index.read() as c:
        if trees is None or _has_old_trees(c):
            short_trees, bad_counts, dangling = _recount_all(c)
        else:
            short_trees, bad_counts, dangling = _recount_reached(c, json.dumps(sorted(set(trees))))
    if short_trees:
        problems.append(f"{short_trees} tree(s) with missing entries")
    if bad_counts:
        problems.append(f"{bad_counts} wrong refcount(s)")
    if dangling:
        problems.append(f"{dangling} entries naming unindexed blobs")
    return problems


def _recount_all(c: Any) -> tuple[int, int, int]:
    """Trees without pages, wrong refcounts and dangling links, store-wide."""
    # A tree without pages is one a migration could not convert; once the old rows
    # are gone it describes nothing.
    short_trees = 0 if _has_old_trees(c) else c.execute("SELECT COUNT(*) FROM trees WHERE pages IS NULL").fetchone()[0]
    bad_counts = sum(
        c.execute(f"SELECT COUNT(*) FROM ({q})").fetchone()[0]
        for q in (_bad_blob_counts(c), _BAD_TREE_COUNTS, _BAD_PAGE_COUNTS)
    )
    dangling = c.execute(f"SELECT COUNT(*) FROM ({_DANGLING_ENTRIES})").fetchone()[0]
    return short_trees, bad_counts, dangling


def _recount_reached(c: Any, scope: str) -> tuple[int, int, int]:
    """:func:`_recount_all` for the trees in ``scope`` (a JSON list), the pages they reach
    and the blobs those name; store-wide when they name about half the store's blobs or
    more (then a scan of every blob costs less than a lookup per blob reached)."""
    leaf_list, node_list, links = _reached_pages(c, scope)
    if 2 * links >= c.execute("SELECT value FROM totals WHERE name = 'blob_count'").fetchone()[0]:
        return _recount_all(c)
    leaves, nodes = json.dumps(leaf_list), json.dumps(node_list)
    in_list = " IN (SELECT value FROM json_each(?))"
    short_trees = c.execute(f"SELECT COUNT(*) FROM trees WHERE pages IS NULL AND tree{in_list}", (scope,)).fetchone()[0]
    # Driven by the reached links (a row lookup per blob they name), never by a scan of
    # every blob: a missing row is a dangling link, a present one is recounted from one
    # scan of the links (not indexed by blob), summing only those naming a reached blob.
    missing, bad_counts = c.execute(
        f"WITH reached(blob) AS MATERIALIZED (SELECT DISTINCT blob FROM page_blobs WHERE page IN {PAGE_ROWS}), "
        "sums(blob, total) AS MATERIALIZED (SELECT blob, SUM(n) FROM page_blobs "
        "WHERE blob IN (SELECT blob FROM reached) GROUP BY blob) "
        "SELECT COALESCE(SUM(b.sha256 IS NULL), 0), COALESCE(SUM(b.refcount != COALESCE(s.total, 0)), 0) "
        "FROM reached r LEFT JOIN blobs b ON b.id = r.blob LEFT JOIN sums s ON s.blob = r.blob",
        (leaves,),
    ).fetchone()
    bad_counts += sum(
        c.execute(f"SELECT COUNT(*) FROM ({q})", (ids,)).fetchone()[0]
        for q, ids in (
            (f"{_BAD_TREE_COUNTS} AND t.tree{in_list}", scope),
            (f"{_BAD_PAGE_COUNTS} AND p.page{in_list}", json.dumps(leaf_list + node_list)),
        )
    )
    dangling = (
        missing
        + c.execute(
            "SELECT COUNT(*) FROM ("
            f"SELECT 1 FROM page_children l WHERE l.page IN {PAGE_ROWS} AND NOT EXISTS "
            "(SELECT 1 FROM pages p WHERE p.id = l.child) "
            f"UNION ALL SELECT 1 FROM trees t, json_each(t.pages) j WHERE t.tree{in_list} AND t.pages IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM pages p WHERE p.page = j.value))",
            (nodes, scope),
        ).fetchone()[0]
    )
    return short_trees, bad_counts, dangling


def _reached_pages(c: Any, scope: str) -> tuple[list[str], list[str], int]:
    """The leaf and node pages the trees in ``scope`` (a JSON list) reach, and the leaves'
    entries."""
    rows = c.execute(REACHED_PAGES + "SELECT p.page, p.leaf, p.entries FROM tp JOIN pages p ON p.id = tp.id", (scope,))
    leaves: list[str] = []
    nodes: list[str] = []
    entries = 0
    for page, leaf, n in rows:
        if leaf:
            leaves.append(page)
            entries += n
        else:
            nodes.append(page)
    return leaves, nodes, entries


def _settled(store: Store) -> AbstractContextManager[Any]:
    """A transaction in which no writer is between placing a file and its COMMIT (a write
    one, which changes nothing; a read one on a read-only store, which has no writers):
    where verify reads again what looked off against its first read of the index while
    it listed the files (writers commit meanwhile)."""
    return store.index.read() if store.read_only else store.index.write()


def _strays(store: Store, unindexed: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Of the blob files ``(sha256, path)`` the index read before listing them did not name,
    those that are strays: not named by a live writer's batch journal (written in place,
    not committed yet) and still without a row (blob or page) once the listing is done
    (committed meanwhile).  Journals are read before the index: a batch whose journal is
    gone by then has committed."""
    if not unindexed:
        return []
    being_written = blobs_being_written(store)
    since = _named_now(
        store,
        "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?1)) "
        "UNION SELECT page FROM pages WHERE page IN (SELECT value FROM json_each(?1))",
        (sha for sha, _ in unindexed),
    )
    # A file gone by now was collected (gc unlinks after its COMMIT), not a stray.
    return [
        (sha, path)
        for sha, path in unindexed
        if sha not in being_written and sha not in since and os.path.lexists(path)
    ]


def _named_now(store: Store, sql: str, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` that ``sql`` (its one parameter: a JSON list of them) selects, read
    once no writer is between a change and its COMMIT (:func:`_settled`)."""
    with _settled(store) as c:
        return {r[0] for r in c.execute(sql, (json.dumps(sorted(set(ids))),))}


def _still_missing(store: Store, missing: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Of the blobs ``(sha256, path)`` the first read of the index named and whose file was
    not there, those still named by a row and still without a file once no writer is
    between a change and its COMMIT: a gc that committed meanwhile dropped the rows of the
    files it then unlinked."""
    if not missing:
        return []
    sql = "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))"
    rows = _named_now(store, sql, (sha for sha, _ in missing))
    return [(sha, path) for sha, path in missing if sha in rows and not os.path.lexists(path)]


def _manifests_still_unindexed(store: Store, unindexed: list[tuple[str, Path]]) -> list[tuple[str, Path]]:
    """Of the manifests ``(tree, path)`` the first read of the index did not name, those
    still there and still without a row once no writer is between placing one and its
    COMMIT."""
    if not unindexed:
        return []
    rows = _named_now(
        store, "SELECT tree FROM trees WHERE tree IN (SELECT value FROM json_each(?))", (t for t, _ in unindexed)
    )
    return [(tree, path) for tree, path in unindexed if tree not in rows and path.exists()]


def _refs_still_off(store: Store, keys: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """``ref_mismatch`` problems for the refs ``(kind, name)`` whose file and index row
    disagreed in the first look, read again (row and file) once no writer is between
    writing a ref file and its COMMIT (:func:`_settled`)."""
    problems: list[dict[str, Any]] = []
    if not keys:
        return problems
    with _settled(store) as c:
        for kind, name in sorted(set(keys)):
            row = c.execute("SELECT tree FROM refs WHERE kind = ? AND name = ?", (kind, name)).fetchone()
            indexed = row[0] if row is not None else None
            path = store.ref_path(kind, name)
            record = read_ref_file(path)
            if record is None:  # missing, or damaged (reported as a stray file too)
                if indexed is not None:
                    problems.append(_problem("ref_mismatch", f"ref {kind}/{name} is indexed but has no file"))
            elif record.get("tree") != indexed:
                problems.append(
                    _problem(
                        "ref_mismatch",
                        f"ref {kind}/{name}: file says {record.get('tree')}, index says {indexed}",
                        path=str(path),
                    )
                )
    return problems


def verify_store(store: Store, *, deep: bool = False) -> dict[str, Any]:
    """See :meth:`Store.verify`."""
    problems: list[dict[str, Any]] = []
    with store.index.read() as c:
        blob_rows = c.execute("SELECT sha256, size FROM blobs").fetchall()
        tree_rows = c.execute("SELECT tree, file_count FROM trees").fetchall()
        ref_rows = c.execute("SELECT kind, name, tree FROM refs").fetchall()
        bad_blob_counts = c.execute(_bad_blob_counts(c)).fetchall()
        bad_tree_counts = c.execute(_BAD_TREE_COUNTS).fetchall()
        bad_page_counts = c.execute(_BAD_PAGE_COUNTS).fetchall()
        page_rows = c.execute("SELECT page, size FROM pages").fetchall()
        dangling_entries = c.execute(_DANGLING_ENTRIES + " LIMIT 1000").fetchall()
        dangling_refs = c.execute(
            "SELECT r.kind, r.name, r.tree FROM refs r WHERE NOT EXISTS (SELECT 1 FROM trees t WHERE t.tree = r.tree)"
        ).fetchall()
        totals = dict(c.execute("SELECT name, value FROM totals").fetchall())
        actual = c.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs").fetchone()

    problems.extend(_layout_problems(store))
    indexed_blobs = {sha: size for sha, size in blob_rows}
    page_sizes = dict(page_rows)
    bytes_hashed = 0
    absent: list[tuple[str, Path]] = []
    for sha, size in blob_rows:
        path = store.blob_path(sha)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            absent.append((sha, path))
            continue
        if st.st_size != size:
            problems.append(
                _problem("size_mismatch", f"blob {sha}: file has {st.st_size} bytes, index says {size}", id=sha)
            )
            continue
        if st.st_mode & 0o222:
            # Blobs are read-only; a writable one was chmod'ed through a hardlinked restore or
            # artifact, and may have been edited in place.
            problems.append(
                _problem(
                    "writable_blob",
                    f"blob {sha} is writable (mode {st.st_mode & 0o777:o}); "
                    f"a hard-linked copy may have been edited: run verify --deep",
                    id=sha,
                )
            )
        if deep:
            try:
                actual_sha = sha256_file(path)
            except OSError as exc:
                problems.append(
                    _problem("unreadable_blob", f"blob {sha}: {path} cannot be read ({exc.strerror or exc})", id=sha)
                )
                continue
            bytes_hashed += size
            if actual_sha != sha:
                problems.append(_problem("corrupt_blob", f"blob {sha}: content hashes to {actual_sha}", id=sha))

    for sha, path in _still_missing(store, absent):
        problems.append(_problem("missing_blob", f"blob {sha} is indexed but {path} is missing", id=sha))

    # The counts name everything looked at: what the index lists and what the folders hold.
    seen_blobs = set(indexed_blobs)
    unindexed: list[tuple[str, Path]] = []
    for path, sha in _iter_blob_files(store):
        if sha is None:
            problems.append(_problem("stray_file", f"{path} is not a blob", path=str(path)))
            continue
        if sha in page_sizes and sha not in indexed_blobs:
            continue  # a page (checked with the pages below), not a blob
        seen_blobs.add(sha)
        if sha not in indexed_blobs:
            unindexed.append((sha, path))
    for sha, path in _strays(store, unindexed):
        problems.append(_problem("unindexed_blob", f"{path} is not in the index", id=sha, path=str(path)))

    indexed_trees = {tree for tree, _ in tree_rows}
    for tree, file_count in tree_rows:
        path = store.manifest_path(tree)
        try:
            _, entries = parse_manifest(path.read_bytes(), origin=path, expected_tree=tree, load_page=store.load_page)
        except (FileNotFoundError, NotADirectoryError):
            problems.append(_problem("missing_manifest", f"tree {tree}: {path} is missing", id=tree))
            continue
        except OSError as exc:
            problems.append(
                _problem("unreadable_manifest", f"tree {tree}: {path} cannot be read ({exc.strerror or exc})", id=tree)
            )
            continue
        except CorruptManifestError as exc:
            problems.append(_problem("corrupt_manifest", str(exc), id=tree))
            continue
        if len(entries) != file_count:
            problems.append(
                _problem(
                    "index_mismatch",
                    f"tree {tree}: manifest has {len(entries)} files, index says {file_count}",
                    id=tree,
                )
            )
        missing = sorted({e.sha256 for e in entries.values()} - indexed_blobs.keys())
        if missing:
            problems.append(
                _problem(
                    "tree_missing_blob",
                    f"tree {tree} names {len(missing)} blob(s) not in the store, e.g. {missing[0]}",
                    id=tree,
                    blobs=missing,
                )
            )
    seen_trees = set(indexed_trees)
    unindexed_manifests: list[tuple[str, Path]] = []
    for path, tree in _iter_manifest_files(store):
        if tree is None:
            problems.append(_problem("stray_file", f"{path} is not a manifest", path=str(path)))
            continue
        seen_trees.add(tree)
        if tree not in indexed_trees:
            unindexed_manifests.append((tree, path))
    for tree, path in _manifests_still_unindexed(store, unindexed_manifests):
        problems.append(_problem("unindexed_manifest", f"{path} is not in the index", id=tree, path=str(path)))

    for sha, have, want in bad_blob_counts:
        problems.append(_problem("bad_refcount", f"blob {sha}: refcount {have}, recount {want}", id=sha))
    for tree, have, want in bad_tree_counts:
        problems.append(_problem("bad_refcount", f"tree {tree}: refcount {have}, recount {want}", id=tree))
    for page, have, want in bad_page_counts:
        problems.append(_problem("bad_refcount", f"page {page}: refcount {have}, recount {want}", id=page))
    reported = {b for p in problems if p["kind"] == "tree_missing_blob" for b in p.get("blobs", ())}
    for owner, target, kind in dangling_entries:
        if kind == "blob" and target not in reported:
            problems.append(_problem("tree_missing_blob", f"page {owner} names missing blob {target}", id=owner))
        elif kind == "blob_row":
            problems.append(
                _problem("dangling_link", f"page {owner} names blob row {target}, which the index lacks", id=owner)
            )
        elif kind == "page":
            problems.append(_problem("dangling_link", f"{owner} names page {target}, which the index lacks", id=owner))
        elif kind == "page_row":
            problems.append(
                _problem("dangling_link", f"page {owner} names page row {target}, which the index lacks", id=owner)
            )
    for page, size in page_rows:
        path = store.page_path(page)
        try:
            data = path.read_bytes() if deep else None
            have = len(data) if data is not None else os.stat(path).st_size
        except (FileNotFoundError, NotADirectoryError):
            problems.append(_problem("missing_page", f"page {page} is indexed but {path} is missing", id=page))
            continue
        if have != size or (data is not None and sha256_bytes(data) != page):
            problems.append(_problem("corrupt_page", f"page {page}: {path} does not match its name", id=page))
    for kind, name, tree in dangling_refs:
        problems.append(_problem("dangling_ref", f"ref {kind}/{name} names missing tree {tree}", id=tree))
    if (totals.get("blob_count"), totals.get("blob_bytes")) != (actual[0], actual[1]):
        problems.append(_problem("bad_totals", f"totals say {totals}, recount {actual[0]} blobs/{actual[1]} bytes"))

    indexed_refs = {(k, n): t for k, n, t in ref_rows}
    seen_refs = set()
    refs_off: list[tuple[str, str]] = []
    for found, record in _iter_ref_files(store):
        if record is None:
            problems.append(_problem("stray_file", f"{found} is not a valid ref file", path=found))
            continue
        key = (record["kind"], record["name"])
        seen_refs.add(key)
        if indexed_refs.get(key) != record["tree"]:
            refs_off.append(key)
    refs_off.extend(indexed_refs.keys() - seen_refs)
    problems.extend(_refs_still_off(store, refs_off))

    own = store.current_writer
    for entry in _entries(store.tmp_dir):
        if own is not None and entry == own:
            continue
        if entry.is_dir() and entry.name.startswith("w-") and writer_alive(entry):
            continue  # a live writer's staging area
        if entry.is_dir() and entry.name.startswith("n-") and nascent_owner_alive(entry):
            continue  # a writer that is starting up
        problems.append(_problem("temp_file", f"{entry} is left over from an interrupted write", path=str(entry)))
    for extension in registered():  # the features' own state (runicorn.store.extensions)
        problems.extend(extension.problems(store, deep=deep))

    return {
        "ok": not problems,
        "deep": deep,
        "blobs_checked": len(seen_blobs),
        "pages_checked": len(page_sizes),
        "bytes_hashed": bytes_hashed,
        "trees_checked": len(seen_trees),
        "refs_checked": len(indexed_refs.keys() | seen_refs),
        "problems": problems,
        # What opening the store repaired by itself (a killed writer's intents, a killed
        # restore's or run deletion's folders): done, so reported but not problems.
        "recovered": list(store.recovered),
    }


def rebuild_index(store: Store, *, deep: bool = False) -> dict[str, Any]:
    """See :meth:`Store.rebuild_index`.

    The files are read and the index reconciled inside one write transaction, so no
    writer is between a file and its COMMIT and nothing committed meanwhile is lost;
    live writers' holds are never touched.  Slow hashing happens before, outside it.
    """
    store.recover()
    # Hash outside the write lock what will need it (every blob when deep; otherwise
    # only unindexed or writable ones): writers keep going meanwhile.
    with store.index.read() as c:
        indexed_before = dict(c.execute("SELECT sha256, size FROM blobs").fetchall())
    hashed: dict[str, tuple[int, int, int, bool]] = {}
    for path, sha in _iter_blob_files(store):
        if sha is None:
            continue
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        want = indexed_before.get(sha)
        if want is not None and want != st.st_size:
            continue  # quarantined below without reading it
        if deep or want is None or st.st_mode & 0o222:
            hashed[sha] = _hash_verdict(path, sha, st)

    quarantined: list[str] = []
    notes: list[str] = []
    now = time.time()
    with store.index.write() as c:
        indexed = dict(c.execute("SELECT sha256, size FROM blobs").fetchall())
        named_sizes = _named_sizes(store, c)
        # Pages live among the blobs: those the index or a manifest names are not blobs.
        page_ids = {r[0] for r in c.execute("SELECT page FROM pages")}

        # Trees: the manifests on disk, and what a damaged or missing one protected.
        manifests: dict[str, dict[str, Any]] = {}
        manifest_pages: dict[str, TreePages] = {}
        headers: dict[str, dict[str, Any]] = {}
        damaged_manifests: dict[str, Path] = {}
        for path, tree in _iter_manifest_files(store):
            if tree is None:
                quarantined.append(str(quarantine(store, path, "stray")))
                continue
            try:
                header, entries = parse_manifest(
                    path.read_bytes(), origin=path, expected_tree=tree, load_page=store.load_page
                )
            except CorruptManifestError:
                damaged_manifests[tree] = path
                continue
            manifests[tree] = entries
            if header.get("format_version") == MANIFEST_PAGED:
                headers[tree] = header
            manifest_pages[tree] = build_pages(entries)
            page_ids.update(manifest_pages[tree].pages)
            for e in entries.values():
                named_sizes.setdefault(e.sha256, set()).add(e.size)
        indexed_trees = {t for (t,) in c.execute("SELECT tree FROM trees")}
        for tree in sorted(indexed_trees - manifests.keys()):
            notes.append(_heal_manifest(store, c, tree, damaged_manifests.get(tree), quarantined))
        for tree, path in sorted(damaged_manifests.items()):
            if tree not in indexed_trees:
                moved = quarantine(store, path, DAMAGED_MANIFEST)
                quarantined.append(str(moved))
                notes.append(
                    f"{path}: damaged manifest the index has no copy of; set aside as {moved}, "
                    "and gc keeps every blob it may name until you delete it"
                )

        # Blobs: a file is kept only when its size (and, where read, its hash) agrees
        # with its name, its index row and every manifest naming it.
        keep: dict[str, tuple[int, float]] = {}
        adopted: list[Path] = []  # files kept that no row named: made durable before their rows

        def judge(path: Path, sha: str) -> None:
            """Keep the file at ``path`` as blob ``sha``, or set it aside."""
            try:
                st = path.stat()
            except FileNotFoundError:
                return
            # A file that is a page and nothing but a page; one a tree also names as a
            # blob (a file with a page's bytes) gets its blob row too, or gc would unlink
            # it with the last tree using it as a page.
            if sha in page_ids and sha not in indexed and sha not in named_sizes:
                if sha256_file(path) != sha:  # small: always read
                    quarantined.append(str(quarantine(store, path, "corrupt")))
                return
            want = indexed.get(sha)
            sizes = named_sizes.get(sha, set())
            if (want is not None and want != st.st_size) or (sizes and sizes != {st.st_size}):
                if not written_now(sha):
                    quarantined.append(str(quarantine(store, path, "size-mismatch")))
                return
            if deep or want is None or st.st_mode & 0o222:
                verdict = hashed.get(sha)
                if verdict is None or verdict[:3] != (st.st_ino, st.st_size, st.st_mtime_ns):
                    verdict = _hash_verdict(path, sha, st)
                if not verdict[3]:
                    if not written_now(sha):
                        quarantined.append(str(quarantine(store, path, "corrupt")))
                    return
            if st.st_mode & 0o222:
                os.chmod(path, blob_perm(st.st_mode))  # read-only again, no more readable than it was
            keep[sha] = (st.st_size, st.st_mtime)
            if want is None:
                adopted.append(path)

        # A file no row names may be a live batch's, written in place and not committed:
        # it stays that writer's (recovery judges it if the writer dies).  The batch named
        # it in its journal before creating it, so the journals are read again once its
        # folder has been listed, when a file of it is not among the names read so far
        # (no batch commits under this lock: journals only grow meanwhile).
        unindexed: list[tuple[Path, str]] = []
        being_written: set[str] = set()

        def written_now(sha: str) -> bool:
            """Whether a live batch is writing blob ``sha`` in place (a lost file written
            again, caught mid-write): read when a file is about to be set aside."""
            if sha not in being_written:
                being_written.update(blobs_being_written(store))
            return sha in being_written

        def judge_unindexed() -> None:
            if any(sha not in being_written for _, sha in unindexed):
                being_written.update(blobs_being_written(store))
            for path, sha in unindexed:
                if sha not in being_written:
                    judge(path, sha)
            unindexed.clear()

        for path, sha in _iter_blob_files(store):
            if sha is None:
                quarantined.append(str(quarantine(store, path, "stray")))
            elif sha in indexed:
                judge(path, sha)
            else:
                if unindexed and unindexed[-1][0].parent != path.parent:
                    judge_unindexed()
                unindexed.append((path, sha))
        if unindexed:
            judge_unindexed()
        if adopted:
            sync_adopted_blobs(store, adopted)
        gone = [s for s in indexed if s not in keep]
        forget_blobs(c, gone)
        insert_blob_rows(c, [(sha, size, mtime, now) for sha, (size, mtime) in keep.items() if sha not in indexed])

        old_trees = _has_old_trees(c)
        relinked: set[str] = set()
        for tree, entries in manifests.items():
            pages = manifest_pages[tree]
            if old_trees:
                c.execute("DELETE FROM tree_entries WHERE tree = ?", (tree,))
            index_tree(store, c, tree, summary_of(entries), pages, now, check_blobs=False)
            notes.append(_canonical_manifest(store, tree, headers.get(tree), entries, pages))
            # Every page a manifest reaches gets its links from its bytes again.
            fresh = [p for p in pages.pages if p not in relinked]
            relinked.update(fresh)
            relink_pages(c, pages, fresh)

        # Refs: the files are the truth, but a damaged file keeps the index's copy.
        on_disk: dict[tuple[str, str], dict[str, Any]] = {}
        damaged_refs: list[Path] = []
        for found, record in _iter_ref_files(store):
            if record is None:
                damaged_refs.append(Path(found))
            else:
                on_disk[(record["kind"], record["name"])] = record
        indexed_refs = {(k, n): t for k, n, t in c.execute("SELECT kind, name, tree FROM refs")}
        kept_refs: set[tuple[str, str]] = set()
        for path in damaged_refs:
            copy = [
                k
                for k in indexed_refs
                if path.parent.parent == store.refs_dir
                and k[0] == path.parent.name
                and ref_filename(k[1]) == path.name
                and k not in on_disk
            ]
            kept_refs.update(copy)
            if copy:
                notes.append(
                    f"{path}: damaged ref file; kept in place with the index's copy "
                    f"(tree {indexed_refs[copy[0]]}) until you fix or remove it"
                )
            else:
                notes.append(
                    f"{path}: damaged ref file the index has no copy of; kept in place, and gc "
                    "collects nothing until you fix or remove it"
                )
        c.executemany(
            "DELETE FROM refs WHERE kind = ? AND name = ?",
            [k for k in indexed_refs if k not in on_disk and k not in kept_refs],
        )
        upsert_ref_rows(c, on_disk.values(), now)

        # Counts from a recount, whatever was counted on the way.
        c.execute(  # (only the wrong rows are written)
            f"UPDATE blobs SET refcount = fix.recount FROM ({_blob_recounts(c)}) AS fix "
            "WHERE blobs.id = fix.id AND blobs.refcount != fix.recount"
        )
        drop_unnamed_lost_blobs(c)
        c.execute(f"CREATE TEMP TABLE page_recount AS {_PAGE_NAMERS}")
        c.execute("UPDATE pages SET refcount = COALESCE((SELECT n FROM page_recount r WHERE r.id = pages.id), 0)")
        c.execute("DROP TABLE temp.page_recount")
        c.execute("UPDATE trees SET refcount = (SELECT COUNT(*) FROM refs r WHERE r.tree = trees.tree)")
        c.execute("UPDATE totals SET value = (SELECT COUNT(*) FROM blobs) WHERE name = 'blob_count'")
        c.execute("UPDATE totals SET value = (SELECT COALESCE(SUM(size), 0) FROM blobs) WHERE name = 'blob_bytes'")
        counts = [c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("blobs", "trees", "refs")]
    for extension in registered():  # the features' tables, from their own files
        notes.extend(extension.rebuild(store))
    return {
        "blobs": counts[0],
        "trees": counts[1],
        "refs": counts[2],
        "quarantined": quarantined,
        "notes": [n for n in notes if n],
    }


def _canonical_manifest(
    store: Store, tree: str, header: dict[str, Any] | None, entries: dict[str, TreeEntry], pages: TreePages
) -> str:
    """A version-2 manifest whose pages list the tree's files but are not the tree's own
    pages (cut otherwise, a tampered copy): written again naming the pages the index
    has, or gc would take the pages it names (no row keeps them)."""
    if header is None or (header.get("depth"), header.get("pages")) == (pages.depth, pages.top):
        return ""
    made = header.get("created_at")
    source = header.get("source")
    data = manifest_bytes(
        build_paged_manifest(
            tree,
            pages,
            len(entries),
            sum(e.size for e in entries.values()),
            source=source if isinstance(source, str) else None,
            created_at=made if isinstance(made, (str, int, float)) and not isinstance(made, bool) else None,
        )
    )
    path = store.manifest_path(tree)
    atomic_write_bytes(path, data, staging_dir=store.writer_dir(), mode=0o444)
    return f"{path}: its pages were not the tree's own; written again naming the tree's pages"


def _named_sizes(store: Store, c: Any) -> dict[str, set[int]]:
    """The sizes the index's trees record for each blob they name: from every readable
    leaf page (checked against its id), and schema-4 rows while they exist."""
    named: dict[str, set[int]] = {}
    if _has_old_trees(c):
        for blob, size in c.execute("SELECT blob, size FROM tree_entries"):
            named.setdefault(blob, set()).add(size)
    for (page,) in c.execute("SELECT page FROM pages WHERE leaf = 1").fetchall():
        try:
            data = store.load_page(page)
            if sha256_bytes(data) != page:
                continue
            entries = parse_leaf(data, f"page {page}")
        except (OSError, CorruptManifestError):
            continue  # verify reports it; its blobs are kept by their rows
        for _, e in entries:
            named.setdefault(e.sha256, set()).add(e.size)
    return named


def blobs_to_heal(store: "Store") -> dict[str, int]:
    """Blobs some tree names that the store cannot serve: no index row, no file, or a
    file of another size than the tree records; as ``{sha256: size}``."""
    with store.index.read() as c:
        named = _named_sizes(store, c)
        indexed = dict(c.execute("SELECT sha256, size FROM blobs").fetchall())
    blobs = f"{store.blobs_dir}/"
    wanted: dict[str, int] = {}
    for sha, sizes in named.items():
        if len(sizes) != 1:
            continue  # trees disagree on its size: no bytes can be right for both
        (size,) = sizes
        if indexed.get(sha) == size:
            try:
                if os.stat(f"{blobs}{sha[:2]}/{sha}").st_size == size:
                    continue
            except OSError:
                pass
        wanted[sha] = int(size)
    return wanted


def heal_blobs(store: "Store", sources: list[str | os.PathLike[str]]) -> dict[str, Any]:
    """See :meth:`Store.heal_blobs`."""
    from runicorn.errors import IntegrityError, RunicornError

    wanted = blobs_to_heal(store)
    by_size: dict[int, set[str]] = {}
    for sha, size in wanted.items():
        by_size.setdefault(size, set()).add(sha)
    healed: dict[str, str] = {}
    files_hashed = bytes_hashed = 0
    own = {store.archive.resolve()}
    tops = [Path(source).expanduser() for source in sources]
    for top in tops:
        if not top.is_dir():
            raise RunicornError(
                f"{top}: not a directory (a source for healing blobs must be a directory holding the right bytes)"
            )
    for top in tops:
        if not by_size:
            break
        for dirpath, dirnames, filenames in os.walk(top):  # symlinks are never followed
            # The store's own files are what is being healed: never a source.
            dirnames[:] = [d for d in dirnames if Path(dirpath, d).resolve() not in own]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode) or st.st_size not in by_size:
                    continue
                try:
                    sha = sha256_file(path)
                except OSError:
                    continue  # unreadable: not a source
                files_hashed += 1
                bytes_hashed += st.st_size
                if sha not in by_size[st.st_size]:
                    continue
                dest = store.blob_path(sha)
                if (
                    os.path.lexists(dest)
                    and not _hash_verdict(dest, sha, os.lstat(dest))[3]
                    and sha not in blobs_being_written(store)  # else a live batch's, mid-write
                ):
                    # A damaged copy: set aside, never adopted.
                    quarantine(store, dest, "corrupt")
                try:
                    # The store's one atomic ingest, checking the bytes again as it copies them.
                    store.ingest_file(path, expected_sha256=sha)
                except (IntegrityError, OSError):
                    continue  # changed under us: another candidate may still do
                healed[sha] = path
                by_size[st.st_size].discard(sha)
                if not by_size[st.st_size]:
                    del by_size[st.st_size]
    return {
        "wanted": len(wanted),
        "healed": sorted(healed),
        "sources": {sha: healed[sha] for sha in sorted(healed)},
        "still_missing": sorted(s for sizes in by_size.values() for s in sizes),
        "files_hashed": files_hashed,
        "bytes_hashed": bytes_hashed,
    }


def _hash_verdict(path: Path, sha: str, st: os.stat_result) -> tuple[int, int, int, bool]:
    """``(ino, size, mtime_ns, content matches its name)`` of a blob file."""
    try:
        ok = sha256_file(path) == sha
    except FileNotFoundError:
        ok = False
    return st.st_ino, st.st_size, st.st_mtime_ns, ok


def _heal_manifest(store: Store, c: Any, tree: str, damaged: Path | None, quarantined: list[str]) -> str:
    """An indexed tree whose manifest is damaged or missing: write it again from the
    index's copy (its pages, or its schema-4 rows) when that reproduces the tree id (the
    damaged copy is quarantined); otherwise keep the index's rows, and with them every
    blob they name."""
    where = damaged or store.manifest_path(tree)
    row = c.execute("SELECT depth, pages FROM trees WHERE tree = ?", (tree,)).fetchone()
    entries: dict[str, TreeEntry] = {}
    try:
        if row is not None and row[1] is not None:
            entries = dict(read_entries(json.loads(row[1]), row[0], store.load_page, f"tree {tree}"))
        elif _has_old_trees(c):
            rows = c.execute("SELECT path, blob, mode, size FROM tree_entries WHERE tree = ?", (tree,)).fetchall()
            entries = {p: TreeEntry(b, m, sz) for p, b, m, sz in rows}
        entries = normalize_entries(entries)
    except (CorruptManifestError, ValueError, UnsafePathError):
        entries = {}
    if not entries or compute_tree_id(entries) != tree:
        return (
            f"{where}: manifest {'damaged' if damaged else 'missing'} and the index's copy is incomplete; "
            "the index's entries are kept (they keep their blobs) until you decide"
        )
    pages = build_pages(entries)
    write_pages(store, pages, [p for p in pages.pages if not store.page_path(p).exists()])
    total = sum(e.size for e in entries.values())
    data = manifest_bytes(build_paged_manifest(tree, pages, len(entries), total))
    if damaged is not None:
        quarantined.append(str(quarantine(store, damaged, "corrupt")))
    make_dir(store.manifest_path(tree).parent, store.dir_mode)
    atomic_write_bytes(store.manifest_path(tree), data, staging_dir=store.writer_dir(), mode=0o444)
    if row is not None and row[1] is None:
        index_tree(store, c, tree, summary_of(entries), pages, time.time(), check_blobs=False)
        c.execute("DELETE FROM tree_entries WHERE tree = ?", (tree,))
    return f"{where}: manifest {'damaged' if damaged else 'missing'}; written again from the index's entries"
