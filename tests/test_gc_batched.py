"""gc deletes in batches: set statements in one transaction, blob files unlinked in place
(no rename per file) after a journal, a killed gc finished by recovery, and a blob stored
again between gc's COMMIT and its unlink kept (issue 12, item 2)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from runicorn.store import Store

REPO = Path(__file__).resolve().parents[1]


def unreferenced(store: Store, n: int, tag: str = "") -> list[str]:
    return [store.ingest_bytes(f"blob {tag}{i}\n".encode()).sha256 for i in range(n)]


def one_tree(store: Store, shas: list[str]) -> str:
    return store.put_tree({f"d/f{i}": (s, "100644", len(f"blob {i}\n")) for i, s in enumerate(shas)})


def statements_of_gc(root: Path, n: int) -> int:
    """SQL statements a gc collecting ``n`` blobs (and their tree) executes."""
    with Store(root) as store:
        shas = unreferenced(store, n)
        one_tree(store, shas)
        store.release_holds()
    count = 0

    def trace(cursor: Any, sql: str, bindings: Any) -> bool:
        nonlocal count
        count += 1
        return True

    with Store(root) as store:
        store.index.conn.exec_trace = trace
        report = store.gc(grace_seconds=0)
        store.index.conn.exec_trace = None
        assert report["blobs_deleted"] == n and report["trees_deleted"] == 1
        assert not [p for p in store.blobs_dir.rglob("*") if p.is_file()]
    return count


def test_gc_statements_do_not_grow_with_the_blobs_it_collects(tmp_path: Path) -> None:
    small = statements_of_gc(tmp_path / "a", 10)
    large = statements_of_gc(tmp_path / "b", 300)
    assert large == small, (small, large)


def test_gc_killed_between_unlink_batches_is_finished_by_recovery(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        shas = unreferenced(store, 7)
    code = f"""
        import os, signal
        from pathlib import Path
        import runicorn.store.gc as gc
        from runicorn.store import Store
        gc.GC_BATCH = 2
        real = gc.unlink_unindexed
        def unlink_then_die(store, c, shas, journal_written):
            real(store, c, shas, journal_written)
            os.kill(os.getpid(), signal.SIGKILL)
        gc.unlink_unindexed = unlink_then_die
        Store(Path({str(root)!r})).gc(grace_seconds=0)
    """
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == -9, r.stderr
    left = [s for s in shas if os.path.exists(root / "archive" / "blobs" / s[:2] / s)]
    assert len(left) == 5  # the first batch went; the rows of all seven are gone
    journals = list((root / "archive" / "tmp").glob("w-*/gc-*.json"))
    assert len(journals) == 1
    # Written a batch of names at a time, read back whole.
    assert json.loads(journals[0].read_bytes()) == {"blobs": sorted(shas), "pages": []}
    with Store(root) as store:  # opening recovers the dead writer
        assert any("finished an interrupted gc (5 blob file(s) removed)" in a for a in store.recovered)
        assert not [s for s in shas if store.blob_path(s).exists()]
        assert store.stats()["blob_count"] == 0
        assert store.verify()["ok"]


def test_a_blob_stored_again_after_gc_commits_keeps_its_file(tmp_path: Path) -> None:
    """A writer that finds the doomed file still in place adopts it with a new row, in
    its own transaction: gc's unlink, under the write lock, sees the row and keeps it."""
    root = tmp_path / "store"
    with Store(root) as store:
        shas = unreferenced(store, 3)
    import runicorn.store.gc as gc

    collector, writer = Store(root), Store(root)
    real = gc.unlink_collected

    def store_again_first(store: Store, journal: Path, *doomed: list[str]) -> int:
        assert journal.exists() and not writer.has_blob(shas[1])
        assert writer.ingest_bytes(b"blob 1\n").sha256 == shas[1]  # the file is there: adopted
        tree = one_tree(writer, [shas[1]])
        writer.pin(tree, "kept")
        return real(store, journal, *doomed)

    gc.unlink_collected = store_again_first
    try:
        report = collector.gc(grace_seconds=0)
    finally:
        gc.unlink_collected = real
        collector.close()
    assert report["blobs_deleted"] == 3  # what the COMMIT dropped; one was stored again since
    assert writer.blob_path(shas[1]).exists() and not writer.blob_path(shas[0]).exists()
    assert writer.read_blob(shas[1]) == b"blob 1\n"
    assert writer.verify()["ok"]
    assert not list((root / "archive" / "tmp").glob("w-*/gc-*.json"))
    writer.close()


def test_a_torn_gc_journal_of_a_dead_writer_deletes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with Store(root) as store:
        shas = unreferenced(store, 2)
    dead = root / "archive" / "tmp" / "w-deadbeef"
    dead.mkdir()
    (dead / "gc-0.json").write_text('{"blobs": ["' + shas[0][:20])
    (dead / "gc-1.json").write_text('{"blobs": ["../../index.sqlite3", "' + shas[1] + '"]}')
    with Store(root) as store:
        assert all(store.blob_path(s).exists() for s in shas)  # rows still name them
        assert store.verify()["ok"] and (root / "archive" / "index.sqlite3").exists()
        assert not dead.exists()


def test_gc_unlinking_in_threads_counts_only_last_links(tmp_path: Path) -> None:
    """Enough blobs for the unlinks to be shared among threads: every file goes, and the
    bytes freed count a blob only where gc removed its last link (ten are also linked
    from outside the store, as a hard-linked restore leaves them)."""
    src = tmp_path / "src"
    for i in range(1500):
        d = src / f"d{i % 30}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * (i % 97) + f"{i}\n".encode())
    outside = tmp_path / "outside"
    outside.mkdir()
    with Store(tmp_path / "store") as store:
        store.ingest_directory(src)
        store.release_holds()
        sizes = {hashlib.sha256(p.read_bytes()).hexdigest(): p.stat().st_size for p in src.rglob("f*")}
        linked = sorted(sizes)[::150]
        for name in linked:
            os.link(store.blob_path(name), outside / name)
        report = store.gc(grace_seconds=0)
        blobs = set(report["blob_ids"])
        assert report["blobs_deleted"] == 1500 and set(linked) <= blobs
        assert report["bytes_freed"] == sum(sizes[b] for b in blobs if b not in linked)
        assert not [p for p in store.blobs_dir.rglob("*") if p.is_file()]
        assert all((outside / name).stat().st_nlink == 1 for name in linked)
        assert store.verify()["ok"]


def test_gc_dry_run_counts_what_the_real_gc_frees(tmp_path: Path) -> None:
    """The dry run's bytes are the real gc's: a blob file also linked from a restored
    folder frees nothing, whether or not the store was marked as having handed blobs out
    (a store older than the marker, a blob root reached through a symlink), and neither
    does a blob whose file is already gone."""
    import shutil

    from runicorn.assets.restore import restore_from_manifest

    for case in ("plain", "restored", "restored-unmarked", "file-missing"):
        root = tmp_path / case / "store"
        with Store(root) as store:
            contents = {f"d/f{i}": b"y" * (7 * i + 1) for i in range(40)}
            shas = [store.ingest_bytes(data).sha256 for data in contents.values()]
            tree = store.put_tree({p: (s, "100644", len(contents[p])) for p, s in zip(contents, shas)})
            kept = store.ingest_bytes(b"kept").sha256
            store.pin(store.put_tree({"k": (kept, "100644", 4)}), "kept")
            store.release_holds()
            expected = sum(len(d) for d in contents.values())
            if case.startswith("restored"):
                out = tmp_path / case / "out"
                restore_from_manifest(store.manifest_path(tree), store.blobs_dir, out, link="hardlink")
                (out / "d" / "f3").chmod(0o644)
                (out / "d" / "f3").unlink()  # one restored link gone: its blob is freed by gc
                expected = len(contents["d/f3"])
                if case == "restored-unmarked":
                    (root / "archive" / "blobs-linked-out").unlink()
            elif case == "file-missing":
                store.blob_path(shas[5]).unlink()
                expected -= len(contents["d/f5"])
            dry = store.gc(grace_seconds=0, dry_run=True)
            assert (dry["trees_deleted"], dry["blobs_deleted"], dry["bytes_freed"]) == (1, 40, expected), case
            real = store.gc(grace_seconds=0)
            assert (real["trees_deleted"], real["blobs_deleted"], real["bytes_freed"]) == (1, 40, expected), case
            assert store.blob_path(kept).exists()
        shutil.rmtree(tmp_path / case)


def test_gc_reports_what_waits_for_the_grace_without_planning_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When no tree is kept by the grace period alone, the blobs it keeps are those the
    gc's own plan set apart for their age: the report is the one a second plan (without
    a grace period) gives, and no second plan runs.  When a tree waits too, the second
    plan still decides."""
    from runicorn.store import gc as gc_module

    with Store(tmp_path / "store") as store:
        unreferenced(store, 3, "old")
        one_tree(store, unreferenced(store, 4))
        store.release_holds()
        with store.index.write() as c:  # two hours old
            c.execute("UPDATE blobs SET touched_at = touched_at - 7200")
            c.execute("UPDATE trees SET touched_at = touched_at - 7200")
        unreferenced(store, 2, "young")
        store.release_holds()
        planned = []
        full_plan = gc_module.plan_gc
        monkeypatch.setattr(gc_module, "plan_gc", lambda *a, **k: planned.append(a) or full_plan(*a, **k))

        def reports(grace: float) -> tuple[dict[str, Any], dict[str, Any]]:
            now = time.time()
            with store.index.read() as c:
                trees, _, blobs, young = gc_module._plan(c, now - grace, None, young_until=now)
                planned.clear()
                fast = gc_module.waiting_for_grace(c, now, grace, None, trees, blobs, set(), young)
                second_plans = len(planned)
                full = gc_module.waiting_for_grace(c, now, grace, None, trees, blobs, set())
            assert second_plans == (1 if full["trees"] else 0)
            return fast, full

        fast, full = reports(3600)  # the tree and the old blobs are collectable: only young blobs wait
        assert fast == full and (fast["trees"], fast["blobs"]) == (0, 2) and fast["first_at"] is not None
        fast, full = reports(3 * 3600)  # the tree waits too: planned again
        assert fast == full and (fast["trees"], fast["blobs"]) == (1, 9)
        report = store.gc(grace_seconds=3600)
        assert (report["trees_deleted"], report["blobs_deleted"]) == (1, 7)
        assert (report["waiting"]["trees"], report["waiting"]["blobs"]) == (0, 2)


def test_a_blob_both_linked_and_counted_zero_is_collected_once(tmp_path: Path) -> None:
    """A damaged count (0 while a leaf still links the blob) puts a blob in both of the
    plan's queries: gc lists it, deletes it and counts it once."""
    with Store(tmp_path / "store") as store:
        shas = unreferenced(store, 3)
        tree = one_tree(store, shas)
        store.release_holds()
        with store.index.write() as c:
            c.execute("UPDATE blobs SET refcount = 0 WHERE sha256 = ?", (shas[1],))
        plan = store.gc_plan([tree])
        assert sorted(b for b, _ in plan.blobs) == sorted(shas)
        report = store.gc(grace_seconds=0)
        assert report["blobs_deleted"] == 3 and sorted(report["blob_ids"]) == sorted(shas)
        assert store.stats()["blob_count"] == 0 and store.verify()["ok"]


def test_planned_blobs_keep_names_and_sizes_in_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan's columns give back what was appended, in order, across batch boundaries,
    and a name of another length than 64 (a damaged index row) keeps its own batch."""
    from runicorn.store import gc as gc_module

    monkeypatch.setattr(gc_module, "GC_BATCH", 3)
    rows = [(hashlib.sha256(str(i).encode()).hexdigest(), i * 10) for i in range(8)]
    rows[4] = ("not-a-sha", 40)
    rows[1], rows[2] = (rows[1][0][:-1], 10), (rows[2][0] + "0", 20)  # 63 + 65 characters, in one batch
    planned = gc_module.PlannedBlobs(rows)
    assert len(planned) == 8 and list(planned) == rows and planned == rows and rows == planned
    assert [planned[i] for i in range(-8, 8)] == rows + rows
    with pytest.raises(IndexError):
        planned[8]
    assert list(planned.batches()) == [[r[0] for r in rows[i : i + 3]] for i in (0, 3, 6)]
    assert planned.names() == [r[0] for r in rows] and planned.total_size() == 280
    assert planned != rows[:-1] and not gc_module.PlannedBlobs()
    damaged = gc_module.PlannedBlobs([(rows[0][0], None), (rows[1][0], "12")])  # type: ignore[list-item]
    assert damaged.total_size() == 0 and damaged.names() == [rows[0][0], rows[1][0]]


def test_gc_without_listing_blobs_counts_and_frees_the_same(tmp_path: Path) -> None:
    """``list_blobs=False`` (the CLI's gc unless it prints ids) returns no names, and
    deletes, counts and frees exactly what the listing gc does; the CLI prints the ids
    under ``-v``, a dry run and ``--json`` only."""
    from click.testing import CliRunner

    from runicorn.cli import main

    for listed in (True, False):
        with Store(tmp_path / f"s{listed}") as store:
            shas = unreferenced(store, 5)
            one_tree(store, shas[:3])
            store.release_holds()
            report = store.gc(grace_seconds=0, list_blobs=listed)
            assert (report["trees_deleted"], report["blobs_deleted"]) == (1, 5)
            assert report["bytes_freed"] == sum(len(f"blob {i}\n") for i in range(5))
            assert report["blob_ids"] == (sorted(shas) if listed else None)
            assert store.stats()["blob_count"] == 0 and store.verify()["ok"]
    root = tmp_path / "cli"
    with Store(root) as store:
        shas = unreferenced(store, 4)
        store.release_holds()
    runner = CliRunner()
    for args, lists in ((["--dry-run"], True), (["--dry-run", "--json"], True), ([], False), (["-v"], True)):
        if not args or args == ["-v"]:
            with Store(root) as store:
                shas = unreferenced(store, 4, tag=str(len(args)))
                store.release_holds()
        out = runner.invoke(main, ["--storage", str(root), "gc", "--grace", "0", *args])
        assert out.exit_code == 0, out.output
        assert all((s in out.output) == lists for s in shas), (args, out.output)


def test_gc_waits_one_step_of_the_filesystems_file_times() -> None:
    """gc tells a doomed file from one written again after its journal by their times:
    the wait before its COMMIT covers one step of them, judged from the journal's own time
    (a filesystem keeping whole seconds, as ext4 with 128-byte inodes or HFS+, needs two
    seconds, FAT's step; one keeping nanoseconds almost nothing).  Shown on such a
    filesystem by hand: the in-place test of tests/test_store_batch.py passes there."""
    from runicorn.store.gc import timestamp_step_ns

    assert timestamp_step_ns(1_796_051_794_123_456_789) == 1
    assert timestamp_step_ns(1_796_051_794_123_456_780) == 10
    assert timestamp_step_ns(1_796_051_794_120_000_000) == 10_000_000  # exFAT: hundredths
    assert timestamp_step_ns(1_796_051_794_000_000_000) == 2_000_000_000  # whole seconds
    assert timestamp_step_ns(0) == 2_000_000_000
