"""The schema-6 fixture store (``tests/data/store-schema6.*``, made by
``tools/make_store_fixture_schema6.py``) opened by today's code: index schema 7 names
blobs in links by integer ids.  Nothing is lost, a blob lost before the migration stays
named and is counted again once stored, and a migration killed midway leaves schema 6."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import apsw
from runicorn.assets.restore import restore_from_manifest
from runicorn.store import Store
from runicorn.store.index import SCHEMA_VERSION
from runicorn.store.tree_format import compute_tree_id
from tests.store_fixture import DATA, extract

FIXTURE: dict[str, Any] = json.loads((DATA / "store-schema6.json").read_text())
TARBALL = DATA / "store-schema6.tar.gz"
ROLES = FIXTURE["roles"]
LOST = ROLES["lost_blob"]


def _open6(tmp_path: Path) -> Path:
    root = extract(tmp_path, TARBALL)
    assert _sql(root, "PRAGMA user_version") == [(6,)]
    return root


def _sql(root: Path, query: str) -> list[tuple[Any, ...]]:
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def _problems(s: Store, *, deep: bool = True) -> list[tuple[str, str]]:
    return sorted((p["kind"], p.get("id", "")) for p in s.verify(deep=deep)["problems"])


def _only_the_lost_blob(s: Store) -> None:
    report = s.verify(deep=True)
    assert [(p["kind"], p["id"], p.get("blobs")) for p in report["problems"]] == [
        ("tree_missing_blob", ROLES["lost_tree"], [LOST])
    ], report["problems"]


def _check_contents(s: Store) -> None:
    for tree, want in FIXTURE["trees"].items():
        got = {p: [e.sha256, e.mode, e.size] for p, e in s.tree_entries(tree).items()}
        assert got == want["entries"], tree
        info = s.tree_info(tree)
        assert info is not None and (info.file_count, info.total_size) == (want["file_count"], want["total_size"])
    wide = ROLES["wide_tree"]  # node pages: its entries are checked by its id, their digest
    entries = s.tree_entries(wide)
    assert compute_tree_id(entries) == wide and len(entries) == FIXTURE["wide_tree"]["file_count"]
    assert s.get_manifest(wide)["depth"] == FIXTURE["wide_tree"]["depth"] == 1
    refs = [(r.kind, r.name, r.tree, r.meta) for r in sorted(s.list_refs(), key=lambda r: (r.kind, r.name))]
    assert refs == [(r["kind"], r["name"], r["tree"], r["meta"]) for r in FIXTURE["refs"]]
    for sha, size in FIXTURE["blobs"].items():
        data = s.read_blob(sha)
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha
    assert not s.has_blob(LOST)


def test_the_open_gives_links_integer_ids_and_loses_nothing(tmp_path: Path) -> None:
    root = _open6(tmp_path)
    before = _sql(root, "SELECT sha256, size, refcount, created_at, touched_at FROM blobs ORDER BY sha256")
    pages = _sql(root, "SELECT page, leaf, entries, size, refcount, created_at FROM pages ORDER BY page")
    links = _sql(root, "SELECT page, blob, n FROM page_blobs ORDER BY page, blob")
    children = _sql(root, "SELECT page, child FROM page_children ORDER BY page, child")
    assert links and children
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        _check_contents(s)
        _only_the_lost_blob(s)
        stats = {k: v for k, v in s.stats().items() if k != "storage_root"}
        assert stats == FIXTURE["stats"]
    # Every row kept as it was; every link names the same page and blob, now by their ids.
    assert _sql(root, "SELECT sha256, size, refcount, created_at, touched_at FROM blobs ORDER BY sha256") == before
    assert _sql(root, "SELECT page, leaf, entries, size, refcount, created_at FROM pages ORDER BY page") == pages
    named = _sql(
        root,
        "SELECT p.page, COALESCE(b.sha256, g.sha256), l.n FROM page_blobs l JOIN pages p ON p.id = l.page "
        "LEFT JOIN blobs b ON b.id = l.blob LEFT JOIN lost_blobs g ON g.id = -l.blob",
    )
    assert sorted(named) == sorted(links)
    named = _sql(
        root,
        "SELECT p.page, c.page FROM page_children l JOIN pages p ON p.id = l.page JOIN pages c ON c.id = l.child",
    )
    assert sorted(named) == sorted(children)
    assert _sql(root, "SELECT typeof(page), typeof(blob), COUNT(*) FROM page_blobs GROUP BY 1, 2") == [
        ("integer", "integer", len(links))
    ]
    assert _sql(root, "SELECT sha256 FROM lost_blobs") == [(LOST,)]
    assert _sql(root, "SELECT COUNT(*) FROM page_blobs WHERE blob < 0") == [(1,)]
    names = {r[0] for r in _sql(root, "SELECT name FROM sqlite_master")}
    assert not {"blobs_v6", "pages_v6", "page_blobs_v6", "page_children_v6"} & names


def test_the_lost_blob_stored_again_is_counted_again(tmp_path: Path) -> None:
    root = _open6(tmp_path)
    with Store(root) as s:
        info = s.ingest_bytes(FIXTURE["lost_bytes"].encode())
        assert info.sha256 == LOST
        s.release_holds()
        assert s.verify(deep=True)["problems"] == []
        assert s.index.query("SELECT refcount FROM blobs WHERE sha256 = ?", (LOST,)) == [(1,)]
        assert s.index.query("SELECT COUNT(*) FROM lost_blobs") == [(0,)]
        out = tmp_path / "out"
        assert restore_from_manifest(s.manifest_path(ROLES["lost_tree"]), s.blobs_dir, out)["success"]
        assert (out / "lost.txt").read_text() == FIXTURE["lost_bytes"]
        # Collected only once nothing names it.
        s.gc(grace_seconds=0)
        assert s.has_blob(LOST)
        s.unpin("lost")
        s.gc(grace_seconds=0)
        assert not s.has_blob(LOST) and not s.has_tree(ROLES["lost_tree"])
        assert s.verify(deep=True)["problems"] == []


def test_gc_and_repair_after_the_migration(tmp_path: Path) -> None:
    root = _open6(tmp_path)
    with Store(root) as s:
        r = s.gc(grace_seconds=0)
        assert r["tree_ids"] == [ROLES["unreferenced"]] and r["blob_ids"] == [ROLES["orphan_blob"]]
        kept = {k: v for k, v in FIXTURE["trees"].items() if k != ROLES["unreferenced"]}
        for tree, want in kept.items():
            assert {p: [e.sha256, e.mode, e.size] for p, e in s.tree_entries(tree).items()} == want["entries"]
        _only_the_lost_blob(s)
        # A repair keeps naming the lost blob; dropping the tree that names it forgets it.
        s.rebuild_index()
        _only_the_lost_blob(s)
        assert s.index.query("SELECT sha256 FROM lost_blobs") == [(LOST,)]
        s.unpin("lost")
        s.gc(grace_seconds=0)
        assert s.index.query("SELECT COUNT(*) FROM lost_blobs") == [(0,)]
        assert s.verify(deep=True)["problems"] == []


def test_the_wide_tree_collected_after_the_migration_takes_its_pages_and_blobs(tmp_path: Path) -> None:
    root = _open6(tmp_path)
    with Store(root) as s:
        wide = ROLES["wide_tree"]
        own = {e.sha256 for e in s.tree_entries(wide).values()}
        pages = set(s.tree_page_sizes(wide))
        assert len(pages) > 64  # leaves and the node pages above them
        assert s.gc(grace_seconds=0)["tree_ids"] == [ROLES["unreferenced"]]
        s.unpin("wide")
        r = s.gc(grace_seconds=0)
        assert r["tree_ids"] == [wide] and set(r["blob_ids"]) == own and r["pages_deleted"] == len(pages)
        assert not any(s.has_blob(sha) for sha in own)
        assert not any(s.page_path(p).exists() for p in pages)
        _only_the_lost_blob(s)


def test_a_blob_lost_after_the_migration_is_named_as_lost_by_a_repair(tmp_path: Path) -> None:
    root = _open6(tmp_path)
    with Store(root) as s:
        sha = s.tree_entries(ROLES["v1"])["README.md"].sha256  # named by several trees
        data = s.read_blob(sha)
        s.blob_path(sha).unlink()
        assert ("missing_blob", sha) in _problems(s, deep=False)
        s.rebuild_index()
        assert not s.has_blob(sha)
        assert s.index.query("SELECT sha256 FROM lost_blobs ORDER BY sha256") == sorted([(LOST,), (sha,)])
        kinds = {k for k, _ in _problems(s)}
        assert kinds == {"tree_missing_blob"}, kinds
        s.ingest_bytes(data)  # stored again: it takes back its links and their count
        s.release_holds()
        _only_the_lost_blob(s)
        assert s.index.query("SELECT sha256 FROM lost_blobs") == [(LOST,)]


# The child migrates the fixture and is killed just before the migration's transaction
# would commit (after every copy is made).
CHILD = """
import os, signal, sys
import runicorn.store.index as index
real = index._migrate_6_to_7
def die(conn):
    real(conn)
    os.kill(os.getpid(), signal.SIGKILL)
index.MIGRATIONS[6] = die
from runicorn.assets.restore import restore_from_manifest
from runicorn.store import Store
Store(sys.argv[1])
"""


def test_a_migration_killed_before_its_commit_leaves_schema_6_and_is_done_at_the_next_open(
    tmp_path: Path,
) -> None:
    root = _open6(tmp_path)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert _sql(root, "PRAGMA user_version") == [(6,)]
    assert "lost_blobs" not in {r[0] for r in _sql(root, "SELECT name FROM sqlite_master")}
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        _check_contents(s)
        _only_the_lost_blob(s)


def test_a_link_naming_no_row_is_reported_and_repaired(tmp_path: Path) -> None:
    root = _open6(tmp_path)
    with Store(root) as s:
        with s.index.write() as c:
            c.execute(
                "UPDATE page_blobs SET blob = 1000000 WHERE blob = (SELECT MIN(blob) FROM page_blobs WHERE blob > 0)"
            )
        kinds = {k for k, _ in _problems(s, deep=False)}
        assert "dangling_link" in kinds
        s.rebuild_index()
        _only_the_lost_blob(s)
