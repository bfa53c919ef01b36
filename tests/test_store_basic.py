"""Store basics: dedup, tree ids, refcounts through puts/refs/gc, seed blob API."""

from __future__ import annotations

import json
import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from runicorn.errors import BlobNotFoundError, TreeNotFoundError, UnsafePathError
from runicorn.store import Store, TreeEntry


def recount_ok(store: Store) -> bool:
    rows = store.index.query(
        "SELECT COUNT(*) FROM blobs b WHERE b.refcount != "
        "(SELECT COALESCE(SUM(e.n), 0) FROM page_blobs e WHERE e.blob = b.id)"
    )
    trows = store.index.query(
        "SELECT COUNT(*) FROM trees t WHERE t.refcount != (SELECT COUNT(*) FROM refs r WHERE r.tree = t.tree)"
    )
    return rows[0][0] == 0 and trows[0][0] == 0


def test_same_content_is_one_blob(store: Store, tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    b = tmp_path / "b.bin"
    a.write_bytes(b"x" * 100_000)
    b.write_bytes(b"x" * 100_000)
    ia = store.ingest_file(a)
    ib = store.ingest_file(b)
    assert ia == ib
    assert ia.sha256 == hashlib.sha256(b"x" * 100_000).hexdigest()
    assert store.stats()["blob_count"] == 1
    blob = store.blob_path(ia.sha256)
    assert blob.read_bytes() == a.read_bytes()
    assert not os.stat(blob).st_mode & 0o222, "blobs are read-only"
    out = subprocess.run(["sha256sum", str(a)], capture_output=True, text=True, check=True).stdout
    assert out.split()[0] == ia.sha256


def test_refcounts_exact_through_puts_refs_and_gc(store: Store) -> None:
    x = store.ingest_bytes(b"shared")
    y = store.ingest_bytes(b"only-in-t1")
    z = store.ingest_bytes(b"only-in-t2")
    t1 = store.put_tree(
        {"a": (x.sha256, "100644", x.size), "b": (y.sha256, "100644", y.size), "dup": (x.sha256, "100644", x.size)}
    )
    t2 = store.put_tree({"a": TreeEntry(x.sha256, "100755", x.size), "c": TreeEntry(z.sha256, "100644", z.size)})
    rc = dict(store.index.query("SELECT sha256, refcount FROM blobs"))
    assert rc == {x.sha256: 3, y.sha256: 1, z.sha256: 1}
    store.pin(t1, "one")
    store.pin(t2, "two")
    store.pin(t2, "two-again")
    assert dict(store.index.query("SELECT tree, refcount FROM trees")) == {t1: 1, t2: 2}
    assert store.gc(grace_seconds=0)["blobs_deleted"] == 0
    store.unpin("one")
    report = store.gc(grace_seconds=0)
    assert report["tree_ids"] == [t1] and report["blob_ids"] == [y.sha256]
    assert dict(store.index.query("SELECT sha256, refcount FROM blobs")) == {x.sha256: 1, z.sha256: 1}
    assert not store.blob_path(y.sha256).exists() and not store.manifest_path(t1).exists()
    assert recount_ok(store)
    store.unpin("two")
    assert store.gc(grace_seconds=0)["trees_deleted"] == 0  # still pinned as two-again
    store.unpin("two-again")
    assert store.gc(grace_seconds=0)["blobs_deleted"] == 2
    assert store.stats()["blob_count"] == 0 and store.stats()["total_size_bytes"] == 0
    assert store.verify(deep=True)["ok"]


def test_gc_dry_run_reports_exactly_what_real_run_deletes(store: Store) -> None:
    blobs = [store.ingest_bytes(f"blob {i}".encode()) for i in range(20)]
    trees = [
        store.put_tree({f"f{j}": (blobs[j].sha256, "100644", blobs[j].size) for j in range(i, i + 5)})
        for i in range(0, 15, 3)
    ]
    store.pin(trees[0])
    store.release_holds()
    dry = store.gc(grace_seconds=0, dry_run=True)
    real = store.gc(grace_seconds=0)
    assert {k: v for k, v in dry.items() if k != "dry_run"} == {k: v for k, v in real.items() if k != "dry_run"}
    assert real["trees_deleted"] == 4
    assert store.gc(grace_seconds=0, dry_run=True)["blobs_deleted"] == 0


def test_grace_period_and_holds_protect_fresh_content(tmp_path: Path) -> None:
    writer = Store(tmp_path / "s")
    info = writer.ingest_bytes(b"fresh")
    other = Store(tmp_path / "s")
    # held by a live writer: never collected, whatever the grace
    assert other.gc(grace_seconds=0)["blobs_deleted"] == 0
    writer.release_holds()
    assert other.gc(grace_seconds=3600)["blobs_deleted"] == 0  # younger than the grace
    assert other.gc(grace_seconds=0)["blob_ids"] == [info.sha256]
    writer.close()
    other.close()


def test_missing_blobs_are_named_across_the_chunks_of_the_check(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The commit checks a tree's blobs in chunks; every missing one is named, whichever
    chunk it falls in, and a tree whose blobs are all there commits."""
    import runicorn.store.rows as rows_mod

    monkeypatch.setattr(rows_mod, "_LOOKUP_CHUNK", 3)
    present = [store.ingest_bytes(f"blob {i}".encode()) for i in range(7)]
    absent = ["0" * 64, "7" * 64, "f" * 64]
    entries = {f"p{i}": (info.sha256, "100644", info.size) for i, info in enumerate(present)}
    entries.update({f"q{i}": (sha, "100644", 1) for i, sha in enumerate(absent)})
    with pytest.raises(BlobNotFoundError) as err:
        store.put_tree(entries)
    assert err.value.missing == absent  # type: ignore[attr-defined]
    tree = store.put_tree({k: v for k, v in entries.items() if k.startswith("p")})
    assert len(store.tree_entries(tree)) == 7
    report = store.verify(deep=True)
    assert report["ok"], json.dumps(report["problems"])  # every link names its blob's row, every count right


def test_a_trees_links_are_indexed_a_group_at_a_time(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Links are indexed a group of leaves at a time: a blob named from several groups is
    counted in each, every missing blob is named whichever group it falls in (and the
    tree is not indexed), and a rebuild, which names absent blobs as lost, gives the same
    counts."""
    import runicorn.store.rows as rows_mod

    monkeypatch.setattr(rows_mod, "LINK_GROUP", 40)
    shared = store.ingest_bytes(b"shared")
    own = [store.ingest_bytes(f"own {i}".encode()) for i in range(400)]
    entries = {f"d{i % 20}/f{i}": (info.sha256, "100644", info.size) for i, info in enumerate(own)}
    entries.update({f"d{i}/shared": (shared.sha256, "100644", shared.size) for i in range(20)})
    absent = sorted(f"{i:x}" * 64 for i in range(1, 6))
    with pytest.raises(BlobNotFoundError) as err:
        store.put_tree({**entries, **{f"d{3 * i}/gone": (sha, "100644", 1) for i, sha in enumerate(absent)}})
    assert err.value.missing == absent  # type: ignore[attr-defined]
    assert store.stats()["tree_count"] == 0
    tree = store.put_tree(entries)
    assert len(store.tree_page_sizes(tree)) > 10  # many leaves: several groups
    with store.index.read() as c:
        assert c.execute("SELECT refcount FROM blobs WHERE sha256 = ?", (shared.sha256,)).fetchone()[0] == 20
    report = store.verify(deep=True)
    assert report["ok"], json.dumps(report["problems"])
    store.rebuild_index()
    report = store.verify(deep=True)
    assert report["ok"], json.dumps(report["problems"])
    # The shared blob's file lost: a rebuild names it as lost once, from every group.
    store.blob_path(shared.sha256).unlink()
    store.rebuild_index()
    assert store.index.query("SELECT sha256 FROM lost_blobs") == [(shared.sha256,)]
    assert {p["kind"] for p in store.verify()["problems"]} == {"tree_missing_blob"}
    store.ingest_bytes(b"shared")  # stored again: its 20 links count again
    store.release_holds()
    report = store.verify(deep=True)
    assert report["ok"], json.dumps(report["problems"])
    with store.index.read() as c:
        assert c.execute("SELECT refcount FROM blobs WHERE sha256 = ?", (shared.sha256,)).fetchone()[0] == 20


def test_put_tree_refuses_missing_blobs_and_bad_paths(store: Store) -> None:
    with pytest.raises(BlobNotFoundError) as err:
        store.put_tree({"a": ("0" * 64, "100644", 1)})
    assert err.value.missing == ["0" * 64]  # type: ignore[attr-defined]
    info = store.ingest_bytes(b"x")
    for bad in ("../x", "/abs", "a/../b", "a//b", "", "a\nb"):
        with pytest.raises((UnsafePathError, ValueError)):
            store.put_tree({bad: (info.sha256, "100644", 1)})
    with pytest.raises(ValueError):
        store.put_tree({"a": (info.sha256, "100600", 1)})
    with pytest.raises(TreeNotFoundError):
        store.pin("f" * 64)


def test_tree_id_matches_the_documented_definition(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "b.txt").write_bytes(b"b")
    (src / "sub" / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "sub" / "run.sh", 0o755)
    os.symlink("b.txt", src / "link")
    (src / "empty").mkdir()
    tree = store.ingest_directory(src)
    lines = []
    for path, mode, data in [
        ("b.txt", "100644", b"b"),
        ("link", "120000", b"b.txt"),
        ("sub/run.sh", "100755", b"#!/bin/sh\n"),
    ]:
        lines.append(f"{mode} {hashlib.sha256(data).hexdigest()} {path}\n".encode())
    lines.sort(key=lambda line: line.split(b" ", 2)[2])
    assert tree == hashlib.sha256(b"runicorn-tree-v1\n" + b"".join(lines)).hexdigest()
    manifest = store.get_manifest(tree)
    assert manifest["file_count"] == 3 and len(manifest["files"]) == 3
    assert manifest["files"]["sub/run.sh"]["mode"] == "100755"


def test_seed_blob_api_goes_through_the_index(tmp_path: Path) -> None:
    from runicorn.assets.blob_store import blob_exists, get_blob_path, get_blob_stats, read_blob, store_blob
    from runicorn.assets.fingerprint import sha256_file

    model = tmp_path / "model.pth"
    model.write_bytes(os.urandom(300_000))
    blob_root = tmp_path / "home" / "archive" / "blobs"
    sha = store_blob(model, blob_root)
    assert sha == store_blob(model, blob_root) == sha256_file(model)
    assert get_blob_path(sha, blob_root).read_bytes() == model.read_bytes()
    assert blob_exists(sha, blob_root) and read_blob(sha, blob_root) == model.read_bytes()
    stats = get_blob_stats(blob_root)
    assert stats == {"blob_count": 1, "total_size_bytes": 300_000}
    # the stats come from the index: a file smuggled into the folder is not counted
    (blob_root / "ab").mkdir(exist_ok=True)
    (blob_root / "ab" / ("ab" + "0" * 62)).write_bytes(b"smuggled")
    assert get_blob_stats(blob_root) == stats
    # a bare folder (not a store) works too
    bare = tmp_path / "bare"
    assert store_blob(model, bare) == sha and get_blob_stats(bare)["blob_count"] == 1


def test_cleanup_orphaned_blobs_seed_keys(tmp_path: Path) -> None:
    from runicorn.assets.cleanup import cleanup_orphaned_blobs

    root = tmp_path / "st"
    with Store(root) as s:
        s.ingest_bytes(b"orphan-1")
        s.ingest_bytes(b"orphan-22")
        kept = s.ingest_bytes(b"kept")
        s.pin(s.put_tree({"k": (kept.sha256, "100644", kept.size)}))
    dry = cleanup_orphaned_blobs(root, dry_run=True)
    assert dry["orphaned_blobs"] == 2 and dry["bytes_freed"] == 17
    real = cleanup_orphaned_blobs(root, dry_run=False)
    assert real["orphaned_blobs"] == 2
    assert cleanup_orphaned_blobs(root, dry_run=True)["orphaned_blobs"] == 0


def test_file_changing_while_read_is_not_stored(store: Store, tmp_path: Path) -> None:
    from runicorn.errors import ChangedWhileReadingError
    from runicorn.hashing import copy_and_hash

    f = tmp_path / "growing.bin"
    f.write_bytes(b"a" * (3 << 20))
    import runicorn.store.blobs as mod

    real = mod.copy_and_hash

    def appending(src, dst):  # type: ignore[no-untyped-def]
        with open(f, "ab") as g:
            g.write(b"more")
        return real(src, dst)

    mod.copy_and_hash = appending
    try:
        with pytest.raises(ChangedWhileReadingError, match="growing.bin"):
            store.ingest_file(f)
    finally:
        mod.copy_and_hash = real
    assert store.stats()["blob_count"] == 0
    assert not list(store.blobs_dir.rglob("*")) or all(p.is_dir() for p in store.blobs_dir.rglob("*"))
    assert copy_and_hash  # imported for clarity of what is being exercised
