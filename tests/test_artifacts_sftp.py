"""``sftp://`` sources against a real OpenSSH sshd on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts import download
from runicorn.errors import DownloadError
from tests.artifacts_support import make_tree
from tools.testbed.sshd import SshdServer as Sshd


def _publish(tmp_path: Path) -> tuple[str, Path, str]:
    """Archive a tree made in a scratch store, so the test store must really download it."""
    from runicorn.store import Store

    scratch = Store(tmp_path / "scratch")
    tree = scratch.ingest_directory(make_tree(tmp_path / "src"))
    out = tmp_path / "served" / "a.tar.xz"
    sha = rn.archive_artifact(tree, out, store=scratch)
    scratch.close()
    return tree, out, sha


def test_sftp_lazy_install_with_ssh_config_alias(tmp_path: Path, sshd: Sshd) -> None:
    tree, out, sha = _publish(tmp_path)
    sshd.write_client_config(Path(os.environ["HOME"]), "artsrv", trust_host=True)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(
        toml,
        "d",
        tree,
        lazy=True,
        download_info=[
            (f"sftp://artsrv{tmp_path}/served/missing.tar.xz", sha),  # mirror that lacks the file
            (f"sftp://artsrv{out}", sha, out.stat().st_size),
        ],
    )
    p = rn.artifact("d", toml=toml)
    assert (p / "a.txt").read_text() == "alpha 0\n" and rn.verify_artifact(tree)


def test_sftp_explicit_user_host_port(tmp_path: Path, sshd: Sshd) -> None:
    tree, out, sha = _publish(tmp_path)
    sshd.write_client_config(Path(os.environ["HOME"]), "artsrv", trust_host=True)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree, download_info=[(f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{out}", sha)])
    assert rn.ensure_artifact_installed("d", toml).name == tree


def test_sftp_unknown_host_key_is_refused_unless_opted_in(
    tmp_path: Path, sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "BACKOFF", 0.01)
    tree, out, sha = _publish(tmp_path)
    home = Path(os.environ["HOME"])
    sshd.write_client_config(home, "artsrv", trust_host=False)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree, download_info=[(f"sftp://artsrv{out}", sha)])
    with pytest.raises(DownloadError, match="host key for .* is unknown"):
        rn.ensure_artifact_installed("d", toml)
    assert not rn.artifact_exists(tree)
    monkeypatch.setenv("RUNICORN_SSH_ACCEPT_NEW_HOST_KEY", "1")
    assert rn.ensure_artifact_installed("d", toml).name == tree
    assert f"[127.0.0.1]:{sshd.port}" in (home / ".ssh" / "known_hosts").read_text()


@pytest.mark.parametrize("prefix", ["good", "garbage"])
def test_sftp_resumes_a_partial_download(tmp_path: Path, sshd: Sshd, prefix: str) -> None:
    from runicorn.store import open_store

    tree, out, sha = _publish(tmp_path)
    sshd.write_client_config(Path(os.environ["HOME"]), "artsrv", trust_host=True)
    downloads = open_store().artifacts_dir / ".downloads"
    downloads.mkdir(parents=True)
    data = out.read_bytes()
    (downloads / f"{sha}.partial").write_bytes(data[:1000] if prefix == "good" else b"\0" * 1000)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree, download_info=[(f"sftp://artsrv{out}", sha)])
    assert rn.ensure_artifact_installed("d", toml).name == tree and rn.verify_artifact(tree)
    assert not (downloads / f"{sha}.partial").exists()
