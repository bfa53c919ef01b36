"""Restore into an existing directory is a checkout: only the tree's paths change, .git and
untracked files stay, and whatever is replaced or removed is kept in the store first."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from runicorn.restore.engine import TargetExistsError, restore_from_manifest
from runicorn.errors import UnsafePathError
from runicorn.store import open_store

from tests.assets_helpers import tree_files, write

BACKUP_REF_KIND = "restore-backup"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runicorn", *args], capture_output=True, text=True, timeout=120)


def run_printed(command: str) -> subprocess.CompletedProcess[str]:
    """Run the exact ``runicorn ...`` line a restore printed (as this test's Python)."""
    argv = shlex.split(command)
    assert argv[0] == "runicorn", command
    return subprocess.run([sys.executable, "-m", "runicorn", *argv[1:]], capture_output=True, text=True, timeout=120)


def printed_command(stderr: str) -> str | None:
    m = re.search(r"to get them back: (runicorn .*)$", stderr, re.M)
    return m.group(1) if m else None


@pytest.fixture
def tree(tmp_path: Path) -> str:
    ws = tmp_path / "ws"
    write(ws / "train.py", "print('v1')\n")
    write(ws / "conf" / "a.yaml", "lr: 1\n")
    write(ws / "same.txt", "same\n")
    r = cli("snapshot", str(ws))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A user's checkout: a .git, untracked files, an edited tracked file, an identical one."""
    w = tmp_path / "work"
    write(w / ".git" / "HEAD", "ref: refs/heads/main\n")
    write(w / ".git" / "objects" / "ab" / "cdef", b"\x00git object")
    write(w / "sub" / ".git", "gitdir: ../.git/modules/sub\n")  # a submodule's .git file
    write(w / "train.py", "print('my edit, nowhere else')\n")
    write(w / "notes.txt", "untracked notes\n")
    write(w / "data" / "big.bin", os.urandom(3000))
    write(w / "same.txt", "same\n")
    return w


def test_cli_overwrite_replaces_only_the_tree_paths(tree: str, work: Path) -> None:
    before = tree_files(work)
    r = cli("restore", tree, str(work), "--overwrite")
    assert r.returncode == 0, r.stderr
    after = tree_files(work)
    for rel in (".git/HEAD", ".git/objects/ab/cdef", "sub/.git", "notes.txt", "data/big.bin", "same.txt"):
        assert after[rel] == before[rel], rel
    assert after["train.py"][1] == b"print('v1')\n" and after["conf/a.yaml"][1] == b"lr: 1\n"
    assert "1 replaced" in r.stdout and "1 already identical" in r.stdout
    # the edited file was captured first; the printed command brings it back
    command = printed_command(r.stderr)
    assert command is not None, r.stderr
    back = run_printed(command)
    assert back.returncode == 0, back.stderr
    assert tree_files(work)["train.py"] == before["train.py"]
    assert tree_files(work)["notes.txt"] == before["notes.txt"]


def test_cli_delete_keeps_git_and_everything_it_removed(tree: str, work: Path) -> None:
    before = tree_files(work)
    r = cli("restore", tree, str(work), "--delete")
    assert r.returncode == 0, r.stderr
    after = tree_files(work)
    assert set(after) == {
        ".git/HEAD",
        ".git/objects/ab/cdef",
        "sub/.git",
        "train.py",
        "conf/a.yaml",
        "same.txt",
        ".rnignore",
    }
    assert not (work / "data").exists(), "a directory emptied by --delete goes"
    assert after[".git/HEAD"] == before[".git/HEAD"] and after["sub/.git"] == before["sub/.git"]
    gc = cli("gc", "--grace", "0")
    assert gc.returncode == 0, gc.stderr
    back = run_printed(printed_command(r.stderr) or "")
    assert back.returncode == 0, back.stderr
    restored = tree_files(work)
    for rel, value in before.items():
        assert restored[rel] == value, rel


def test_without_overwrite_a_non_empty_target_is_refused(tree: str, work: Path) -> None:
    before = tree_files(work)
    r = cli("restore", tree, str(work))
    assert r.returncode == 1 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert tree_files(work) == before


def test_python_api_checkout_and_delete(tmp_path: Path) -> None:
    store = open_store()
    src = tmp_path / "src"
    write(src / "a.txt", "A\n")
    write(src / "d" / "b.txt", "B\n")
    t = store.ingest_directory(src)
    store.pin(t)
    target = tmp_path / "t"
    write(target / ".git" / "config", "[core]\n")
    write(target / "a.txt", "mine\n")
    write(target / "extra.txt", "extra\n")
    with pytest.raises(TargetExistsError):
        restore_from_manifest(store.manifest_path(t), store.blobs_dir, target)
    seen: list[dict] = []
    r = restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, overwrite=True, on_backup=seen.append)
    assert r["success"] and r["replaced"] == 1 and r["created"] == 1 and r["removed"] == 0
    assert (target / "extra.txt").read_text() == "extra\n" and (target / ".git" / "config").exists()
    assert seen == [r["backup"]] and r["backup"]["files"] == 1
    kind, name = r["backup"]["ref"].split("/", 1)
    assert kind == BACKUP_REF_KIND and store.get_ref(kind, name).tree == r["backup"]["tree"]
    assert store.tree_entries(r["backup"]["tree"])["a.txt"].size == 5
    r = restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, delete=True)
    assert r["removed"] == 1 and r["unchanged"] == 2 and r["replaced"] == 0
    assert sorted(tree_files(target)) == [".git/config", "a.txt", "d/b.txt"]
    assert set(store.tree_entries(r["backup"]["tree"])) == {"extra.txt"}
    store.gc(grace_seconds=0)
    assert store.verify(deep=True)["ok"]
    assert store.get_ref(BACKUP_REF_KIND, r["backup"]["ref"].split("/", 1)[1]) is not None


def test_nothing_to_replace_makes_no_backup(tmp_path: Path) -> None:
    store = open_store()
    src = tmp_path / "src"
    write(src / "a.txt", "A\n")
    t = store.ingest_directory(src)
    store.pin(t)
    target = tmp_path / "t"
    write(target / "other.txt", "x\n")
    r = restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, overwrite=True)
    assert r["backup"] is None and r["created"] == 1
    assert store.list_refs(BACKUP_REF_KIND) == []


def test_type_changes_are_captured(tmp_path: Path) -> None:
    """A directory where the tree has a file, and a file or symlink where it has a directory."""
    store = open_store()
    src = tmp_path / "src"
    write(src / "x", "file x\n")
    write(src / "y" / "inner.txt", "inner\n")
    write(src / "z" / "deep.txt", "deep\n")
    t = store.ingest_directory(src)
    store.pin(t)
    target = tmp_path / "t"
    write(target / "x" / "mine.txt", "under x\n")
    write(target / "y", "a file where the tree has a directory\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, target / "z")
    before = tree_files(target)
    r = restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, overwrite=True)
    assert tree_files(target) == tree_files(src)
    assert list(outside.iterdir()) == [], "never written through a symlink"
    backup = store.tree_entries(r["backup"]["tree"])
    assert set(backup) == {"x/mine.txt", "y", "z"} and backup["z"].mode == "120000"
    restore_from_manifest(store.manifest_path(r["backup"]["tree"]), store.blobs_dir, target, overwrite=True)
    now = tree_files(target)
    for rel, value in before.items():
        assert now[rel] == value, rel


def test_git_is_never_touched(tmp_path: Path) -> None:
    store = open_store()
    src = tmp_path / "src"
    write(src / ".git" / "HEAD", "theirs\n")
    write(src / "nested", "file\n")
    t = store.ingest_directory(src)
    store.pin(t)
    target = tmp_path / "t"
    write(target / ".git" / "HEAD", "mine\n")
    before = tree_files(target)
    with pytest.raises(UnsafePathError, match=r"never writes inside \.git"):
        restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, overwrite=True)
    assert tree_files(target) == before
    # a directory holding a nested repository is never replaced by a file
    src2 = tmp_path / "src2"
    write(src2 / "nested", "file\n")
    t2 = store.ingest_directory(src2)
    store.pin(t2)
    write(target / "nested" / ".git" / "HEAD", "nested repo\n")
    before = tree_files(target)
    with pytest.raises(UnsafePathError, match=r"holds a \.git"):
        restore_from_manifest(store.manifest_path(t2), store.blobs_dir, target, delete=True)
    assert tree_files(target) == before
    # nor is anything inside .git, when it is the target itself
    before = tree_files(target)
    with pytest.raises(UnsafePathError, match=r"inside a \.git directory"):
        restore_from_manifest(store.manifest_path(t2), store.blobs_dir, target / ".git", delete=True)
    assert tree_files(target) == before
    # a fresh target may receive the tree's own .git
    assert restore_from_manifest(store.manifest_path(t), store.blobs_dir, tmp_path / "fresh")["success"]


def test_blob_dir_outside_a_store_cannot_replace(tmp_path: Path) -> None:
    """Without a store to keep them in, replaced files would be lost: refused, nothing changes."""
    import shutil

    store = open_store()
    src = tmp_path / "src"
    write(src / "a.txt", "A\n")
    t = store.ingest_directory(src)
    loose = tmp_path / "loose-blobs"
    shutil.copytree(store.blobs_dir, loose)
    target = tmp_path / "t"
    write(target / "a.txt", "mine\n")
    with pytest.raises(Exception, match="cannot be kept first"):
        restore_from_manifest(store.manifest_path(t), loose, target, overwrite=True)
    assert (target / "a.txt").read_text() == "mine\n"


def test_changed_after_capture_is_left_alone(tmp_path: Path) -> None:
    store = open_store()
    src = tmp_path / "src"
    write(src / "a.txt", "A\n")
    t = store.ingest_directory(src)
    store.pin(t)
    target = tmp_path / "t"
    write(target / "a.txt", "mine\n")

    def edit(info: dict) -> None:  # the user saves the file between capture and replace
        (target / "a.txt").write_text("saved again\n")

    from runicorn.errors import ChangedWhileReadingError

    with pytest.raises(ChangedWhileReadingError, match="left as it is"):
        restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, overwrite=True, on_backup=edit)
    assert (target / "a.txt").read_text() == "saved again\n"
    assert not [p for p in tmp_path.iterdir() if ".rn-restore-" in p.name]


def test_backup_ref_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[1] / "schema" / "refs.md").read_text()
    assert f"`{BACKUP_REF_KIND}`" in doc


def test_a_small_restore_syncs_its_own_files_not_the_filesystem(tmp_path: Path, monkeypatch) -> None:
    """syncfs waits for every other process's unwritten data: a restore or checkout of a
    few files fsyncs exactly those files and the folders whose entries it changed."""
    import runicorn.fsutil
    import runicorn.restore.engine
    import runicorn.store.blobs
    from runicorn.fsutil import FEW_FILES

    store = open_store()
    src = tmp_path / "src"
    write(src / "a.txt", "A\n")
    write(src / "d" / "b.txt", "B\n")
    write(src / "d" / "e" / "c.txt", "C\n")
    os.symlink("a.txt", src / "link")
    t = store.ingest_directory(src)
    store.pin(t)

    synced: list[str] = []
    syncfs_calls: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def syncfs(path: Path) -> None:
        syncfs_calls.append(str(path))

    for module in (runicorn.fsutil, runicorn.restore.engine, runicorn.store.blobs):
        monkeypatch.setattr(module, "syncfs", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)

    target = tmp_path / "t"
    r = restore_from_manifest(store.manifest_path(t), store.blobs_dir, target)
    assert r["success"] and syncfs_calls == []
    assert sorted(tree_files(target)) == ["a.txt", "d/b.txt", "d/e/c.txt", "link"]
    staging = next(p for p in synced if ".rn-restore-" in p)
    staging = staging[: staging.index(".rn-restore-")] + staging[staging.index(".rn-restore-") :].split("/")[0]
    for rel in ("a.txt", "d/b.txt", "d/e/c.txt", "d", "d/e", ""):  # each file, each folder
        assert os.path.join(staging, rel).rstrip("/") in synced, rel
    assert str(tmp_path) in synced  # the rename of the staging folder onto the target

    # A checkout: one file replaced, one removed with its emptied folder, one added folder.
    write(target / "a.txt", "mine\n")
    write(target / "gone" / "x.txt", "x\n")
    (target / "d" / "e" / "c.txt").unlink()
    synced.clear()
    r = restore_from_manifest(store.manifest_path(t), store.blobs_dir, target, overwrite=True, delete=True)
    assert r["success"] and r["replaced"] == 1 and r["created"] == 1 and r["removed"] == 1
    assert syncfs_calls == []
    assert sorted(tree_files(target)) == ["a.txt", "d/b.txt", "d/e/c.txt", "link"]
    assert (target / "a.txt").read_text() == "A\n" and not (target / "gone").exists()
    assert {str(target), str(target / "d" / "e")} <= set(synced)  # renamed into, removed from

    # Many files: one group sync of the filesystem instead.
    for i in range(FEW_FILES + 1):
        write(src / "many" / f"{i}.txt", f"{i}\n")
    t2 = store.ingest_directory(src)
    store.pin(t2)
    syncfs_calls.clear()
    r = restore_from_manifest(store.manifest_path(t2), store.blobs_dir, tmp_path / "t2")
    assert r["success"] and syncfs_calls
    assert sorted(tree_files(tmp_path / "t2")) == sorted(tree_files(src))
