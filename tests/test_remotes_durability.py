"""Durability of remote writes: SFTP uploads fsynced on the server, stale locks broken only
while still the same object, large uploads resumed after a SIGKILL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remote_support import make_remote, opened


def test_sftp_uploads_are_fsynced_on_the_server_before_the_rename(tmp_path: Path,
                                                                  request: pytest.FixtureRequest) -> None:
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
def test_processes_racing_to_break_one_stale_lock_never_both_hold_it(kind: str, tmp_path: Path,
                                                                     request: pytest.FixtureRequest) -> None:
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
    stale = json.dumps({"host": socket.gethostname(), "pid": 1, "time": time.time() - 3600, "kind": "exclusive",
                        "token": "dead"}).encode()
    wins = 0
    for trial in range(6):
        with opened(remote) as backend:
            ensure_config(backend)
            backend.put_replace(EXCLUSIVE, stale)  # a gc killed long ago
        at = time.time() + 2.5
        procs = [subprocess.Popen([sys.executable, "-c", BREAKER, remote.url, remote.endpoint or "", str(at)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
        held = sorted((float(a), float(b)) for line in (o[0] for o in outs) if line.startswith("held")
                      for a, b in [line.split()[1:3]])
        assert held, (trial, outs)  # the stale lock was broken by someone
        for (_, end), (start, _) in zip(held, held[1:]):
            assert end <= start, (trial, held)  # never two holders at once
        wins += len(held)
        with opened(remote) as backend:
            assert backend.head(EXCLUSIVE) is None  # released
    print(f"\n{kind}: 6 races of 3 breakers, {wins} acquisitions, never overlapping")
