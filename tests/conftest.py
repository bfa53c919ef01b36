"""Shared fixtures: a real OpenSSH sshd on 127.0.0.1 (never replaced by a fake)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sshd_server import SshdServer, SshdUnavailable


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdServer]:
    """A running sshd for the whole session; fails (not skips) when it cannot start."""
    server = SshdServer(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except (SshdUnavailable, OSError) as exc:
        pytest.fail(f"cannot start a real sshd for SFTP tests: {exc}")
    yield server
    server.stop()
