"""Concurrent pushes and remote gc, and SIGKILLed pushes and gcs, against real remotes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.remote_support import Env, make_remote, opened, rn, rn_json


def _trees(store_root: Path, tmp: Path, names: list[str], *, files: int = 60) -> dict[str, str]:
    """Pin one tree per name; trees overlap (shared files) and each has its own files."""
    from runicorn.store import Store

    out = {}
    with Store(store_root) as s:
        for n in names:
            d = tmp / f"src-{store_root.name}-{n}"
            (d / "common").mkdir(parents=True)
            for i in range(files):
                (d / "common" / f"c{i}.txt").write_text(f"shared by every tree {i}\n")
                (d / f"own{i}.txt").write_text(f"{n} {i}\n")
            (d / "big.bin").write_bytes(os.urandom(1 << 20) + n.encode())
            tree = s.ingest_directory(d)
            s.pin(tree, n)
            out[n] = tree
    return out


def _spawn(args: list[str], storage: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "runicorn", *args],
        env={**os.environ, "RUNICORN_DIR": str(storage), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _check_refs_complete(remote: Env) -> dict:
    """Every remote ref's manifest and blobs exist (in process, no SIGKILL can hit it)."""
    from runicorn.remotes.maintenance import verify

    with opened(remote) as backend:
        return verify(backend)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "s3", "sftp"])
def test_four_pushers_and_a_gc_at_once_leave_every_ref_complete(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    stores = [tmp_path / f"s{i}" for i in range(4)]
    pinned: dict[tuple[int, str], str] = {}
    for i, s in enumerate(stores):
        rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=s, env=remote)
        # stores i and i+1 share a pin name's content: trees overlap across processes
        for name, tree in _trees(s, tmp_path, [f"p{i}", f"p{(i + 1) % 4}-copy{i}"], files=40).items():
            pinned[(i, name)] = tree
    gc_env = {**remote.env, "RUNICORN_REMOTE_LOCK_WAIT": "120"}
    procs = [_spawn(["push", "--all"], s, gc_env) for s in stores]
    gcs = []
    for _ in range(3):
        gcs.append(_spawn(["remote", "gc", "--grace", "0"], stores[0], gc_env))
        gcs[-1].wait(timeout=300)
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read().decode() if p.stderr else ""
    for p in gcs:  # a gc may only fail by finding another gc holding the lock
        err = p.stderr.read().decode() if p.stderr else ""
        assert p.returncode == 0 or "another remote gc is running" in err, err
    report = rn_json(["remote", "verify", "--deep"], storage=stores[0], env=remote)
    assert report["ok"], report["problems"]
    refs = {r["ref"]: r["tree"] for s in stores for r in rn_json(["push", "--all"], storage=s, env=remote)["refs"]}
    assert {f"pin/{name}": tree for (_, name), tree in pinned.items()} == refs
    assert all(r for r in refs)


@pytest.mark.slow
@pytest.mark.parametrize("kind,trials", [("file", 16), ("s3", 10), ("sftp", 6)])
def test_sigkill_during_push_and_remote_gc_never_leaves_a_ref_naming_a_missing_object(
    kind: str, trials: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    a = tmp_path / "a"
    rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=a, env=remote)
    names = [f"t{i}" for i in range(trials)]
    trees = _trees(a, tmp_path, names + ["calibrate"], files=150)
    del trees["calibrate"]
    # kill times spread over what a whole push takes on this machine
    start = time.monotonic()
    assert _spawn(["push", "calibrate", "-j", "4"], a, remote.env).wait() == 0
    whole = time.monotonic() - start
    rng = random.Random(1234)
    killed = 0
    for i, name in enumerate(names):
        procs = [_spawn(["push", name, "-j", "4"], a, remote.env)]
        if i % 2:
            procs.append(_spawn(["remote", "gc", "--grace", "0"], a, remote.env))
        time.sleep(rng.uniform(0.3, 1.0) * whole)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                killed += 1
            p.wait()
        report = _check_refs_complete(remote)
        assert report["ok"], (name, report["problems"])
    # the killed processes' locks are recognised as dead: gc runs, then everything is clean
    swept = rn_json(["remote", "gc", "--grace", "0"], storage=a, env=remote)
    final = rn_json(["push", *names], storage=a, env=remote)
    assert final["ok"] and {r["tree"] for r in final["refs"]} == set(trees.values())
    report = rn_json(["remote", "verify", "--deep"], storage=a, env=remote)
    assert report["ok"], report["problems"]
    print(
        f"\n{kind}: {trials} trials, {killed} processes killed by SIGKILL while running; the last gc swept {swept['blobs_deleted']} orphaned blob(s)"
    )
    assert killed >= 1
