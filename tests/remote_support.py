"""Helpers for remote tests: remotes of every kind (the ``seaweed`` and ``sshd`` servers are
session fixtures in conftest.py), the CLI as a child process."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

KINDS = ["file", "sftp", "s3"]


class Env:
    """Where one test's remote lives and the environment a child process needs to reach it."""

    def __init__(self, kind: str, url: str, endpoint: str | None, env: dict[str, str]) -> None:
        self.kind, self.url, self.endpoint, self.env = kind, url, endpoint, env

    def add_args(self) -> list[str]:
        return [self.url] + (["--endpoint", self.endpoint] if self.endpoint else [])


def make_remote(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Env:
    env = {"HOME": os.environ["HOME"]}
    if kind == "file":
        return Env(kind, f"file://{tmp_path / 'shared-remote'}", None, env)
    if kind == "sftp":
        sshd = request.getfixturevalue("sshd")
        sshd.write_client_config(Path(os.environ["HOME"]), "remotehost", trust_host=True)
        return Env(kind, f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{tmp_path / 'sftp-remote'}", None, env)
    server = request.getfixturevalue("seaweed")
    env.update(server.env())
    return Env(kind, f"s3://t{secrets.token_hex(6)}/team/runicorn", server.endpoint, env)


@contextmanager
def opened(remote: Env) -> Iterator[Any]:
    """The remote's backend, opened in this process with the remote's environment."""
    from runicorn.remotes.config import Remote, open_backend

    old = {k: os.environ.get(k) for k in remote.env}
    os.environ.update(remote.env)
    try:
        backend = open_backend(Remote("t", remote.url, remote.endpoint))
        try:
            yield backend
        finally:
            backend.close()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rn(
    args: list[str], *, storage: Path, env: Env | None = None, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, as a user would."""
    full = {**os.environ, "RUNICORN_DIR": str(storage), **(env.env if env else {})}
    p = subprocess.run(
        [sys.executable, "-m", "runicorn", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=300
    )
    if check and p.returncode != 0:
        raise AssertionError(f"runicorn {' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


def rn_json(args: list[str], **kw: Any) -> Any:
    return json.loads(rn([*args, "--json"], **kw).stdout)


def make_tree(root: Path, seed: int, *, big: bool = True) -> Path:
    """A directory with small files, an executable, a symlink, nested dirs and (``big``) a
    2 MiB file, so both the small and the streamed transfer paths run."""
    root.mkdir(parents=True)
    (root / "sub" / "deep").mkdir(parents=True)
    for i in range(12):
        (root / "sub" / f"f{i}.txt").write_text(f"file {i} of tree {seed}\n" * (i + 1))
    (root / "shared.txt").write_text("content every tree shares\n")
    (root / "empty").write_bytes(b"")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    (root / "link").symlink_to("shared.txt")
    (root / "sub" / "deep" / "weights.bin").write_bytes(os.urandom(2 << 20) if big else b"w" * 100)
    return root


def same_tree(a: Path, b: Path) -> None:
    """Assert two directories hold byte-identical files, symlinks and exec bits."""

    def listing(root: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_file():
                out[rel] = ("file", p.read_bytes(), bool(p.stat().st_mode & 0o100))
        return out

    assert listing(a) == listing(b)
