"""Work shared with worker processes (runicorn.worker_processes): a snapshot read by them
stores the same tree as one process, their holds and batches are the parent writer's,
a failing or killed worker (or parent) leaves the store consistent; a restore written by
them gives the same files and modes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from runicorn.errors import RunicornError
from runicorn import worker_processes
from runicorn.errors import DamagedBlobError, StoreWriteError
from runicorn.store.ingest_processes import ingest_in_processes
from runicorn.worker_processes import WorkerProcess
from runicorn.workers import processes_for
from runicorn.store.store import Store
from tests.walk_support import one_file_dirs
from tests.process_support import worker_children


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


def test_workers_store_the_same_tree_as_one_process(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", 3000)
    one = _cli(tmp_path / "one", "snapshot", str(ws), "--json", env={"RUNICORN_WORKER_PROCESSES": "0"})
    two = _cli(tmp_path / "two", "snapshot", str(ws), "--json", env={"RUNICORN_WORKER_PROCESSES": "3"})
    assert one.returncode == 0 and two.returncode == 0, (one.stderr, two.stderr)
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    assert a["tree"] == b["tree"] and b["files_read"] == 3001  # with the .rnignore it made
    _verify_clean(tmp_path / "two")
    # The stat cache the workers' reads filled vouches for every file next time.
    again = _cli(tmp_path / "two", "snapshot", str(ws), "--json", env={"RUNICORN_WORKER_PROCESSES": "3"})
    assert json.loads(again.stdout)["tree"] == a["tree"]
    restored = tmp_path / "restored"
    assert _cli(tmp_path / "two", "restore", a["tree"], str(restored)).returncode == 0
    for f in ws.rglob("*.txt"):
        assert (restored / f.relative_to(ws)).read_bytes() == f.read_bytes()


def test_a_worker_holds_as_its_parent_and_leaves_the_folder_to_it(tmp_path: Path) -> None:
    """While the parent has not let go, the workers' blobs are held by the parent's writer
    and lease (gc keeps them), and their batch folders are gone; closing a worker's store
    left the parent's writer folder in place."""
    src = _workspace(tmp_path / "src", 40)
    paths = sorted(str(p) for p in src.rglob("*.txt"))
    got: list[tuple[list[int], list[tuple[str, int]]]] = []
    with Store(tmp_path / "store") as store:
        lease = store.holds.new_lease()
        ingest_in_processes(
            store,
            lease,
            [[[0, 1, 2], [3, 4]], [[5, 6, 7, 8]]],
            lambda b: [paths[k] for k in b],
            got.extend,
            _no_threads,
        )
        writer = store.current_writer
        assert writer is not None and sorted(p.name for p in writer.iterdir()) == ["lock", "workers"]
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


def test_a_workers_error_is_raised_as_its_own_and_nothing_is_indexed(tmp_path: Path) -> None:
    src = _workspace(tmp_path / "src", 10)
    paths = sorted(str(p) for p in src.rglob("*.txt")) + [str(tmp_path / "no such file")]
    with Store(tmp_path / "store") as store:
        lease = store.holds.new_lease()
        with pytest.raises(FileNotFoundError) as caught:
            ingest_in_processes(
                store, lease, [[[0, 1]], [[2, 10]]], lambda b: [paths[k] for k in b], _take_all, _no_threads
            )
        assert caught.value.filename == paths[10]
        assert not store.has_blob(hashlib.sha256(Path(paths[2]).read_bytes()).hexdigest())
        store.release_holds(lease)
    _verify_clean(tmp_path / "store")


def _no_threads() -> None:
    raise AssertionError("the workers should have started")


def _take_all(ingested: worker_processes.Results) -> None:
    for _ in ingested:
        pass


def test_a_killed_worker_fails_the_snapshot_clearly_and_recovery_keeps_the_store_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL a worker while it writes its second batch: the parent names what happened,
    its close recovers the batch the worker left, and the store verifies."""
    src = _workspace(tmp_path / "src", 2000)
    paths = sorted(str(p) for p in src.rglob("*.txt"))
    started: list[WorkerProcess] = []
    real_init = WorkerProcess.__init__

    def recording_init(self: WorkerProcess, *args: object) -> None:
        real_init(self, *args)  # type: ignore[arg-type]
        started.append(self)

    monkeypatch.setattr(WorkerProcess, "__init__", recording_init)

    def work(ingested: worker_processes.Results) -> None:
        for _ in ingested:
            started[0].proc.send_signal(signal.SIGKILL)  # busy with the next batch by now

    batches = [list(range(k, k + 500)) for k in range(0, 2000, 500)]
    with Store(tmp_path / "store") as store:
        with pytest.raises(RunicornError, match="killed by signal 9"):
            ingest_in_processes(
                store, store.holds.new_lease(), [batches], lambda b: [paths[k] for k in b], work, _no_threads
            )
    _verify_clean(tmp_path / "store")
    ws = _workspace(tmp_path / "ws", 50)
    assert (
        _cli(tmp_path / "store", "snapshot", str(ws), "--json", env={"RUNICORN_WORKER_PROCESSES": "2"}).returncode == 0
    )
    _verify_clean(tmp_path / "store")


def _snapshot_in_background(tmp_path: Path, files: int, **popen: Any) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """A CLI snapshot of ``files`` files through two workers, started, not waited for:
    ``(process, store, workspace)``."""
    ws = _workspace(tmp_path / "ws", files)
    store_root = tmp_path / "store"
    parent = subprocess.Popen(
        [sys.executable, "-m", "runicorn", "--storage", str(store_root), "snapshot", str(ws), "--json"],
        env={**os.environ, "RUNICORN_WORKER_PROCESSES": "2"},
        stdout=subprocess.DEVNULL,
        **popen,
    )
    return parent, store_root, ws


def _wait_until_writing(parent: subprocess.Popen[bytes], store_root: Path) -> list[int]:
    """Wait until both workers of ``parent`` exist and some blobs are written; their pids."""
    deadline = time.monotonic() + 60
    workers: list[int] = []
    blobs = store_root / "archive" / "blobs"
    while time.monotonic() < deadline and parent.poll() is None:
        workers = worker_children(parent.pid)
        if len(workers) == 2 and blobs.is_dir() and sum(1 for _ in blobs.rglob("*")) > 300:
            break
        time.sleep(0.005)
    assert parent.poll() is None and len(workers) == 2, "the snapshot ended before its workers were caught"
    return workers


def test_a_killed_parent_takes_its_workers_with_it_and_the_next_command_recovers(tmp_path: Path) -> None:
    """SIGKILL the snapshot while its workers write: they die with it, and the next
    command that opens the store recovers the writer folder they shared; the store
    verifies and the snapshot can be taken again."""
    parent, store_root, ws = _snapshot_in_background(tmp_path, 6000, stderr=subprocess.DEVNULL)
    workers = _wait_until_writing(parent, store_root)
    parent.kill()
    parent.wait()
    for w in workers:
        for _ in range(500):
            if not _alive(w):
                break
            time.sleep(0.01)
        assert not _alive(w), f"worker {w} outlived its parent"
    writers = [d for d in (store_root / "archive" / "tmp").iterdir() if d.name.startswith("w-")]
    assert len(writers) == 1
    with Store(store_root):
        assert not writers[0].exists()
    _verify_clean(store_root)
    done = _cli(store_root, "snapshot", str(ws), "--json", env={"RUNICORN_WORKER_PROCESSES": "2"})
    assert done.returncode == 0, done.stderr
    _verify_clean(store_root)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_keeps_the_writer_folder_locked_while_it_lives(tmp_path: Path) -> None:
    """The worker holds the writer's lock through the descriptor it was given: with the
    parent's own descriptor closed, another process's recovery still leaves the folder
    alone until the worker is gone."""
    root = tmp_path / "store"
    store = Store(root)
    lease = store.holds.new_lease()
    setup = {"root": str(root), "writer": str(store.writer_dir()), "lease": lease.id}
    worker = WorkerProcess("runicorn.store.ingest_processes:serve", setup, pass_fds=(store.writer_lock_fd,))
    src = _workspace(tmp_path / "src", 3)
    worker.ready()
    worker.send([str(p) for p in sorted(src.rglob("*.txt"))])
    assert len(worker.receive()) == 3
    writer = store.current_writer
    assert writer is not None
    os.close(store.writer_lock_fd)  # as if this process were gone
    store._writer_fd = None
    try:
        assert _cli(root, "verify").returncode == 0
        assert writer.is_dir(), "recovered while a worker held its lock"
    finally:
        worker.finish()
    assert _cli(root, "verify").returncode == 0
    assert not writer.exists()
    store._writer = None  # recovered by the other process: nothing left to close
    store.close()


def test_the_number_of_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNICORN_WORKER_PROCESSES", raising=False)
    assert processes_for(100) == 0
    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "0")
    assert processes_for(10**6) == 0
    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "3")
    assert processes_for(2) == 2 and processes_for(100) == 3
    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "two")
    with pytest.raises(RunicornError, match=r"\$RUNICORN_WORKER_PROCESSES is 'two'"):
        processes_for(100)


def test_a_wrong_setting_is_named_by_the_cli(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", 5)
    out = _cli(tmp_path / "store", "snapshot", str(ws), env={"RUNICORN_WORKER_PROCESSES": "-1"})
    assert out.returncode == 1 and "RUNICORN_WORKER_PROCESSES is '-1'" in out.stderr, out.stderr


def test_errors_come_back_whole_through_the_pipe() -> None:
    """A worker's exception is pickled back: the store's own errors keep their fields."""
    import pickle

    damaged = pickle.loads(pickle.dumps(DamagedBlobError("bad", sha256="ab" * 32, path="/b", what="'x'")))
    assert (str(damaged), damaged.sha256, damaged.path, damaged.what) == ("bad", "ab" * 32, "/b", "'x'")
    refused = pickle.loads(pickle.dumps(StoreWriteError("cannot write", 13, "/s/blobs")))
    assert (str(refused), refused.errno, refused.filename) == ("cannot write", 13, "/s/blobs")


class _Unpicklable(Exception):
    def __init__(self, message: str, *, extra: int) -> None:
        super().__init__(message)


def test_an_exception_that_does_not_pickle_comes_back_as_its_message() -> None:
    import io

    out = io.BytesIO()
    worker_processes._answer(out, "error", _Unpicklable("odd failure", extra=1))
    out.seek(0)
    import pickle

    kind, value = pickle.load(out)
    assert kind == "error" and isinstance(value, RunicornError) and str(value) == "odd failure"


def test_a_restore_written_by_workers_gives_the_same_files_and_modes(tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", 600)
    (ws / "run.sh").write_text("#!/bin/sh\n")
    (ws / "run.sh").chmod(0o755)
    (ws / "secret").write_text("private\n")
    (ws / "secret").chmod(0o600)
    (ws / "link").symlink_to("d00/f00000.txt")
    store = tmp_path / "store"
    tree = json.loads(_cli(store, "snapshot", str(ws), "--json").stdout)["tree"]
    for how in ("copy", "hardlink"):
        target = tmp_path / f"out-{how}"
        out = _cli(store, "restore", tree, str(target), "--link", how, env={"RUNICORN_WORKER_PROCESSES": "2"})
        assert out.returncode == 0, out.stderr
        for f in ws.rglob("*"):
            got = target / f.relative_to(ws)
            if f.is_symlink():
                assert os.readlink(got) == os.readlink(f)
            elif f.is_file():
                assert got.read_bytes() == f.read_bytes()
                if how == "copy":  # a hard link has its blob's (read-only) mode
                    assert got.stat().st_mode & 0o777 == f.stat().st_mode & 0o777
        assert sorted(p.name for p in tmp_path.iterdir() if ".rn-" in p.name) == []
    _verify_clean(store)


def test_a_restore_by_workers_flushes_ahead_from_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers' batches are smaller than the flush step: counted per batch they never
    started a flush, and the final sync had every byte left.  The parent counts them."""
    from runicorn import fsutil
    from runicorn.restore import engine

    ws = _workspace(tmp_path / "ws", 600)  # about 1 MB
    tree = json.loads(_cli(tmp_path / "store", "snapshot", str(ws), "--json").stdout)["tree"]
    store = Store(tmp_path / "store")
    started: list[str] = []
    real = fsutil.syncfs_in_background

    def recorded(path: Path) -> None:
        started.append(str(path))
        real(path)

    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "2")
    monkeypatch.setattr(engine, "_PROCESS_BATCH_FILES", 20)  # 30 batches
    monkeypatch.setattr(fsutil, "SYNC_AHEAD_BYTES", 64 << 10)  # a flush every few batches
    monkeypatch.setattr(fsutil, "syncfs_in_background", recorded)
    target = tmp_path / "out"
    result = engine.restore_from_manifest(store.manifest_path(tree), store.blobs_dir, target)
    assert result["success"], result
    assert started, "no flush was started while the workers wrote"
    assert all(".rn-restore-" in p for p in started)  # the staging folder, before the rename
    for f in ws.rglob("*"):
        if f.is_file():
            assert (target / f.relative_to(ws)).read_bytes() == f.read_bytes()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("marked", [True, False])
def test_recovery_waits_a_moment_for_the_workers_of_a_writer_that_is_gone(tmp_path: Path, marked: bool) -> None:
    """A writer folder whose process is gone but whose lock a worker still holds (killed
    with its parent, not dead yet): recovery waits for the lock when the folder says it
    passed its lock to workers, and otherwise takes the holder for a live writer."""
    root = tmp_path / "store"
    Store(root).close()
    writer = root / "archive" / "tmp" / f"w-{_dead_pid()}-0123456789ab"
    writer.mkdir()
    (writer / "lock").touch()
    if marked:
        (writer / "workers").touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(0.4)\n",
            str(writer / "lock"),
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    with Store(root):
        assert writer.exists() != marked
    holder.wait()


def test_the_current_directory_never_reaches_a_worker(tmp_path: Path) -> None:
    """A snapshot taken inside an untrusted checkout: its pickle.py or runicorn/ package is
    not what the workers import (they start with -P and the parent's module path)."""
    ws = _workspace(tmp_path / "ws", 200)
    ran = tmp_path / "ran"
    evil = f"open({str(ran)!r}, 'a').write('ran')\n"
    (ws / "pickle.py").write_text(evil)
    (ws / "runicorn").mkdir()
    (ws / "runicorn" / "__init__.py").write_text(evil)
    import runicorn

    env = {**os.environ, "RUNICORN_WORKER_PROCESSES": "2", "PYTHONPATH": str(Path(runicorn.__file__).parents[1])}
    out = subprocess.run(
        # -P: as the installed command, which never puts the current directory on its path.
        [sys.executable, "-P", "-m", "runicorn", "--storage", str(tmp_path / "store"), "snapshot", "."],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert not ran.exists()
    _verify_clean(tmp_path / "store")


def test_stray_output_of_a_site_hook_does_not_confuse_the_answers(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text("import sys\nsys.stdout.write('x' * 200000)\nsys.stdout.flush()\n")
    ws = _workspace(tmp_path / "ws", 300)
    import runicorn

    path = os.pathsep.join([str(hooks), str(Path(runicorn.__file__).parents[1])])
    out = subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(tmp_path / "store"), "snapshot", str(ws)],
        env={**os.environ, "RUNICORN_WORKER_PROCESSES": "2", "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    _verify_clean(tmp_path / "store")


def test_workers_that_cannot_set_up_leave_the_job_to_threads(tmp_path: Path) -> None:
    ran: list[str] = []
    worker_processes.in_processes(
        "runicorn.no_such_module:serve", None, [[[1]], [[2]]], list, _take_all, in_threads=lambda: ran.append("threads")
    )
    assert ran == ["threads"]


def test_a_missing_interpreter_leaves_the_snapshot_to_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runicorn

    ws = _workspace(tmp_path / "ws", 100)
    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "2")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    res = runicorn.snapshot_workspace(ws, None, storage=str(tmp_path / "store"))
    assert res["files_read"] == 101
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    _verify_clean(tmp_path / "store")


def test_when_one_worker_fails_the_others_end_their_batch_and_nothing_is_set_aside(tmp_path: Path) -> None:
    src = _workspace(tmp_path / "src", 3000)
    paths = sorted(str(p) for p in src.rglob("*.txt")) + [str(tmp_path / "gone")]
    with Store(tmp_path / "store") as store:
        lease = store.holds.new_lease()
        with pytest.raises(FileNotFoundError):
            ingest_in_processes(
                store,
                lease,
                [[[3000]], [list(range(0, 1500)), list(range(1500, 3000))]],
                lambda b: [paths[k] for k in b],
                _take_all,
                _no_threads,
            )
        store.release_holds(lease)
        quarantine = store.quarantine_dir
    assert not (quarantine.exists() and any(quarantine.iterdir()))
    _verify_clean(tmp_path / "store")


def test_ctrl_c_stops_the_snapshot_quietly_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    parent, store_root, _ = _snapshot_in_background(tmp_path, 6000, stderr=subprocess.PIPE, start_new_session=True)
    _wait_until_writing(parent, store_root)
    os.killpg(parent.pid, signal.SIGINT)  # what a terminal does: the whole group
    _, err = parent.communicate(timeout=120)
    assert parent.returncode != 0 and b"Traceback" not in err, err.decode()
    quarantine = store_root / "archive" / "quarantine"
    assert not (quarantine.exists() and any(quarantine.iterdir()))
    _verify_clean(store_root)


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path: Path) -> None:
    parent, store_root, _ = _snapshot_in_background(tmp_path, 3000, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and parent.poll() is None and not worker_children(parent.pid):
        time.sleep(0.001)
    os.killpg(parent.pid, signal.SIGINT)
    _, err = parent.communicate(timeout=120)
    assert b"Traceback" not in err, err.decode()
    _verify_clean(store_root)


def test_an_interrupt_of_the_caller_stops_the_workers_after_their_batch(tmp_path: Path) -> None:
    """Ctrl-C in the caller's thread while workers write: each ends after the batch it
    has, and the interrupt comes back without the rest of the job being done."""
    src = _workspace(tmp_path / "src", 400)
    paths = sorted(str(p) for p in src.rglob("*.txt"))
    taken: list[int] = []

    def work(ingested: worker_processes.Results) -> None:
        for batch, _ in ingested:
            taken.append(len(batch))
            if len(taken) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # reaches the main thread, waiting for this one

    groups = [
        [list(range(k, k + 10)) for k in range(0, 200, 10)],
        [list(range(k, k + 10)) for k in range(200, 400, 10)],
    ]
    with Store(tmp_path / "store") as store:
        lease = store.holds.new_lease()
        with pytest.raises(KeyboardInterrupt):
            ingest_in_processes(store, lease, groups, lambda b: [paths[k] for k in b], work, _no_threads)
        store.release_holds(lease)
    assert sum(taken) < 200, taken
    _verify_clean(tmp_path / "store")


# ----------------------------------------------------------------- reading beside the walk


def _walk(ws: Path, seen: list[str], *, fail_after: int | None = None, missing_first: bool = False) -> Any:
    """:func:`_files` as a snapshot's walk (each file a directory of its own)."""
    return one_file_dirs(_files(ws, seen, fail_after=fail_after, missing_first=missing_first))


def _files(ws: Path, seen: list[str], *, fail_after: int | None = None, missing_first: bool = False) -> Any:
    """The workspace's files as the snapshot's walk gives them, each counted in ``seen``;
    ``fail_after``: the walk fails after so many; ``missing_first``: a file that is gone
    by the time it is read comes first."""
    files = sorted(p for p in ws.rglob("*") if p.is_file())
    if missing_first:
        gone = ws / "d00" / "a-gone.txt"
        gone.write_bytes(b"soon gone\n")
        st = os.lstat(gone)
        gone.unlink()
        seen.append(str(gone))
        yield "d00/a-gone.txt", str(gone), st
    for p in files:
        if fail_after is not None and len(seen) >= fail_after:
            raise RunicornError(f"{ws}/.rnignore: the walk failed (a test)")
        seen.append(str(p))
        yield p.relative_to(ws).as_posix(), str(p), os.lstat(p)


def _reading_beside_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    from runicorn.snapshot import capture

    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "2")
    monkeypatch.setattr(capture, "_PROCESS_BATCH_FILES", 10)  # many batches, a short queue
    monkeypatch.setattr(capture, "_READ_EARLY_FROM", 2)  # from the second file to read


def test_files_are_read_beside_the_walk_and_give_the_same_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runicorn.snapshot.capture import capture_tree

    ws = _workspace(tmp_path / "ws", 600)
    # Names this walk gives out of the tree's order ("a/..." before "a-b/..."): the lines are
    # sorted after the walk, with what was read of them meanwhile.
    for folder in ("a", "a-b", "a.c"):
        for i in range(40):
            (ws / folder).mkdir(exist_ok=True)
            (ws / folder / f"f{i}").write_bytes(f"{folder} {i}\n".encode() * (i + 1))
    with Store(tmp_path / "one") as store:
        monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "0")
        alone = capture_tree(store, ws, _walk(ws, []), source=str(ws)).tree
    _reading_beside_the_walk(monkeypatch)
    steps: list[tuple[int, int]] = []
    with Store(tmp_path / "two") as store:
        got = capture_tree(store, ws, _walk(ws, []), source=str(ws), progress=lambda d, t: steps.append((d, t)))
    assert got.tree == alone and got.files_read == 720
    total = sum(p.stat().st_size for p in ws.rglob("*") if p.is_file())
    assert steps[-1] == (total, total) and all(a[0] <= b[0] for a, b in zip(steps, steps[1:]))
    _verify_clean(tmp_path / "two")


def test_a_file_gone_before_it_is_read_stops_the_walk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reading's error is the snapshot's, raised at the walk's next batch: the walk does
    not go on to the end of a large workspace for a snapshot that has failed."""
    from runicorn.snapshot.capture import capture_tree

    ws = _workspace(tmp_path / "ws", 3000)
    _reading_beside_the_walk(monkeypatch)
    seen: list[str] = []
    with Store(tmp_path / "store") as store:
        with pytest.raises(RunicornError, match=r"a-gone\.txt: vanished during the snapshot of .*try again"):
            capture_tree(store, ws, _walk(ws, seen, missing_first=True), source=str(ws))
    assert len(seen) < 1000, len(seen)
    _verify_clean(tmp_path / "store")


def test_a_walk_that_fails_stops_the_reading_and_keeps_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runicorn.snapshot.capture import capture_tree

    ws = _workspace(tmp_path / "ws", 1000)
    _reading_beside_the_walk(monkeypatch)
    with Store(tmp_path / "store") as store:
        with pytest.raises(RunicornError, match=r"the walk failed"):
            capture_tree(store, ws, _walk(ws, [], fail_after=700), source=str(ws))
        # What was read is no snapshot's: held by none, gc's at once.
        assert store.index.scalar("SELECT COUNT(*) FROM trees") == 0
        assert store.gc(grace_seconds=0, list_blobs=False)["blobs_deleted"] > 0
    _verify_clean(tmp_path / "store")


def _interrupted_capture(tmp_path: Path, files: int, size: int, after_blobs: int, interrupts: int) -> None:
    """Snapshot ``files`` random files of ``size`` bytes in this process, send it
    ``interrupts`` SIGINTs (20 ms apart) once ``after_blobs`` blob files exist, and check
    that it ended only after its workers, leaving a whole store."""
    import threading

    from runicorn.snapshot import capture

    ws = tmp_path / "ws"
    for i in range(files):
        (ws / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (ws / f"d{i % 10}" / f"f{i:04d}").write_bytes(os.urandom(size))
    blobs = tmp_path / "store" / "archive" / "blobs"

    def interrupt() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(1 for p in blobs.rglob("*") if p.is_file()) < after_blobs:
            time.sleep(0.005)
        for _ in range(interrupts):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.02)

    store = Store(tmp_path / "store")
    timer = threading.Thread(target=interrupt)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            capture.capture_tree(store, ws, _walk(ws, []), source=str(ws))
            time.sleep(5)  # (the tree was stored before the interrupts: they land here)
        assert not worker_children(os.getpid()), "workers outlived the snapshot"
        assert not [t for t in threading.enumerate() if t.name == "runicorn-early-read"]
    finally:
        timer.join()
        store.close()
    _verify_clean(tmp_path / "store")


def test_a_second_ctrl_c_still_waits_for_the_workers_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two interrupts in a row while workers read beside the walk: the snapshot ends only
    once they have ended their batch, so the store it closes is whole."""
    from runicorn.snapshot import capture

    _reading_beside_the_walk(monkeypatch)
    monkeypatch.setattr(capture, "_PROCESS_BATCH_FILES", 200)
    _interrupted_capture(tmp_path, 1500, 32 << 10, 300, interrupts=2)


def test_progress_counts_the_files_read_again_from_the_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blobs gone from the store are read again from the workspace: the total the progress
    gives covers them from its first call (it never reaches 100% and then grows)."""
    from runicorn.snapshot.capture import capture_tree

    ws = _workspace(tmp_path / "ws", 400)
    time.sleep(2.1)  # the stat cache vouches only for files older than its rows' timestamp tick
    with Store(tmp_path / "store") as store:
        capture_tree(store, ws, _walk(ws, []), source=str(ws))
    blob_files = sorted(p for p in (tmp_path / "store" / "archive" / "blobs").rglob("*") if p.is_file())
    for p in blob_files[::4]:
        p.unlink()  # (some are pages of the first tree: only the second is looked at here)
    for p in sorted(ws.rglob("*.txt"))[::2]:
        p.write_bytes(p.read_bytes() + b"more\n")
    _reading_beside_the_walk(monkeypatch)
    steps: list[tuple[int, int]] = []
    with Store(tmp_path / "store") as store:
        capture_tree(store, ws, _walk(ws, []), source=str(ws), progress=lambda d, t: steps.append((d, t)))
    totals = {t for _, t in steps}
    assert len(totals) == 1, sorted(totals)
    assert steps[-1][0] == steps[-1][1]


def test_ctrl_c_while_the_files_found_are_handed_over_stops_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files the walk found before the workers started fill the queue many times over:
    Ctrl-C while the walk waits to hand them over still stops the workers after their batch."""
    from runicorn.snapshot import capture

    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "1")
    monkeypatch.setattr(capture, "_PROCESS_BATCH_FILES", 3)  # 100 batches, a queue of 2
    monkeypatch.setattr(capture, "_READ_EARLY_FROM", 300)  # all found before the workers start
    _interrupted_capture(tmp_path, 300, 16 << 10, 20, interrupts=1)
