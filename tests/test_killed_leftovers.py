"""Killed restores and run deletions leave no hidden folders that nothing cleans
(issue 15, item 8).  Real child processes, killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runicorn.store import Store
from tests.process_support import worker_children

RESTORE_CHILD = r"""
import os, sys, time
from pathlib import Path
from runicorn.assets.restore import restore_from_manifest
manifest, blobs, target, marker = sys.argv[1:5]
def progress(done, total):
    Path(marker).write_text(str(done))
    time.sleep(600)  # killed here, mid-restore
restore_from_manifest(Path(manifest), Path(blobs), Path(target), progress=progress)
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runicorn", *args], capture_output=True, text=True, timeout=300)


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"child exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"child never reached {path}")
        time.sleep(0.01)


def _kill_mid_restore(manifest: Path, blobs: Path, target: Path, tmp_path: Path) -> list[Path]:
    marker = tmp_path / f"marker-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", RESTORE_CHILD, str(manifest), str(blobs), str(target), str(marker)],
        stderr=subprocess.PIPE,
    )
    _wait_for(marker, proc)
    workers = worker_children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Its worker processes die with it, a moment later; until then they hold the staging
    # folder's lock and the next restore rightly leaves the folder to a later one.
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    left = [p for p in target.parent.iterdir() if ".rn-restore-" in p.name]
    assert left, "the kill left the staging folder (the situation under test)"
    return left


@pytest.fixture
def big_tree(tmp_path: Path, _isolated_storage: Path) -> tuple[Store, str]:
    src = tmp_path / "src"
    for d in range(6):
        (src / f"d{d}").mkdir(parents=True)
        for i in range(200):
            (src / f"d{d}" / f"f{i}.txt").write_text(f"{d}-{i}\n")
    store = Store(_isolated_storage)
    tree = store.ingest_directory(src)
    store.pin(tree)
    store.close()
    return store, tree


def test_a_killed_restore_is_cleaned_by_the_next_command_and_reported_by_verify(
    big_tree: tuple[Store, str], tmp_path: Path, _isolated_storage: Path
) -> None:
    store, tree = big_tree
    target = tmp_path / "out" / "work"
    target.parent.mkdir()
    (left,) = _kill_mid_restore(store.manifest_path(tree), store.blobs_dir, target, tmp_path)
    assert not target.exists()
    # verify (any command that opens the store) removes it and says so.
    r = cli("verify")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"recovered: removed {left}, left by an interrupted restore" in r.stdout
    assert not left.exists()
    # gc does the same.
    (left,) = _kill_mid_restore(store.manifest_path(tree), store.blobs_dir, target, tmp_path)
    r = cli("gc", "--dry-run")
    assert r.returncode == 0 and not left.exists(), (r.stdout, r.stderr)
    # Three kills, then a restore of the same target: it works and nothing is left over.
    for _ in range(3):
        _kill_mid_restore(store.manifest_path(tree), store.blobs_dir, target, tmp_path)
    r = cli("restore", tree, str(target))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in target.parent.iterdir()) == ["work"]
    with Store(_isolated_storage) as s:
        assert s.verify()["ok"]


def test_a_killed_restore_from_a_plain_blob_folder_is_removed_by_the_next_restore(
    big_tree: tuple[Store, str], tmp_path: Path
) -> None:
    import shutil

    store, tree = big_tree
    blobs = tmp_path / "plain-blobs"  # the seed API's blob folder, no store around it
    shutil.copytree(store.blobs_dir, blobs)
    manifest = tmp_path / "tree.json"
    shutil.copyfile(store.manifest_path(tree), manifest)
    target = tmp_path / "seed-out"
    for _ in range(2):
        _kill_mid_restore(manifest, blobs, target, tmp_path)
    from runicorn.assets.restore import restore_from_manifest

    assert restore_from_manifest(manifest, blobs, target)["success"]
    assert [p.name for p in tmp_path.iterdir() if "seed-out" in p.name] == ["seed-out"]


def _make_run(root: Path, files: int) -> tuple[str, Path]:
    code = (
        "import runicorn as rn, sys\n"
        "run = rn.init(path='proj/exp', storage=sys.argv[1])\n"
        "out = run.run_dir / 'outputs'\n"
        "out.mkdir()\n"
        f"for i in range({files}):\n"
        "    (out / f'f{i}.txt').write_text(run.run_id + str(i))\n"
        "run.archive(str(out / 'f0.txt'), role='weights')\n"
        "run.finish()\n"
        "print(run.run_id)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    return run_id, root / "proj" / "exp" / "runs" / run_id


def test_a_killed_delete_run_is_finished_by_the_next_command(tmp_path: Path, _isolated_storage: Path) -> None:
    root = _isolated_storage
    files = 20000
    for attempt in range(5):
        run_id, run_dir = _make_run(root, files)
        runs = run_dir.parent
        proc = subprocess.Popen(
            [sys.executable, "-m", "runicorn", "delete-run", run_id],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and not any(".rn-deleting-" in n for n in os.listdir(runs)):
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left = [runs / n for n in os.listdir(runs) if ".rn-deleting-" in n]
        if left and proc.returncode == -signal.SIGKILL:
            break
        files *= 2  # the deletion finished before the kill: give it more to do
    else:
        pytest.fail("could not kill delete-run while it was deleting")
    (trash,) = left
    assert not run_dir.exists()
    r = cli("verify")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert f"recovered: finished the interrupted deletion of run {run_id} ({trash})" in r.stdout
    assert not trash.exists()
    refs = json.loads(cli("refs", "--json").stdout)
    assert not [x for x in refs if x["name"].startswith(run_id)]
    assert run_id not in cli("runs").stdout
    r = cli("gc", "--grace", "0")
    assert r.returncode == 0 and "deleted 1 tree(s)" in r.stdout, (r.stdout, r.stderr)


def test_a_deletion_left_by_an_older_version_is_reported_by_verify_and_finished_by_gc(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    root = _isolated_storage
    run_id, run_dir = _make_run(root, 3)
    keep_id, keep_dir = _make_run(root, 3)
    # What a killed delete-run of an older version left: the directory renamed, no note.
    trash = run_dir.parent / f".{run_id}.rn-deleting-0badc0de"
    os.rename(run_dir, trash)
    r = cli("verify")
    assert r.returncode == 1
    assert f"interrupted_deletion: {trash} is left by a killed deletion of run {run_id}" in r.stdout
    r = cli("gc", "--dry-run", "--grace", "0")
    assert r.returncode == 0 and trash.exists()
    assert f"would finish the interrupted deletion of run {run_id}" in r.stderr
    r = cli("gc", "--grace", "0")
    assert r.returncode == 0, r.stderr
    assert f"finished the interrupted deletion of run {run_id}" in r.stderr
    assert "deleted 1 tree(s)" in r.stdout
    assert not trash.exists() and keep_dir.is_dir()
    refs = {x["name"].split("/")[0] for x in json.loads(cli("refs", "--json").stdout) if x["kind"] == "run"}
    assert refs == {keep_id}
    assert cli("verify").returncode == 0
    # verify --repair finishes one as well.
    run2, dir2 = _make_run(root, 3)
    trash2 = dir2.parent / f".{run2}.rn-deleting-0badc0df"
    os.rename(dir2, trash2)
    r = cli("verify", "--repair")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert not trash2.exists()
