"""Index schema 7 -> 8: holds keyed by lease.  A version-7 store's hold rows (the holds of
writers alive while it is opened) survive the migration and keep their objects from gc
until their writer lets go or dies."""

from __future__ import annotations

from pathlib import Path

import apsw

from runicorn.store import Store
from runicorn.store.index import SCHEMA_VERSION

# The holds table exactly as index schema 7 defined it.
HOLDS_V7 = (
    "CREATE TABLE holds (writer TEXT NOT NULL, sha256 TEXT NOT NULL, PRIMARY KEY (writer, sha256)) WITHOUT ROWID",
    "CREATE INDEX holds_sha256 ON holds (sha256)",
)


def _as_version_7(root: Path, rows: list[tuple[str, str]]) -> None:
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    try:
        with conn:
            conn.execute("DROP TABLE holds")
            for statement in HOLDS_V7:
                conn.execute(statement)
            conn.executemany("INSERT INTO holds (writer, sha256) VALUES (?, ?)", rows)
            conn.execute("PRAGMA user_version = 7")
    finally:
        conn.close()


def test_a_live_writers_version_7_holds_survive_the_migration_and_keep_their_blobs(tmp_path: Path) -> None:
    root = tmp_path / "st"
    live = Store(root)  # a writer alive across the upgrade (its folder stays locked)
    kept, other = live.ingest_bytes(b"held by a live writer\n"), live.ingest_bytes(b"nobody holds this\n")
    tree = live.put_tree({"a.txt": (kept.sha256, "100644", kept.size)})
    writer = live.writer_dir().name
    with live.index.write() as c:
        c.execute("DELETE FROM holds")
    _as_version_7(root, [(writer, kept.sha256), (writer, tree)])

    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION == 10
        columns = [r[1] for r in s.index.query("PRAGMA table_info(holds)")]
        assert columns == ["writer", "lease", "sha256"]
        rows = sorted(s.index.query("SELECT writer, lease, sha256 FROM holds"))
        assert rows == sorted([(writer, 0, kept.sha256), (writer, 0, tree)])
        assert s.tree_info(tree) is not None and s.tree_info(tree).held  # type: ignore[union-attr]
        report = s.gc(grace_seconds=0)
        assert report["blobs_deleted"] == 1 and report["trees_deleted"] == 0
        assert s.has_blob(kept.sha256) and not s.has_blob(other.sha256)
        lease = s.new_lease()
        assert lease.id > 0  # lease 0 is the migrated rows': never given out
        assert s.verify()["ok"]

    live.release_holds()  # the old rows are the writer's: they go with its other holds
    with Store(root) as s:
        assert s.index.scalar("SELECT COUNT(*) FROM holds") == 0
        report = s.gc(grace_seconds=0)
        assert report["trees_deleted"] == 1 and report["blobs_deleted"] == 1
    live.close()


def test_a_dead_writers_migrated_holds_go_with_its_recovery(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        blob = s.ingest_bytes(b"held by a writer that died\n")
        writer = s.writer_dir().name
        s.release_holds()
    _as_version_7(root, [(writer, blob.sha256), ("w-gone-long-ago", blob.sha256)])
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        s.recover()
        assert s.index.scalar("SELECT COUNT(*) FROM holds") == 0
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 1


def test_opening_a_version_8_store_twice_migrates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        s.ingest_bytes(b"x")
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    try:
        with conn:
            conn.execute("PRAGMA user_version = 7")  # a version set back by hand: the table is new already
    finally:
        conn.close()
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        assert [r[1] for r in s.index.query("PRAGMA table_info(holds)")] == ["writer", "lease", "sha256"]
