"""Installing artifacts from a real HTTP server: lazy use, mirrors, mismatches, resume, races, gc."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts import download
from runicorn.errors import ArtifactNotInstalledError, DownloadError
from runicorn.store import open_store
from tests.artifacts_support import Route, make_tree, start_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download, "BACKOFF", 0.01)
    monkeypatch.setenv("RUNICORN_DOWNLOAD_BACKOFF", "0.01")


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = start_server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _published(tmp_path: Path, seed: int = 0) -> tuple[str, bytes, str]:
    """A tree captured in a scratch store, archived as tar.gz: (tree, archive bytes, sha256)."""
    from runicorn.store import Store

    src = make_tree(tmp_path / f"src{seed}", seed=seed)
    scratch = Store(tmp_path / f"scratch{seed}")
    tree = scratch.ingest_directory(src)
    out = tmp_path / f"pub{seed}.tar.gz"
    sha = rn.archive_artifact(tree, out, store=scratch)
    scratch.close()
    return tree, out.read_bytes(), sha


def test_lazy_artifact_installs_on_first_use(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    server.routes["/a.tar.gz"] = Route(data)
    toml = tmp_path / "proj" / "Runicorn.toml"
    toml.parent.mkdir()
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a.tar.gz"), sha, len(data))], lazy=True)
    assert not rn.artifact_exists(tree)
    p = rn.artifact("data", toml=toml)
    assert p.name == tree and (p / "a.txt").read_text() == "alpha 0\n"
    assert os.access(p / "sub" / "deeper" / "tool.sh", os.X_OK)
    assert os.readlink(p / "sub" / "link-to-a") == "../a.txt"
    assert rn.artifact("data/sub/naïve ünïcode.txt", toml=toml).read_text() == "ü\n"
    assert rn.verify_artifact(tree)
    assert len(server.gets("/a.tar.gz")) == 1
    rn.artifact("data", toml=toml)
    assert len(server.gets("/a.tar.gz")) == 1  # warm: no network
    # the files are the store's blobs (deduplicated), not extra copies
    store = open_store()
    blob = store.blob_path(hashlib.sha256(b"alpha 0\n").hexdigest())
    assert os.path.samefile(blob, p / "a.txt")


def test_non_lazy_missing_artifact_says_run_fetch(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/x"), sha)])
    with pytest.raises(ArtifactNotInstalledError, match=r"runicorn fetch data"):
        rn.artifact("data", toml=toml)


def test_mirror_fallback_after_404_and_wrong_sha(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    server.routes["/gone"] = Route(status=404)
    server.routes["/wrong"] = Route(data[:-10] + b"0123456789")
    server.routes["/good"] = Route(data)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(
        toml,
        "data",
        tree,
        download_info=[(server.url("/gone"), sha), (server.url("/wrong"), sha), (server.url("/good"), sha)],
    )
    p = rn.ensure_artifact_installed("data", toml)
    assert (p / "a.txt").exists()
    assert [len(server.gets(x)) for x in ("/gone", "/wrong", "/good")] == [1, 1, 1]  # no pointless retries


def test_every_source_failing_lists_each_and_installs_nothing(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    other_tree, other_data, other_sha = _published(tmp_path, seed=1)
    server.routes["/other"] = Route(other_data)
    toml = tmp_path / "Runicorn.toml"
    # the archive is intact (its sha256 matches) but holds a different tree
    rn.bind_artifact(
        toml, "data", tree, download_info=[(server.url("/missing"), sha), (server.url("/other"), other_sha)]
    )
    with pytest.raises(DownloadError) as ei:
        rn.ensure_artifact_installed("data", toml)
    msg = str(ei.value)
    assert str(toml) in msg and "'data'" in msg and "tried 2 source(s)" in msg
    assert "/missing -> HTTP 404" in msg
    assert f"/other -> archive holds tree-sha256 {other_tree}, expected {tree}" in msg
    store = open_store()
    assert not (store.artifacts_dir / tree).exists() and not (store.artifacts_dir / other_tree).exists()
    assert not store.has_tree(other_tree)
    assert not [p for p in store.artifacts_dir.iterdir() if p.name.startswith(".staging")]
    # the wrongly-fetched blobs are not held: gc with no grace takes them
    report = store.gc(grace_seconds=0)
    assert report["blobs_deleted"] >= 1


def test_resume_after_interrupted_download(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    assert len(data) > 5000
    server.routes["/big"] = Route(data, cut_after=4000)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/big"), sha, len(data))])
    rn.ensure_artifact_installed("data", toml)
    assert server.gets("/big") == [None, "bytes=4000-"]
    assert not list((open_store().artifacts_dir / ".downloads").iterdir())


def test_partial_file_survives_a_failed_fetch_and_is_resumed_later(
    tmp_path: Path, server, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    monkeypatch.setattr(download, "RETRIES", 1)
    server.routes["/big"] = Route(data, cut_after=3000)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/big"), sha)])
    with pytest.raises(DownloadError, match="transfer cut"):
        rn.ensure_artifact_installed("data", toml)
    partial = open_store().artifacts_dir / ".downloads" / f"{sha}.partial"
    assert partial.stat().st_size == 3000
    rn.ensure_artifact_installed("data", toml)
    assert server.gets("/big") == [None, "bytes=3000-"]


def test_two_processes_install_once(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    server.routes["/a"] = Route(data)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a"), sha)])
    code = textwrap.dedent(f"""
        import runicorn as rn
        print(rn.ensure_artifact_installed("data", {str(toml)!r}))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o.strip() for o, _ in outs} == {str(open_store().artifacts_dir / tree)}
    assert len(server.gets("/a")) == 1


def test_julia_artifacts_toml_with_git_tree_sha1(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    git = rn.tree_hash(tmp_path / "src0", kind="git-tree-sha1")
    server.routes["/j.tar.gz"] = Route(data)
    toml = tmp_path / "Artifacts.toml"
    toml.write_text(
        textwrap.dedent(f"""
        [jdata]
        git-tree-sha1 = "{git}"
        lazy = true

            [[jdata.download]]
            url = "{server.url("/j.tar.gz")}"
            sha256 = "{sha}"
    """)
    )
    p = rn.artifact("jdata", toml=toml)
    assert p.name == git and (p / "a.txt").read_text() == "alpha 0\n"
    assert rn.verify_artifact(git) and rn.verify_artifact(tree)
    # a wrong git-tree-sha1 is refused after extraction
    toml.write_text(toml.read_text().replace(git, "0" * 40))
    with pytest.raises(DownloadError, match="git-tree-sha1"):
        rn.ensure_artifact_installed("jdata", toml)
    # the CLI reads Julia files too
    toml.write_text(toml.read_text().replace("0" * 40, git))
    out = subprocess.run(
        [sys.executable, "-m", "runicorn", "fetch", "--include-lazy", "--toml", str(toml)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr


def test_local_path_and_file_url_sources(tmp_path: Path) -> None:
    tree, data, sha = _published(tmp_path)
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "rel.tar.gz").write_bytes(data)
    toml = tmp_path / "proj" / "Runicorn.toml"
    rn.bind_artifact(toml, "a", tree, download_info=[("rel.tar.gz", sha)])
    rn.bind_artifact(toml, "b", tree, download_info=[((tmp_path / "proj" / "rel.tar.gz").as_uri(), sha)])
    assert rn.ensure_artifact_installed("a", toml) == rn.ensure_artifact_installed("b", toml)


def test_gc_keeps_bound_trees_and_collects_after_the_toml_goes(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    server.routes["/a"] = Route(data)
    toml = tmp_path / "p" / "Runicorn.toml"
    toml.parent.mkdir()
    rn.bind_artifact(
        toml, "data", tree, download_info=[(server.url("/a"), sha)], platform={"os": "linux", "arch": "x86_64"}
    )
    rn.ensure_artifact_installed("data", toml, platform={"os": "linux", "arch": "x86_64"})
    # another platform's variant of the same file, never installed here, stays a root too
    other = rn.create_artifact(lambda d: (d / "x").write_text("arm"))
    rn.bind_artifact(toml, "data", other, platform={"os": "linux", "arch": "aarch64"})
    store = open_store()
    for dry in (True, False):
        report = store.gc(grace_seconds=0, dry_run=dry)
        assert tree not in report["tree_ids"] and other not in report["tree_ids"]
    assert store.has_tree(tree) and store.has_tree(other)
    toml.unlink()
    assert store.gc(grace_seconds=0)["tree_ids"] == []  # missing for less than the retention
    dry = store.gc(grace_seconds=0, dry_run=True, keep_missing_toml=0)
    assert set(dry["tree_ids"]) == {tree, other}
    assert store.has_tree(tree)  # a dry run deletes nothing
    real = store.gc(grace_seconds=0, keep_missing_toml=0)
    assert real["tree_ids"] == dry["tree_ids"] and real["blob_ids"] == dry["blob_ids"]
    assert real["bytes_freed"] == dry["bytes_freed"]
    assert not store.has_tree(tree)
    assert not (store.artifacts_dir / tree).exists()  # the same gc removes the installed directory
    assert store.index.query("SELECT path FROM toml_usage") == []


def test_cli_bind_fetch_status_path(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    src = make_tree(tmp_path / "src")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    toml = tmp_path / "proj" / "Runicorn.toml"
    toml.parent.mkdir()
    out = tmp_path / "pub.tar.gz"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runicorn", *args], env=env, capture_output=True, text=True, cwd=toml.parent
        )

    r = run("bind", "data", str(src), "--archive", str(out), "--url", server.url("/pub.tar.gz"), "--lazy")
    assert r.returncode == 0, r.stderr
    tree = rn.tree_hash(src)
    entry = rn.artifact_meta("data", toml)
    assert entry["tree-sha256"] == tree and entry["lazy"] is True
    assert entry["download"][0]["size"] == out.stat().st_size
    server.routes["/pub.tar.gz"] = Route(out.read_bytes())
    r = run("bind", "data", str(src))
    assert r.returncode == 1 and "already bound" in r.stderr and "Traceback" not in r.stderr
    rn.remove_artifact(tree)
    st = json.loads(run("status", "--json").stdout)
    assert st["artifacts"][0]["installed"] is False and st["artifacts"][0]["lazy"] is True
    r = run("fetch")
    assert r.returncode == 0 and not server.gets("/pub.tar.gz")  # lazy: not fetched by default
    r = run("fetch", "--include-lazy", "--jobs", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(run("status", "--json").stdout)["artifacts"][0]["installed"] is True
    assert run("path", "data").stdout.strip() == str(open_store().artifacts_dir / tree)
    r = run("export", tree, str(tmp_path / "again.tar.gz"))
    assert r.returncode == 0 and (tmp_path / "again.tar.gz").read_bytes() == out.read_bytes()
    r = run("unbind", "data")
    assert r.returncode == 0 and rn.artifact_meta("data", toml) is None
    r = run("fetch", "nosuch")
    assert r.returncode == 1 and "no artifact named 'nosuch'" in r.stderr


def test_stale_partial_that_does_not_fit_is_discarded(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    server.routes["/a"] = Route(data)
    downloads = open_store().artifacts_dir / ".downloads"
    downloads.mkdir(parents=True)
    # a partial longer than the server's file (e.g. left by a different mirror's bad copy)
    (downloads / f"{sha}.partial").write_bytes(b"x" * (len(data) + 10))
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a"), sha)])
    assert rn.ensure_artifact_installed("data", toml).name == tree
    assert server.gets("/a")[-1] is None  # the final, successful request started from zero


def test_complete_partial_is_used_without_the_network(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    downloads = open_store().artifacts_dir / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / f"{sha}.partial").write_bytes(data)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a"), sha, len(data))])
    assert rn.ensure_artifact_installed("data", toml).name == tree
    assert server.gets("/a") == []


def test_resumed_download_with_a_bad_prefix_restarts_from_zero(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    server.routes["/a"] = Route(data)
    downloads = open_store().artifacts_dir / ".downloads"
    downloads.mkdir(parents=True)
    (downloads / f"{sha}.partial").write_bytes(b"garbage!")
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a"), sha)])
    assert rn.ensure_artifact_installed("data", toml).name == tree
    assert server.gets("/a") == ["bytes=8-", None]


def test_installer_killed_mid_download_leaves_nothing_and_the_next_one_resumes(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    import signal
    import time

    tree, data, sha = _published(tmp_path)
    server.routes["/a"] = Route(data, stall_after=5000)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a"), sha, len(data))])
    code = f"import runicorn as rn; rn.ensure_artifact_installed('data', {str(toml)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)))
    partial = open_store().artifacts_dir / ".downloads" / f"{sha}.partial"
    deadline = time.monotonic() + 30
    while not (partial.exists() and partial.stat().st_size >= 5000):
        assert time.monotonic() < deadline and proc.poll() is None, "installer never got going"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    store = open_store()
    assert not (store.artifacts_dir / tree).exists()
    assert rn.ensure_artifact_installed("data", toml).name == tree  # the dead one's lock is gone
    assert server.gets("/a") == [None, "bytes=5000-"]
    assert rn.verify_artifact(tree)


def test_cli_bind_from_tree_id_and_archive_with_platforms(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, data, sha = _published(tmp_path)
    archive = tmp_path / "pub0.tar.gz"
    server.routes["/pub0.tar.gz"] = Route(data)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    toml = tmp_path / "proj" / "Runicorn.toml"
    toml.parent.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runicorn", *args], env=env, capture_output=True, text=True, cwd=toml.parent
        )

    r = run("bind", "tool", str(archive), "--url", server.url("/pub0.tar.gz"), "--platform", "os=linux,arch=aarch64")
    assert r.returncode == 0, r.stderr
    assert rn.artifact_meta("tool", toml, platform={"os": "linux", "arch": "aarch64"})["download"] == [
        {"url": server.url("/pub0.tar.gz"), "sha256": sha, "size": len(data)}
    ]
    other = rn.create_artifact(lambda d: (d / "x86").write_text("x"))
    r = run("bind", "tool", other[:10], "--platform", "os=linux,arch=x86_64")
    assert r.returncode == 0, r.stderr
    assert rn.artifact_hash("tool", toml, platform={"os": "linux", "arch": "x86_64"}) == other
    r = run("bind", "tool", "deadbeef99", "--platform", "os=linux,arch=riscv64")
    assert r.returncode == 1 and "matches no trees" in r.stderr
    r = run("bind", "x", str(tmp_path / "src0"), "--url", "http://nowhere/x.tgz")
    assert r.returncode == 1 and "--url needs --archive" in r.stderr
    r = run("fetch", "--platform", "os=linux,arch=aarch64", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["artifacts"][0]["name"] == "tool", r.stderr
    r = run("status", "--platform", "os=linux,arch=aarch64", "--json")
    assert json.loads(r.stdout)["artifacts"][0]["tree"] == tree


def test_downloads_are_bounded_by_size_or_by_download_max(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree, data, sha = _published(tmp_path)
    toml = tmp_path / "Runicorn.toml"
    big = data + os.urandom(200_000)
    server.routes["/announced"] = Route(big)  # Content-Length says more than size
    server.routes["/chunked"] = Route(big, chunked=True)  # no length: only the bytes tell
    for route in ("/announced", "/chunked"):
        rn.bind_artifact(toml, "data", tree, download_info=[(server.url(route), sha, len(data))], force=True)
        with pytest.raises(DownloadError) as ei:
            rn.ensure_artifact_installed("data", toml)
        msg = str(ei.value)
        assert f"{server.url(route)} -> the source " in msg, msg
        assert f"more than the declared size of {len(data)} bytes" in msg, msg
        assert len(server.gets(route)) == 1  # refused for good: not retried
    # no size declared and no Content-Length: $RUNICORN_DOWNLOAD_MAX stops it
    monkeypatch.setenv("RUNICORN_DOWNLOAD_MAX", str(len(data) // 2))
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/chunked"), sha)], force=True)
    with pytest.raises(
        DownloadError,
        match=rf"/chunked -> the source sent more than "
        rf"RUNICORN_DOWNLOAD_MAX={len(data) // 2} bytes",
    ):
        rn.ensure_artifact_installed("data", toml)
    store = open_store()
    assert not (store.artifacts_dir / tree).exists()
    assert not list((store.artifacts_dir / ".downloads").glob("*.partial"))  # nothing half-kept
    # within the bounds the same sources work
    server.routes["/chunked"] = Route(data, chunked=True)
    monkeypatch.setenv("RUNICORN_DOWNLOAD_MAX", str(len(data)))
    assert (rn.ensure_artifact_installed("data", toml) / "a.txt").read_text() == "alpha 0\n"


def test_download_max_must_be_a_number(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tree, data, sha = _published(tmp_path)
    server.routes["/a"] = Route(data, chunked=True)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a"), sha)])
    monkeypatch.setenv("RUNICORN_DOWNLOAD_MAX", "lots")
    with pytest.raises(DownloadError, match="RUNICORN_DOWNLOAD_MAX='lots' is not a non-negative number"):
        rn.ensure_artifact_installed("data", toml)


def test_download_without_size_stops_at_the_free_space(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    tiny_fs: Path,
) -> None:
    """A real 4 MiB tmpfs as the storage root: a 6 MiB body with no length is refused early."""
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    monkeypatch.setenv("RUNICORN_DIR", str(tiny_fs / "root"))
    tree, data, sha = _published(tmp_path)
    server.routes["/huge"] = Route(os.urandom(6 << 20), chunked=True)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/huge"), sha)])
    with pytest.raises(DownloadError, match=r"/huge -> the source sent more than the \d+ bytes free on "):
        rn.ensure_artifact_installed("data", toml)
    assert not list((tiny_fs / "root" / "artifacts" / ".downloads").glob("*.partial"))


def test_the_partial_file_is_locked_while_it_is_downloaded(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    """Two entries (different tree ids) may share an archive, hence its .partial file: it has its own lock."""
    from runicorn.fsutil import open_locked

    tree, data, sha = _published(tmp_path)
    server.routes["/a.tar.gz"] = Route(data)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree, download_info=[(server.url("/a.tar.gz"), sha)])
    lock = open_store().artifacts_dir / ".locks" / f"{sha}.partial.lock"
    seen: list[bool] = []

    def progress(done: int, total: int | None) -> None:
        try:
            with open_locked(lock, blocking=False):
                seen.append(False)
        except BlockingIOError:
            seen.append(True)

    rn.ensure_artifact_installed("data", toml, progress=progress)
    assert seen and all(seen)
    with open_locked(lock, blocking=False):  # released afterwards
        pass


def test_gc_survives_an_unreadable_logged_toml_and_keeps_its_bindings(tmp_path: Path) -> None:
    tree = rn.create_artifact(lambda d: (d / "x").write_text("kept"))
    toml = tmp_path / "p" / "Runicorn.toml"
    toml.parent.mkdir()
    rn.bind_artifact(toml, "data", tree)
    toml.unlink()
    toml.mkdir()  # the logged file is now a directory: reading it raises IsADirectoryError
    store = open_store()
    for dry in (True, False):
        report = store.gc(grace_seconds=0, dry_run=dry)
        assert tree not in report["tree_ids"]
        assert report["warnings"] == [f"kept the earlier bindings of {toml}: {toml}: cannot be read (Is a directory)"]
    assert store.has_tree(tree) and rn.artifact_exists(tree)
    assert store.index.query("SELECT path FROM toml_usage") == [(str(toml),)]
    # the CLI says so on stderr, once, and still succeeds
    r = subprocess.run(
        [sys.executable, "-m", "runicorn", "gc", "--grace", "0s"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == f"warning: kept the earlier bindings of {toml}: {toml}: cannot be read (Is a directory)\n"
    assert "Traceback" not in r.stderr and store.has_tree(tree)


def test_gc_trash_names_do_not_collide_with_an_earlier_gc(tmp_path: Path) -> None:
    store = open_store()
    adir = store.artifacts_dir
    gone = "d" * 64  # an installed directory whose tree is no longer in the store
    (adir / gone).mkdir(parents=True)
    (adir / gone / "f").write_text("x")
    leftover = adir / f".trash-{gone[:16]}-gc"  # what an interrupted earlier gc left under the old name
    leftover.mkdir()
    (leftover / "old").write_text("y")
    store.gc(grace_seconds=0)
    assert not (adir / gone).exists()
    assert not [p for p in adir.iterdir() if p.name.startswith(".trash-") and p != leftover]
    # and twice in a row, each with a leftover of the new kind, works too
    for _ in range(2):
        (adir / gone).mkdir()
        (adir / gone / "f").write_text("x")
        store.gc(grace_seconds=0)
        assert not (adir / gone).exists()


def _killed_midway(code: str, env: dict[str, str]) -> None:
    """Run ``code`` in a child that SIGKILLs itself at the point it patches in; expect the kill."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True)
    assert r.returncode == -9, r.stderr


def test_bind_logs_usage_before_writing_the_toml(tmp_path: Path) -> None:
    """Killed right after the TOML is written, the file is already in the usage log, so gc keeps its tree."""
    tree = rn.create_artifact(lambda d: (d / "x").write_text("keep me"))
    toml = tmp_path / "p" / "Runicorn.toml"
    toml.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    _killed_midway(
        f"""
        import os, signal
        import runicorn as rn
        from runicorn.artifacts import toml_write
        real = toml_write.atomic_write_text
        def write_then_die(*a, **kw):
            real(*a, **kw)
            os.kill(os.getpid(), signal.SIGKILL)
        toml_write.atomic_write_text = write_then_die
        rn.bind_artifact({str(toml)!r}, "data", {tree!r})
    """,
        env,
    )
    assert rn.artifact_hash("data", toml) == tree
    store = open_store()
    assert (store.artifacts_dir / "usage.log").read_text() == f"{toml}\n"
    assert store.gc(grace_seconds=0)["trees_deleted"] == 0 and store.has_tree(tree)


def test_usage_log_line_is_written_before_the_index_row(tmp_path: Path) -> None:
    """Killed inside the index write, the usage.log line is there and an index rebuild restores the row."""
    from runicorn.artifacts.gcroots import rebuild_usage

    toml = tmp_path / "Runicorn.toml"
    toml.write_text("")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    _killed_midway(
        f"""
        import os, signal
        from runicorn.artifacts.install import record_usage
        from runicorn.store import open_store
        store = open_store()
        def die():
            os.kill(os.getpid(), signal.SIGKILL)
        store.index.write = die
        record_usage(store, {str(toml)!r})
    """,
        env,
    )
    store = open_store()
    assert (store.artifacts_dir / "usage.log").read_text() == f"{toml}\n"
    assert store.index.query("SELECT path FROM toml_usage") == []
    rebuild_usage(store)
    assert store.index.query("SELECT path FROM toml_usage") == [(str(toml),)]


def test_local_directory_source_is_read_once_and_checked(tmp_path: Path) -> None:
    from runicorn.store import Store

    src = make_tree(tmp_path / "src")
    tree, git = rn.tree_hash(src), rn.tree_hash(src, kind="git-tree-sha1")
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree, download_info=[(str(src), "0" * 64)])
    jl = tmp_path / "Artifacts.toml"  # a Julia entry (git-tree-sha1 only)
    jl.write_text(f'[d]\ngit-tree-sha1 = "{git}"\n[[d.download]]\nurl = "{src}"\nsha256 = "{"0" * 64}"\n')
    # the directory changes after any check could have been made, while it is being ingested:
    # the id of what was actually stored is compared, so the change is caught
    real = Store.ingest_directory

    def changed_underneath(self, root, **kw):  # type: ignore[no-untyped-def]
        (Path(root) / "a.txt").write_text("changed\n")
        return real(self, root, **kw)

    Store.ingest_directory = changed_underneath  # type: ignore[method-assign]
    try:
        with pytest.raises(DownloadError) as ei:
            rn.ensure_artifact_installed("d", toml)
        with pytest.raises(DownloadError) as ej:
            rn.ensure_artifact_installed("d", jl)
    finally:
        Store.ingest_directory = real  # type: ignore[method-assign]
    changed = rn.tree_hash(src)
    assert f"{src} -> directory {src} holds tree-sha256 {changed}, expected {tree}" in str(ei.value)
    assert f"{src} -> directory {src} holds git-tree-sha1 " in str(ej.value)
    assert f", expected {git}" in str(ej.value)
    store = open_store()
    assert not [p for p in store.artifacts_dir.iterdir() if not p.name.startswith(".") and p.name != "usage.log"]
    assert changed in store.gc(grace_seconds=0)["tree_ids"]  # stored, unwanted, not held
    # unchanged, both kinds of entry install from the directory, checked against the stored tree
    (src / "a.txt").write_text("alpha 0\n")
    assert rn.ensure_artifact_installed("d", toml).name == tree
    p = rn.ensure_artifact_installed("d", jl)
    assert p.name == git and p.resolve().name == tree and rn.verify_artifact(git) and rn.verify_artifact(tree)
