"""Index schema 8 -> 9: links are no longer indexed by blob, only those naming lost blobs.

A store made as version 8 (its index by blob, its trigger) is migrated on opening; a lost
blob keeps its links through the migration, takes them back when stored again, and the
statements that look links up by a lost blob use the partial index instead of a scan; a
version-8 store on a read-only mount (which cannot be migrated) is read as it is."""

from __future__ import annotations

import json
from pathlib import Path

import apsw

from runicorn.store import Store
from runicorn.store.index import SCHEMA_VERSION
from tests.test_read_only_store import cli, remount_ro, ro_mount  # noqa: F401  (ro_mount is a fixture)

# What index schema 8 had where version 9 has page_blobs_lost and a new blobs_found.
SCHEMA_V8 = (
    "DROP INDEX page_blobs_lost",
    "CREATE INDEX page_blobs_blob ON page_blobs (blob)",
    "DROP TRIGGER blobs_found",
    """CREATE TRIGGER blobs_found AFTER INSERT ON blobs
    WHEN EXISTS (SELECT 1 FROM lost_blobs WHERE sha256 = NEW.sha256) BEGIN
    UPDATE page_blobs SET blob = NEW.id WHERE blob = -(SELECT id FROM lost_blobs WHERE sha256 = NEW.sha256);
    DELETE FROM lost_blobs WHERE sha256 = NEW.sha256;
    UPDATE blobs SET refcount = (SELECT COALESCE(SUM(n), 0) FROM page_blobs WHERE blob = NEW.id)
        WHERE id = NEW.id;
END""",
    "PRAGMA user_version = 8",
)


def _as_version_8(root: Path) -> None:
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    try:
        with conn:
            for statement in SCHEMA_V8:
                conn.execute(statement)
    finally:
        conn.close()


def _indexes(s: Store) -> set[str]:
    return {name for (name,) in s.index.query("SELECT name FROM sqlite_master WHERE type = 'index'")}


def _store_with_a_lost_blob(root: Path) -> tuple[str, bytes, str]:
    """A pinned tree of three files, two with the same bytes; those bytes' file lost and
    the index repaired (its links now name a lost blob).  Returns (lost sha256, its bytes, tree)."""
    with Store(root) as s:
        shared, other = b"twice in the tree\n", b"once\n"
        a, b = s.ingest_bytes(shared), s.ingest_bytes(other)
        tree = s.put_tree(
            {
                "a.txt": (a.sha256, "100644", a.size),
                "b.txt": (b.sha256, "100644", b.size),
                "c.txt": (a.sha256, "100644", a.size),
            }
        )
        s.pin(tree, "kept")
        s.release_holds()
        s.blob_path(a.sha256).unlink()
        s.rebuild_index()
        assert s.index.query("SELECT sha256 FROM lost_blobs") == [(a.sha256,)]
        return a.sha256, shared, tree


def test_a_version_8_store_with_a_lost_blob_is_migrated_and_heals_when_the_blob_comes_back(tmp_path: Path) -> None:
    root = tmp_path / "st"
    lost, data, tree = _store_with_a_lost_blob(root)
    _as_version_8(root)

    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION == 10
        assert "page_blobs_blob" not in _indexes(s) and "page_blobs_lost" in _indexes(s)
        assert {p["kind"] for p in s.verify()["problems"]} == {"tree_missing_blob"}
        s.ingest_bytes(data)  # stored again: the two links come back to it, counted
        s.release_holds()
        assert s.index.query("SELECT COUNT(*) FROM lost_blobs") == [(0,)]
        assert s.index.query("SELECT refcount FROM blobs WHERE sha256 = ?", (lost,)) == [(2,)]
        assert s.verify()["ok"]
        s.unpin("kept")
        report = s.gc(grace_seconds=0)
        assert report["trees_deleted"] == 1 and report["blobs_deleted"] == 2
        assert s.verify()["ok"]


def test_a_wrong_blob_refcount_is_still_found_and_repaired_without_the_index(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        blobs = [s.ingest_bytes(f"file {i}\n".encode()) for i in range(3)]
        tree = s.put_tree({f"f{i}.txt": (b.sha256, "100644", b.size) for i, b in enumerate(blobs)})
        s.pin(tree, "kept")
        s.release_holds()
        with s.index.write() as c:  # one count too low (gc could take a named blob), one too high
            c.execute("UPDATE blobs SET refcount = 0 WHERE sha256 = ?", (blobs[0].sha256,))
            c.execute("UPDATE blobs SET refcount = 5 WHERE sha256 = ?", (blobs[1].sha256,))
        bad = {p["id"] for p in s.verify()["problems"] if p["kind"] == "bad_refcount"}
        assert bad == {blobs[0].sha256, blobs[1].sha256}
        from runicorn.store.verify import index_disagreements

        assert index_disagreements(s, [tree]) == ["2 wrong refcount(s)"]
        assert index_disagreements(s) == ["2 wrong refcount(s)"]
        s.rebuild_index()
        assert s.verify()["ok"] and index_disagreements(s, [tree]) == []
        assert s.index.query("SELECT refcount FROM blobs ORDER BY id") == [(1,), (1,), (1,)]


def _plan(s: Store, statement: str) -> str:
    return " ".join(str(row[3]) for row in s.index.query("EXPLAIN QUERY PLAN " + statement))


def test_the_trigger_and_the_statements_that_look_up_lost_links_use_the_partial_index(tmp_path: Path) -> None:
    from runicorn.store.rows import drop_unnamed_lost_blobs

    with Store(tmp_path / "st") as s:
        # The trigger's own statements, as the index holds them (a plan does not reach
        # into a trigger): with NEW's values filled in, each reads the lost links by index.
        (trigger,) = s.index.query("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'blobs_found'")[0]
        body = trigger.split(" BEGIN", 1)[1].rsplit("END", 1)[0]
        reading_links = [
            statement.replace("NEW.sha256", "'x'").replace("NEW.id", "7")
            for statement in body.split(";")
            if "page_blobs" in statement
        ]
        assert len(reading_links) == 2
        # The statements drop_unnamed_lost_blobs runs, as it runs them.
        seen: list[str] = []
        with s.index.write() as c:
            s.index.conn.exec_trace = lambda _cursor, sql, _bindings: seen.append(sql) or True
            try:
                drop_unnamed_lost_blobs(c)
            finally:
                s.index.conn.exec_trace = None
        assert seen
        plans = [_plan(s, statement) for statement in reading_links + seen]
        assert all("page_blobs_lost" in plan for plan in plans), plans


def test_a_read_only_version_8_store_is_read_as_it_is(ro_mount: Path) -> None:  # noqa: F811  (a fixture)
    root = ro_mount / "store"
    lost, _, tree = _store_with_a_lost_blob(root)
    _as_version_8(root)
    remount_ro(ro_mount)
    r = cli("--storage", str(root), "verify", "--json")
    assert r.returncode == 1, r.stderr  # the lost blob, reported; nothing else
    assert {p["kind"] for p in json.loads(r.stdout)["problems"]} == {"tree_missing_blob"}, r.stdout
    r = cli("--storage", str(root), "ls", "pin/kept")
    assert r.returncode == 0 and "b.txt" in r.stdout, r.stderr
    with Store(root) as s:
        assert s.read_only and s.index.version == 8
        assert s.tree_info(tree) is not None
