"""Snapshots read by helper processes (runicorn.store.ingest_processes): the same tree as
in one process, their holds and batches are the parent writer's, a failing or killed
helper (or parent) leaves the store consistent."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runicorn.errors import RunicornError
from runicorn.store import ingest_processes
from runicorn.store.ingest_processes import Helper, in_helpers, processes_for
from runicorn.store.store import Store


def _workspace(root: Path, n: int, dirs: int = 20) -> Path:
    for i in range(n):
        d = root / f"d{i % dirs:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(f"file {i}\n".encode() * (1 + i % 300))
    return root


def _cli(store: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(store), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _verify_clean(root: Path) -> None:
    with Store(root) as store:
        report = store.verify(deep=True)
        assert report["ok"], report
        assert not [d for d in store.tmp_dir.iterdir() if d.name.startswith("w-")]
    with Store(root) as store, store.index.read() as c:
        assert c.execute("SELECT COUNT(*) FROM holds").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM hold_ranges").fetchone()[0] == 0


def test_helpers_store_the_same_tree_as_one_process(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", 3000)
    one = _cli(tmp_path / "one", "snapshot", str(ws), "--json", env={"RUNICORN_INGEST_PROCESSES": "0"})
    two = _cli(tmp_path / "two", "snapshot", str(ws), "--json", env={"RUNICORN_INGEST_PROCESSES": "3"})
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["tree"] == b["tree"] and b["files_read"] == 3001  # with the .rnignore it made
    _verify_clean(tmp_path / "two")
    # The stat cache the helpers' reads filled vouches for every file next time.
    again = _cli(tmp_path / "two", "snapshot", str(ws), "--json", env={"RUNICORN_INGEST_PROCESSES": "3"})
    assert json.loads(again.stdout)["tree"] == a["tree"]
    restored = tmp_path / "restored"
    assert _cli(tmp_path / "two", "restore", a["tree"], str(restored)).returncode == 0
    for f in ws.rglob("*.txt"):
        assert (restored / f.relative_to(ws)).read_bytes() == f.read_bytes()


def test_a_helper_holds_as_its_parent_and_leaves_the_folder_to_it(tmp_path: Path) -> None:
    """While the parent has not let go, the helpers' blobs are held by the parent's writer
    and lease (gc keeps them), and their batch folders are gone; closing a helper's store
    left the parent's writer folder in place."""
    src = _workspace(tmp_path / "src", 40)
    paths = sorted(str(p) for p in src.rglob("*.txt"))
    got: list[tuple[list[int], list[tuple[str, int]]]] = []
    with Store(tmp_path / "store") as store:
        lease = store.holds.new_lease()
        in_helpers(store, lease, [[[0, 1, 2], [3, 4]], [[5, 6, 7, 8]]], lambda b: [paths[k] for k in b], got.extend)
        writer = store.current_writer
        assert writer is not None and [p.name for p in writer.iterdir()] == ["lock"]
        assert sorted(k for batch, _ in got for k in batch) == list(range(9))
        for batch, infos in got:
            for k, (sha, size) in zip(batch, infos):
                assert store.blob_path(sha).read_bytes() == Path(paths[k]).read_bytes() and size > 0
        with store.index.read() as c:
            holders = {tuple(r) for r in c.execute("SELECT writer, lease FROM hold_ranges")}
        assert holders == {(writer.name, lease.id)}
        assert store.gc(grace_seconds=0)["blobs_deleted"] == 0
        store.release_holds(lease)
        assert store.gc(grace_seconds=0)["blobs_deleted"] == 9
    _verify_clean(tmp_path / "store")


def test_a_helpers_error_is_raised_as_its_own_and_nothing_is_indexed(tmp_path: Path) -> None:
    src = _workspace(tmp_path / "src", 10)
    paths = sorted(str(p) for p in src.rglob("*.txt")) + [str(tmp_path / "no such file")]
    with Store(tmp_path / "store") as store:
        lease = store.holds.new_lease()
        with pytest.raises(FileNotFoundError) as caught:
            in_helpers(store, lease, [[[0, 1]], [[2, 10]]], lambda b: [paths[k] for k in b], _take_all)
        assert caught.value.filename == paths[10]
        assert not store.has_blob(hashlib.sha256(Path(paths[2]).read_bytes()).hexdigest())
        store.release_holds(lease)
    _verify_clean(tmp_path / "store")


def _take_all(ingested: ingest_processes.Ingested) -> None:
    for _ in ingested:
        pass


def test_a_killed_helper_fails_the_snapshot_clearly_and_recovery_keeps_the_store_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a helper while it writes its second batch: the parent names what happened,
    its close recovers the batch the helper left, and the store verifies."""
    src = _workspace(tmp_path / "src", 2000)
    paths = sorted(str(p) for p in src.rglob("*.txt"))
    started: list[Helper] = []
    real_init = Helper.__init__

    def recording_init(self: Helper, *args: object) -> None:
        real_init(self, *args)  # type: ignore[arg-type]
        started.append(self)

    monkeypatch.setattr(Helper, "__init__", recording_init)

    def work(ingested: ingest_processes.Ingested) -> None:
        for _ in ingested:
            started[0].proc.send_signal(signal.SIGKILL)  # busy with the next batch by now

    batches = [list(range(k, k + 500)) for k in range(0, 2000, 500)]
    with Store(tmp_path / "store") as store:
        with pytest.raises(RunicornError, match="killed by signal 9"):
            in_helpers(store, store.holds.new_lease(), [batches], lambda b: [paths[k] for k in b], work)
    _verify_clean(tmp_path / "store")
    ws = _workspace(tmp_path / "ws", 50)
    assert (
        _cli(tmp_path / "store", "snapshot", str(ws), "--json", env={"RUNICORN_INGEST_PROCESSES": "2"}).returncode == 0
    )
    _verify_clean(tmp_path / "store")


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _children(pid: int) -> list[int]:
    """The helper processes of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"ingest_processes" in _cmdline(entry):
                found.append(int(entry))
    return found


def test_a_killed_parents_folder_waits_for_its_helpers_then_is_recovered(tmp_path: Path) -> None:
    """SIGKILL the snapshot while its helpers write: as long as a helper lives (here:
    stopped), the writer folder stays locked and no opening recovers it; once the helpers
    are gone it is recovered and the store verifies, and the snapshot can be taken again."""
    ws = _workspace(tmp_path / "ws", 6000)
    store_root = tmp_path / "store"
    parent = subprocess.Popen(
        [sys.executable, "-m", "runicorn", "--storage", str(store_root), "snapshot", str(ws), "--json"],
        env={**os.environ, "RUNICORN_INGEST_PROCESSES": "2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    helpers: list[int] = []
    blobs = store_root / "archive" / "blobs"
    while time.monotonic() < deadline and parent.poll() is None:
        helpers = _children(parent.pid)
        if len(helpers) == 2 and blobs.is_dir() and sum(1 for _ in blobs.rglob("*")) > 300:
            break
        time.sleep(0.005)
    assert parent.poll() is None and len(helpers) == 2, "the snapshot ended before its helpers were caught"
    for h in helpers:
        os.kill(h, signal.SIGSTOP)
    parent.kill()
    parent.wait()
    try:
        writers = [d for d in (store_root / "archive" / "tmp").iterdir() if d.name.startswith("w-")]
        assert len(writers) == 1
        with Store(store_root):
            assert writers[0].is_dir()  # locked by the helpers: not recovered
    finally:
        for h in helpers:
            os.kill(h, signal.SIGCONT)
    for h in helpers:  # each ends at its batch's end: its input is closed
        for _ in range(3000):
            if not Path(f"/proc/{h}").exists() or "Z" in Path(f"/proc/{h}/stat").read_text().split(")")[1][:3]:
                break
            time.sleep(0.01)
    with Store(store_root):
        assert not writers[0].exists()
    _verify_clean(store_root)
    done = _cli(store_root, "snapshot", str(ws), "--json", env={"RUNICORN_INGEST_PROCESSES": "2"})
    assert done.returncode == 0, done.stderr
    _verify_clean(store_root)


def test_the_number_of_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNICORN_INGEST_PROCESSES", raising=False)
    assert processes_for(100) == 0
    monkeypatch.setenv("RUNICORN_INGEST_PROCESSES", "0")
    assert processes_for(10**6) == 0
    monkeypatch.setenv("RUNICORN_INGEST_PROCESSES", "3")
    assert processes_for(2) == 2 and processes_for(100) == 3
    monkeypatch.setenv("RUNICORN_INGEST_PROCESSES", "two")
    with pytest.raises(RunicornError, match=r"\$RUNICORN_INGEST_PROCESSES is 'two'"):
        processes_for(100)


def test_a_wrong_setting_is_named_by_the_cli(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", 5)
    out = _cli(tmp_path / "store", "snapshot", str(ws), env={"RUNICORN_INGEST_PROCESSES": "-1"})
    assert out.returncode == 1 and "RUNICORN_INGEST_PROCESSES is '-1'" in out.stderr, out.stderr
