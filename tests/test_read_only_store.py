"""A store on a read-only mount serves every command that only reads (issue 15, item 7).

A real tmpfs, filled through the product, then remounted read-only (``mount -o
remount,ro``); tests run as root and fail, never skip, when that is impossible.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs that the test fills and then remounts read-only."""
    from runicorn.store.cache import forget_open_stores

    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        forget_open_stores()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def remount_ro(mnt: Path) -> None:
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot remount {mnt} read-only: {r.stderr.strip()}")
    probe = mnt / "probe"
    with pytest.raises(OSError):
        probe.write_text("x")


def test_read_only_commands_work_on_a_read_only_mount(
    ro_mount: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ro_mount / "store"
    monkeypatch.setenv("RUNICORN_DIR", str(store))
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text("print('hi')\n")
    (ws / "data.csv").write_text("a,b\n1,2\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    # Fill the store through the product: a snapshot, a run, a bound artifact.
    r = cli("snapshot", str(ws))
    assert r.returncode == 0, r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import runicorn as rn\n"
                f"with rn.init(path='p/e', snapshot_code=True, workspace_root={str(ws)!r}) as run:\n"
                "    run.log({'loss': 1.0})\n"
            ),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    r = cli("bind", "data", str(ws), cwd=proj)
    assert r.returncode == 0, r.stderr
    tree = json.loads(cli("refs", "--json").stdout)[0]["tree"]
    remount_ro(ro_mount)
    assert not (store / "archive" / "index.sqlite3-shm").exists()  # the immutable path is exercised

    def ok(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        res = cli(*args, cwd=cwd)
        assert res.returncode == 0, (args, res.stdout, res.stderr)
        assert "Traceback" not in res.stderr
        return res

    assert json.loads(ok("stats", "--json").stdout)["tree_count"] == 1
    assert {r["kind"] for r in json.loads(ok("refs", "--json").stdout)} == {"pin", "run", "binding"}
    assert "p/e" in ok("runs").stdout
    assert "0 problem(s)" in ok("verify").stdout
    assert "0 problem(s)" in ok("verify", "--deep").stdout
    res = ok("gc", "--dry-run")
    assert "would delete 0 tree(s)" in res.stdout and "read-only" in res.stderr
    ok("restore", tree, str(tmp_path / "out"))
    assert (tmp_path / "out" / "train.py").read_text() == "print('hi')\n"
    ok("restore", tree, str(tmp_path / "out-hl"), "--link", "hardlink")
    ok("export", tree, str(tmp_path / "x.zip"))
    with zipfile.ZipFile(tmp_path / "x.zip") as zf:
        assert sorted(zf.namelist()) == [".rnignore", "data.csv", "train.py"]
    assert "installed" in ok("status", cwd=proj).stdout
    r = subprocess.run(
        [sys.executable, "-c", "import runicorn; print(runicorn.artifact('data'))"],
        cwd=proj,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and Path(r.stdout.strip(), "train.py").is_file(), r.stderr
    # Commands that write say so in one line, naming the store.
    for args in (["gc"], ["snapshot", str(ws)], ["pin", tree, "--name", "x"]):
        res = cli(*args)
        assert res.returncode == 1 and "Traceback" not in res.stderr, (args, res.stderr)
        assert f"{store}: the store is read-only" in res.stderr, (args, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1
