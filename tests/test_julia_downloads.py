"""Downloads: sha256 in either case, capped retry waits and an explicit retry count, a
storage root that cannot be created, and ``artifact("name\\\\sub")``.

pooch (pooch/hashes.py, ``hash_matches``) and Julia's downloader compare hex digests
lower-cased, so an upper-case sha256 in a file is the same checksum.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts import download
from runicorn.errors import ArtifactError, RunicornError
from runicorn.hashing import sha256_file
from tests.artifacts_support import Route, make_tree, start_server

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = start_server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _archive(tmp_path: Path) -> tuple[str, Path]:
    src = make_tree(tmp_path / "src")
    tree = rn.tree_hash(src)
    out = tmp_path / "a.tar.gz"
    rn.create_artifact(src=src)
    rn.archive_artifact(tree, out)
    return tree, out


def test_upper_case_sha256_is_accepted_and_normalised(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    tree, archive = _archive(tmp_path)
    sha = sha256_file(archive)
    rn.remove_artifact(tree)
    server.routes["/a.tar.gz"] = Route(archive.read_bytes())
    toml = tmp_path / "p" / "Runicorn.toml"
    toml.parent.mkdir()
    toml.write_text(
        f'[data]\ntree-sha256 = "{tree.upper()}"\nlazy = true\n'
        f'[[data.download]]\nurl = "{server.url("/a.tar.gz")}"\nsha256 = "{sha.upper()}"\n'
    )
    meta = rn.artifact_meta("data", toml)
    assert meta is not None and meta["download"][0]["sha256"] == sha and meta["tree-sha256"] == tree
    assert rn.artifact("data", toml=toml).name == tree
    # bind writes what it is given normalised
    toml2 = tmp_path / "q" / "Runicorn.toml"
    rn.bind_artifact(toml2, "data", tree, download_info=[(server.url("/a.tar.gz"), sha.upper())])
    assert f'sha256 = "{sha}"' in toml2.read_text()


def test_retry_count_is_a_setting_and_waits_are_capped(
    tmp_path: Path,
    server,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.routes["/busy"] = Route(status=503)
    monkeypatch.setenv("RUNICORN_DOWNLOAD_BACKOFF", "0.01")
    monkeypatch.setenv("RUNICORN_DOWNLOAD_RETRIES", "3")
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(
        f'[x]\ntree-sha256 = "{"1" * 64}"\n[[x.download]]\nurl = "{server.url("/busy")}"\nsha256 = "{"2" * 64}"\n'
    )
    with pytest.raises(ArtifactError, match=r"gave up after 3 attempt\(s\) \(RUNICORN_DOWNLOAD_RETRIES\): HTTP 503"):
        rn.ensure_artifact_installed("x", toml)
    assert len(server.gets("/busy")) == 3
    monkeypatch.setenv("RUNICORN_DOWNLOAD_RETRIES", "1")
    with pytest.raises(ArtifactError, match=r"gave up after 1 attempt"):
        rn.ensure_artifact_installed("x", toml)
    assert len(server.gets("/busy")) == 4
    # waits double from the backoff and never exceed 10 s, whatever the settings
    monkeypatch.setenv("RUNICORN_DOWNLOAD_BACKOFF", "0.5")
    assert [download.retry_wait(n) for n in (2, 3, 4, 5, 6, 7, 50, 10**6)] == [0.5, 1, 2, 4, 8, 10, 10, 10]
    monkeypatch.setenv("RUNICORN_DOWNLOAD_BACKOFF", "1000")
    assert download.retry_wait(2) == 10
    monkeypatch.delenv("RUNICORN_DOWNLOAD_BACKOFF")
    assert download.retry_wait(2) == download.BACKOFF
    for bad in ("0", "-2", "three", "1.5"):
        monkeypatch.setenv("RUNICORN_DOWNLOAD_RETRIES", bad)
        with pytest.raises(ArtifactError, match=f"RUNICORN_DOWNLOAD_RETRIES='{bad}' is not a whole number >= 1"):
            download.download_retries()
    monkeypatch.delenv("RUNICORN_DOWNLOAD_RETRIES")
    assert download.download_retries() == 4
    monkeypatch.setenv("RUNICORN_DOWNLOAD_BACKOFF", "nan")
    with pytest.raises(ArtifactError, match="RUNICORN_DOWNLOAD_BACKOFF='nan' is not a number of seconds"):
        download.retry_wait(2)


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args],
        capture_output=True,
        text=True,
        env=dict(env, PYTHONPATH=str(REPO)),
        cwd=cwd,
    )


def test_a_storage_root_that_cannot_be_created_is_one_line_naming_its_origin(tmp_path: Path) -> None:
    from runicorn.store.cache import forget_open_stores

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    src = make_tree(tmp_path / "src")
    env = dict(os.environ, RUNICORN_DIR=str(blocker / "store"))
    r = _cli("bind", "d", str(src), env=env, cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"cannot create the store at {blocker / 'store'} (set by RUNICORN_DIR)" in r.stderr
    r = _cli("--storage", str(blocker / "sub"), "snapshot", str(src), env=dict(os.environ), cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"cannot create the store at {blocker / 'sub'} (set by --storage / storage=)" in r.stderr
    forget_open_stores()
    with pytest.raises(RunicornError, match=r"cannot create the store at .*\(set by --storage / storage=\)"):
        rn.create_artifact(src=src, storage=blocker / "x")
    assert not (tmp_path / "toml").exists() and blocker.read_text() == "not a directory"


def test_backslash_in_an_artifact_path_is_refused(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    tree = rn.create_artifact(src=src)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "data", tree)
    assert rn.artifact("data/a.txt", toml=toml).read_text() == "alpha 0\n"
    # "name\\sub" would be "name/sub" on Windows and a file name with a backslash on POSIX:
    # refused everywhere, as the same error on every platform.
    for bad in ("data\\a.txt", "data/sub\\x", "data\\"):
        with pytest.raises(ArtifactError, match="backslash"):
            rn.artifact(bad, toml=toml)
    r = _cli("path", "data\\a.txt", "--toml", str(toml), env=dict(os.environ), cwd=tmp_path)
    assert r.returncode == 1 and "backslash" in r.stderr and "Traceback" not in r.stderr
