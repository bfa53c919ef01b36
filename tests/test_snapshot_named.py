"""Issue 13 item 2: named snapshots with a message, git provenance, what the ignore rules
left out, and moving a name only with --force, driven through the CLI as a user does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runicorn.store import Store
from tests.test_cli_messages import assert_clean_error, cli

GIT = shutil.which("git")


def git(ws: Path, *args: str) -> str:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.org",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.org",
    )
    return subprocess.run(
        ["git", "-C", str(ws), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "src").mkdir(parents=True)
    (ws / "src" / "train.py").write_text("print('train')\n")
    (ws / "__pycache__").mkdir()
    (ws / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"\0" * 10)
    (ws / "debug.log").write_text("noise\n")
    return ws


def test_named_snapshot_records_message_git_and_exclusions(tmp_path: Path, _isolated_storage: Path) -> None:
    assert GIT is not None, "git is installed by tools/run-tests.sh"
    ws = workspace(tmp_path)
    git(ws, "init", "-q", "-b", "main")
    (ws / ".gitignore").write_text("debug.log\n__pycache__/\n")
    git(ws, "add", ".gitignore", "src/train.py")
    git(ws, "commit", "-q", "-m", "first")
    head = git(ws, "rev-parse", "HEAD")

    r = cli("snapshot", str(ws), "--name", "baseline", "--message", "before the LR change")
    assert r.returncode == 0, r.stderr
    tree = r.stdout.strip()
    # .rnignore did not exist: it is created and the user is told; .git and __pycache__ (by
    # .rnignore's defaults) and debug.log (by .gitignore) are the three paths left out.
    assert f"created {ws / '.rnignore'}" in r.stderr
    assert "3 path(s) excluded by the ignore rules" in r.stderr
    assert f"git {head[:12]} on main with uncommitted changes" in r.stderr  # .rnignore is untracked now
    with Store.open(_isolated_storage) as store:
        ref = store.get_ref("pin", "baseline")
        assert ref is not None and ref.tree == tree
        assert ref.meta["message"] == "before the LR change"
        assert ref.meta["git"] == {"commit": head, "branch": "main", "dirty": True}
        assert store.get_ref("pin", tree) is None  # named: not also pinned under its id

    git(ws, "add", ".rnignore")
    git(ws, "commit", "-q", "-m", "rnignore")
    r = cli("snapshot", str(ws), "--json")
    data = json.loads(r.stdout)
    assert data["git"] == {"commit": git(ws, "rev-parse", "HEAD"), "branch": "main", "dirty": False}
    assert data["excluded_count"] == 3 and data["created_rnignore"] is False
    assert "created" not in r.stderr
    # show names the message and the provenance
    shown = json.loads(cli("show", "baseline", "--json").stdout)
    assert shown["type"] == "pin" and shown["tree"] == tree


def test_repinning_a_name_to_another_tree_needs_force(tmp_path: Path, _isolated_storage: Path) -> None:
    ws = workspace(tmp_path)
    first = cli("snapshot", str(ws), "--name", "best").stdout.strip()
    # the same tree again: fine, nothing moves
    r = cli("snapshot", str(ws), "--name", "best")
    assert r.returncode == 0 and r.stdout.strip() == first, r.stderr
    (ws / "src" / "train.py").write_text("print('train v2')\n")
    r = cli("snapshot", str(ws), "--name", "best")
    assert_clean_error(r, "pin 'best' already names tree", first[:12], "--force")
    with Store.open(_isolated_storage) as store:
        assert store.get_ref("pin", "best").tree == first  # type: ignore[union-attr]
    r = cli("snapshot", str(ws), "--name", "best", "--force", "-m", "v2")
    assert r.returncode == 0, r.stderr
    second = r.stdout.strip()
    assert second != first
    # `pin` follows the same rule
    r = cli("pin", first[:10], "--name", "best")
    assert_clean_error(r, "pin 'best' already names tree", second[:12], "--force")
    r = cli("pin", first[:10], "--name", "best", "--force", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["tree"] == first
    # the library spells the option as a keyword argument
    from runicorn.snapshot.workspace import snapshot_workspace

    with pytest.raises(Exception, match="force_pin=True"):
        snapshot_workspace(ws, None, name="best", storage=_isolated_storage)
    # --message only makes sense with a name
    assert_clean_error(cli("snapshot", str(ws), "-m", "x"), "--message", "--name")


def test_git_provenance_is_absent_outside_a_checkout_or_without_git(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    r = cli("snapshot", str(ws), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["git"] is None
    # A checkout, but no git program on PATH: silently absent, the snapshot still succeeds.
    git(ws, "init", "-q")
    git(ws, "add", "src")
    git(ws, "commit", "-q", "-m", "x")
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    (ws / "src" / "new.py").write_text("x = 1\n")
    r = cli("snapshot", str(ws), "--json", env={"PATH": str(empty)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["git"] is None and "git" not in r.stderr


def test_run_meta_records_git_of_its_workspace(tmp_path: Path, _isolated_storage: Path) -> None:
    import runicorn as rn

    ws = workspace(tmp_path)
    git(ws, "init", "-q", "-b", "dev")
    git(ws, "add", "src")
    git(ws, "commit", "-q", "-m", "x")
    run = rn.init("proj/exp", workspace_root=ws, snapshot_code=True)
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert meta["git"]["commit"] == git(ws, "rev-parse", "HEAD") and meta["git"]["branch"] == "dev"
    assert meta["git"]["dirty"] is True  # __pycache__ and debug.log are untracked
    run.finish()
    outside = tmp_path / "plain"
    outside.mkdir()
    run2 = rn.init("proj/exp", workspace_root=outside)
    assert "git" not in json.loads((run2.run_dir / "meta.json").read_text())
    run2.finish()


def _fake_git(tmp_path: Path, body: str) -> Path:
    """A folder holding a ``git`` program running ``body`` (a shell script)."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    program = folder / "git"
    program.write_text("#!/bin/sh\n" + body)
    program.chmod(0o755)
    return folder


def test_git_status_with_a_long_listing_runs_beside_the_walk_without_stalling(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    # 300,000 bytes of untracked lines: more than a pipe holds, so a query reading git's
    # output only at the end must not leave git blocked on a full pipe.
    fake = _fake_git(
        tmp_path,
        'echo "# branch.oid 0123456789abcdef0123456789abcdef01234567"\n'
        'echo "# branch.head main"\n'
        'i=0; while [ $i -lt 10000 ]; do echo "? untracked/file-number-$i-with-a-long-name.bin"; i=$((i+1)); done\n',
    )
    r = cli("snapshot", str(ws), "--json", env={"PATH": f"{fake}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["git"] == {
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "branch": "main",
        "dirty": True,
    }


def test_a_git_that_hangs_is_stopped_and_the_snapshot_records_no_provenance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_storage: Path
) -> None:
    import runicorn.gitinfo
    from runicorn.snapshot.workspace import snapshot_workspace

    ws = workspace(tmp_path)
    pid_file = tmp_path / "git.pid"
    fake = _fake_git(tmp_path, f'echo $$ > "{pid_file}"\nexec sleep 600\n')
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    monkeypatch.setattr(runicorn.gitinfo, "GIT_TIMEOUT_S", 1.0)
    result = snapshot_workspace(ws, None, storage=_isolated_storage)
    assert result["git"] is None and result["file_count"] > 0
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left running
        os.kill(pid, 0)
