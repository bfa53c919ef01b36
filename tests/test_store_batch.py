"""Batch ingest (runicorn.store.ingest): no rewrite of known content, crash leftovers recovered."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from runicorn.store import Store
from runicorn.store.ingest import JOURNAL, SMALL_FILE_BYTES


def _files(root: Path, sizes: list[int]) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i, n in enumerate(sizes):
        p = root / f"f{i}.bin"
        p.write_bytes(os.urandom(n))
        out.append(p)
    return out


def _written_in_place(store: Store, files: list[Path]):  # type: ignore[no-untyped-def]
    """A batch of ``files`` that has written its new small blobs in place (journal-listed,
    no row yet) and not committed; with those blobs' hashes, sorted."""
    from runicorn.store.ingest import BlobBatch

    batch = BlobBatch(store)
    for p in files:
        batch.add_file(str(p))
    batch._write_pending()
    return batch, sorted(batch.direct)


def test_batch_ingest_small_and_large_files_and_duplicates(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [0, 1, 4096, SMALL_FILE_BYTES, SMALL_FILE_BYTES + 1, 3 << 20])
    dup = tmp_path / "src" / "dup.bin"
    dup.write_bytes(files[2].read_bytes())
    with Store(tmp_path / "store") as store:
        infos = store.ingest_files(files + [dup])
        for p, info in zip(files + [dup], infos):
            assert info.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
            assert info.size == p.stat().st_size
            assert store.blob_path(info.sha256).read_bytes() == p.read_bytes()
            assert store.blob_path(info.sha256).stat().st_mode & 0o777 == 0o444
        assert infos[2] == infos[-1]
        assert [p.name for p in store.writer_dir().iterdir()] == ["lock"], "batch directory removed"
        assert store.verify(deep=True)["ok"]


def test_known_content_is_not_written_again(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [100, 5000, 2 << 20])
    with Store(tmp_path / "store") as store:
        first = store.ingest_files(files)
        inodes = [store.blob_path(i.sha256).stat().st_ino for i in first]
        copies = [tmp_path / f"copy{i}" for i in range(3)]
        for src, dst in zip(files, copies):
            dst.write_bytes(src.read_bytes())
        again = store.ingest_files(copies)
        assert again == first
        assert [store.blob_path(i.sha256).stat().st_ino for i in again] == inodes, "blobs never replaced"
        assert store.verify(deep=True)["ok"]


def test_lost_blob_file_is_written_again(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [300])
    with Store(tmp_path / "store") as store:
        (info,) = store.ingest_files(files)
        path = store.blob_path(info.sha256)
        path.chmod(0o644)
        path.unlink()  # index still knows it: the file must come back
        (again,) = store.ingest_files(files)
        assert again == info and path.read_bytes() == files[0].read_bytes()


def test_dead_writers_batch_is_recovered(tmp_path: Path) -> None:
    """A writer killed between moving blobs into blobs/ and COMMIT: the journal lets the
    next opener adopt what moved; intents still staged are adopted; torn ones dropped."""
    root = tmp_path / "store"
    Store(root).close()
    moved = b"moved into blobs but never indexed"
    staged = b"still staged in the batch"
    torn_sha = hashlib.sha256(b"the full content").hexdigest()
    moved_sha = hashlib.sha256(moved).hexdigest()
    staged_sha = hashlib.sha256(staged).hexdigest()
    batch = root / "archive" / "tmp" / "w-999999-deadbeef0000" / "b-7"
    batch.mkdir(parents=True)
    (batch.parent / "lock").write_text("")
    (batch / JOURNAL).write_text(f"{moved_sha}\n{staged_sha}\n{torn_sha}\n")
    (batch / f"blob-{staged_sha}").write_bytes(staged)
    (batch / f"blob-{torn_sha}").write_bytes(b"the fu")  # torn intent
    dest = root / "archive" / "blobs" / moved_sha[:2] / moved_sha
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(moved)
    dest.chmod(0o444)
    with Store(root) as store:
        assert any("adopted blob" in a for a in store.recovered)
        assert store.has_blob(moved_sha) and store.has_blob(staged_sha)
        assert not store.has_blob(torn_sha)
        assert not batch.parent.exists()
        assert store.verify(deep=True)["ok"]
        # adopted blobs are unreferenced: a gc with no grace takes them, cleanly
        store.gc(grace_seconds=0)
        assert store.stats()["blob_count"] == 0
        assert store.verify(deep=True)["ok"]


def test_manifest_bytes_are_plain_sorted_json_one_file_per_line() -> None:
    import json

    from runicorn.store.tree_format import TreeEntry, build_manifest, compute_tree_id, manifest_bytes

    entries = {
        "b/x.txt": TreeEntry("c" * 64, "100644", 3),
        'a \u00e9"q': TreeEntry("d" * 64, "120000", 1),
        "run.sh": TreeEntry("e" * 64, "100755", 0),
    }
    manifest = build_manifest(compute_tree_id(entries), entries, source="/x")
    data = manifest_bytes(manifest)
    assert json.loads(data) == manifest
    text = data.decode()
    assert text.endswith("}\n") and list(json.loads(data)) == sorted(manifest)
    for path, entry in manifest["files"].items():
        line = f"  {json.dumps(path, ensure_ascii=False)}: {json.dumps(entry, sort_keys=True)}"
        assert line in text.splitlines() or line + "," in text.splitlines()


def test_wrong_size_blob_is_repaired_by_ingesting_the_content_again(tmp_path: Path) -> None:
    files = _files(tmp_path / "src", [3000])
    with Store(tmp_path / "store") as store:
        (info,) = store.ingest_files(files)
        path = store.blob_path(info.sha256)
        path.chmod(0o644)
        path.write_bytes(b"truncated")  # damaged: the index still says 3000 bytes
        path.chmod(0o444)
        (again,) = store.ingest_files(files)
        assert again == info
        assert path.read_bytes() == files[0].read_bytes()
        assert list(store.quarantine_dir.iterdir()), "the damaged file is moved aside, not lost"


def test_blobs_are_read_only_for_all_whatever_the_umask(tmp_path: Path) -> None:
    import subprocess
    import sys

    src = _files(tmp_path / "src", [10, 2 << 20])
    script = (
        "import os, sys; os.umask(0o077)\n"
        "from runicorn.store import Store\n"
        "with Store(sys.argv[1]) as s:\n"
        "    for i in s.ingest_files(sys.argv[2:]):\n"
        "        print(oct(s.blob_path(i.sha256).stat().st_mode & 0o777))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store"), *map(str, src)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["0o444", "0o444"]


def test_dead_writers_journal_never_adopts_a_damaged_blob(tmp_path: Path) -> None:
    """A journal line that is not a hash is skipped; a listed blob whose bytes do not
    hash to its name is quarantined, not indexed."""
    root = tmp_path / "store"
    Store(root).close()
    sha = hashlib.sha256(b"the real content").hexdigest()
    batch = root / "archive" / "tmp" / "w-999998-deadbeef0001" / "b-3"
    batch.mkdir(parents=True)
    (batch.parent / "lock").write_text("")
    (batch / JOURNAL).write_text(f"not-a-hash\n{sha}\n{sha[:20]}")  # torn last line
    dest = root / "archive" / "blobs" / sha[:2] / sha
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(b"damaged bytes")
    with Store(root) as store:
        assert any("quarantined" in a for a in store.recovered)
        assert not store.has_blob(sha) and not dest.exists()
        assert [p.read_bytes() for p in store.quarantine_dir.iterdir()] == [b"damaged bytes"]
        assert store.verify(deep=True)["ok"]


def test_a_small_batch_fsyncs_its_own_files_and_a_large_one_syncs_the_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syncfs waits for every dirty page of the filesystem, another process's included:
    a batch of a few files makes exactly its own files and folders durable instead.  Small
    blobs are written at their final names: each file's bytes, then its folder, and no
    rename; a larger batch takes one syncfs."""
    import runicorn.fsutil
    import runicorn.store.blobs
    from runicorn.fsutil import FEW_FILES

    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, runicorn.fsutil.rename_noreplace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src: str, dst: str) -> bool:
        events.append(("rename", str(dst)))
        return real_rename(src, dst)

    def syncfs(path: Path) -> None:
        if threading.current_thread().name != "runicorn-syncfs":  # not the flush-ahead
            events.append(("syncfs", str(path)))

    for module in (runicorn.fsutil, runicorn.store.blobs):
        monkeypatch.setattr(module, "syncfs", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(runicorn.store.blobs, "rename_noreplace", rename)
    with Store(tmp_path / "store") as store:
        store.writer_dir()
        few = _files(tmp_path / "few", [100 + i for i in range(FEW_FILES)])
        infos = store.ingest_files(few)
        assert not [e for e in events if e[0] in ("syncfs", "rename")], events
        blobs = os.path.realpath(store.blobs_dir)
        assert ("fsync", blobs) in events  # its new prefix folders are named in blobs/
        for info in infos:
            placed = f"{blobs}/{info.sha256[:2]}/{info.sha256}"
            order = [e for e in events if e[1] in (placed, f"{blobs}/{info.sha256[:2]}")]
            # the file's bytes, then the folder naming it
            kinds = [kind for i, (kind, _) in enumerate(order) if i == 0 or order[i - 1] != order[i]]
            assert order[0] == ("fsync", placed) and kinds == ["fsync", "fsync"], order
        events.clear()
        many = _files(tmp_path / "many", [100 + i for i in range(FEW_FILES + 1)])
        store.ingest_files(many)
        assert [kind for kind, _ in events if kind in ("syncfs", "rename")] == ["syncfs"]
        for info in store.ingest_files(few + many):  # all stored, nothing written twice
            assert store.blob_path(info.sha256).is_file()


# A writer that has written its batch's small blobs at their final names, then waits to
# be killed before the commit: the situation recovery must finish.
_KILLED_MID_BATCH = """
import os, sys, time
from pathlib import Path
from runicorn.store import Store
from runicorn.store.ingest import BlobBatch
store = Store(Path(sys.argv[1]))
batch = BlobBatch(store)
for p in sorted(Path(sys.argv[2]).iterdir()):
    batch.add_file(str(p))
batch._write_pending()  # written in place, journal-listed, no row yet
torn = sorted(batch.direct)[0]
os.chmod(store.blob_path(torn), 0o644)
store.blob_path(torn).write_bytes(b"torn")  # as a crash in the middle of its write leaves it
Path(sys.argv[3] + ".part").write_text(torn)
os.rename(sys.argv[3] + ".part", sys.argv[3])  # whole when it appears: the parent reads it at once
time.sleep(600)
"""


def test_a_writer_killed_after_writing_blobs_in_place_is_recovered(tmp_path: Path) -> None:
    """Small blobs are written at their final names before their rows exist.  A writer
    SIGKILLed there leaves files no row names; the batch journal names them, so the next
    opener adopts the whole ones (re-hashed) and sets the torn one aside; nothing stays
    unindexed, and the content can be stored again."""
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "store"
    Store(root).close()
    src = tmp_path / "src"
    files = _files(src, [10 + i for i in range(20)])
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_BATCH, str(root), str(src), str(marker)], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
        assert time.monotonic() < deadline, "the child never wrote its batch"
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    torn = marker.read_text()
    shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    on_disk = {p.name for p in (root / "archive" / "blobs").glob("*/*")}
    assert shas <= on_disk, "the kill came after the blobs were written in place"
    with Store(root) as store:
        assert store.stats()["blob_count"] == len(shas) - 1
        assert not store.has_blob(torn), store.recovered
        assert [s for s in shas - {torn} if not store.has_blob(s)] == [], store.recovered
        assert [p.read_bytes() for p in store.quarantine_dir.iterdir()] == [b"torn"]
        assert store.verify(deep=True)["ok"]
        assert not list(store.tmp_dir.glob("w-*/b-*"))
        store.ingest_files(files)  # the torn one is written again
        assert store.has_blob(torn) and store.verify(deep=True)["ok"]


def test_an_unindexed_file_at_a_blobs_name_is_trusted_only_for_its_bytes(tmp_path: Path) -> None:
    """A file at a blob's final name with no index row (another writer's, not committed;
    a leftover) is relied on only when its bytes hash to its name: one of the right size
    but other bytes is set aside and replaced, whichever way the blob arrives."""
    content = b"the content of the blob\n"
    sha = hashlib.sha256(content).hexdigest()
    for way in ("bytes", "batch-of-one", "large-batch"):
        root = tmp_path / way
        with Store(root) as store:
            dest = store.blob_path(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(b"X" * len(content))  # same size, other bytes
            if way == "bytes":
                store.ingest_bytes(content)
            else:
                src = tmp_path / f"src-{way}"
                src.mkdir()
                (src / "f").write_bytes(content)
                extra = _files(src / "more", [3 + i for i in range(20)]) if way == "large-batch" else []
                store.ingest_files([src / "f", *extra])
            assert store.read_blob(sha) == content
            assert [p.read_bytes() for p in store.quarantine_dir.iterdir()] == [b"X" * len(content)]
            assert store.verify(deep=True)["ok"]
        with Store(tmp_path / f"{way}-good") as store:
            dest = store.blob_path(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(content)  # the right bytes: used as it is
            before = dest.stat().st_ino
            store.ingest_bytes(content)
            assert dest.stat().st_ino == before and not store.quarantine_dir.exists()
            assert store.verify(deep=True)["ok"]


@pytest.mark.parametrize("count", [12, 5])  # one syncfs; each file fsynced (a few)
def test_a_blob_written_in_place_that_vanishes_before_the_commit_is_not_indexed(tmp_path: Path, count: int) -> None:
    """Between writing a small blob at its final name and writing its row, the file is
    removed (by hand, or damage): the commit refuses the batch, naming the file, and
    indexes none of it; the store stays consistent and the content can be stored again."""
    from runicorn.errors import RunicornError

    files = _files(tmp_path / "src", [5 + i for i in range(count)])
    with Store(tmp_path / "store") as store:
        batch, shas = _written_in_place(store, files)
        gone = shas[3]
        store.blob_path(gone).unlink()
        with pytest.raises(RunicornError, match=f"{gone}: the blob file vanished"):
            batch.commit()
        assert store.stats()["blob_count"] == 0
    with Store(tmp_path / "store") as store:  # the batch left to recovery: whole files adopted
        assert not store.has_blob(gone) and store.stats()["blob_count"] == len(files) - 1
        assert store.verify(deep=True)["ok"]
        store.ingest_files(files)
        assert store.has_blob(gone) and store.verify(deep=True)["ok"]


def test_verify_does_not_report_a_live_writers_uncommitted_blobs(tmp_path: Path) -> None:
    """While a batch is between writing its blobs in place and its commit, ``verify`` (in
    another process) does not count them as unindexed strays: the live writer's journal
    names them."""
    import subprocess
    import sys
    import time

    root = tmp_path / "store"
    Store(root).close()
    src = tmp_path / "src"
    _files(src, [10 + i for i in range(5)])
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_BATCH, str(root), str(src), str(marker)], stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with Store(root) as store:
            report = store.verify()
            assert not [p for p in report["problems"] if p["kind"] == "unindexed_blob"], report["problems"]
    finally:
        child.kill()
        child.wait()


def test_verify_does_not_report_blobs_committed_while_it_lists_the_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """verify reads the index, then lists ``blobs/``: a writer (another process's store)
    that commits in between leaves files the first read did not name.  They are read
    again before being reported, so only a file still without a row is a stray."""
    import runicorn.store.verify as verify_module

    root = tmp_path / "store"
    with Store(root) as store:
        store.ingest_bytes(b"there before")
        store.release_holds()
    real_iter = verify_module._iter_blob_files
    other = tmp_path / "other-src"
    files = _files(other, [7 + i for i in range(30)])

    def listing_while_a_writer_commits(store: Store):  # type: ignore[no-untyped-def]
        with Store(root) as writer:  # a second handle: its own writer directory and lock
            writer.ingest_files(files)
            writer.release_holds()
        return real_iter(store)

    monkeypatch.setattr(verify_module, "_iter_blob_files", listing_while_a_writer_commits)
    with Store(root) as store:
        stray = store.blob_path(hashlib.sha256(b"a stray").hexdigest())
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"a stray")
        report = store.verify()
        unindexed = [p for p in report["problems"] if p["kind"] == "unindexed_blob"]
        assert [p["id"] for p in unindexed] == [stray.name], report["problems"]


def test_gc_does_not_collect_a_live_batchs_blob_another_writer_adopted(tmp_path: Path) -> None:
    """A batch writes blobs in place; before it commits, another writer stores the same
    content, finds those files and adopts them (rows), then lets them go.  A gc then must
    not collect them: the files are the batch's, which commits them afterwards."""

    root = tmp_path / "store"
    files = _files(tmp_path / "src", [40 + i for i in range(6)])
    with Store(root) as store:
        batch, shas = _written_in_place(store, files)
        assert len(shas) == len(files)
        with Store(root) as other:
            for p in files:
                other.ingest_bytes(p.read_bytes())
        with Store(root) as other:
            report = other.gc(grace_seconds=0)
            assert report["blobs_deleted"] == 0, report
        assert all(store.blob_path(s).exists() for s in shas)
        batch.commit()
        assert all(store.has_blob(s) for s in shas)
        assert store.verify(deep=True)["ok"]


def test_gc_does_not_unlink_a_blob_written_in_place_after_its_journal(tmp_path: Path) -> None:
    """A gc journals a blob whose file is gone before its unlinks reach it (another gc
    removed it, or damage); a batch then writes that content in place again.  The gc's
    unlink of the name must spare the new file: it is not the one gc doomed."""
    from runicorn.store.gc import PlannedBlobs, execute_gc, unlink_collected

    root = tmp_path / "store"
    (src,) = _files(tmp_path / "src", [300])
    with Store(root) as store:
        info = store.ingest_bytes(src.read_bytes())
    sha, size = info.sha256, info.size
    with Store(root) as gcer:
        with gcer.index.write() as c:
            journal, dead = execute_gc(gcer, c, [], PlannedBlobs([(sha, size)]))
        assert journal is not None and dead.names() == [sha]
        gcer.blob_path(sha).unlink()
        with Store(root) as store:
            batch, shas = _written_in_place(store, [src])
            assert shas == [sha]
            unlink_collected(gcer, journal, dead.batches())
            assert store.blob_path(sha).exists()
            batch.commit()
            assert store.has_blob(sha) and store.verify(deep=True)["ok"]


def test_a_repair_leaves_a_live_batchs_uncommitted_blobs_alone(tmp_path: Path) -> None:
    """``verify --repair`` while a batch sits between writing blobs in place and its
    commit: it neither adopts them (rows no hold protects) nor sets aside one still being
    written (here: shorter than its content, as in the middle of its write)."""

    root = tmp_path / "store"
    files = _files(tmp_path / "src", [50 + i for i in range(6)])
    with Store(root) as store:
        batch, shas = _written_in_place(store, files)
        half = store.blob_path(shas[0])
        os.truncate(half, 10)  # as if its write had not finished
        with Store(root) as other:
            other.rebuild_index()
            assert not any(other.has_blob(s) for s in shas)
            assert not (other.quarantine_dir.exists() and any(other.quarantine_dir.iterdir()))
        assert all(store.blob_path(s).exists() for s in shas)
        half.write_bytes(next(p.read_bytes() for p in files if hashlib.sha256(p.read_bytes()).hexdigest() == shas[0]))
        batch.commit()
        assert all(store.has_blob(s) for s in shas)
        assert store.verify(deep=True)["ok"]


def test_blobs_adopted_by_recovery_or_a_repair_are_made_durable_before_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch stopped after writing in place (an error, Ctrl-C) never reached its sync:
    the recovery that adopts its files, and a repair adopting unindexed files, make them
    durable before a row names them (else a power cut could leave rows naming empty
    files)."""
    import runicorn.store.ingest as ingest_module  # (both adopt through its sync_adopted_blobs)
    from runicorn.fsutil import sync_written

    synced: list[set[str]] = []

    def recording(root, files=(), dirs=()):  # type: ignore[no-untyped-def]
        synced.append({os.fspath(f) for f in files})
        sync_written(root, files, dirs)

    monkeypatch.setattr(ingest_module, "sync_written", recording)
    root = tmp_path / "store"
    files = _files(tmp_path / "src", [60 + i for i in range(5)])
    with Store(root) as store:
        batch, shas = _written_in_place(store, files)
        synced.clear()
        batch.discard()  # as after an error: the journal stays for the recovery at close
    with Store(root) as store:
        assert all(store.has_blob(s) for s in shas)
        assert {os.fspath(store.blob_path(s)) for s in shas} in synced, synced
        stray = b"adopted by a repair"
        path = store.blob_path(hashlib.sha256(stray).hexdigest())
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(stray)
        synced.clear()
        store.rebuild_index()
        assert store.has_blob(path.name)
        assert {os.fspath(path)} in synced, synced


def test_a_file_a_live_batch_is_writing_is_not_set_aside_as_damaged(tmp_path: Path) -> None:
    """A live batch writes in place a blob whose file was lost (it has a row) and a new
    one; caught in the middle of those writes (here: cut short), neither is quarantined,
    by a repair or by the recovery of a dead writer whose journal named the new one: both
    are left to the batch, which commits them whole."""
    root = tmp_path / "store"
    lost_src, new_src = _files(tmp_path / "src", [500, 600])
    with Store(root) as store:
        lost = store.ingest_files([lost_src])[0].sha256
        store.release_holds()
        store.blob_path(lost).unlink()
    new = hashlib.sha256(new_src.read_bytes()).hexdigest()
    with Store(root) as store:
        batch, shas = _written_in_place(store, [lost_src, new_src])
        assert shas == sorted([lost, new])
        for sha in shas:
            os.truncate(store.blob_path(sha), 100)  # as if its write had not finished
        # A dead writer's batch that had named the new blob.
        dead = store.tmp_dir / "w-dead-0"
        (dead / "b-0").mkdir(parents=True)
        (dead / "lock").touch()
        (dead / "b-0" / JOURNAL).write_text(new + "\n")
        with Store(root) as other:  # opening recovers the dead writer
            assert not dead.exists()
            other.rebuild_index()
            assert not (other.quarantine_dir.exists() and any(other.quarantine_dir.iterdir()))
        for sha, src in ((lost, lost_src), (new, new_src)):
            path = store.blob_path(sha)
            assert path.stat().st_size == 100
            os.chmod(path, 0o644)
            path.write_bytes(src.read_bytes())  # the write finishes
            os.chmod(path, 0o444)
        batch.commit()
        assert store.has_blob(new) and store.verify(deep=True)["ok"]
