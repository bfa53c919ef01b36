"""Real processes at once, and real processes killed with SIGKILL at random moments."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runicorn.store import Store

WORKER = Path(__file__).with_name("store_worker.py")


def spawn(root: Path, role: str, seed: int, iterations: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(root), role, str(seed), str(iterations)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def assert_consistent(root: Path) -> list[str]:
    with Store(root) as store:
        recovered = store.recovered
        report = store.verify(deep=True)
        assert report["ok"], report["problems"]
        # every ref reaches a complete tree whose blobs hash to their names
        for ref in store.list_refs():
            for path, entry in store.tree_entries(ref.tree).items():
                data = store.blob_path(entry.sha256).read_bytes()
                assert hashlib.sha256(data).hexdigest() == entry.sha256, (ref, path)
        # refcounts equal a recount
        assert (
            store.index.query(
                "SELECT COUNT(*) FROM blobs b WHERE refcount != "
                "(SELECT COALESCE(SUM(e.n), 0) FROM page_blobs e WHERE e.blob = b.id)"
            )[0][0]
            == 0
        )
        assert not [p for p in store.tmp_dir.iterdir()], "staging is clean after recovery"
    return recovered


def test_four_writers_and_a_collector_at_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root).close()
    procs = [spawn(root, "writer", seed, 25) for seed in range(4)]
    procs.append(spawn(root, "gc", 99, 60))
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    assert_consistent(root)
    with Store(root) as store:
        assert store.list_refs("test"), "writers left refs behind"


@pytest.mark.slow
def test_sigkill_at_random_moments_never_corrupts(tmp_path: Path) -> None:
    rng = random.Random(1234)
    root = tmp_path / "store"
    Store(root).close()
    trials = 50
    killed = 0
    recoveries: list[str] = []
    for trial in range(trials):
        procs = [spawn(root, "writer", trial * 10 + k, 1000) for k in range(2)]
        procs.append(spawn(root, "gc", trial, 10_000))
        time.sleep(rng.uniform(0.05, 0.6))
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.communicate()
        recoveries += assert_consistent(root)
    assert killed >= trials, "the children were killed mid-work"
    # the kills landed inside writes: recovery replayed or discarded intents
    assert any(a.startswith(("adopted", "discarded", "reconciled", "restored")) for a in recoveries), recoveries
    print(f"{killed} processes killed; recovery actions: {len(recoveries)}")
