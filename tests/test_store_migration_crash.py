"""Opening the schema-4 fixture store, killed at any moment, loses nothing (issue 12, item 3).

A real child process opens the unpacked fixture (``tests/data/store-schema4.tar.gz``) and
is killed with SIGKILL some milliseconds after it starts the opening; the test then opens
the store itself and runs the checks of ``test_store_migration.py``.  Today opening a
schema-4 store does little (recovery, the tables of the features); when opening migrates
a store to a new way of storing trees, this is the crash test of that migration.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from runicorn.store import Store
from tests.store_fixture import BLOBS, ROLES, TREES, check_all, check_restored, extract

# After its imports the child says "ready" and opens the store at once; the delays count
# from there, so they fall inside the opening, not in the interpreter's start.
CHILD = """
import sys
from runicorn.store.store import Store
print("ready", flush=True)
store = Store(sys.argv[1])
print("opened", flush=True)
store.close()
print("closed", flush=True)
"""

DELAYS_MS = (0.0, 5.0, 20.0, 80.0)


def open_and_kill(root: Path, delay_ms: float) -> str:
    """Start a child that opens ``root``, SIGKILL it ``delay_ms`` after it starts opening;
    return the last thing it said ("ready": killed before the opening finished)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=False
    )
    assert child.stdout is not None
    try:
        ready, _, _ = select.select([child.stdout], [], [], 120)
        line = child.stdout.readline() if ready else b""
        assert line == b"ready\n", (line, child.stderr.read() if child.stderr else b"")
        time.sleep(delay_ms / 1000)
        os.kill(child.pid, signal.SIGKILL)
        out = child.stdout.read()
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    said = out.decode().split()
    return said[-1] if said else "ready"


def check_store(root: Path, tmp_path: Path, tag: str) -> None:
    """The checks of ``test_store_migration.py`` on the store as the kills left it: open
    it, everything is there and restores; a second opening changes nothing; gc then takes
    exactly the unreferenced tree and the orphan blob."""
    from runicorn.assets.restore import restore_from_manifest

    with Store(root) as store:
        first = check_all(store)
        for i, tree in enumerate(sorted(TREES)):
            target = tmp_path / f"{tag}-restore-{i}"
            result = restore_from_manifest(store.manifest_path(tree), store.blobs_dir, target)
            assert result["success"], result
            check_restored(target, tree)
    with Store(root) as store:
        assert check_all(store) == first
        report = store.gc(grace_seconds=0)
        assert report["tree_ids"] == [ROLES["unreferenced"]], report
        assert set(report["blob_ids"]) & set(BLOBS) == {ROLES["orphan_blob"]}, report
        assert store.verify(deep=True)["ok"]


def test_open_killed_at_each_moment_then_reopened(tmp_path: Path) -> None:
    """One fresh copy per delay: killed once, then opened by the test."""
    said = {}
    for delay in DELAYS_MS:
        root = extract(tmp_path / f"at-{delay:g}ms")
        said[delay] = open_and_kill(root, delay)
        check_store(root, tmp_path, f"at-{delay:g}ms")
    # Whatever the child reached, the store was whole; at 0 ms it cannot have finished.
    assert said[0.0] in ("ready", "opened", "closed"), said


def test_open_killed_again_and_again_then_reopened(tmp_path: Path) -> None:
    """The same copy killed repeatedly (an opening killed while it repairs the previous
    kill's leftovers), at the fixed delays and random ones, then opened by the test."""
    seed = int(os.environ.get("RN_CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    # Log-uniform from 0.1 to 100 ms: a quick opening is hit too, not only a slow one.
    delays = list(DELAYS_MS) + [10 ** rng.uniform(-1, 2) for _ in range(8)]
    root = extract(tmp_path / "again")
    said = [(round(d, 1), open_and_kill(root, d)) for d in delays]
    print(f"seed {seed}: {said}")  # shown on failure: RN_CRASH_SEED reproduces the delays
    check_store(root, tmp_path, "again")
