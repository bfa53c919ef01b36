"""Runs: init, logging, context manager, code snapshots, archives, the runs index, deletion."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

import runicorn as rn
from runicorn.assets.cleanup import delete_run_completely
from runicorn.assets.restore import restore_from_manifest
from runicorn.cli import main
from runicorn.store import open_store
from runicorn.store.cache import forget_open_stores

from tests.assets_helpers import tree_files, write


def test_init_layout_log_summary_finish() -> None:
    run = rn.init(path="training/resnet", alias="baseline")
    assert re.fullmatch(r"\d{8}_\d{6}_[0-9a-f]{6}", run.run_id)
    assert run.run_dir == open_store().root / "training" / "resnet" / "runs" / run.run_id
    assert {p.name for p in run.run_dir.iterdir()} == {
        "meta.json",
        "status.json",
        "events.jsonl",
        "summary.json",
        "logs.txt",
    }
    run.log({"loss": 0.5})
    run.log({"loss": 0.25}, step=10)
    run.log({"loss": 0.1})
    assert run.summary({"best": 0.1}) == {"best": 0.1}
    run.summary({"epochs": 3})
    run.finish()
    events = [json.loads(line) for line in (run.run_dir / "events.jsonl").read_text().splitlines()]
    assert [(e["step"], e["loss"]) for e in events] == [(0, 0.5), (10, 0.25), (11, 0.1)]
    assert json.loads((run.run_dir / "summary.json").read_text()) == {"best": 0.1, "epochs": 3}
    assert json.loads((run.run_dir / "status.json").read_text())["status"] == "finished"
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["alias"] == "baseline" and meta["project"] == "training" and meta["name"] == "resnet"
    assert "finished" in (run.run_dir / "logs.txt").read_text()
    assert open_store().index.query("SELECT status FROM runs WHERE run_id = ?", (run.run_id,)) == [("finished",)]


def test_project_name_and_explicit_run_id() -> None:
    run = rn.init(project="vision", name="vit", run_id="20250115_103015_abc123")
    assert run.run_dir.parts[-4:] == ("vision", "vit", "runs", "20250115_103015_abc123")
    with pytest.raises(FileExistsError, match="already exists"):
        rn.init(project="vision", name="vit", run_id="20250115_103015_abc123")
    for bad in ["../x", "a/b"]:
        with pytest.raises(ValueError, match="run id"):
            rn.init(path="p", run_id=bad)
    for bad in ["../up", "/abs", "archive/x", "a/runs/b"]:
        with pytest.raises(ValueError):
            rn.init(path=bad)


def test_context_manager_marks_failure() -> None:
    with pytest.raises(RuntimeError):
        with rn.init(path="p/e") as run:
            run.log({"x": 1})
            raise RuntimeError("boom")
    assert json.loads((run.run_dir / "status.json").read_text())["status"] == "failed"
    with rn.init(path="p/e") as ok:
        pass
    assert json.loads((ok.run_dir / "status.json").read_text())["status"] == "finished"


def test_snapshot_code_and_archive_are_linked(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "train.py", "train")
    write(tmp_path / "model.pth", b"\x00weights")
    write(tmp_path / "outputs" / "a.txt", "a")
    run = rn.init(path="p/e", snapshot_code=True, workspace_root=ws)
    t1 = run.archive(tmp_path / "model.pth", role="model")
    t2 = run.archive(tmp_path / "outputs", role="outputs")
    refs = {r.name: r for r in open_store().list_refs("run")}
    assert set(refs) == {f"{run.run_id}/code", f"{run.run_id}/archive/model/0", f"{run.run_id}/archive/outputs/0"}
    assert refs[f"{run.run_id}/archive/model/0"].tree == t1 and refs[f"{run.run_id}/archive/outputs/0"].tree == t2
    assert refs[f"{run.run_id}/code"].meta["role"] == "code"
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["code_tree"] == refs[f"{run.run_id}/code"].tree
    assert [a["role"] for a in meta["archives"]] == ["model", "outputs"]
    assert open_store().get_manifest(t1)["files"]["model.pth"]["size_bytes"] == 8
    with pytest.raises(FileNotFoundError):
        run.archive(tmp_path / "nope")
    # a seed-style snapshot into the run directory is linked to the run, not pinned
    r = rn.snapshot_workspace(root=ws, out_zip=run.run_dir / "code_snapshot.zip")
    assert r["ref"] == f"run/{run.run_id}/code/1"


def test_runs_table_rebuilt_from_disk() -> None:
    run = rn.init(path="a/b")
    run.finish()
    store = open_store()
    index = store.index_path
    forget_open_stores()
    for suffix in ("", "-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    from runicorn.runs.index import find_run_dir, list_runs

    assert find_run_dir(open_store(), run.run_id) == run.run_dir
    assert open_store().index.query("SELECT run_id, path, status FROM runs") == [(run.run_id, "a/b", "finished")]
    assert [r["run_id"] for r in list_runs(open_store())] == [run.run_id]


def _two_runs_sharing(tmp_path: Path) -> tuple[rn.Run, rn.Run, Path]:
    ws = tmp_path / "ws"
    for i in range(10):
        write(ws / f"shared{i}.py", f"shared {i}\n" * 50)
    write(ws / "config.py", "lr = 1\n")
    run1 = rn.init(path="p/e", snapshot_code=True, workspace_root=ws)
    write(ws / "config.py", "lr = 2\n")
    write(ws / "only2.py", "only in run 2\n")
    run2 = rn.init(path="p/e", snapshot_code=True, workspace_root=ws)
    write(tmp_path / "ckpt.bin", os.urandom(5000))
    run1.archive(tmp_path / "ckpt.bin", role="model")
    run1.finish()
    run2.finish()
    return run1, run2, ws


def test_delete_run_keeps_the_other_run_restorable(tmp_path: Path) -> None:
    run1, run2, ws = _two_runs_sharing(tmp_path)
    store = open_store()
    code2 = store.get_ref("run", f"{run2.run_id}/code").tree
    before = tree_files(ws)
    sibling = run1.run_dir.parent / "empty-folder"
    sibling.mkdir()
    dry = delete_run_completely(run1.run_id, store.root, dry_run=True)
    assert dry["success"] and dry["dry_run"] and run1.run_dir.exists()
    real = delete_run_completely(run1.run_id, store.root)
    for key in (
        "blobs_deleted",
        "manifests_deleted",
        "outputs_deleted",
        "bytes_freed",
        "run_dir_deleted",
        "orphaned_assets",
        "kept_assets",
        "tree_ids",
        "blob_ids",
    ):
        assert dry[key] == real[key], key
    assert real["success"] and real["errors"] == [] and real["run_dir_deleted"]
    assert real["manifests_deleted"] == 2  # its code tree and its archive
    assert real["blobs_deleted"] == 2  # config.py (lr = 1) and ckpt.bin; shared files stay
    assert not run1.run_dir.exists() and run2.run_dir.exists() and sibling.is_dir()
    assert [r for r in store.list_refs("run") if r.name.startswith(run1.run_id)] == []
    res = restore_from_manifest(store.manifest_path(code2), store.blobs_dir, tmp_path / "back")
    assert res["success"]
    assert tree_files(tmp_path / "back") == before
    assert store.verify()["ok"]
    again = delete_run_completely(run1.run_id, store.root)
    assert again["success"] is False and "not found" in again["errors"][0]


def test_shared_tree_is_kept_and_reported(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.py", "same")
    run1 = rn.init(path="p/e", snapshot_code=True, workspace_root=ws)
    run2 = rn.init(path="p/e", snapshot_code=True, workspace_root=ws)
    r = delete_run_completely(run1.run_id, open_store().root)
    assert r["blobs_deleted"] == 0 and r["manifests_deleted"] == 0
    assert r["kept_assets"][0]["shared_with"] == [f"run/{run2.run_id}/code"]
    assert r["orphaned_assets"] == []


def test_damaged_index_rebuilt_before_deleting(tmp_path: Path) -> None:
    run1, run2, ws = _two_runs_sharing(tmp_path)
    store = open_store()
    code2 = store.get_ref("run", f"{run2.run_id}/code").tree
    # Damage the index: forget the other run's ref and its tree's links to blobs, as if lost.
    with store.index.write() as c:
        c.execute("DELETE FROM refs WHERE name LIKE ?", (run2.run_id + "%",))
        c.execute(
            "DELETE FROM page_blobs WHERE page IN (SELECT id FROM pages WHERE page IN "
            "(SELECT value FROM json_each((SELECT pages FROM trees WHERE tree = ?))))",
            (code2,),
        )
    r = delete_run_completely(run1.run_id, store.root)
    assert r["success"] and any("index rebuilt" in n for n in r["notes"])
    res = restore_from_manifest(store.manifest_path(code2), store.blobs_dir, tmp_path / "back")
    assert res["success"] and tree_files(tmp_path / "back") == tree_files(ws)


def test_missing_index_rebuilt_before_deleting(tmp_path: Path) -> None:
    run1, run2, ws = _two_runs_sharing(tmp_path)
    root = open_store().root
    forget_open_stores()
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / "archive" / "index.sqlite3") + suffix).unlink(missing_ok=True)
    r = delete_run_completely(run1.run_id, root)
    assert r["success"] and r["blobs_deleted"] == 2
    store = open_store(root)
    code2 = store.get_ref("run", f"{run2.run_id}/code").tree
    assert restore_from_manifest(store.manifest_path(code2), store.blobs_dir, tmp_path / "back")["success"]
    assert tree_files(tmp_path / "back") == tree_files(ws)


def test_unknown_and_invalid_run_ids() -> None:
    root = open_store().root
    for bad in ["20250101_000000_ffffff", "../etc", ""]:
        r = delete_run_completely(bad, root)
        assert r["success"] is False and "not found" in r["errors"][0]


def test_cli_runs_snapshot_restore_export_delete(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.py", "print(1)\n")
    runner = CliRunner()
    res = runner.invoke(main, ["snapshot", str(ws), "--exclude", "*.log", "--json"])
    assert res.exit_code == 0, res.output
    tree = json.loads(res.output)["tree"]
    res = runner.invoke(main, ["restore", tree[:12], str(tmp_path / "r"), "--link", "hardlink"])
    assert res.exit_code == 0 and (tmp_path / "r" / "a.py").read_text() == "print(1)\n"
    res = runner.invoke(main, ["restore", tree, str(tmp_path / "r")])
    assert res.exit_code == 1 and "not empty" in res.output
    res = runner.invoke(main, ["restore", "deadbeef00", str(tmp_path / "x")])
    assert res.exit_code == 1 and "deadbeef00" in res.output
    res = runner.invoke(main, ["export", tree, str(tmp_path / "e.zip")])
    assert res.exit_code == 0 and (tmp_path / "e.zip").is_file()
    run = rn.init(path="cli/test")
    run.finish()
    res = runner.invoke(main, ["runs", "--json"])
    assert [r["run_id"] for r in json.loads(res.output)] == [run.run_id]
    res = runner.invoke(main, ["delete-run", run.run_id, "--dry-run", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["dry_run"] is True and run.run_dir.exists()
    res = runner.invoke(main, ["delete-run", run.run_id])
    assert res.exit_code == 0 and not run.run_dir.exists()
    res = runner.invoke(main, ["delete-run", run.run_id])
    assert res.exit_code == 1 and "not found" in res.output
    res = runner.invoke(main, ["snapshot", str(ws / "a.py")])
    assert res.exit_code != 0


def test_import_stays_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, runicorn, runicorn.runs; runicorn.init; "
        "print(sorted(m for m in ('click', 'pathspec', 'paramiko', 'tomlkit') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"


def test_cli_filesystem_errors_are_one_line(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.py", "a")
    runner = CliRunner()
    tree = runner.invoke(main, ["snapshot", str(ws)]).output.split()[0]
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = runner.invoke(main, ["restore", tree, str(blocker / "sub" / "target")])
    assert res.exit_code == 1
    assert res.output.startswith("error: ") and "Traceback" not in res.output
    assert str(blocker) in res.output
