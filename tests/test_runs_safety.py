"""Run handling safety: summaries, run ids, concurrent naming, deleting runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

import runicorn as rn
from runicorn.assets.cleanup import delete_run_completely
from runicorn.cli import main
from runicorn.errors import RunicornError
from runicorn.runs.index import find_run_dir
from runicorn.store import open_store


class _Scalar:
    """Like a numpy scalar: not JSON itself, but has ``.item()``."""

    def __init__(self, v: float) -> None:
        self.v = v

    def item(self) -> float:
        return self.v


class _FloatSub(float):
    pass


def test_summary_serialises_like_log_and_survives_a_bad_value() -> None:
    run = rn.init(path="safety/summary")
    assert run.summary({"acc": _Scalar(0.5), "loss": _FloatSub(0.25)}) == {"acc": 0.5, "loss": 0.25}
    with pytest.raises(TypeError) as err:
        run.summary({"bad": object(), "acc": 0.9})
    assert isinstance(err.value, RunicornError) and "not JSON serialisable" in str(err.value)
    # nothing of the failed call was kept, and later summaries still work
    assert json.loads((run.run_dir / "summary.json").read_text()) == {"acc": 0.5, "loss": 0.25}
    assert run.summary({"epoch": 3}) == {"acc": 0.5, "loss": 0.25, "epoch": 3}
    assert json.loads((run.run_dir / "summary.json").read_text()) == {"acc": 0.5, "loss": 0.25, "epoch": 3}
    run.finish()


REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, **kw: object) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=str(REPO),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kw,
    )  # type: ignore[call-overload]


def test_run_id_is_unique_across_paths(tmp_path: Path) -> None:
    run1 = rn.init(path="proj/a", run_id="shared-id")
    (tmp_path / "w.bin").write_bytes(b"weights")
    tree = run1.archive(tmp_path / "w.bin", role="model")
    run1.finish()
    with pytest.raises(FileExistsError) as err:
        rn.init(path="proj/b", run_id="shared-id")
    assert str(run1.run_dir) in str(err.value)
    store = open_store()
    assert not (store.root / "proj" / "b" / "runs" / "shared-id").exists()
    assert find_run_dir(store, "shared-id") == run1.run_dir
    assert store.get_ref("run", "shared-id/archive/model/0").tree == tree
    # the refused init changed nothing: the first run is still whole and deletable as before
    r = delete_run_completely("shared-id", store.root, dry_run=True)
    assert r["success"] and r["run_dir"] == str(run1.run_dir) and r["tree_ids"] == [tree]


def test_run_id_taken_by_refs_alone_is_refused(tmp_path: Path) -> None:
    store = open_store()
    (tmp_path / "f.txt").write_text("x")
    tree = store.ingest_directory(tmp_path, source=str(tmp_path))
    store.set_ref("run", "orphan-id/code", tree)
    with pytest.raises(FileExistsError, match="run/orphan-id/code"):
        rn.init(path="proj/c", run_id="orphan-id")
    assert not (store.root / "proj" / "c" / "runs" / "orphan-id").exists()


def test_concurrent_inits_with_one_id_only_one_wins() -> None:
    root = open_store().root
    code = (
        "import sys, runicorn as rn\n"
        "try:\n"
        "    rn.init(path=sys.argv[1], run_id='race-id', storage=sys.argv[2]).finish()\n"
        "except FileExistsError:\n"
        "    sys.exit(3)\n"
    )
    procs = [_python(code, f"race/p{i}", str(root)) for i in range(4)]
    codes = []
    for p in procs:
        out, errout = p.communicate(timeout=120)
        assert p.returncode in (0, 3), errout
        codes.append(p.returncode)
    assert sorted(codes) == [0, 3, 3, 3]
    dirs = [d for d in (root / "race").glob("p*/runs/race-id")]
    assert len(dirs) == 1 and (dirs[0] / "meta.json").is_file()


def test_concurrent_archives_with_one_role_keep_every_tree(tmp_path: Path) -> None:
    run = rn.init(path="safety/archive")
    files = []
    for i in range(8):
        f = tmp_path / f"ckpt{i}.bin"
        f.write_bytes(f"checkpoint {i}".encode())
        files.append(f)
    barrier = threading.Barrier(len(files))

    def archive(f: Path) -> str:
        barrier.wait()
        return run.archive(f, role="ckpt")

    with ThreadPoolExecutor(len(files)) as pool:
        trees = list(pool.map(archive, files))
    store = open_store()
    refs = {r.name: r.tree for r in store.list_refs("run") if r.name.startswith(f"{run.run_id}/archive/ckpt/")}
    assert sorted(refs) == sorted(f"{run.run_id}/archive/ckpt/{n}" for n in range(8))
    assert sorted(refs.values()) == sorted(trees) and len(set(trees)) == 8
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert sorted(a["tree"] for a in meta["archives"]) == sorted(trees)
    run.finish()


def test_concurrent_code_links_each_get_a_ref(tmp_path: Path) -> None:
    store = open_store()
    trees = []
    for i in range(4):
        ws = tmp_path / f"ws{i}"
        ws.mkdir()
        (ws / "a.py").write_text(f"print({i})\n")
        trees.append(store.ingest_directory(ws, source=str(ws)))
        store.pin(trees[-1])
    code = (
        "import sys\n"
        "from runicorn.store import open_store\n"
        "from runicorn.runs.refs import link_code_tree\n"
        "print(link_code_tree(open_store(sys.argv[1]), 'rid', sys.argv[2], source='x'))\n"
    )
    procs = [_python(code, str(store.root), t) for t in trees]
    names = []
    for p in procs:
        out, errout = p.communicate(timeout=120)
        assert p.returncode == 0, errout
        names.append(out.strip())
    assert sorted(names) == ["run/rid/code", "run/rid/code/1", "run/rid/code/2", "run/rid/code/3"]
    got = {store.get_ref("run", n[len("run/") :]).tree for n in names}
    assert got == set(trees)


def test_record_input_and_archive_from_threads_lose_nothing(tmp_path: Path) -> None:
    run = rn.init(path="safety/meta")
    (tmp_path / "f.bin").write_bytes(b"f")
    barrier = threading.Barrier(2)

    def inputs() -> None:
        barrier.wait()
        for i in range(30):
            run.record_input(f"in{i}", "0" * 64, tmp_path)

    def archives() -> None:
        barrier.wait()
        for _ in range(5):
            run.archive(tmp_path / "f.bin", role="out")

    threads = [threading.Thread(target=inputs), threading.Thread(target=archives)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert len(meta["inputs"]) == 30 and len(meta["archives"]) == 5
    run.finish()


def test_run_dir_that_cannot_be_moved_aside_deletes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runicorn.runs.delete as cleanup

    run = rn.init(path="safety/rename")
    (tmp_path / "m.bin").write_bytes(b"model bytes")
    tree = run.archive(tmp_path / "m.bin", role="model")
    run.finish()
    store = open_store()
    real_rename = os.rename

    def failing_rename(src: object, dst: object) -> None:
        if Path(str(src)) == run.run_dir:
            raise PermissionError(13, "Permission denied", str(src))
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(cleanup.os, "rename", failing_rename)
    r = delete_run_completely(run.run_id, store.root)
    assert r["success"] is False and not r["run_dir_deleted"]
    assert "could not move the run directory aside" in r["errors"][0]
    assert r["blobs_deleted"] == 0 and r["manifests_deleted"] == 0
    assert run.run_dir.is_dir() and store.has_tree(tree)
    assert store.get_ref("run", f"{run.run_id}/archive/model/0").tree == tree
    assert store.index.scalar("SELECT run_dir FROM runs WHERE run_id = ?", (run.run_id,)) is not None
    monkeypatch.setattr(cleanup.os, "rename", real_rename)
    r = delete_run_completely(run.run_id, store.root)
    assert r["success"] and r["run_dir_deleted"] and r["tree_ids"] == [tree]
    assert not run.run_dir.exists() and not store.has_tree(tree)
    assert list(run.run_dir.parent.iterdir()) == []
    assert store.index.scalar("SELECT 1 FROM runs WHERE run_id = ?", (run.run_id,)) is None


_LIVE_RUN = (
    "import sys, time, runicorn as rn\n"
    "run = rn.init(path='live/' + sys.argv[2], storage=sys.argv[1])\n"
    "print(run.run_id, flush=True)\n"
    "sys.stdin.read()\n"  # until the test closes stdin or kills us
    "run.log({'x': 1})\n"
)


def _start_live_run(root: Path, name: str) -> "tuple[subprocess.Popen[str], str]":
    proc = _python(_LIVE_RUN, str(root), name, stdin=subprocess.PIPE)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert run_id, proc.stderr.read() if proc.stderr else ""
    return proc, run_id


def test_live_run_is_not_deleted_until_its_process_is_gone() -> None:
    root = open_store().root
    proc, run_id = _start_live_run(root, "a")
    try:
        run_dir = root / "live" / "a" / "runs" / run_id
        for dry in (True, False):
            r = delete_run_completely(run_id, root, dry_run=dry)
            assert r["success"] is False and not r["run_dir_deleted"]
            assert f"still running (pid {proc.pid})" in r["errors"][0] and "pass force=True" in r["errors"][0]
        assert run_dir.is_dir()
        res = CliRunner().invoke(main, ["delete-run", run_id])
        assert res.exit_code == 1 and "still running" in res.output and run_dir.is_dir()
        assert "pass --force" in res.output and "force=True" not in res.output  # each surface, its own flag
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    # the process died without finishing the run: status still says running, yet deletable
    assert json.loads((run_dir / "status.json").read_text())["status"] == "running"
    r = delete_run_completely(run_id, root)
    assert r["success"] and r["run_dir_deleted"] and not run_dir.exists()


def test_force_deletes_a_live_run() -> None:
    root = open_store().root
    proc, run_id = _start_live_run(root, "b")
    try:
        res = CliRunner().invoke(main, ["delete-run", run_id, "--force", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["run_dir_deleted"] is True
        assert not (root / "live" / "b" / "runs" / run_id).exists()
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_finished_run_of_a_live_process_is_deletable() -> None:
    root = open_store().root
    code = (
        "import sys, runicorn as rn\n"
        "run = rn.init(path='live/c', storage=sys.argv[1])\n"
        "run.finish()\n"
        "print(run.run_id, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = _python(code, str(root), stdin=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        r = delete_run_completely(run_id, root)
        assert r["success"] and r["run_dir_deleted"], r["errors"]
    finally:
        proc.kill()
        proc.communicate(timeout=60)


def test_dry_run_matches_real_delete_when_a_writer_holds_the_tree(tmp_path: Path) -> None:
    from runicorn.store import Store
    from runicorn.store.tree_format import parse_manifest

    run = rn.init(path="safety/held")
    (tmp_path / "m.bin").write_bytes(b"held model")
    tree = run.archive(tmp_path / "m.bin", role="model")
    run.finish()
    store = open_store()
    _, parsed = parse_manifest(
        store.manifest_path(tree).read_bytes(), origin=store.manifest_path(tree), load_page=store.load_page
    )
    entries = {p: (e.sha256, e.mode, e.size) for p, e in parsed.items()}
    other = Store(store.root)  # another writer, kept open: it holds the tree it just put
    try:
        assert other.put_tree(entries) == tree
        dry = delete_run_completely(run.run_id, store.root, dry_run=True)
        real = delete_run_completely(run.run_id, store.root)
        for key in (
            "blobs_deleted",
            "manifests_deleted",
            "bytes_freed",
            "orphaned_assets",
            "kept_assets",
            "tree_ids",
            "blob_ids",
        ):
            assert dry[key] == real[key], key
        assert real["success"] and real["tree_ids"] == [] and real["blobs_deleted"] == 0
        assert real["kept_assets"][0]["tree"] == tree and real["kept_assets"][0]["held_by_writer"]
        assert store.has_tree(tree)
    finally:
        other.close()
    assert tree in store.gc(grace_seconds=0)["tree_ids"]


def test_dry_run_says_it_rebuilt_the_index(tmp_path: Path) -> None:
    run = rn.init(path="safety/rebuild")
    (tmp_path / "m.bin").write_bytes(b"bytes")
    run.archive(tmp_path / "m.bin", role="model")
    run.finish()
    store = open_store()
    with store.index.write() as c:
        c.execute("UPDATE blobs SET refcount = refcount + 5")
    dry = delete_run_completely(run.run_id, store.root, dry_run=True)
    assert dry["success"] and any(n.startswith("dry run: index rebuilt") for n in dry["notes"])
    assert run.run_dir.is_dir()


def test_deletion_checks_the_counts_of_what_it_could_free_not_the_whole_store(tmp_path: Path) -> None:
    """The check before a run deletion recounts the run's trees, pages and blobs (its cost
    follows the run, not the store): a wrong count elsewhere is left to `verify`, one
    among the run's blobs still makes it rebuild the index first."""
    runs = []
    for name in ("a", "b", "c"):
        (tmp_path / f"{name}.bin").write_bytes(f"bytes of {name}".encode())
        run = rn.init(path=f"safety/scoped-{name}")
        run.archive(tmp_path / f"{name}.bin", role="model")
        run.finish()
        runs.append(run)
    store = open_store()
    sha = {name: store.ingest_bytes(f"bytes of {name}".encode()).sha256 for name in ("a", "b", "c")}
    # Pinned content beside the runs: each run names a small part of the store, so the
    # recount follows the run (with half the store or more it recounts everything).
    other = {f"f{i}": (store.ingest_bytes(f"other {i}".encode()).sha256, "100644", 7) for i in range(10)}
    store.pin(store.put_tree(other), "other")
    store.release_holds()
    with store.index.write() as c:  # an over-count outside run a: harmless to deleting a
        c.execute("UPDATE blobs SET refcount = refcount + 5 WHERE sha256 = ?", (sha["b"],))
    real = delete_run_completely(runs[0].run_id, store.root)
    assert real["success"] and not real["notes"] and real["blob_ids"] == [sha["a"]]
    assert not store.verify()["ok"]  # still there, for verify to report and repair
    with store.index.write() as c:  # an under-count of run c's own blob: rebuilt first
        c.execute("UPDATE blobs SET refcount = 0 WHERE sha256 = ?", (sha["c"],))
    real = delete_run_completely(runs[2].run_id, store.root)
    assert real["success"] and any(n.startswith("index rebuilt before deleting") for n in real["notes"])
    assert real["blob_ids"] == [sha["c"]]
    assert store.verify()["ok"] and store.has_blob(sha["b"]) and len(store.gc(grace_seconds=0)["blob_ids"]) == 0


def test_deleting_a_run_without_listing_its_blobs_frees_the_same(tmp_path: Path) -> None:
    """``list_blobs=False`` (the CLI's delete-run without ``--json``) returns no names and
    reports, deletes and frees exactly what a listing deletion does, dry run or real."""
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"f{i}").write_text(f"{name} {i}\n")
        run = rn.init(path=f"safety/unlisted-{name}")
        run.archive(tmp_path / name, role="data")
        run.finish()
        runs.append(run)
    store = open_store()
    listed = delete_run_completely(runs[0].run_id, store.root, dry_run=True)
    unlisted = delete_run_completely(runs[0].run_id, store.root, dry_run=True, list_blobs=False)
    assert len(listed["blob_ids"]) == 3 and unlisted["blob_ids"] is None
    same = [k for k in listed if k != "blob_ids"]
    assert [listed[k] for k in same] == [unlisted[k] for k in same]
    real = delete_run_completely(runs[0].run_id, store.root, list_blobs=False)
    assert real["success"] and real["blob_ids"] is None
    assert (real["blobs_deleted"], real["bytes_freed"]) == (3, listed["bytes_freed"])
    assert not any(store.has_blob(b) for b in listed["blob_ids"]) and store.verify()["ok"]
    out = CliRunner().invoke(main, ["delete-run", runs[1].run_id])
    assert out.exit_code == 0 and "3 blobs" in out.output, out.output
    assert delete_run_completely(runs[0].run_id, store.root, list_blobs=False)["blob_ids"] is None  # not found


def test_run_id_of_an_unindexed_run_dir_is_refused() -> None:
    run1 = rn.init(path="proj/x", run_id="legacy-id")
    run1.finish()
    store = open_store()
    with store.index.write() as c:
        c.execute("DELETE FROM runs")  # e.g. a run directory copied in, not indexed yet
    with pytest.raises(FileExistsError, match="legacy-id"):
        rn.init(path="proj/y", run_id="legacy-id")
    assert find_run_dir(store, "legacy-id") == run1.run_dir
