"""Soak: two snapshot loops, a delete-run loop, a ``gc --grace 0`` loop and a
``verify --repair`` loop on one store, all real processes at once.  Afterwards every
pinned snapshot restores byte for byte and ``verify --deep`` is clean.

Bounded: the loops run for ``SOAK_SECONDS`` (then finish their current command).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from runicorn.assets.restore import restore_from_manifest
from runicorn.store import Store

SOAK_SECONDS = float(os.environ.get("RUNICORN_SOAK_SECONDS", "30"))
SHARED = [f"shared content {i}\n".encode() * (50 * (i + 1)) for i in range(6)]

MAKE_RUN = (
    "import sys, runicorn as rn\n"
    "run = rn.init(path='soak/loop', storage=sys.argv[1])\n"
    "run.archive(sys.argv[2], role='weights')\n"
    "run.finish()\n"
    "print(run.run_id)\n"
)


def runicorn(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(root), *args], capture_output=True, text=True, timeout=60
    )


class Soak:
    def __init__(self, root: Path, until: float) -> None:
        self.root = root
        self.until = until
        self.failures: list[str] = []
        self.pinned: dict[str, dict[str, bytes]] = {}  # tree -> the workspace it captured
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()

    def loop(self, name: str, step: Callable[[int], None]) -> threading.Thread:
        def run() -> None:
            n = 0
            while time.monotonic() < self.until:
                try:
                    step(n)
                except Exception as exc:  # noqa: BLE001 - collected and reported by the test
                    with self.lock:
                        self.failures.append(f"{name} #{n}: {exc!r}")
                n += 1
            with self.lock:
                self.counts[name] = n

        t = threading.Thread(target=run, name=name)
        t.start()
        return t

    def check(self, name: str, proc: subprocess.CompletedProcess[str], ok: tuple[int, ...] = (0,)) -> None:
        if proc.returncode not in ok or "Traceback" in proc.stderr:
            with self.lock:
                self.failures.append(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-500:]}")

    def snapshotter(self, k: int, ws: Path) -> Callable[[int], None]:
        ws.mkdir()
        (ws / ".rnignore").write_text("")

        def step(n: int) -> None:
            (ws / "iteration.txt").write_text(f"loop {k} iteration {n}\n" * 20)
            (ws / "shared.bin").write_bytes(SHARED[(n + k) % len(SHARED)])
            (ws / f"note-{n % 4}.txt").write_text(f"note {k}/{n}\n")
            content = {p.name: p.read_bytes() for p in ws.iterdir() if p.is_file()}
            proc = runicorn(self.root, "snapshot", str(ws), "--json")
            self.check(f"snapshot {k}", proc)
            if proc.returncode != 0:
                return
            tree = json.loads(proc.stdout)["tree"]
            if n % 3 == 2:  # some snapshots are let go, so gc has work next to pinned ones
                if not any(t == tree for t in self.pinned):
                    self.check(f"unpin {k}", runicorn(self.root, "unpin", tree))
                return
            with self.lock:
                self.pinned[tree] = content

        return step

    def deleter(self, scratch: Path) -> Callable[[int], None]:
        scratch.mkdir()

        def step(n: int) -> None:
            weights = scratch / f"w{n}.bin"
            weights.write_bytes(SHARED[n % len(SHARED)] if n % 2 else f"run weights {n}\n".encode() * 30)
            made = subprocess.run(
                [sys.executable, "-c", MAKE_RUN, str(self.root), str(weights)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.check("make run", made)
            if made.returncode == 0:
                self.check("delete-run", runicorn(self.root, "delete-run", made.stdout.split()[-1]))

        return step


@pytest.mark.slow
def test_soak_snapshots_delete_run_gc_and_repair_at_once(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root).close()
    soak = Soak(root, time.monotonic() + SOAK_SECONDS)
    threads = [
        soak.loop("snapshot-1", soak.snapshotter(1, tmp_path / "ws1")),
        soak.loop("snapshot-2", soak.snapshotter(2, tmp_path / "ws2")),
        soak.loop("delete-run", soak.deleter(tmp_path / "runs-src")),
        soak.loop("gc", lambda n: soak.check("gc", runicorn(root, "gc", "--grace", "0"))),
        # Under live writers a check can see a moment between two commits and then
        # repairs; either exit is fine, a traceback or lost data is not.
        soak.loop("verify", lambda n: soak.check("verify --repair", runicorn(root, "verify", "--repair"), ok=(0, 1))),
    ]
    started = time.monotonic()
    for t in threads:
        t.join(timeout=SOAK_SECONDS + 60)
    print(f"soak: {soak.counts} iterations in {time.monotonic() - started:.0f} s, {len(soak.pinned)} pinned snapshots")
    assert not soak.failures, soak.failures[:10]
    assert soak.counts.get("snapshot-1", 0) > 3 and soak.counts.get("gc", 0) > 3, soak.counts
    assert soak.pinned

    with Store(root) as store:
        for tree, content in soak.pinned.items():
            out = tmp_path / "restored" / tree
            restore_from_manifest(store.manifest_path(tree), store.blobs_dir, out)
            got = {p.name: p.read_bytes() for p in out.iterdir()}
            assert got == content, f"snapshot {tree} does not restore byte for byte"
    final = runicorn(root, "verify", "--deep")
    assert final.returncode == 0 and "0 problem(s)" in final.stdout, final.stdout + final.stderr
