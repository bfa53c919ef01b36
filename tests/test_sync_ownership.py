"""`runicorn sync` removes or replaces only bytes it wrote itself and that are still what it
wrote: local runs, `cp -a` copies and runs with a colliding id are left alone (real sshd)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runicorn.cli import main
from runicorn.sync.server.generator import ManifestGenerator
from runicorn.sync.client.service import RunSyncService
from runicorn.sync.client.local_cache import LocalCacheManager
from tools.testbed.sshd import SshdServer
from tools.testbed.run_trees import assert_mirror, make_run, make_tree, tree_files

RUN = Path("proj0") / "exp9" / "runs" / "20250115_103099_loc001"


def _sync(conn: Any, server: Path, cache: Path, method: str) -> dict[str, Any]:
    """One sync over the real sshd, by manifest (regenerated first) or by the legacy walk."""
    if method == "manifest":
        ManifestGenerator(server).generate()
    svc = RunSyncService(
        ssh_session=conn,
        sftp_client=conn.open_sftp(),
        remote_root=str(server),
        cache_manager=LocalCacheManager(root_dir=cache),
        manifest_sync_jitter=0,
        use_manifest_sync=method == "manifest",
    )
    stats = svc.run()
    assert stats["method"] == method and stats["failed_count"] == 0, stats
    return stats


def _local_run(cache: Path) -> dict[str, bytes]:
    """A run made on this machine (6 files, model.bin among them); returns its files."""
    rd = make_run(cache, "proj0", "exp9", RUN.name, rng=random.Random(7), media=1)
    (rd / "model.bin").write_bytes(os.urandom(4096))
    return {str(p.relative_to(cache)): p.read_bytes() for p in rd.rglob("*") if p.is_file()}


@pytest.mark.parametrize("method", ["manifest", "legacy"])
def test_local_run_copied_to_server_then_deleted_there_survives(conn: Any, tmp_path: Path, method: str) -> None:
    server, cache = tmp_path / "server", tmp_path / "cache"
    make_tree(server, 2)
    mine = _local_run(cache)
    assert len(mine) >= 6
    (server / RUN).parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(cache / RUN), str(server / RUN)], check=True)
    _sync(conn, server, cache, method)  # the copy is skipped as unchanged ...
    ledger_file = cache / ".runicorn-sync" / "written.json"
    ledger = json.loads(ledger_file.read_text())["files"] if ledger_file.exists() else {}
    assert not [rel for rel in ledger if rel.startswith(str(RUN))], "... nor recorded as written by sync"
    shutil.rmtree(server / RUN)
    stats = _sync(conn, server, cache, method)
    assert stats["files_deleted"] == 0
    for rel, data in mine.items():
        assert (cache / rel).read_bytes() == data, rel


@pytest.mark.parametrize("method", ["manifest", "legacy"])
def test_server_run_with_a_local_runs_id_is_a_reported_collision(conn: Any, tmp_path: Path, method: str) -> None:
    server, cache = tmp_path / "server", tmp_path / "cache"
    make_tree(server, 2)
    theirs = make_run(server, "proj0", "exp9", RUN.name, rng=random.Random(99), media=3)
    (theirs / "model.bin").write_bytes(b"the server's weights")
    (theirs / "extra.txt").write_text("only on the server\n")
    mine = _local_run(cache)
    stats = _sync(conn, server, cache, method)
    now = {str(p.relative_to(cache)): p.read_bytes() for p in (cache / RUN).rglob("*") if p.is_file()}
    assert now == mine, "the local run is exactly as it was: nothing replaced, nothing added"
    assert [c for c in stats["conflicts"] if str(RUN) in c and "left alone" in c], stats["conflicts"]
    # the other runs did sync
    others = {k: v for k, v in tree_files(server).items() if not k.startswith(str(RUN))}
    assert all((cache / k).read_bytes() == v for k, v in others.items())


@pytest.mark.parametrize("method", ["manifest", "legacy"])
def test_sync_still_replaces_and_removes_what_it_wrote(conn: Any, tmp_path: Path, method: str) -> None:
    """Its own files: updated, and deleted with the server's run; a local edit is kept."""
    server, cache = tmp_path / "server", tmp_path / "cache"
    runs = make_tree(server, 3)
    _sync(conn, server, cache, method)
    assert_mirror(server, cache)
    # the server rewrites a file of run 0 and deletes run 1; the user edits a file of run 2
    rel0 = runs[0].relative_to(server) / "summary.json"
    (server / rel0).write_text('{"loss": 0.01, "rewritten": true}')
    os.utime(server / rel0, (1e9 + 5, 1e9 + 5))
    gone = runs[1].relative_to(server)
    shutil.rmtree(runs[1])
    edited = cache / runs[2].relative_to(server) / "summary.json"
    edited.write_text("my local notes\n")
    (server / runs[2].relative_to(server) / "summary.json").write_text('{"loss": 2}')
    stats = _sync(conn, server, cache, method)
    assert (cache / rel0).read_bytes() == (server / rel0).read_bytes()
    assert not (cache / gone).exists() and stats["files_deleted"] > 0
    assert edited.read_text() == "my local notes\n"
    assert [c for c in stats["conflicts"] if str(runs[2].relative_to(server)) in c]


def test_cli_reports_the_collision(tmp_path: Path, sshd: SshdServer) -> None:
    server, cache = tmp_path / "server", tmp_path / "cache"
    make_tree(server, 1)
    theirs = make_run(server, "proj0", "exp9", RUN.name, rng=random.Random(5), media=1)
    (theirs / "model.bin").write_bytes(b"server weights")
    mine = _local_run(cache)
    ManifestGenerator(server).generate()
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.known_hosts_path, home / ".ssh" / "known_hosts")
    res = CliRunner().invoke(
        main,
        [
            "sync",
            f"{sshd.user}@{sshd.host}:{sshd.port}:{server}",
            "--cache",
            str(cache),
            "--identity",
            str(sshd.key_path),
        ],
        env={"HOME": str(home)},
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    assert "left alone: run " + str(RUN) in res.output
    assert (cache / RUN / "model.bin").read_bytes() == mine[str(RUN / "model.bin")]
