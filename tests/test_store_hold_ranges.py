"""Index schema 10: a batch holds the blob rows it adds under its caller's lease by one
``hold_ranges`` row (their id range) instead of a ``holds`` row per blob.

What a range holds, gc (another writer, grace 0) never takes; the range goes with its lease,
with a writer that lets go of everything, and with a writer killed by SIGKILL (recovery);
a blob another writer stored meanwhile is held by its own row; a version-9 store is migrated
on opening with its live holds kept.  A gc that knows holds only (a process started before
its store was migrated) deletes no row a range holds, so keeps its file; a repair that
forgets a held blob whose file is gone takes it out of its range and no other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import apsw
import pytest

import runicorn.store.gc as gc_module
from runicorn.errors import BlobNotFoundError
from runicorn.store import Store
from runicorn.store.blobs import commit_blobs
from runicorn.store.index import SCHEMA_VERSION


def _files(d: Path, tag: str, n: int) -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    paths = [d / f"{tag}{i}.txt" for i in range(n)]
    for i, p in enumerate(paths):
        p.write_bytes(f"{tag} file {i}\n".encode() * 50)
    return paths


def _counts(s: Store) -> tuple[int, int]:
    return s.index.scalar("SELECT COUNT(*) FROM holds"), s.index.scalar("SELECT COUNT(*) FROM hold_ranges")


def test_a_batch_under_a_lease_holds_its_new_blobs_by_one_range_that_gc_respects(tmp_path: Path) -> None:
    root = tmp_path / "st"
    writer, collector = Store(root), Store(root)
    lease = writer.new_lease()
    first = writer.ingest_files(_files(tmp_path / "a", "a", 40), lease=lease)
    second = writer.ingest_files(_files(tmp_path / "b", "b", 30), lease=lease)
    assert _counts(writer) == (0, 2)  # one range per batch, no row per blob
    ranges = writer.index.query("SELECT first, last, writer, lease FROM hold_ranges ORDER BY first")
    assert [(lo, hi) for lo, hi, _, _ in ranges] == [(1, 40), (41, 70)]
    assert {(w, n) for _, _, w, n in ranges} == {(writer.writer_dir().name, lease.id)}

    report = collector.gc(grace_seconds=0)
    assert report["blobs_deleted"] == 0
    assert all(writer.has_blob(b.sha256) for b in first + second)

    writer.release_holds(lease)
    assert _counts(writer) == (0, 0)
    assert collector.gc(grace_seconds=0)["blobs_deleted"] == 70
    assert collector.verify()["ok"]
    writer.close()
    collector.close()


def test_ranges_of_two_writers_interleave_and_each_lease_frees_only_its_own(tmp_path: Path) -> None:
    root = tmp_path / "st"
    one, two, collector = Store(root), Store(root), Store(root)
    lease_one, lease_two = one.new_lease(), two.new_lease()
    kept: list[str] = []
    freed: list[str] = []
    for k in range(3):  # ids alternate between the writers' batches
        freed += [b.sha256 for b in one.ingest_files(_files(tmp_path / f"o{k}", f"o{k}-", 5), lease=lease_one)]
        kept += [b.sha256 for b in two.ingest_files(_files(tmp_path / f"t{k}", f"t{k}-", 7), lease=lease_two)]
    assert _counts(collector) == (0, 6)
    one.release_holds(lease_one)
    assert collector.gc(grace_seconds=0)["blobs_deleted"] == len(freed) == 15
    assert not any(collector.has_blob(s) for s in freed)
    assert all(collector.has_blob(s) for s in kept)
    two.release_holds()  # every hold of that writer, ranges included
    assert _counts(collector) == (0, 0)
    assert collector.gc(grace_seconds=0)["blobs_deleted"] == 21
    for s in (one, two, collector):
        s.close()


def test_a_batch_without_a_lease_of_its_callers_is_held_a_row_per_blob(tmp_path: Path) -> None:
    # Such a caller may let go of each blob by name: a range would outlive that.
    root = tmp_path / "st"
    with Store(root) as s:
        infos = s.ingest_files(_files(tmp_path / "a", "a", 4))
        assert _counts(s) == (4, 0)
        s.release_holds({b.sha256 for b in infos})
        assert _counts(s) == (0, 0)
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 4


def test_a_blob_stored_meanwhile_by_another_writer_keeps_a_hold_of_its_own(tmp_path: Path) -> None:
    root = tmp_path / "st"
    writer, other, collector = Store(root), Store(root), Store(root)
    data = b"stored twice at once\n"
    theirs = other.ingest_bytes(data)  # the other writer got there first
    other.release_holds()
    intent = writer.writer_dir() / f"blob-{theirs.sha256}"
    intent.write_bytes(data)
    lease = writer.new_lease()
    commit_blobs(writer, [(intent, theirs.sha256, len(data))], group=False, lease=lease, by_range=True)
    held = writer.index.query("SELECT sha256, lease FROM holds")
    assert held == [(theirs.sha256, lease.id)] and _counts(writer) == (1, 0)
    assert collector.gc(grace_seconds=0)["blobs_deleted"] == 0
    writer.release_holds(lease)
    assert collector.gc(grace_seconds=0)["blobs_deleted"] == 1
    for s in (writer, other, collector):
        s.close()


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from runicorn.store import Store
    s = Store(Path(sys.argv[1]))
    lease = s.new_lease()
    files = sorted(Path(sys.argv[2]).iterdir())
    s.ingest_files(files, lease=lease)
    print(s.writer_dir().name, flush=True)
    time.sleep(600)
    """
)


def test_a_killed_writers_ranges_go_with_its_recovery(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src = tmp_path / "src"
    _files(src, "k", 12)
    Store(root).close()
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(root), str(src)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        writer = child.stdout.readline().strip()
        assert writer.startswith("w-"), writer
        with Store(root) as s:  # the writer is alive: its range holds
            assert s.index.query("SELECT writer FROM hold_ranges") == [(writer,)]
            assert s.gc(grace_seconds=0)["blobs_deleted"] == 0
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=60)
    time.sleep(0.05)
    with Store(root) as s:
        s.recover()
        assert _counts(s) == (0, 0)
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 12
        assert s.verify()["ok"]


def test_a_version_9_store_is_migrated_with_its_live_holds_kept(tmp_path: Path) -> None:
    root = tmp_path / "st"
    live = Store(root)
    old = live.ingest_bytes(b"held since version 9\n")  # a row of holds, as version 9 wrote
    assert _counts(live) == (1, 0)
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    with conn:
        conn.execute("DROP TRIGGER blobs_held_by_range")
        conn.execute("DROP TABLE hold_ranges")
        conn.execute("PRAGMA user_version = 9")
    conn.close()

    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION == 10
        assert s.index.has_table("hold_ranges") and _counts(s) == (1, 0)
        trigger = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'blobs_held_by_range'"
        assert s.index.scalar(trigger) == 1
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 0 and s.has_blob(old.sha256)
        lease = s.new_lease()
        s.ingest_files(_files(tmp_path / "a", "a", 3), lease=lease)
        assert _counts(s) == (1, 1)
        s.release_holds(lease)
        assert s.verify()["ok"]
    live.release_holds()
    with Store(root) as s:
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 4
    live.close()


def test_a_gc_that_knows_holds_only_leaves_the_rows_and_files_a_range_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process that opened the store before it was migrated plans with holds alone (its
    # plan is this one without the range clause); the index itself keeps the rows.
    root = tmp_path / "st"
    writer, collector = Store(root), Store(root)
    lease = writer.new_lease()
    src = _files(tmp_path / "a", "a", 6)
    infos = writer.ingest_files(src, lease=lease)
    knows = gc_module.has_table
    monkeypatch.setattr(gc_module, "has_table", lambda c, name: name != "hold_ranges" and knows(c, name))
    collector.gc(grace_seconds=0)  # plans all six: their rows are skipped, their files kept
    monkeypatch.undo()
    assert all(collector.has_blob(b.sha256) and collector.blob_path(b.sha256).is_file() for b in infos)
    assert collector.stats()["blob_count"] == 6
    tree = writer.put_tree({p.name: (b.sha256, "100644", b.size) for p, b in zip(src, infos)}, held=lease)
    writer.set_ref("snapshot", "kept", tree)
    assert collector.gc(grace_seconds=0)["blobs_deleted"] == 0
    assert all(collector.read_blob(b.sha256) == p.read_bytes() for p, b in zip(src, infos))
    assert collector.verify()["ok"]
    writer.close()
    collector.close()


def test_a_repair_forgets_a_lost_held_blob_and_its_range_keeps_the_others(tmp_path: Path) -> None:
    root = tmp_path / "st"
    writer, repairer = Store(root), Store(root)
    lease = writer.new_lease()
    src = _files(tmp_path / "a", "a", 5)
    infos = writer.ingest_files(src, lease=lease)
    lost = infos[2]
    lost_id = repairer.index.scalar("SELECT id FROM blobs WHERE sha256 = ?", (lost.sha256,))
    repairer.blob_path(lost.sha256).unlink()  # damage while the writer still holds it
    repairer.rebuild_index()
    assert not repairer.has_blob(lost.sha256)
    held = [(lo, hi) for lo, hi in ((1, lost_id - 1), (lost_id + 1, 5)) if lo <= hi]  # ids 1-5, a hole
    assert repairer.index.query("SELECT first, last FROM hold_ranges ORDER BY first") == held
    assert repairer.gc(grace_seconds=0)["blobs_deleted"] == 0  # the other four stay held
    with pytest.raises(BlobNotFoundError) as caught:
        writer.put_tree({p.name: (b.sha256, "100644", b.size) for p, b in zip(src, infos)}, held=lease)
    assert lost.sha256 in str(caught.value)
    writer.release_holds(lease)
    assert repairer.gc(grace_seconds=0)["blobs_deleted"] == 4
    assert repairer.verify()["ok"]
    writer.close()
    repairer.close()
