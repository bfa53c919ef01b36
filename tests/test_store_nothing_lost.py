"""The index, its rebuild, gc and repair never destroy what a ref file, a live writer's
hold or a damaged-but-meaningful file protects (BRIEF section 9.2 and 9.3)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from runicorn.errors import ArtifactError, StoreIndexError
from runicorn.store import Store


def cli(root: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(root), *args], capture_output=True, text=True, timeout=300
    )
    if check is not None:
        assert proc.returncode == check, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def workspace(tmp_path: Path, name: str = "src", n: int = 5) -> Path:
    src = tmp_path / name
    src.mkdir()
    for i in range(n):
        (src / f"f{i}.txt").write_bytes(f"{name} file {i}\n".encode() * 200)
    return src


def same_bytes(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all((a / f).read_bytes() == (b / f).read_bytes() for f in files_a)


def pinned(root: Path, tmp_path: Path, name: str = "important") -> tuple[Path, str]:
    src = workspace(tmp_path)
    with Store(root) as s:
        tree = s.ingest_directory(src)
        s.pin(tree, name)
    return src, tree


def make_run(root: Path, name: str) -> str:
    code = (
        "import sys, runicorn as rn\n"
        "run = rn.init(path='proj/' + sys.argv[1], storage=sys.argv[2])\n"
        "open(sys.argv[3], 'w').write('weights of ' + sys.argv[1])\n"
        "run.archive(sys.argv[3], role='weights')\n"
        "run.finish()\n"
        "print(run.run_id)\n"
    )
    f = root.parent / f"{name}.bin"
    proc = subprocess.run(
        [sys.executable, "-c", code, name, str(root), str(f)], capture_output=True, text=True, timeout=120, check=True
    )
    return proc.stdout.split()[-1]


# ---------------------------------------------------------------- 1. rebuild vs live writers
def test_rebuild_keeps_a_live_writers_holds(tmp_path: Path) -> None:
    root = tmp_path / "st"
    Store(root).close()
    src = workspace(tmp_path)
    writer = Store(root)  # a live writer: its staging directory is locked
    tree = writer.ingest_directory(src)  # held, not yet named by a ref
    other = Store(root)
    other.rebuild_index()
    assert other.gc(grace_seconds=0)["trees_deleted"] == 0
    other.close()
    writer.pin(tree, "late")  # on the old rebuild: "tree ... is not in the store"
    writer.close()
    cli(root, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")


PAUSED_WRITER = """
import sys
from pathlib import Path
import runicorn.store.trees as st
from runicorn.store import Store

root, src = Path(sys.argv[1]), Path(sys.argv[2])
real = st.fsync_dir
def fsync_dir(path):
    real(path)
    if Path(path).parent == root / "archive" / "manifests":
        # the manifest is published; the transaction that indexes it is still open
        print("paused", flush=True)
        sys.stdin.readline()
st.fsync_dir = fsync_dir
s = Store(root)
tree = s.ingest_directory(src)
print(tree, flush=True)
sys.stdin.readline()
s.pin(tree, "late")
s.close()
print("pinned", flush=True)
"""


def test_delete_run_while_a_writer_is_between_a_file_and_its_commit(tmp_path: Path) -> None:
    root = tmp_path / "st"
    run_id = make_run(root, "doomed")
    src = workspace(tmp_path)
    writer = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WRITER, str(root), str(src)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdin is not None
    assert writer.stdout.readline().strip() == "paused"
    deleter = subprocess.Popen(
        [sys.executable, "-m", "runicorn", "--storage", str(root), "delete-run", run_id, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deleter.wait(timeout=3)  # the old code reads the half-written state here and rebuilds
    except subprocess.TimeoutExpired:
        pass  # waits for the writer's COMMIT
    writer.stdin.write("\n")
    writer.stdin.flush()
    tree = writer.stdout.readline().strip()
    out, err = deleter.communicate(timeout=120)
    assert deleter.returncode == 0, err
    assert "rebuilt" not in out, out
    cli(root, "gc", "--grace", "0")
    writer.stdin.write("\n")
    writer.stdin.flush()
    rest, err = writer.communicate(timeout=120)
    assert writer.returncode == 0 and "pinned" in rest, err
    cli(root, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout


# ---------------------------------------------------------------- 2. gc vs ref files on disk
def test_gc_never_deletes_what_a_ref_file_names_when_the_wal_is_lost(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src = workspace(tmp_path)
    live = Store(root)
    tree = live.ingest_directory(src)
    live.pin(tree, "important")
    live.unpin("important")
    live.index.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    live.pin(tree, "important")  # only in the WAL so far
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("*-wal", "*-shm", "tmp"))
    live.close()
    assert (copy / "archive/refs/pin/important.json").exists()
    proc = cli(copy, "gc", "--grace", "0", check=1)
    assert "gc stopped, nothing was deleted" in proc.stderr and "verify --repair" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    with Store(copy) as s:
        with pytest.raises(StoreIndexError, match="ref"):
            s.gc(grace_seconds=0, dry_run=True)
    cli(copy, "verify", "--repair", check=None)
    cli(copy, "gc", "--grace", "0")
    cli(copy, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")
    with Store(copy) as s:
        assert [r.name for r in s.list_refs("pin")] == ["important"]


# ---------------------------------------------------------------- 3. an index without schema
@pytest.mark.parametrize("damage", ["zero-length", "no-tables"])
def test_schema_less_index_is_rebuilt_not_adopted_as_empty(tmp_path: Path, damage: str) -> None:
    root = tmp_path / "st"
    src, tree = pinned(root, tmp_path)
    index = root / "archive" / "index.sqlite3"
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    if damage == "zero-length":
        index.write_bytes(b"")
    else:
        index.unlink()
        import apsw

        apsw.Connection(str(index)).close()  # a valid database with nothing in it
    with Store(root) as s:
        assert [r.tree for r in s.list_refs("pin")] == [tree]
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 0
        assert s.verify(deep=True)["ok"]
    cli(root, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")


# ---------------------------------------------------------------- 4. repair never amplifies damage
def test_flipped_byte_in_a_pinned_manifest_then_repair_then_gc(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src, tree = pinned(root, tmp_path)
    manifest = root / "archive" / "manifests" / tree[:2] / f"{tree}.json"
    os.chmod(manifest, 0o644)
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0x20
    manifest.write_bytes(bytes(data))
    os.chmod(manifest, 0o444)
    proc = cli(root, "verify", "--repair")
    assert "written again from the index" in proc.stdout
    gc = cli(root, "gc", "--grace", "0")
    assert "deleted 0 tree(s) and 0 blob(s)" in gc.stdout
    cli(root, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout
    with Store(root) as s:
        assert any("corrupt" in p.name for p in s.quarantine_dir.iterdir()), "the damaged copy is kept"


def test_typo_in_a_pin_ref_file_then_delete_run_keeps_the_pinned_tree(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src, tree = pinned(root, tmp_path)
    run_id = make_run(root, "unrelated")
    ref = root / "archive" / "refs" / "pin" / "important.json"
    text = ref.read_text()
    ref.write_text(text.replace('"tree"', '"tree": "x",\n  "tree"', 1).rstrip().rstrip("}") + ",}\n")
    out = cli(root, "delete-run", run_id, "--json").stdout
    assert '"success": true' in out
    assert ref.exists(), "a damaged ref file stays where a person can fix it"
    gc = cli(root, "gc", "--grace", "0")
    assert "important.json: damaged ref file" in gc.stderr
    cli(root, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")
    repaired = cli(root, "verify", "--repair", check=1)  # the damaged file is still there
    assert "kept in place" in repaired.stdout
    cli(root, "restore", tree, str(tmp_path / "out2"))


def test_ref_files_that_are_a_fifo_a_folder_or_large_neither_hang_nor_lose_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src, tree = pinned(root, tmp_path)
    with Store(root) as s:
        s.pin(tree, "big", meta={"note": "x" * 200_000})  # a ref file of several reads
    pins = root / "archive" / "refs" / "pin"
    assert (pins / "big.json").stat().st_size > 200_000
    os.mkfifo(pins / "pipe.json")  # reading it must not wait for a writer
    (pins / "folder.json").mkdir()
    gc = cli(root, "gc", "--grace", "0", check=1)
    assert "pipe.json: damaged ref file the index has no copy of" in gc.stderr
    assert "nothing was deleted" in gc.stderr
    report = cli(root, "verify", "--json", check=1).stdout
    assert "pipe.json is not a valid ref file" in report and "folder.json is not a valid ref file" in report
    assert "big.json" not in report  # read whole and found equal to its row
    (pins / "pipe.json").unlink()
    (pins / "folder.json").rmdir()
    cli(root, "unpin", "important")
    assert "deleted 0 tree(s)" in cli(root, "gc", "--grace", "0").stdout  # "big" still keeps it
    cli(root, "restore", tree, str(tmp_path / "out"))
    assert same_bytes(src, tmp_path / "out")


def test_damaged_manifest_without_an_index_copy_keeps_every_blob(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src, tree = pinned(root, tmp_path)
    manifest = root / "archive" / "manifests" / tree[:2] / f"{tree}.json"
    os.chmod(manifest, 0o644)
    manifest.write_bytes(manifest.read_bytes()[:-40])  # torn
    (root / "archive" / "index.sqlite3").write_bytes(b"")  # and the index lost
    for suffix in ("-wal", "-shm"):
        Path(str(root / "archive" / "index.sqlite3") + suffix).unlink(missing_ok=True)
    blobs = sorted(p for p in (root / "archive" / "blobs").rglob("*") if p.is_file())
    assert len(blobs) == 6  # five files and the tree's one page
    gc = cli(root, "gc", "--grace", "0")
    assert "damaged manifest set aside" in gc.stderr and "collects no blob" in gc.stderr
    assert "deleted 0 tree(s) and 0 blob(s)" in gc.stdout
    assert all(p.exists() for p in blobs)
    kept = [p for p in (root / "archive" / "quarantine").iterdir() if "damaged-manifest" in p.name]
    assert len(kept) == 1, "the damaged manifest waits in quarantine for a person"
    repaired = cli(root, "verify", "--repair", check=1)
    assert "dangling_ref" in repaired.stdout  # the pin names a tree no manifest describes
    kept[0].unlink()  # the person decided
    cli(root, "unpin", "important")
    cli(root, "gc", "--grace", "0")
    assert not any(p.exists() for p in blobs)


def test_manifest_with_an_unstorable_path_keeps_the_blobs_it_names(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        keep = s.ingest_bytes(b"named by the damaged manifest")
        other = s.ingest_bytes(b"named by nothing")
        bad = s.manifest_path("ab" * 32)
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text('{"files": {"x": {"sha256": "%s"}}, "format": "broken"}' % keep.sha256)
    cli(root, "verify", "--repair")
    gc = cli(root, "gc", "--grace", "0")
    assert "gc keeps the 1 blob(s) it names" in gc.stderr
    with Store(root) as s:
        assert s.blob_path(keep.sha256).exists() and not s.blob_path(other.sha256).exists()


# ---------------------------------------------------------------- 5. holds belong to the operation
def test_two_threads_ingesting_one_blob_keep_each_others_hold(tmp_path: Path) -> None:
    root = tmp_path / "st"
    s = Store(root)
    first_done = threading.Event()
    second_ingested = threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        second_ingested.wait(30)
        info = s.ingest_bytes(b"shared weights")
        s.put_tree({"a.bin": (info.sha256, "100644", info.size)}, ref=("pin", "first"))
        s.unpin("first")  # its tree is garbage now
        first_done.set()

    def second() -> None:
        try:
            info = s.ingest_bytes(b"shared weights")
            second_ingested.set()
            first_done.wait(30)
            with Store(root) as collector:
                collector.gc(grace_seconds=0)
            s.put_tree({"b.bin": (info.sha256, "100644", info.size)}, ref=("pin", "second"))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert s.verify(deep=True)["ok"]
    s.close()


def test_failed_extraction_keeps_another_callers_hold(tmp_path: Path) -> None:
    from runicorn.artifacts.extract import extract_into_store

    root = tmp_path / "st"
    s = Store(root)
    (tmp_path / "a.bin").write_bytes(b"A" * 5000)
    (tmp_path / "b.bin").write_bytes(os.urandom(200_000))
    mine = s.ingest_file(tmp_path / "a.bin")  # another operation's blob, not yet in a tree
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "a.bin", "a.bin")
        tar.add(tmp_path / "b.bin", "b.bin")
    archive.write_bytes(archive.read_bytes()[:100_000])  # truncated inside b.bin
    with pytest.raises(ArtifactError):
        extract_into_store(s, archive)
    with Store(root) as collector:
        collector.gc(grace_seconds=0)
    tree = s.put_tree({"a.bin": (mine.sha256, "100644", mine.size)}, ref=("pin", "mine"))
    assert s.verify(deep=True)["ok"] and s.has_tree(tree)
    s.close()


def test_a_tree_resolved_for_binding_is_held_until_its_ref_is_set(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src = workspace(tmp_path)
    with Store(root) as s:
        tree = s.ingest_directory(src)
        s.pin(tree)
        s.unpin(tree)  # garbage now: only what resolves it for a ref may keep it
    binder = Store(root)
    assert binder.resolve_tree(tree[:10], hold=True) == tree
    with Store(root) as collector:
        assert collector.gc(grace_seconds=0)["trees_deleted"] == 0  # gc between resolve and bind
    binder.set_ref("binding", "demo", tree)  # not "tree ... is not in the store"
    assert binder.index.scalar("SELECT COUNT(*) FROM holds") == 0, "the ref ended the hold"
    binder.close()


# ---------------------------------------------------------------- 12. repair never re-adopts a bad blob
def test_repair_never_readopts_a_grown_blob(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src, tree = pinned(root, tmp_path)
    out = tmp_path / "out"
    cli(root, "restore", tree, str(out), "--link", "hardlink")
    victim = out / "f1.txt"
    os.chmod(victim, 0o644)  # what a user does to edit a hard-linked restore
    with open(victim, "ab") as f:
        f.write(b"appended\n")
    proc = cli(root, "verify", "--repair", check=1)
    assert "0 problem(s)" not in proc.stdout.splitlines()[-1]
    assert "tree_missing_blob" in proc.stdout
    deep = cli(root, "verify", "--deep", check=1)
    assert "tree_missing_blob" in deep.stdout
    sha = hashlib.sha256((src / "f1.txt").read_bytes()).hexdigest()
    with Store(root) as s:
        assert not s.blob_path(sha).exists() and not s.has_blob(sha)
        assert s.ingest_file(src / "f1.txt").sha256 == sha  # healed from the original
        assert s.verify(deep=True)["ok"]


def test_repair_never_adopts_an_unindexed_blob_whose_hash_differs(tmp_path: Path) -> None:
    root = tmp_path / "st"
    pinned(root, tmp_path)
    fake = hashlib.sha256(b"what the name promises").hexdigest()
    with Store(root) as s:
        path = s.blob_path(fake)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"something else entirely")
    proc = cli(root, "verify", "--repair")  # not --deep: adoption still checks the hash
    assert "quarantined 1 file(s)" in proc.stdout
    with Store(root) as s:
        assert not s.has_blob(fake) and not path.exists()
        assert s.verify(deep=True)["ok"]


def test_releasing_holds_drops_only_the_rows_no_other_operation_still_holds(tmp_path: Path) -> None:
    """The writer's hold rows always match what its operations still hold: a release
    with another operation's holds left deletes row by row; the last one empties them."""
    s = Store(tmp_path / "st")
    writer = s.writer_dir().name

    def rows() -> set[str]:
        with s.index.read() as c:
            return {r[0] for r in c.execute("SELECT sha256 FROM holds WHERE writer = ?", (writer,))}

    a, b, c_, t = (s.ingest_bytes(x).sha256 for x in (b"a" * 10, b"b" * 10, b"c" * 10, b"t" * 10))
    s.release_holds()
    with s.index.write() as c:
        s.holds.acquire(c, [a, b])  # one operation
        s.holds.acquire(c, [b, c_])  # another, sharing b
        s.holds.acquire(c, [t])  # a third (a tree held until its ref is set)
    assert rows() == {a, b, c_, t}
    with s.index.write() as c:
        s.holds.release(c, {a, b})  # b is still held by the second
    assert rows() == {b, c_, t}
    with s.index.write() as c:
        s.holds.release(c, {b, c_})
    assert rows() == {t}
    with s.index.write() as c:
        s.holds.release(c, {t})
    assert rows() == set() and s.index.scalar("SELECT COUNT(*) FROM holds") == 0
    s.close()


def test_a_lease_goes_whole_and_leaves_other_operations_holds(tmp_path: Path) -> None:
    """Everything held under a lease goes in one release; an object another lease (or an
    operation without one) also holds stays held, and gc keeps it."""
    s = Store(tmp_path / "st")
    a, b, c_ = (s.ingest_bytes(x).sha256 for x in (b"a" * 10, b"b" * 10, b"c" * 10))
    s.release_holds()
    snapshot, other = s.new_lease(), s.new_lease()
    assert snapshot != other
    with s.index.write() as c:
        s.holds.acquire(c, [a, b], snapshot)
        s.holds.acquire(c, [c_], snapshot)  # a second acquisition under the same lease
        s.holds.acquire(c, [a], snapshot)  # again: still one hold of this lease
        s.holds.acquire(c, [b], other)
        s.holds.acquire(c, [c_])  # an operation of its own (a fresh lease)
    assert s.index.scalar("SELECT COUNT(*) FROM holds") == 5
    s.release_holds(snapshot)
    held = {r[0] for r in s.index.query("SELECT sha256 FROM holds")}
    assert held == {b, c_}
    assert s.gc(grace_seconds=0)["blobs_deleted"] == 1 and not s.has_blob(a)
    assert s.has_blob(b) and s.has_blob(c_)
    s.release_holds({b, c_})  # one hold each: the last ones
    assert s.index.scalar("SELECT COUNT(*) FROM holds") == 0
    assert s.gc(grace_seconds=0)["blobs_deleted"] == 2
    s.close()
