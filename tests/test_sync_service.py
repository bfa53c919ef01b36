"""RunSyncService, the legacy walk fallback and ``runicorn sync`` over a real sshd."""

from __future__ import annotations

import json
import os
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
from runicorn.sync.client.walk_client import WalkSyncClient
from runicorn.ssh import parse_target
from tools.testbed.sshd import SshdServer
from tools.testbed.run_trees import assert_mirror, tree_files


def _service(conn: Any, server: Path, cache: Path, **kw: Any) -> RunSyncService:
    return RunSyncService(
        ssh_session=conn,
        sftp_client=conn.open_sftp(),
        remote_root=str(server),
        cache_manager=LocalCacheManager(root_dir=cache),
        manifest_sync_jitter=0,
        **kw,
    )


def test_service_uses_manifest(conn: Any, sync_server: Path, tmp_path: Path) -> None:
    ManifestGenerator(sync_server).generate()
    svc = _service(conn, sync_server, tmp_path / "cache")
    assert svc.sync_all()
    assert svc.progress.method == "manifest"
    assert svc.progress.synced_files == len(tree_files(sync_server)) and svc.progress.synced_bytes > 0
    assert_mirror(sync_server, tmp_path / "cache")


@pytest.mark.parametrize("why", ["missing", "malformed", "hostile"])
def test_service_falls_back_to_legacy_walk(conn: Any, sync_server: Path, tmp_path: Path, why: str) -> None:
    if why != "missing":
        ManifestGenerator(sync_server).generate()
        (sync_server / ".runicorn" / "full_manifest.json.gz").unlink()
        mf = sync_server / ".runicorn" / "full_manifest.json"
        if why == "malformed":
            mf.write_text("{not json")
        else:
            doc = json.loads(mf.read_bytes())
            doc["experiments"][0]["files"][0]["path"] = "../../../etc/cron.d/x"
            mf.write_text(json.dumps(doc))
    svc = _service(conn, sync_server, tmp_path / "cache")
    assert svc.sync_all()
    assert svc.progress.method == "legacy"
    assert svc.progress.stats["reason"].startswith("fallback:")
    assert_mirror(sync_server, tmp_path / "cache")


def test_legacy_walk_mirrors_and_is_safe(conn: Any, sync_server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    rd = sorted(sync_server.glob("*/**/runs/*"))[0]
    (rd / "link.txt").symlink_to(secret)  # never followed
    (rd / "media" / "dirlink").symlink_to(tmp_path)
    client = WalkSyncClient(conn.open_sftp(), str(sync_server), cache)
    st = client.sync()
    assert st["failed_count"] == 0 and st["method"] == "legacy"
    assert not (cache / (rd / "link.txt").relative_to(sync_server)).exists()
    assert_mirror(sync_server, cache)
    st = WalkSyncClient(conn.open_sftp(), str(sync_server), cache).sync()
    assert st["files_synced"] == 0 and st["files_unchanged"] == len(tree_files(sync_server))
    with open(rd / "logs.txt", "ab") as f:
        f.write(b"more")
    shutil.rmtree(sorted(sync_server.glob("*/**/runs/*"))[1])
    st = WalkSyncClient(conn.open_sftp(), str(sync_server), cache).sync()
    assert st["files_synced"] == 1 and st["files_deleted"] == 7
    assert_mirror(sync_server, cache)


def test_manifest_disabled_uses_legacy(conn: Any, sync_server: Path, tmp_path: Path) -> None:
    ManifestGenerator(sync_server).generate()
    svc = _service(conn, sync_server, tmp_path / "cache", use_manifest_sync=False)
    assert svc.sync_all() and svc.progress.method == "legacy"
    assert_mirror(sync_server, tmp_path / "cache")


def test_parse_target() -> None:
    t = parse_target("alice@example.org:2222:/data/exp")
    assert (t.user, t.host, t.port, t.path) == ("alice", "example.org", 2222, "/data/exp")
    t = parse_target("box:/data")
    assert (t.user, t.host, t.port, t.path) == (None, "box", None, "/data")
    t = parse_target("[::1]:22:/d")
    assert (t.host, t.port) == ("::1", 22)
    from runicorn.errors import RunicornError

    for bad in ("nohost", "host:", "a@b:99999:/x"):
        with pytest.raises(RunicornError):
            parse_target(bad)


@pytest.fixture
def home(tmp_path: Path, sshd: SshdServer) -> Path:
    """A HOME with ~/.ssh/config naming the test server, and no known host keys yet."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "config").write_text(
        f"Host testbox\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {sshd.user}\n"
        f"  IdentityFile {sshd.key_path}\n"
    )
    return h


def _cli(home: Path, *args: str) -> Any:
    env = {"HOME": str(home), "RUNICORN_DIR": str(home / "store")}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_sync_host_key_policy_and_stats(home: Path, sync_server: Path, sshd: SshdServer) -> None:
    ManifestGenerator(sync_server).generate()
    target = f"testbox:{sync_server}"
    res = _cli(home, "sync", target)
    assert res.exit_code == 1 and "unknown" in res.output and "--accept-new-host-key" in res.output
    assert not (home / "store").exists() or tree_files(home / "store") == {}
    res = _cli(home, "sync", target, "--accept-new-host-key", "--json")
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)
    assert stats["method"] == "manifest" and stats["failed_count"] == 0
    assert stats["cache"] == str(home / "store")  # default cache is the storage root
    assert_mirror(sync_server, home / "store")
    assert f"[{sshd.host}]:{sshd.port}" in (home / ".ssh" / "known_hosts").read_text()
    res = _cli(home, "sync", target)  # key now known: no opt-in needed
    assert res.exit_code == 0 and "Up to date" in res.output
    # A changed host key is refused even with the opt-in.
    other = home / "otherkey"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    pub = (other.with_suffix(".pub")).read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[{sshd.host}]:{sshd.port} {pub[0]} {pub[1]}\n")
    res = _cli(home, "sync", target, "--accept-new-host-key")
    assert res.exit_code == 1 and "CHANGED" in res.output


def test_cli_sync_explicit_target_and_cache(home: Path, sync_server: Path, sshd: SshdServer, tmp_path: Path) -> None:
    shutil.copy(sshd.known_hosts_path, home / ".ssh" / "known_hosts")
    cache = tmp_path / "c2"
    res = _cli(
        home,
        "sync",
        f"{sshd.user}@{sshd.host}:{sshd.port}:{sync_server}",
        "--cache",
        str(cache),
        "--identity",
        str(sshd.key_path),
        "--workers",
        "2",
    )
    assert res.exit_code == 0, res.output
    assert "Method: legacy" in res.output  # no manifest on this server
    assert_mirror(sync_server, cache)
    res = _cli(home, "sync", f"{sshd.host}:{sshd.port}:{sync_server}", "--identity", str(home / "nope"))
    assert res.exit_code == 1 and "identity file not found" in res.output


def test_import_runicorn_does_not_load_paramiko() -> None:
    code = (
        "import sys, runicorn, runicorn.remote_storage, runicorn.manifest, runicorn.cli;"
        "print('paramiko' in sys.modules)"
    )
    out = subprocess.run(
        [os.sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    assert out.strip() == "False"


def test_cli_sync_missing_remote_root_is_a_clean_error(home: Path, sshd: SshdServer, tmp_path: Path) -> None:
    shutil.copy(sshd.known_hosts_path, home / ".ssh" / "known_hosts")
    res = _cli(home, "sync", f"testbox:{tmp_path / 'does-not-exist'}")
    assert res.exit_code == 1 and "failed" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("use_manifest", [True, False])
def test_runs_under_store_reserved_names_are_skipped(
    conn: Any, sync_server: Path, tmp_path: Path, use_manifest: bool
) -> None:
    import random

    from tools.testbed.run_trees import make_run

    make_run(sync_server, "archive", "blobs", "20250101_000000_evil01", rng=random.Random(1))
    if use_manifest:
        ManifestGenerator(sync_server).generate()
    cache = tmp_path / "cache"
    svc = _service(conn, sync_server, cache)
    assert svc.sync_all()
    assert svc.progress.method == ("manifest" if use_manifest else "legacy")
    assert not (cache / "archive").exists()
    shutil.rmtree(sync_server / "archive")
    assert_mirror(sync_server, cache)


def test_both_sync_paths_share_paths_and_stats(conn: Any, sync_server: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """One cache-path checker per sync (parent directories checked once, not per file)
    and one statistics constructor for the manifest and the legacy client."""
    from runicorn.sync.client import local_cache
    from runicorn.sync.client.manifest_client import ManifestSyncClient
    from runicorn.sync.client.report import sync_stats

    assert not hasattr(local_cache, "cache_dest")
    checks: list[str] = []
    real = local_cache.ensure_no_symlink_parents

    def counting(root: Path, rel: str) -> None:
        checks.append(rel)
        real(root, rel)

    monkeypatch.setattr(local_cache, "ensure_no_symlink_parents", counting)
    files = [p for p in sync_server.rglob("*") if p.is_file() and ".runicorn" not in p.parts]
    dirs = {p.parent for p in files}
    legacy = WalkSyncClient(conn.open_sftp(), str(sync_server), tmp_path / "legacy").sync()
    assert legacy["failed_count"] == 0 and legacy["files_synced"] == len(files)
    assert len(checks) <= len(dirs) < len(files)
    checks.clear()
    ManifestGenerator(sync_server).generate()
    manifest = ManifestSyncClient(conn.open_sftp(), str(sync_server), tmp_path / "manifest", jitter_max=0).sync()
    assert manifest["failed_count"] == 0 and len(checks) <= len(dirs)
    assert sorted(legacy) == sorted(manifest) == sorted(sync_stats("x"))
    assert (legacy["method"], manifest["method"]) == ("legacy", "manifest")


def test_unrepresentable_server_name_does_not_force_the_legacy_walk(
    conn: Any, sync_server: Path, tmp_path: Path, caplog: Any
) -> None:
    """A server file named "f\\n" used to pass the generator's "$"-anchored check and then
    fail every client's path check, discarding the whole manifest.  Now the generator
    leaves it out with a warning and clients keep using the manifest."""
    run = sorted(sync_server.glob("*/**/runs/*"))[0]
    (run / "f\n").write_text("x")
    with caplog.at_level("WARNING"):
        ManifestGenerator(sync_server).generate()
    assert repr(str(run / "f\n")) in caplog.text
    svc = _service(conn, sync_server, tmp_path / "cache")
    assert svc.sync_all() and svc.progress.method == "manifest"
    assert svc.progress.stats["failed_count"] == 0
    (run / "f\n").unlink()
    assert_mirror(sync_server, tmp_path / "cache")
