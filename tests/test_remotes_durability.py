"""Durability of remote writes: SFTP uploads fsynced on the server, stale locks broken only
while still the same object, large uploads resumed after a SIGKILL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remote_support import make_remote, opened


def test_sftp_uploads_are_fsynced_on_the_server_before_the_rename(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote("sftp", tmp_path, request)
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * (3 << 20))
    with opened(remote) as backend:
        assert backend.put_create("blobs/aa/one", b"small object\n")
        assert backend.put_create("blobs/aa/two", src)  # the streamed path
        backend.put_replace("locks/shared-x.json", b"{}\n")
        # the real OpenSSH sftp-server answered fsync@openssh.com for every staged file
        assert backend.fsync_supported is True and backend.fsyncs == 3
        assert backend.get("blobs/aa/two")[0] == src.read_bytes()
        assert not backend.put_create("blobs/aa/one", b"other\n")
        assert backend.fsyncs == 3  # an existing key is refused before anything is staged


BREAKER = """
import os, sys, time
from runicorn.remotes.config import Remote, open_backend
from runicorn.remotes.errors import RemoteBusyError
from runicorn.remotes.locks import acquire_exclusive
backend = open_backend(Remote("t", sys.argv[1], sys.argv[2] or None))
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # every breaker starts at once
try:
    lock = acquire_exclusive(backend)
except RemoteBusyError:
    print("busy")
    sys.exit(0)
start = time.time()
time.sleep(0.6)  # held: a second holder would overlap this interval
end = time.time()
lock.release()
print("held", start, end)
"""


@pytest.mark.parametrize("kind", ["file", "s3", "sftp"])
def test_processes_racing_to_break_one_stale_lock_never_both_hold_it(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import json
    import os
    import socket
    import subprocess
    import sys
    import time

    from runicorn.remotes.locks import EXCLUSIVE
    from runicorn.remotes.push import ensure_config

    remote = make_remote(kind, tmp_path, request)
    env = {**os.environ, **remote.env}
    stale = json.dumps(
        {"host": socket.gethostname(), "pid": 1, "time": time.time() - 3600, "kind": "exclusive", "token": "dead"}
    ).encode()
    wins = 0
    for trial in range(6):
        with opened(remote) as backend:
            ensure_config(backend)
            backend.put_replace(EXCLUSIVE, stale)  # a gc killed long ago
        at = time.time() + 2.5
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", BREAKER, remote.url, remote.endpoint or "", str(at)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        held = sorted(
            (float(a), float(b))
            for line in (o[0] for o in outs)
            if line.startswith("held")
            for a, b in [line.split()[1:3]]
        )
        assert held, (trial, outs)  # the stale lock was broken by someone
        for (_, end), (start, _) in zip(held, held[1:]):
            assert end <= start, (trial, held)  # never two holders at once
        wins += len(held)
        with opened(remote) as backend:
            assert backend.head(EXCLUSIVE) is None  # released
    print(f"\n{kind}: 6 races of 3 breakers, {wins} acquisitions, never overlapping")


PART = 5 << 20


def _upload_records(store_root: Path) -> list[dict]:
    import json

    out = []
    for p in (store_root / "archive" / "remote-uploads").glob("*/*.json"):
        try:
            out.append(json.loads(p.read_bytes()))
        except (OSError, ValueError):
            pass  # being replaced right now
    return out


def _kept(rec: dict) -> int:
    """Bytes a record says the remote holds: S3 parts, or a staged file's verified length."""
    return PART * len(rec["parts"]) if "parts" in rec else int(rec["verified"])


def _push_killed_mid_upload(a: Path, remote, tmp_path: Path, seed: int) -> tuple[str, bytes, int]:  # type: ignore[no-untyped-def]
    """Pin a tree of one 8-part blob and SIGKILL a child `runicorn push` once at least two
    parts are recorded; returns (pin, the blob's bytes, bytes the record says were kept)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from runicorn.store import Store

    for attempt in range(4):
        d = tmp_path / f"big-{seed}-{attempt}"
        d.mkdir()
        data = os.urandom(8 * PART - 12345)  # eight parts, the last one short
        (d / "weights.bin").write_bytes(data)
        pin = f"big{seed}{attempt}"
        with Store(a) as s:  # a tree of exactly this one blob
            s.pin(s.ingest_directory(d), pin)
        env = {**os.environ, "RUNICORN_DIR": str(a), "RUNICORN_REMOTE_PART_SIZE": str(PART), **remote.env}
        p = subprocess.Popen(
            [sys.executable, "-m", "runicorn", "push", pin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 120
        while p.poll() is None and time.monotonic() < deadline:
            if any(_kept(r) >= 2 * PART for r in _upload_records(a)):
                p.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        p.wait()
        if p.returncode == -signal.SIGKILL:
            recs = _upload_records(a)
            assert len(recs) == 1 and recs[0]["size"] == len(data)
            return pin, data, _kept(recs[0])
        assert p.returncode == 0, p.stderr.read().decode() if p.stderr else ""
    raise AssertionError("the push always finished before it could be killed")


@pytest.mark.parametrize("kind", ["s3", "file", "sftp"])
def test_a_push_killed_mid_upload_resumes_without_resending_confirmed_parts(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from tests.remote_support import rn, rn_json

    remote = make_remote(kind, tmp_path, request)
    remote.env["RUNICORN_REMOTE_PART_SIZE"] = str(PART)
    a, b = tmp_path / "a", tmp_path / "b"
    rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=a, env=remote)
    pin, data, kept = _push_killed_mid_upload(a, remote, tmp_path, 1)
    assert 2 * PART <= kept < len(data)
    again = rn_json(["push", pin], storage=a, env=remote)
    # only what the record did not hold is sent: the confirmed parts are not sent again
    assert again["ok"] and again["blobs_uploaded"] == 1, again
    assert again["bytes_resumed"] == kept and again["bytes_uploaded"] == len(data) - kept
    assert _upload_records(a) == []  # the record goes once the blob is published
    print(
        f"\n{kind}: killed after {kept} of {len(data)} bytes were confirmed; the next push sent "
        f"{again['bytes_uploaded']} bytes and kept {again['bytes_resumed']}"
    )
    # a fresh store pulls it byte-identical (its sha256 checked on the way in)
    b.mkdir()
    shutil.copy(a / "remotes.toml", b / "remotes.toml")
    rn_json(["pull", pin], storage=b, env=remote)
    tree = rn_json(["refs", "--kind", "pin"], storage=b)[0]["tree"]
    rn(["restore", tree, str(tmp_path / "out")], storage=b)
    assert (tmp_path / "out" / "weights.bin").read_bytes() == data
    assert rn_json(["remote", "verify", "--deep"], storage=a, env=remote)["ok"]
    if kind != "s3":
        return
    # remote gc aborts an unfinished upload past its grace period; the next push starts afresh
    pin2, data2, _ = _push_killed_mid_upload(a, remote, tmp_path, 2)
    dry = rn_json(["remote", "gc", "--grace", "0", "--dry-run"], storage=a, env=remote)
    assert dry["uploads_aborted"] == 1 and "unfinished upload" in dry["uploads"][0]
    assert rn_json(["remote", "gc", "--grace", "0"], storage=a, env=remote)["uploads_aborted"] == 1
    fresh = rn_json(["push", pin2], storage=a, env=remote)
    assert fresh["bytes_resumed"] == 0 and fresh["bytes_uploaded"] == len(data2)
    assert rn_json(["remote", "gc", "--grace", "0", "--dry-run"], storage=a, env=remote)["uploads_aborted"] == 0
    assert rn_json(["remote", "verify", "--deep"], storage=a, env=remote)["ok"]
