"""fsck for the store (``runicorn verify``) and rebuilding the index from files (``--repair``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from runicorn._lazy import resolve
from runicorn.errors import CorruptManifestError
from runicorn.fsutil import blob_perm
from runicorn.hashing import is_sha256_hex, sha256_file
from runicorn.store.store import _read_ref_file, nascent_owner_alive, ref_filename
from runicorn.store.tree import parse_manifest

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


def _layout_problems(store: "Store") -> list[dict[str, Any]]:
    """The store's own folders that are missing or are not folders."""
    out = []
    for d in (store.blobs_dir, store.manifests_dir, store.refs_dir, store.tmp_dir):
        if not d.is_dir() or d.is_symlink():
            what = "is missing" if not os.path.lexists(d) else "is not a folder"
            out.append(_problem("bad_layout", f"{d} {what}", path=str(d)))
    return out


def _iter_blob_files(store: "Store") -> Iterator[tuple[Path, str | None]]:
    return _iter_sharded(store.blobs_dir, "")


def _iter_manifest_files(store: "Store") -> Iterator[tuple[Path, str | None]]:
    return _iter_sharded(store.manifests_dir, ".json")


def _iter_ref_files(store: "Store") -> Iterator[tuple[Path, dict[str, Any] | None]]:
    for kind_dir in _entries(store.refs_dir):
        if not kind_dir.is_dir() or kind_dir.is_symlink():
            yield kind_dir, None
            continue
        for f in kind_dir.iterdir():
            record = _read_ref_file(f)
            if record is not None and (record.get("kind") != kind_dir.name
                                       or ref_filename(str(record.get("name", ""))) != f.name):
                record = None
            yield f, record


# Recounts the triggers should have kept equal, and entries naming no blob: the same
# queries for the full verify and the quick check before a run deletion.
_BAD_BLOB_COUNTS = ("SELECT b.sha256, b.refcount, (SELECT COUNT(*) FROM tree_entries e WHERE e.blob = b.sha256) AS n "
                    "FROM blobs b WHERE b.refcount != n")
_BAD_TREE_COUNTS = ("SELECT t.tree, t.refcount, (SELECT COUNT(*) FROM refs r WHERE r.tree = t.tree) AS n "
                    "FROM trees t WHERE t.refcount != n")
_DANGLING_ENTRIES = ("SELECT e.tree, e.path, e.blob FROM tree_entries e "
                     "WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = e.blob)")


def index_disagreements(store: "Store") -> list[str]:
    """A cheap check that the index agrees with the files (no manifest is parsed).

    The manifests and ref files on disk must be exactly the trees and refs the index
    knows, every tree must have as many entries as files, and every stored refcount
    must equal a recount.  Returns one line per kind of disagreement (empty: agrees).
    """
    on_disk_trees = {tree for _, tree in _iter_manifest_files(store) if tree is not None}
    on_disk_refs = {(r["kind"], r["name"], r["tree"]) for _, r in _iter_ref_files(store) if r is not None}
    with store.index.read() as c:
        trees = {t for (t,) in c.execute("SELECT tree FROM trees")}
        refs = {(k, n, t) for k, n, t in c.execute("SELECT kind, name, tree FROM refs")}
        short_trees = c.execute(
            "SELECT COUNT(*) FROM trees t WHERE t.file_count != "
            "(SELECT COUNT(*) FROM tree_entries e WHERE e.tree = t.tree)").fetchone()[0]
        bad_counts = sum(c.execute(f"SELECT COUNT(*) FROM ({q})").fetchone()[0]
                         for q in (_BAD_BLOB_COUNTS, _BAD_TREE_COUNTS))
        dangling = c.execute(f"SELECT COUNT(*) FROM ({_DANGLING_ENTRIES})").fetchone()[0]
    problems: list[str] = []
    if on_disk_trees - trees:
        problems.append(f"{len(on_disk_trees - trees)} manifest(s) not indexed")
    if on_disk_refs != refs:
        problems.append(f"{len(on_disk_refs ^ refs)} ref(s) differ from their files")
    if short_trees:
        problems.append(f"{short_trees} tree(s) with missing entries")
    if bad_counts:
        problems.append(f"{bad_counts} wrong refcount(s)")
    if dangling:
        problems.append(f"{dangling} entries naming unindexed blobs")
    return problems


def verify_store(store: "Store", *, deep: bool = False) -> dict[str, Any]:
    """See :meth:`Store.verify`."""
    problems: list[dict[str, Any]] = []
    c = store.index.conn
    with store.index.read():
        blob_rows = c.execute("SELECT sha256, size FROM blobs").fetchall()
        tree_rows = c.execute("SELECT tree, file_count FROM trees").fetchall()
        ref_rows = c.execute("SELECT kind, name, tree FROM refs").fetchall()
        bad_blob_counts = c.execute(_BAD_BLOB_COUNTS).fetchall()
        bad_tree_counts = c.execute(_BAD_TREE_COUNTS).fetchall()
        dangling_entries = c.execute(_DANGLING_ENTRIES + " LIMIT 1000").fetchall()
        dangling_refs = c.execute(
            "SELECT r.kind, r.name, r.tree FROM refs r "
            "WHERE NOT EXISTS (SELECT 1 FROM trees t WHERE t.tree = r.tree)").fetchall()
        totals = dict(c.execute("SELECT name, value FROM totals").fetchall())
        actual = c.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs").fetchone()

    problems.extend(_layout_problems(store))
    indexed_blobs = {sha: size for sha, size in blob_rows}
    bytes_hashed = 0
    for sha, size in blob_rows:
        path = store.blob_path(sha)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            problems.append(_problem("missing_blob", f"blob {sha} is indexed but {path} is missing", id=sha))
            continue
        if st.st_size != size:
            problems.append(_problem("size_mismatch", f"blob {sha}: file has {st.st_size} bytes, index says {size}",
                                     id=sha))
            continue
        if st.st_mode & 0o222:
            # Blobs are read-only; a writable one was chmod'ed through a hardlinked restore or
            # artifact, and may have been edited in place.
            problems.append(_problem("writable_blob", f"blob {sha} is writable (mode {st.st_mode & 0o777:o}); "
                                                      f"a hard-linked copy may have been edited: run verify --deep",
                                     id=sha))
        if deep:
            try:
                actual_sha = sha256_file(path)
            except OSError as exc:
                problems.append(_problem("unreadable_blob", f"blob {sha}: {path} cannot be read "
                                                            f"({exc.strerror or exc})", id=sha))
                continue
            bytes_hashed += size
            if actual_sha != sha:
                problems.append(_problem("corrupt_blob", f"blob {sha}: content hashes to {actual_sha}", id=sha))

    # The counts name everything looked at: what the index lists and what the folders hold.
    seen_blobs = set(indexed_blobs)
    for path, sha in _iter_blob_files(store):
        if sha is None:
            problems.append(_problem("stray_file", f"{path} is not a blob", path=str(path)))
            continue
        seen_blobs.add(sha)
        if sha not in indexed_blobs:
            problems.append(_problem("unindexed_blob", f"{path} is not in the index", id=sha, path=str(path)))

    indexed_trees = {tree for tree, _ in tree_rows}
    for tree, file_count in tree_rows:
        path = store.manifest_path(tree)
        try:
            _, entries = parse_manifest(path.read_bytes(), origin=path, expected_tree=tree)
        except (FileNotFoundError, NotADirectoryError):
            problems.append(_problem("missing_manifest", f"tree {tree}: {path} is missing", id=tree))
            continue
        except OSError as exc:
            problems.append(_problem("unreadable_manifest", f"tree {tree}: {path} cannot be read "
                                                            f"({exc.strerror or exc})", id=tree))
            continue
        except CorruptManifestError as exc:
            problems.append(_problem("corrupt_manifest", str(exc), id=tree))
            continue
        if len(entries) != file_count:
            problems.append(_problem("index_mismatch", f"tree {tree}: manifest has {len(entries)} files, "
                                                       f"index says {file_count}", id=tree))
        missing = sorted({e.sha256 for e in entries.values()} - indexed_blobs.keys())
        if missing:
            problems.append(_problem("tree_missing_blob", f"tree {tree} names {len(missing)} blob(s) not in the "
                                                          f"store, e.g. {missing[0]}", id=tree, blobs=missing))
    seen_trees = set(indexed_trees)
    for path, tree in _iter_manifest_files(store):
        if tree is None:
            problems.append(_problem("stray_file", f"{path} is not a manifest", path=str(path)))
            continue
        seen_trees.add(tree)
        if tree not in indexed_trees:
            problems.append(_problem("unindexed_manifest", f"{path} is not in the index", id=tree, path=str(path)))

    for sha, have, want in bad_blob_counts:
        problems.append(_problem("bad_refcount", f"blob {sha}: refcount {have}, recount {want}", id=sha))
    for tree, have, want in bad_tree_counts:
        problems.append(_problem("bad_refcount", f"tree {tree}: refcount {have}, recount {want}", id=tree))
    for tree, path, blob in dangling_entries:
        if not any(p["kind"] == "tree_missing_blob" and p.get("id") == tree for p in problems):
            problems.append(_problem("tree_missing_blob", f"tree {tree}: {path} names missing blob {blob}", id=tree))
    for kind, name, tree in dangling_refs:
        problems.append(_problem("dangling_ref", f"ref {kind}/{name} names missing tree {tree}", id=tree))
    if (totals.get("blob_count"), totals.get("blob_bytes")) != (actual[0], actual[1]):
        problems.append(_problem("bad_totals", f"totals say {totals}, recount {actual[0]} blobs/{actual[1]} bytes"))

    indexed_refs = {(k, n): t for k, n, t in ref_rows}
    seen_refs = set()
    for path, record in _iter_ref_files(store):
        if record is None:
            problems.append(_problem("stray_file", f"{path} is not a valid ref file", path=str(path)))
            continue
        key = (record["kind"], record["name"])
        seen_refs.add(key)
        if indexed_refs.get(key) != record["tree"]:
            problems.append(_problem("ref_mismatch", f"ref {key[0]}/{key[1]}: file says {record['tree']}, "
                                                     f"index says {indexed_refs.get(key)}", path=str(path)))
    for key in indexed_refs.keys() - seen_refs:
        problems.append(_problem("ref_mismatch", f"ref {key[0]}/{key[1]} is indexed but has no file"))

    own = store._writer
    for entry in _entries(store.tmp_dir):
        if own is not None and entry == own:
            continue
        if entry.is_dir() and entry.name.startswith("w-") and _is_locked(entry / "lock"):
            continue  # a live writer's staging area
        if entry.is_dir() and entry.name.startswith("n-") and nascent_owner_alive(entry):
            continue  # a writer that is starting up
        problems.append(_problem("temp_file", f"{entry} is left over from an interrupted write", path=str(entry)))

    return {
        "ok": not problems,
        "deep": deep,
        "blobs_checked": len(seen_blobs),
        "bytes_hashed": bytes_hashed,
        "trees_checked": len(seen_trees),
        "refs_checked": len(indexed_refs.keys() | seen_refs),
        "problems": problems,
    }


def _is_locked(path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def rebuild_index(store: "Store", *, deep: bool = False) -> dict[str, Any]:
    """See :meth:`Store.rebuild_index`."""
    store.recover()
    quarantined: list[str] = []
    now = time.time()
    blobs: list[tuple[str, int, float]] = []
    for path, sha in _iter_blob_files(store):
        if sha is None:
            quarantined.append(str(store._quarantine(path, "stray")))
            continue
        if deep and sha256_file(path) != sha:
            quarantined.append(str(store._quarantine(path, "corrupt")))
            continue
        st = path.stat()
        if st.st_mode & 0o222:
            os.chmod(path, blob_perm(st.st_mode))  # read-only again, no more readable than it was
        blobs.append((sha, st.st_size, st.st_mtime))
    trees: list[tuple[str, dict[str, Any]]] = []
    for path, tree in _iter_manifest_files(store):
        if tree is None:
            quarantined.append(str(store._quarantine(path, "stray")))
            continue
        try:
            _, entries = parse_manifest(path.read_bytes(), origin=path, expected_tree=tree)
        except CorruptManifestError:
            quarantined.append(str(store._quarantine(path, "corrupt")))
            continue
        trees.append((tree, entries))
    refs: list[dict[str, Any]] = []
    for path, record in _iter_ref_files(store):
        if record is None:
            quarantined.append(str(store._quarantine(path, "stray")))
            continue
        refs.append(record)

    with store.index.write() as c:
        for table in ("tree_entries", "refs", "trees", "blobs", "holds"):
            c.execute(f"DELETE FROM {table}")
        c.execute("UPDATE totals SET value = 0")
        c.executemany("INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) VALUES (?, ?, 0, ?, ?)",
                      [(sha, size, mtime, now) for sha, size, mtime in blobs])
        for tree, entries in trees:
            c.execute("INSERT INTO trees (tree, file_count, total_size, refcount, created_at, touched_at) "
                      "VALUES (?, ?, ?, 0, ?, ?)",
                      (tree, len(entries), sum(e.size for e in entries.values()), now, now))
            c.executemany("INSERT INTO tree_entries (tree, path, blob, mode, size) VALUES (?, ?, ?, ?, ?)",
                          [(tree, p, e.sha256, e.mode, e.size) for p, e in entries.items()])
        c.executemany("INSERT INTO refs (kind, name, tree, created_at, meta) VALUES (?, ?, ?, ?, ?)",
                      [(r["kind"], r["name"], r["tree"], float(r.get("created_at", now)),
                        json.dumps(r.get("meta", {}), sort_keys=True)) for r in refs])
    for spec in REBUILD_HOOKS:
        resolve(spec)(store)
    return {
        "blobs": len(blobs),
        "trees": len(trees),
        "refs": len(refs),
        "quarantined": quarantined,
    }


# Functions (``"module:function"``, called with the store) that re-derive other index
# tables -- runs, artifact usage -- from their own files after a rebuild.
REBUILD_HOOKS: list[str] = [
    "runicorn.artifacts.gcroots:rebuild_usage",
    "runicorn.runs.index:rebuild_runs",
]
