"""Artifacts whose download source is a runicorn remote: TOML validation and failures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runicorn.artifacts.toml_read import parse_toml_bytes
from runicorn.errors import TomlFormatError
from tests.remote_support import make_remote, make_tree, rn, rn_json, same_tree

TREE = "a" * 64


@pytest.mark.parametrize(
    "body,message",
    [
        ("remote = 5", "'remote' must be a non-empty string"),
        ('remote = ""', "'remote' must be a non-empty string"),
        ('remote = "s3://b/p"\nendpoint = 7', "'endpoint' must be a non-empty string"),
    ],
)
def test_bad_remote_download_tables_are_refused_naming_the_file(body: str, message: str) -> None:
    text = f'[ds]\ntree-sha256 = "{TREE}"\n[[ds.download]]\n{body}\n'
    with pytest.raises(TomlFormatError, match=message) as exc:
        parse_toml_bytes(text.encode(), "/p/Runicorn.toml")
    assert "/p/Runicorn.toml: artifact 'ds' download 1" in str(exc.value)


def test_a_remote_source_needs_a_tree_sha256() -> None:
    text = f'[ds]\ngit-tree-sha1 = "{"b" * 40}"\n[[ds.download]]\nremote = "file:///x"\n'
    with pytest.raises(TomlFormatError, match="needs the entry's 'tree-sha256'"):
        parse_toml_bytes(text.encode(), "/p/Runicorn.toml")


def test_fetch_from_a_remote_that_lost_the_tree_fails_and_installs_nothing(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote("file", tmp_path, request)
    project = tmp_path / "p"
    data = make_tree(project / "data", 11, big=False)
    a, b = tmp_path / "a", tmp_path / "b"
    rn(["remote", "add", "team", *remote.add_args()], storage=a, cwd=project)
    rn(["bind", "ds", "data", "--push", "team"], storage=a, cwd=project)
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(project / "Runicorn.toml", clone)
    rn(["fetch"], storage=b, cwd=clone)  # not lazy: `runicorn fetch` installs it
    tree = rn_json(["status"], storage=b, cwd=clone)["artifacts"][0]["tree"]
    same_tree(data, b / "artifacts" / tree)
    shutil.rmtree(Path(remote.url[len("file://") :]) / "manifests")
    c = tmp_path / "c"
    p = rn(["fetch"], storage=c, cwd=clone, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"remote {remote.url}" in p.stderr and "is not on the remote" in p.stderr
    assert not (c / "artifacts" / tree).exists()
    env = {**os.environ, "RUNICORN_DIR": str(c)}
    q = subprocess.run(
        [sys.executable, "-c", "import runicorn as rn; rn.artifact('ds')"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
    )
    assert q.returncode != 0 and "ArtifactNotInstalledError" in q.stderr and "runicorn fetch ds" in q.stderr
