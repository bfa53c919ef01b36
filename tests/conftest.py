"""Shared fixtures.

* Every test gets its own storage root and HOME, and never touches ~/.runicorn.
* ``sshd``: a real OpenSSH sshd on 127.0.0.1 for the whole session (never replaced by a
  fake); ``seaweed``: a real SeaweedFS (S3) on 127.0.0.1, one per session (per xdist
  worker).  Both fail, never skip, when they cannot start.  The servers themselves live in
  ``tools/testbed`` (the benchmarks start them too); the fixtures here only start and stop them.
* ``sync_server``: a run-sync server's directory of runs, shared by the sync tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.testbed.run_trees import make_tree
from tools.testbed.seaweed import SeaweedServer, SeaweedUnavailable
from tools.testbed.sshd import SshdServer, SshdUnavailable


# Which real part a fixture needs, as a marker: `pytest -m "not root and not sshd"` runs the
# rest on a machine without root or sshd (CI runs everything).
_MARKER_OF_FIXTURE = {"sshd": "sshd", "conn": "sshd", "seaweed": "s3", "tiny_fs": "root", "ro_mount": "root"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            marker = _MARKER_OF_FIXTURE.get(fixture)
            if marker is not None:
                item.add_marker(marker)
        # remote tests take their server by name, through the "kind" parameter
        kind = getattr(getattr(item, "callspec", None), "params", {}).get("kind")
        if kind in ("sftp", "s3"):
            item.add_marker("sshd" if kind == "sftp" else "s3")


@pytest.fixture(autouse=True)
def _isolated_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "rn-home"
    monkeypatch.setenv("RUNICORN_DIR", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    yield root
    from runicorn.runs import run as runs_module
    from runicorn.store.cache import forget_open_stores

    with runs_module._active_lock:
        runs_module._active.clear()  # a run a test left open must not leak into the next
    forget_open_stores()


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from runicorn.store import Store

    s = Store(tmp_path / "store")
    yield s
    s.close()


def _serve(server, unavailable: type[Exception], what: str):  # type: ignore[no-untyped-def]
    """Start ``server`` for the session, yield it, stop it; fail (never skip) when it cannot start."""
    try:
        server.start()
    except (unavailable, OSError) as exc:
        pytest.fail(f"cannot start {what}: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A running sshd for the whole session."""
    yield from _serve(SshdServer(tmp_path_factory.mktemp("sshd")), SshdUnavailable, "a real sshd for SFTP tests")


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A running SeaweedFS for the whole session (defined here once, so every test module
    shares one instance per worker)."""
    yield from _serve(
        SeaweedServer(tmp_path_factory.mktemp("seaweed")), SeaweedUnavailable, "SeaweedFS for S3 remote tests"
    )


@pytest.fixture
def sync_server(tmp_path: Path) -> Path:
    """A run-sync server's root: six runs over a few projects and experiments, no sync manifest
    yet (tests that need one generate it)."""
    root = tmp_path / "server"
    make_tree(root, 6)
    return root


@pytest.fixture
def conn(sshd: SshdServer) -> Iterator[object]:
    """A paramiko SSHClient connected to the session's sshd."""
    client = sshd.connect()
    yield client
    client.close()


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB tmpfs: a filesystem that fills up.  Needs root (CI runs as root)."""
    import os
    import subprocess

    from runicorn.store.cache import forget_open_stores

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        forget_open_stores()  # nothing may keep the mount busy
        subprocess.run(["umount", "-l", str(mnt)], check=False)
