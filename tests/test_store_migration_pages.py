"""The schema-4 fixture store migrated to pages (schema/pages.md, "Migration"): what the
migration leaves, a migration killed between its steps, and damaged old rows."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import apsw
import pytest

from runicorn.store import Store
from runicorn.store.index import SCHEMA_VERSION
from tests.store_fixture import DATA, TREES, check_all, extract


def _tables(root: Path) -> set[str]:
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    try:
        return {str(r[0]) for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_the_open_moves_every_tree_to_pages_and_drops_the_old_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = extract(tmp_path)
    assert "tree_entries" in _tables(root)
    with Store(root) as s:
        said = capsys.readouterr().err
        assert f"moving {len(TREES)} tree(s) of {root} to the page format" in said and "once" in said
        assert any(f"migrated {len(TREES)} tree(s) to pages" in n for n in s.recovered), s.recovered
        assert s.index.version == SCHEMA_VERSION
        for tree in TREES:
            manifest = json.loads(s.manifest_path(tree).read_bytes())
            assert manifest["format_version"] == 2 and "files" not in manifest
            assert s.get_manifest(tree)["format_version"] == 2
        check_all(s)
    assert "tree_entries" not in _tables(root)
    with Store(root) as s:
        assert not any("migrated" in n for n in s.recovered)
        assert capsys.readouterr().err == ""  # said once


# The child opens the fixture with one step of the migration made to end in SIGKILL.
CHILD = """
import os, signal, sys
import runicorn.store.migrate as migrate
point, root = sys.argv[1], sys.argv[2]
done = []
if point == "before_manifest":
    real = migrate.atomic_write_bytes
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    migrate.atomic_write_bytes = die
elif point == "after_manifest":
    real = migrate.atomic_write_bytes
    def die(*a, **k):
        real(*a, **k)
        os.kill(os.getpid(), signal.SIGKILL)
    migrate.atomic_write_bytes = die
else:
    real_tree = migrate.migrate_tree
    def third(store, tree):
        ok = real_tree(store, tree)
        done.append(tree)
        if len(done) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return ok
    migrate.migrate_tree = third
from runicorn.store import Store
Store(root)
"""


@pytest.mark.parametrize("point", ["before_manifest", "after_manifest", "after_three_trees"])
def test_a_migration_killed_between_its_steps_goes_on_at_the_next_open(tmp_path: Path, point: str) -> None:
    root = extract(tmp_path)
    proc = subprocess.run([sys.executable, "-c", CHILD, point, str(root)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "tree_entries" in _tables(root)  # killed midway
    with Store(root) as s:
        assert any("migrated" in n for n in s.recovered), s.recovered
        check_all(s)
    assert "tree_entries" not in _tables(root)


def test_a_tree_whose_old_rows_are_damaged_is_moved_from_its_manifest(tmp_path: Path) -> None:
    root = extract(tmp_path)
    tree = sorted(TREES)[0]
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    conn.execute(
        "DELETE FROM tree_entries WHERE tree = ? AND path = (SELECT MIN(path) FROM tree_entries WHERE tree = ?)",
        (tree, tree),
    )
    conn.close()
    with Store(root) as s:
        check_all(s)
    assert "tree_entries" not in _tables(root)


def test_a_tree_with_damaged_rows_and_manifest_keeps_the_old_format_and_its_blobs(tmp_path: Path) -> None:
    root = extract(tmp_path)
    tree = sorted(TREES)[0]
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    gone = conn.execute("SELECT blob FROM tree_entries WHERE tree = ? LIMIT 1", (tree,)).fetchall()[0][0]
    conn.execute("DELETE FROM tree_entries WHERE tree = ? AND blob = ?", (tree, gone))
    conn.close()
    manifest = root / "archive" / "manifests" / tree[:2] / f"{tree}.json"
    manifest.chmod(0o644)
    manifest.write_bytes(manifest.read_bytes()[:-30])  # torn
    with Store(root) as s:
        assert any("kept in the old format" in n and tree in n for n in s.recovered), s.recovered
        assert "tree_entries" in _tables(root)
        assert s.tree_entries(tree)  # still read from the old rows
        s.gc(grace_seconds=0)
        left = {e.sha256 for e in s.tree_entries(tree).values()}
        assert all(s.blob_path(sha).exists() for sha in left)


# What index schema 5 had beyond schema 6: a trigger per link keeping blobs.refcount
# (schema 6's page_blobs named blobs by their SHA-256).
_SCHEMA_5_TRIGGERS = """
CREATE TRIGGER page_blobs_ins AFTER INSERT ON page_blobs BEGIN
    UPDATE blobs SET refcount = refcount + NEW.n WHERE sha256 = NEW.blob;
END;
CREATE TRIGGER page_blobs_del AFTER DELETE ON page_blobs BEGIN
    UPDATE blobs SET refcount = refcount - OLD.n WHERE sha256 = OLD.blob;
END;
PRAGMA user_version = 5;
"""


def test_a_schema_5_store_loses_its_link_triggers_and_keeps_its_counts(tmp_path: Path) -> None:
    """A store as schema 5 wrote it (schema 6's tables, and the per-link triggers) is
    migrated on open: the triggers go, the counts stay right through trees stored,
    unpinned and collected."""
    fixture = json.loads((DATA / "store-schema6.json").read_text())
    root = extract(tmp_path, DATA / "store-schema6.tar.gz")
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    conn.execute(_SCHEMA_5_TRIGGERS)
    conn.close()

    def put(s: Store, files: dict[str, bytes], name: str) -> str:
        entries = {}
        for path, data in files.items():
            info = s.ingest_bytes(data)
            entries[path] = (info.sha256, "100644", info.size)
        return s.put_tree(entries, ref=("pin", name))

    def problems(s: Store) -> list[str]:
        # The fixture's lost blob is the one problem it has.
        return [p["kind"] for p in s.verify(deep=True)["problems"] if p.get("id") != fixture["roles"]["lost_tree"]]

    files = {f"f{i:03}.txt": f"file {i}\n".encode() * (i % 3 + 1) for i in range(300)}
    files["dup.txt"] = files["f000.txt"]  # one blob named twice
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        assert not s.index.query("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'page_blobs%'")
        assert problems(s) == []
        first = put(s, files, "first")
        files["f001.txt"] = b"changed\n"
        files["new.txt"] = b"new\n"
        second = put(s, files, "second")
        assert problems(s) == []
        for pin in ("first", "v1", "release", "lost"):
            s.unpin(pin)
        s.gc(grace_seconds=0)
        assert s.has_tree(second) and not s.has_tree(first)
        assert problems(s) == []  # every refcount equals its recount
        named = Counter(hashlib.sha256(data).hexdigest() for data in files.values())
        counts = dict(s.index.query("SELECT sha256, refcount FROM blobs"))
        assert {sha: counts[sha] for sha in named if sha not in fixture["blobs"]} == {
            sha: n for sha, n in named.items() if sha not in fixture["blobs"]
        }
        assert s.index.query("SELECT COUNT(*) FROM lost_blobs") == [(0,)]
