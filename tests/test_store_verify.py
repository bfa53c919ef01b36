"""verify finds damage; --repair rebuilds the index from files; damaged indexes heal on open."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from runicorn.cli import main
from runicorn.store import Store


def populated(root: Path, tmp_path: Path) -> tuple[str, list[str]]:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(f"file number {i}\n".encode() * 100)
    with Store(root) as s:
        tree = s.ingest_directory(src)
        s.pin(tree, "keep")
        entries = s.tree_entries(tree)
        shas = [entries[f"f{i}.txt"].sha256 for i in range(5)]
    return tree, shas


def kinds(report: dict) -> set[str]:
    return {p["kind"] for p in report["problems"]}


def test_flipped_bit_is_found_by_deep_verify_and_quarantined(tmp_path: Path) -> None:
    root = tmp_path / "st"
    tree, shas = populated(root, tmp_path)
    with Store(root) as s:
        blob = s.blob_path(shas[0])
        os.chmod(blob, 0o644)
        data = bytearray(blob.read_bytes())
        data[10] ^= 0x01
        blob.write_bytes(bytes(data))
        os.chmod(blob, 0o444)  # bit rot does not change the mode
        assert s.verify()["ok"], "same size: only a deep verify can see it"
        deep = s.verify(deep=True)
        assert kinds(deep) == {"corrupt_blob"} and deep["problems"][0]["id"] == shas[0]
        s.rebuild_index(deep=True)
        after = s.verify(deep=True)
        # the bad copy is quarantined; the tree now names a missing blob until it is re-ingested
        assert kinds(after) == {"tree_missing_blob"}
        assert list(s.quarantine_dir.iterdir())
        (tmp_path / "good.txt").write_bytes(b"file number 0\n" * 100)
        assert s.ingest_file(tmp_path / "good.txt").sha256 == shas[0]
        assert s.verify(deep=True)["ok"]


def test_missing_blob_stray_file_and_wrong_refcount(tmp_path: Path) -> None:
    root = tmp_path / "st"
    tree, shas = populated(root, tmp_path)
    with Store(root) as s:
        os.unlink(s.blob_path(shas[1]))
        stray = s.blobs_dir / "zz" / "not-a-blob"
        stray.parent.mkdir()
        stray.write_bytes(b"junk")
        with s.index.write() as c:
            c.execute("UPDATE blobs SET refcount = 7 WHERE sha256 = ?", (shas[2],))
        report = s.verify()
        assert {"missing_blob", "stray_file", "bad_refcount"} <= kinds(report)
        result = CliRunner().invoke(main, ["--storage", str(root), "verify", "--repair", "--json"])
        assert result.exit_code == 1, result.output  # the lost blob's content cannot be invented
        out = json.loads(result.output)
        assert kinds(out["after"]) == {"tree_missing_blob"}
        assert not stray.exists()
        assert s.index.scalar("SELECT refcount FROM blobs WHERE sha256 = ?", (shas[2],)) == 1


def test_unindexed_blob_and_temp_file_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "st"
    populated(root, tmp_path)
    with Store(root) as s:
        extra = s.blob_path("ab" + "0" * 62)
        extra.parent.mkdir(exist_ok=True)
        extra.write_bytes(b"x")
        (s.tmp_dir / "leftover.part").write_bytes(b"y")
        assert {"unindexed_blob", "temp_file"} <= kinds(s.verify())


def test_missing_index_is_rebuilt_on_open_with_refs(tmp_path: Path) -> None:
    root = tmp_path / "st"
    tree, shas = populated(root, tmp_path)
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / "archive" / "index.sqlite3") + suffix).unlink(missing_ok=True)
    with Store(root) as s:
        assert s.get_ref("pin", "keep").tree == tree  # refs survive: they are files too
        assert s.stats()["blob_count"] == 5
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 0, "nothing pinned is collected"
        assert s.verify(deep=True)["ok"]


def test_damaged_index_is_moved_aside_and_rebuilt(tmp_path: Path) -> None:
    root = tmp_path / "st"
    tree, _ = populated(root, tmp_path)
    index = root / "archive" / "index.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    index.write_bytes(b"this is not a database" * 100)
    with Store(root) as s:
        assert s.get_ref("pin", "keep").tree == tree
        assert s.verify(deep=True)["ok"]
    assert list((root / "archive").glob("index.sqlite3.damaged-*"))


def test_corrupt_manifest_is_reported_with_its_file(tmp_path: Path) -> None:
    root = tmp_path / "st"
    tree, _ = populated(root, tmp_path)
    with Store(root) as s:
        m = s.manifest_path(tree)
        os.chmod(m, 0o644)
        m.write_text('{"format": "runicorn.manifest", "files": ')
        report = s.verify()
        problem = [p for p in report["problems"] if p["kind"] == "corrupt_manifest"][0]
        assert str(m) in problem["detail"] and "not valid JSON" in problem["detail"]


def test_newer_schema_is_refused_clearly(tmp_path: Path) -> None:
    import apsw

    root = tmp_path / "st"
    Store(root).close()
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = CliRunner().invoke(main, ["--storage", str(root), "stats"])
    assert result.exit_code == 1
    assert "schema version 99 is newer" in result.output


def test_cli_stats_gc_pin_unpin(tmp_path: Path) -> None:
    root = tmp_path / "st"
    tree, _ = populated(root, tmp_path)
    run = CliRunner().invoke
    out = json.loads(run(main, ["--storage", str(root), "stats", "--json"]).output)
    assert out["blob_count"] == 5 and out["ref_count"] == 1
    assert run(main, ["--storage", str(root), "unpin", "keep"]).exit_code == 0
    dry = json.loads(run(main, ["--storage", str(root), "gc", "--dry-run", "--grace", "0", "--json"]).output)
    assert dry["trees_deleted"] == 1 and dry["blobs_deleted"] == 5
    assert json.loads(run(main, ["--storage", str(root), "stats", "--json"]).output)["blob_count"] == 5
    kept = json.loads(run(main, ["--storage", str(root), "gc", "--json"]).output)
    assert kept["blobs_deleted"] == 0, "default grace keeps fresh content"
    real = json.loads(run(main, ["--storage", str(root), "gc", "--grace", "0", "--json"]).output)
    assert real["blob_ids"] == dry["blob_ids"] and real["tree_ids"] == dry["tree_ids"]
    bad = run(main, ["--storage", str(root), "pin", "0123456789"])
    assert bad.exit_code == 1 and "matches no trees" in bad.output and "Traceback" not in bad.output
    assert run(main, ["--version"]).output.startswith("runicorn, version")


def test_verify_does_not_report_trees_and_refs_committed_while_it_lists_them(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """verify reads the index, then lists ``manifests/`` and ``refs/``: a writer (a second
    handle, its own writer directory and lock) that stores a tree and moves a pin in
    between leaves a manifest and ref files the first read did not know.  They are read
    again before being reported; a manifest and a ref changed by hand still are."""
    import runicorn.store.verify as verify_module

    def tree_of(name: str) -> str:
        with Store(root) as writer:  # a second handle: its own writer directory and lock
            tree = writer.ingest_directory(tmp_path / name)
            writer.pin(tree, name)
            return tree

    root = tmp_path / "store"
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f.txt").write_text(f"workspace {name}\n")
    first = tree_of("a")
    hand = tree_of("c")
    with Store(root) as writer:
        writer.pin(first, "moving")
    real_manifests, real_refs = verify_module._iter_manifest_files, verify_module._iter_ref_files
    stored: list[str] = []

    def manifests_while_a_writer_commits(store: Store):  # type: ignore[no-untyped-def]
        stored.append(tree_of("b"))
        return real_manifests(store)

    def refs_while_a_writer_commits(store: Store):  # type: ignore[no-untyped-def]
        with Store(root) as writer:
            writer.pin(stored[0], "moving", force=True)
        return real_refs(store)

    monkeypatch.setattr(verify_module, "_iter_manifest_files", manifests_while_a_writer_commits)
    monkeypatch.setattr(verify_module, "_iter_ref_files", refs_while_a_writer_commits)
    with Store(root) as store:
        # By hand: a manifest copied under a name the index does not know, a ref file
        # rewritten to name another tree.
        stray_tree = "ab" * 32
        stray = store.manifest_path(stray_tree)
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(store.manifest_path(first).read_bytes())
        ref_file = store.ref_path("pin", "c")
        ref_file.write_text(ref_file.read_text().replace(hand, first))
        report = store.verify()
    kinds = sorted((p["kind"], p.get("id", p.get("path", ""))) for p in report["problems"])
    assert ("unindexed_manifest", stray_tree) in kinds, kinds
    assert [k for k, _ in kinds].count("unindexed_manifest") == 1, kinds
    mismatches = [p["detail"] for p in report["problems"] if p["kind"] == "ref_mismatch"]
    assert len(mismatches) == 1 and "pin/c" in mismatches[0], report["problems"]


def test_verify_does_not_report_blobs_a_gc_collects_while_it_runs(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A gc in another handle drops rows (COMMIT) and then unlinks their files: verify,
    which read the index before and looks at the files after, saw a row without a file
    or a file without a row.  Both are read again before being reported; a blob file
    removed by hand still is reported."""
    import runicorn.store.gc as gc_module
    import runicorn.store.verify as verify_module

    root = tmp_path / "store"
    tree, shas = populated(root, tmp_path)
    with Store(root) as store:
        store.blob_path(shas[0]).unlink()  # by hand: a real missing blob of a pinned tree
        store.ingest_bytes(b"let go, collected while verify looks")
        store.release_holds()
    real_layout = verify_module._layout_problems

    def gc_after_the_first_read(store: Store):  # type: ignore[no-untyped-def]
        with Store(root) as collector:
            assert collector.gc(grace_seconds=0)["blobs_deleted"] == 1
        return real_layout(store)

    monkeypatch.setattr(verify_module, "_layout_problems", gc_after_the_first_read)
    with Store(root) as store:
        report = store.verify()
    missing = [p["id"] for p in report["problems"] if p["kind"] == "missing_blob"]
    assert missing == [shas[0]], report["problems"]
    monkeypatch.setattr(verify_module, "_layout_problems", real_layout)

    # A gc that committed before verify's read and unlinks after verify listed blobs/.
    with Store(root) as store:
        doomed = store.ingest_bytes(b"collected between the listing and the report").sha256
        store.release_holds()
    held_back: dict[str, object] = {}
    real_unlink = gc_module.unlink_collected
    monkeypatch.setattr(
        gc_module,
        "unlink_collected",
        lambda store, journal, blobs, pages=(): held_back.update(args=(store, journal, list(blobs), list(pages))) or 0,
    )
    collector = Store(root)
    collector.gc(grace_seconds=0)
    monkeypatch.setattr(gc_module, "unlink_collected", real_unlink)
    real_strays = verify_module._strays

    def unlinks_then_strays(store: Store, unindexed):  # type: ignore[no-untyped-def]
        real_unlink(*held_back["args"])  # type: ignore[misc]
        return real_strays(store, unindexed)

    monkeypatch.setattr(verify_module, "_strays", unlinks_then_strays)
    try:
        with Store(root) as store:
            report = store.verify()
            assert not [p for p in report["problems"] if p["kind"] == "unindexed_blob"], report["problems"]
            assert not store.blob_path(doomed).exists()
    finally:
        collector.close()


def test_a_writer_kept_waiting_too_long_gets_a_clear_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A second process's writer (here a second handle, waiting 0.2 s instead of 120 s)
    whose index stays locked by another writer past its wait stops with an error naming
    the store and the cause, not SQLite's bare 'database is locked'."""
    import runicorn.store.index as index_module
    from runicorn.errors import StoreBusyError

    root = tmp_path / "store"
    with Store(root) as holder:
        monkeypatch.setattr(index_module, "BUSY_TIMEOUT_MS", 200)
        with Store(root) as waiter, holder.index.write():
            with pytest.raises(StoreBusyError, match=r"store.*another process kept the store's index locked"):
                waiter.ingest_bytes(b"waits for the lock")
        # Its staged bytes were left to the recovery its close runs: stored whole, or not at all.
        assert holder.verify()["ok"]
