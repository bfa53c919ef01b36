"""Manifest sync against a real sshd: every scenario ends byte-for-byte equal to the server."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.sync.server.generator import ManifestGenerator
from runicorn.sync.client import manifest_client
from runicorn.sync.client.manifest_client import ManifestSyncClient
from runicorn.sync.client.report import SyncError
from tools.testbed.sshd import SshdServer
from tools.testbed.run_trees import assert_mirror, tree_files


@pytest.fixture
def server(sync_server: Path) -> Path:
    """The shared run-sync server (``sync_server`` in conftest) with its sync manifest published."""
    ManifestGenerator(sync_server).generate()
    return sync_server


def _sync(conn: Any, server: Path, cache: Path, **kw: Any) -> dict[str, Any]:
    return ManifestSyncClient(conn.open_sftp(), str(server), cache, jitter_max=0).sync(**kw)


def _regen(server: Path) -> None:
    ManifestGenerator(server).generate()


def test_first_sync_then_unchanged(conn: Any, server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    seen: list[tuple[int, int, str]] = []
    st = _sync(conn, server, cache, progress_callback=lambda d, t, f: seen.append((d, t, f)))
    n = len(tree_files(server))
    assert st["files_synced"] == st["full_count"] == n and st["failed_count"] == 0
    assert not st["skipped"] and st["manifest_revision"] == 1
    assert st["sftp_requests"] <= 3.5 * n
    assert len(seen) == n and seen[-1][:2] == (n, n)
    # Priority order: every meta/status file arrives before any media file.
    order = [f for _, _, f in seen]
    assert max(i for i, f in enumerate(order) if f.endswith(("meta.json", "status.json"))) < min(
        i for i, f in enumerate(order) if "/media/" in f
    )
    assert_mirror(server, cache)
    st = _sync(conn, server, cache)
    assert st["skipped"] and "unchanged" in st["reason"] and st["files_synced"] == 0
    assert st["sftp_requests"] <= 3
    assert_mirror(server, cache)


def test_append_fetches_only_new_bytes(conn: Any, server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _sync(conn, server, cache)
    runs = sorted(server.glob("*/**/runs/*"))
    added = 0
    for rd in runs[:3]:
        with open(rd / "logs.txt", "ab") as f:
            f.write(os.urandom(50_000))
        added += 50_000
        (rd / "status.json").write_text('{"status": "finished"}')
    _regen(server)
    st = _sync(conn, server, cache)
    assert st["incremental_count"] == 3 and st["full_count"] == 3 and st["failed_count"] == 0
    assert st["bytes_downloaded"] <= added + st["manifest_bytes"] + 3 * 4096 + 3 * 100
    assert st["sftp_requests"] <= 3 + 6 * 3
    assert_mirror(server, cache)


def test_rewritten_log_is_downloaded_whole(conn: Any, server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _sync(conn, server, cache)
    rd = sorted(server.glob("*/**/runs/*"))[0]
    old = (rd / "logs.txt").read_bytes()
    (rd / "logs.txt").write_bytes(b"rotated\n" + os.urandom(len(old) + 1000))  # bigger, new
    _regen(server)
    st = _sync(conn, server, cache)
    assert st["incremental_count"] == 0 and st["full_count"] == 1
    assert_mirror(server, cache)
    # Same length and same last bytes but different head: mtime differs, so re-fetched whole.
    data = bytearray((rd / "logs.txt").read_bytes())
    data[0:4] = b"XXXX"
    (rd / "logs.txt").write_bytes(bytes(data))
    os.utime(rd / "logs.txt", (1_700_000_000, 1_700_000_000))
    _regen(server)
    st = _sync(conn, server, cache)
    assert st["full_count"] == 1
    assert_mirror(server, cache)


def test_new_and_deleted_runs(conn: Any, server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "local_only" / "e" / "runs" / "r").mkdir(parents=True)
    (cache / "local_only" / "e" / "runs" / "r" / "meta.json").write_text("{}")
    _sync(conn, server, cache)
    runs = sorted(server.glob("*/**/runs/*"))
    shutil.rmtree(runs[0])
    (runs[1] / "media" / "img1.png").unlink()
    import random

    from tools.testbed.run_trees import make_run

    make_run(server, "newproj", "deep/er/exp", "20250201_000000_new001", rng=random.Random(7))
    _regen(server)
    st = _sync(conn, server, cache)
    assert st["files_deleted"] == 7 + 1 and st["files_synced"] == 7
    assert runs[0].relative_to(server).parts[0] not in ("",)
    assert not (cache / runs[0].relative_to(server)).exists()
    # Files the sync never wrote are left alone.
    assert (cache / "local_only" / "e" / "runs" / "r" / "meta.json").exists()
    shutil.rmtree(cache / "local_only")
    assert_mirror(server, cache)


def test_killed_connection_mid_transfer_then_clean_resume(sshd: SshdServer, server: Path, tmp_path: Path) -> None:
    import random

    from tools.testbed.run_trees import make_run

    for i in range(20):  # enough files that the kill lands mid-transfer
        make_run(server, "bulk", "e", f"20250301_000000_b{i:03d}", rng=random.Random(i), media=4, media_bytes=40_000)
    _regen(server)
    cache = tmp_path / "cache"
    client = sshd.connect()
    killed: list[int] = []

    def kill_after_some(done: int, total: int, path: str) -> None:
        if done == 10 and not killed:
            killed.append(sshd.kill_sessions())

    st = ManifestSyncClient(client.open_sftp(), str(server), cache, jitter_max=0).sync(
        progress_callback=kill_after_some
    )
    client.close()
    assert killed and killed[0] >= 1
    assert st["failed_count"] > 0 and st["files_synced"] < len(tree_files(server))
    cursor_files = list((cache / ".runicorn-sync").rglob("*_cursor.json"))
    assert cursor_files == []  # the cursor did not advance
    # Whatever arrived is complete: no partial or spliced file in the cache.
    server_files = tree_files(server)
    for rel, data in tree_files(cache).items():
        assert server_files[rel] == data, rel
    client = sshd.connect()
    try:
        st = ManifestSyncClient(client.open_sftp(), str(server), cache, jitter_max=0).sync()
    finally:
        client.close()
    assert st["failed_count"] == 0 and not st["skipped"]
    assert_mirror(server, cache)
    assert not any((cache / ".runicorn-sync" / "tmp").glob("*"))


def _write_manifest(server: Path, doc: Any, *, raw: bytes | None = None) -> None:
    d = server / ".runicorn"
    (d / "full_manifest.json.gz").unlink(missing_ok=True)
    (d / "full_manifest.json").write_bytes(raw if raw is not None else json.dumps(doc).encode())


def _doctor(server: Path, fn: Any) -> None:
    doc = json.loads((server / ".runicorn" / "full_manifest.json").read_bytes())
    doc["revision"] += 1
    fn(doc)
    _write_manifest(server, doc)


@pytest.mark.parametrize(
    "hostile",
    [
        "traversal",
        "absolute",
        "other_run",
        "bookkeeping",
        "dup",
        "huge_schema",
        "huge_disk",
        "malformed",
        "wrong_type",
        "symlink_cache",
    ],
)
def test_hostile_manifest_is_refused(conn: Any, server: Path, tmp_path: Path, hostile: str) -> None:
    cache = tmp_path / "cache"
    f0 = lambda d: d["experiments"][0]["files"][0]  # noqa: E731
    run0 = lambda d: "{project}/{name}/runs/{run_id}".format(**d["experiments"][0])  # noqa: E731
    expected: type[Exception] = CorruptManifestError
    if hostile == "traversal":
        _doctor(server, lambda d: f0(d).update(path=run0(d) + "/../../../../escape"))
    elif hostile == "absolute":
        _doctor(server, lambda d: f0(d).update(path=str(tmp_path / "escape")))
    elif hostile == "other_run":
        expected = UnsafePathError
        _doctor(server, lambda d: f0(d).update(path=d["experiments"][1]["files"][0]["path"]))
    elif hostile == "bookkeeping":
        _doctor(server, lambda d: d["experiments"][0].update(project=".runicorn-sync"))
    elif hostile == "dup":
        expected = UnsafePathError
        _doctor(server, lambda d: d["experiments"][0]["files"].append(f0(d)))
    elif hostile == "huge_schema":
        _doctor(server, lambda d: f0(d).update(size=1 << 62))
    elif hostile == "huge_disk":
        expected = SyncError
        _doctor(server, lambda d: f0(d).update(size=(1 << 40) - 1))
    elif hostile == "malformed":
        _write_manifest(server, None, raw=b'{"format_version": "1.0", "experiments": [')
    elif hostile == "wrong_type":
        _doctor(server, lambda d: d.update(manifest_type="active"))
    elif hostile == "symlink_cache":
        expected = UnsafePathError
        outside = tmp_path / "outside"
        outside.mkdir()
        cache.mkdir()
        doc = json.loads((server / ".runicorn" / "full_manifest.json").read_bytes())
        (cache / doc["experiments"][0]["project"]).symlink_to(outside)
    with pytest.raises(expected):
        _sync(conn, server, cache)
    assert not (tmp_path / "escape").exists()
    assert not any(p.is_file() for p in (tmp_path / "outside").rglob("*")) if (tmp_path / "outside").exists() else True
    assert tree_files(cache) == {}  # nothing was downloaded


def test_manifest_size_bounds(conn: Any, server: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    # A gzip bomb: small on the wire, beyond the bound once inflated.
    monkeypatch.setattr(manifest_client, "MAX_MANIFEST_BYTES", 50_000)
    bomb = gzip.compress(b'{"a": "' + b"0" * 5_000_000 + b'"}')
    (server / ".runicorn" / "full_manifest.json.gz").write_bytes(bomb)
    with pytest.raises(CorruptManifestError, match="expands beyond"):
        _sync(conn, server, cache)
    (server / ".runicorn" / "full_manifest.json.gz").write_bytes(b"\x1f\x8bnot gzip at all")
    with pytest.raises(CorruptManifestError, match="gzip"):
        _sync(conn, server, cache)
    # Too many files, with the bound lowered so the test stays small.
    from runicorn.sync import manifest_schema

    monkeypatch.setattr(manifest_schema, "MAX_FILES", 10)
    monkeypatch.setattr(manifest_client, "MAX_MANIFEST_BYTES", 256 << 20)
    (server / ".runicorn" / "full_manifest.json.gz").unlink()
    with pytest.raises(CorruptManifestError, match="more than 10 files"):
        _sync(conn, server, cache)


def test_no_manifest_raises_ioerror(conn: Any, server: Path, tmp_path: Path) -> None:
    shutil.rmtree(server / ".runicorn")
    with pytest.raises(IOError):
        _sync(conn, server, tmp_path / "cache")


def test_changed_after_manifest_is_fetched_fresh(conn: Any, server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rd = sorted(server.glob("*/**/runs/*"))[0]
    (rd / "status.json").write_text('{"status": "finished", "pad": "' + "x" * 50 + '"}')
    st = _sync(conn, server, cache)  # manifest still describes the old status.json
    assert st["failed_count"] == 0
    assert (cache / (rd / "status.json").relative_to(server)).read_bytes() == (rd / "status.json").read_bytes()
    assert_mirror(server, cache, check_mtime=False)


def test_pruned_cache_is_repaired_at_same_revision(conn: Any, server: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _sync(conn, server, cache)
    victim = next(p for p in sorted(cache.rglob("summary.json")))
    victim.unlink()
    st = _sync(conn, server, cache)
    assert not st["skipped"] and st["files_synced"] == 1 and st["files_unchanged"] > 0
    assert_mirror(server, cache)


def test_active_and_full_cursors_are_independent(conn: Any, server: Path, tmp_path: Path) -> None:
    from runicorn.sync.manifest import ManifestType

    runs = sorted(server.glob("*/**/runs/*"))
    old = 1_600_000_000
    for rd in runs[1:]:
        (rd / "status.json").write_text('{"status": "finished"}')
        for f in rd.rglob("*"):
            os.utime(f, (old, old))
    gen = ManifestGenerator(server)
    gen.generate(ManifestType.FULL)
    for _ in range(3):  # the active revision runs ahead of the full one
        with open(runs[0] / "logs.txt", "ab") as f:
            f.write(b"tick\n")
        gen.generate(ManifestType.ACTIVE)
    cache = tmp_path / "cache"
    active = ManifestSyncClient(
        conn.open_sftp(), str(server), cache, jitter_max=0, manifest_type=ManifestType.ACTIVE
    ).sync()
    assert active["manifest_revision"] == 3 and active["files_synced"] == 7
    full = _sync(conn, server, cache)
    assert full["manifest_revision"] == 2 and not full["skipped"]
    assert full["files_deleted"] == 0 and full["files_synced"] == 7 * 5
    log = cache / (runs[0] / "logs.txt").relative_to(server)
    assert log.read_bytes().endswith(b"tick\n" * 3)  # never stepped back to the older copy
    # The full manifest predates the last appends; a fresh one brings the cache level.
    gen.generate(ManifestType.FULL)
    _sync(conn, server, cache)
    assert_mirror(server, cache)


def test_server_answering_short_reads(conn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ask for more per read than sftp-server answers: follow-up reads fill the gap."""
    import random

    from tools.testbed.run_trees import make_run

    from runicorn.sync.client.pipelined_fetch import PipelinedFetcher

    server = tmp_path / "server"
    make_run(
        server, "p", "e", "20250101_000000_big001", rng=random.Random(3), media=2, media_bytes=PipelinedFetcher.MAX_SIZE
    )
    ManifestGenerator(server).generate()
    monkeypatch.setattr(PipelinedFetcher, "READ_SIZE", 1 << 20)
    st = _sync(conn, server, tmp_path / "cache")
    assert st["failed_count"] == 0 and st["full_count"] == 7
    assert st["sftp_wire_requests"] > 3 + 7 * 3  # the follow-up reads happened
    assert st["bytes_downloaded"] == st["manifest_bytes"] + sum(
        len(v) for v in tree_files(server).values()
    )  # nothing fetched twice
    assert_mirror(server, tmp_path / "cache")


def _grow(rd: Path, name: str, size: int) -> bytes:
    data = os.urandom(size)
    (rd / name).write_bytes(data)  # rewritten after the manifest was generated
    return data


def test_file_grown_beyond_the_manifest_fails_alone(conn: Any, server: Path, tmp_path: Path, caplog: Any) -> None:
    """A server cannot make us download more than the manifest (plus a bounded slack)
    promised: the grown file fails by name, the others arrive, the cursor stays put."""
    from runicorn.sync.client.budget import growth_allowance

    cache = tmp_path / "cache"
    rd = sorted(server.glob("*/**/runs/*"))[0]
    listed = (rd / "summary.json").stat().st_size
    _grow(rd, "summary.json", listed + growth_allowance(listed) + 1)
    rel = str((rd / "summary.json").relative_to(server))
    with caplog.at_level("WARNING"):
        st = _sync(conn, server, cache)
    assert st["failed_count"] == 1
    assert st["files_synced"] == len(tree_files(server)) - 1
    assert st["bytes_downloaded"] < 1 << 20  # the grown file was not downloaded
    assert rel in caplog.text and "refused" in caplog.text
    assert not (cache / rel).exists()
    assert not list((cache / ".runicorn-sync").rglob("*_cursor.json"))
    # The next sync retries it (the manifest is unchanged, so it is refused again)...
    st = _sync(conn, server, cache)
    assert not st["skipped"] and st["failed_count"] == 1 and st["files_synced"] == 0
    # ... and once the manifest describes it, it arrives and the cursor advances.
    _regen(server)
    st = _sync(conn, server, cache)
    assert st["failed_count"] == 0 and st["files_synced"] == 1
    assert list((cache / ".runicorn-sync").rglob("*_cursor.json"))
    assert_mirror(server, cache)


def test_growth_must_fit_the_free_space(conn: Any, server: Path, tmp_path: Path, caplog: Any, monkeypatch: Any) -> None:
    """Growth within the slack still has to fit in the disk space the plan left."""
    cache = tmp_path / "cache"
    rd = sorted(server.glob("*/**/runs/*"))[0]
    _grow(rd, "summary.json", 1 << 20)
    need = sum(len(b) for b in tree_files(server).values())  # more than the plan needs
    real = shutil.disk_usage
    monkeypatch.setattr(manifest_client.shutil, "disk_usage", lambda p: real(p)._replace(free=need + (64 << 10)))
    with caplog.at_level("WARNING"):
        st = _sync(conn, server, cache)
    monkeypatch.undo()
    rel = str((rd / "summary.json").relative_to(server))
    assert st["failed_count"] == 1 and rel in caplog.text and "free space" in caplog.text
    assert not (cache / rel).exists()
    assert not list((cache / ".runicorn-sync").rglob("*_cursor.json"))
    st = _sync(conn, server, cache)  # with the real free space it fits
    assert st["failed_count"] == 0 and st["files_synced"] == 1
    assert_mirror(server, cache, check_mtime=False)


def test_data_is_durable_before_any_rename(conn: Any, server: Path, tmp_path: Path, monkeypatch: Any) -> None:
    """Group commit: every downloaded file's bytes were flushed (syncfs, or an fsync of
    each of a few files) before it was renamed into place, so a power loss cannot leave a
    file with the server's size and mtime over lost data (the planner would skip it
    forever); a sync of a few files waits for nothing else on the filesystem."""
    from runicorn import fsutil

    cache = tmp_path / "cache"
    staging = cache / ".runicorn-sync" / "tmp"
    flushed: dict[str, int] = {}  # staged file -> its size when a syncfs ran
    renamed: list[str] = []
    synced_dirs: list[str] = []
    syncfs_calls: list[str] = []
    real_syncfs, real_replace = fsutil.syncfs, os.replace
    real_fsync_file, real_fsync_dir = fsutil.fsync_file, fsutil.fsync_dir

    def syncfs(path: Path) -> None:
        real_syncfs(path)
        syncfs_calls.append(str(path))
        for p in staging.glob("*"):
            flushed[str(p)] = p.stat().st_size

    def fsync_file(path: Any) -> None:
        real_fsync_file(path)
        flushed[str(path)] = os.stat(path).st_size

    def fsync_dir(path: Any) -> None:
        real_fsync_dir(path)
        synced_dirs.append(str(path))

    def replace(src: Any, dst: Any) -> None:
        if Path(src).parent == staging:
            assert flushed.get(str(src)) == Path(src).stat().st_size, (
                f"{dst} renamed into place before its data was flushed"
            )
            renamed.append(str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(fsutil, "syncfs", syncfs)
    monkeypatch.setattr(fsutil, "fsync_file", fsync_file)
    monkeypatch.setattr(fsutil, "fsync_dir", fsync_dir)
    monkeypatch.setattr(fsutil.os, "replace", replace)
    st = _sync(conn, server, cache)
    assert st["failed_count"] == 0 and len(renamed) == st["files_synced"] > fsutil.FEW_FILES
    assert syncfs_calls  # many files: one group flush
    # Appends and files changed since the manifest go through the same batch.
    rd = sorted(server.glob("*/**/runs/*"))[0]
    with open(rd / "events.jsonl", "ab") as f:
        f.write(b"more\n")
    (rd / "status.json").write_text('{"status": "finished"}')
    _regen(server)
    (rd / "status.json").write_text('{"status": "finished", "at": "later"}')  # after it
    renamed.clear()
    syncfs_calls.clear()
    synced_dirs.clear()
    st = _sync(conn, server, cache)
    monkeypatch.undo()
    assert st["failed_count"] == 0 and st["incremental_count"] == 1 and len(renamed) == 2
    assert syncfs_calls == []  # two files: their own fsyncs, then their folder's
    assert {str(Path(r).parent) for r in renamed} <= set(synced_dirs)
    assert_mirror(server, cache, check_mtime=False)
