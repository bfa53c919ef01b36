"""SIGKILL at random moments of `restore --overwrite` and `restore --delete` into a working copy
with a .git and untracked files: every original byte stays in place or comes back with the
command the restore printed, and the store verifies clean."""

from __future__ import annotations

import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from runicorn.store import Store

from tests.assets_helpers import tree_files, write

TRIALS_PER_MODE = 16  # 32 kills in all


def _workspace(root: Path) -> None:
    for i in range(150):
        write(root / f"pkg{i % 7}" / f"m{i}.py", f"value = {i}\n" * 20)
    write(root / "weights.bin", os.urandom(1 << 20))
    write(root / "conf" / "run.yaml", "lr: 0.1\n")


def _user_copy(root: Path) -> None:
    """A working copy: .git, untracked files, edited tracked files, a type change."""
    write(root / ".git" / "HEAD", "ref: refs/heads/main\n")
    for i in range(20):
        write(root / ".git" / "objects" / f"{i:02x}" / "obj", os.urandom(200))
    for i in range(0, 150, 3):
        write(root / f"pkg{i % 7}" / f"m{i}.py", f"edited {i} by hand\n")
    for i in range(60):
        write(root / "scratch" / f"note{i}.txt", f"untracked {i}\n")
    write(root / "weights.bin", os.urandom(1 << 19))
    write(root / "conf", "a file where the tree has a directory\n")
    write(root / "results.csv", "precious,untracked\n")


def _printed_command(stderr: str) -> str | None:
    m = re.search(r"to get them back: (runicorn .*)\n", stderr)
    return m.group(1) if m else None


def _run(argv: list[str], kill_after: float | None, err: Path, *, kill_once_printed: bool = False) -> float:
    """Run a restore, killed after ``kill_after`` s (or once it printed its undo command);
    uninterrupted when ``kill_after`` is None.  Returns when the undo command was first seen."""
    t0 = time.monotonic()
    printed_at = 0.0
    with open(err, "wb") as f:
        p = subprocess.Popen([sys.executable, "-m", "runicorn", *argv], stdout=subprocess.DEVNULL, stderr=f)
        if kill_after is None:
            while p.poll() is None:
                if not printed_at and _printed_command(err.read_text()):
                    printed_at = time.monotonic() - t0
                time.sleep(0.002)
            assert p.wait(timeout=120) == 0, err.read_text()
            return printed_at or time.monotonic() - t0
        if kill_once_printed:  # the moment the target starts to change
            deadline = time.monotonic() + 120
            while p.poll() is None and _printed_command(err.read_text()) is None and time.monotonic() < deadline:
                time.sleep(0.001)
        else:
            time.sleep(kill_after)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    return printed_at


def test_sigkilled_restores_lose_nothing(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("RUNICORN_CRASH_SEED", "9")))
    src = tmp_path / "src"
    _workspace(src)
    store = Store(Path(os.environ["RUNICORN_DIR"]))
    tree = store.ingest_directory(src)
    store.pin(tree)
    store.close()
    pristine = tmp_path / "pristine"
    _user_copy(pristine)
    original = tree_files(pristine)
    git = {k: v for k, v in original.items() if k.startswith(".git/")}
    err = tmp_path / "stderr"

    # One uninterrupted run of each mode: how long a restore takes here (to spread the kills).
    durations, printed = {}, {}
    finished: dict[str, dict] = {}
    for mode in ("--overwrite", "--delete"):
        work = tmp_path / f"calib{mode}"
        shutil.copytree(pristine, work, symlinks=True)
        t0 = time.monotonic()
        printed[mode] = _run(["restore", tree, str(work), mode], None, err)
        durations[mode] = time.monotonic() - t0
        finished[mode] = tree_files(work)
        assert tree_files(work)["results.csv" if mode == "--overwrite" else "conf/run.yaml"]

    outcomes = {"untouched": 0, "recovered": 0, "killed mid-change": 0}
    for trial in range(2 * TRIALS_PER_MODE):
        mode = ("--overwrite", "--delete")[trial % 2]
        work = tmp_path / f"w{trial}"
        shutil.copytree(pristine, work, symlinks=True)
        # Random moments, plus two fixed ones per mode so both outcomes are always exercised
        # however loaded the machine is: before the process starts, and once it printed its undo.
        # The random ones fall mostly in the window where the target changes.
        kill_after = 0.0 if trial < 2 else rng.uniform(0.7 * printed[mode], 1.05 * durations[mode])
        _run(["restore", tree, str(work), mode], kill_after, err, kill_once_printed=trial in (2, 3))
        stderr = err.read_text()
        now = tree_files(work)
        assert {k: v for k, v in now.items() if k.startswith(".git/")} == git, f"trial {trial}: .git changed"
        command = _printed_command(stderr)
        if command is None:
            assert now == original, f"trial {trial}: changed without printing how to undo it"
            outcomes["untouched"] += 1
        else:
            outcomes["killed mid-change"] += now != finished[mode]
            argv = shlex.split(command)
            assert argv[0] == "runicorn"
            back = subprocess.run(
                [sys.executable, "-m", "runicorn", *argv[1:]], capture_output=True, text=True, timeout=120
            )
            assert back.returncode == 0, back.stderr
            assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".w{trial}.rn-restore-")], (
                "the next restore into the target removes a killed one's staging"
            )
            now = tree_files(work)
            for rel, value in original.items():
                assert now.get(rel) == value, f"trial {trial} ({mode}): {rel} not recovered"
            outcomes["recovered"] += 1
        shutil.rmtree(work)
        with Store(Path(os.environ["RUNICORN_DIR"])) as s:
            report = s.verify(deep=trial % 8 == 7)
            assert report["ok"], (trial, report["problems"])
    print("outcomes", outcomes)
    assert outcomes["recovered"] > 0 and outcomes["untouched"] > 0
