"""Smaller API guarantees: light warm path, verify/remove, create_artifact errors, CLI help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.errors import ArtifactError
from tests.artifacts_support import make_tree

REPO = Path(__file__).resolve().parent.parent


def test_warm_path_imports_nothing_heavy(tmp_path: Path) -> None:
    tree = rn.create_artifact(src=make_tree(tmp_path / "src"))
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree)
    code = (
        "import sys, runicorn as rn\n"
        "heavy = ('tomlkit', 'click', 'paramiko', 'urllib.request', 'tarfile', 'http.client', 'apsw')\n"
        "assert not [m for m in heavy if m in sys.modules], 'import runicorn'\n"
        f"rn.artifact('d', toml={str(toml)!r})\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_lookup_never_loads_the_install_path(tmp_path: Path) -> None:
    """artifact() and friends on an installed artifact load no module of the mutating path."""
    import ast

    tree = rn.create_artifact(src=make_tree(tmp_path / "src"))
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree)
    code = (
        "import sys, runicorn as rn\n"
        f"rn.artifact('d', toml={str(toml)!r}); rn.artifact_hash('d', {str(toml)!r})\n"
        f"rn.artifact_meta('d', {str(toml)!r}); rn.artifact_exists({tree!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('runicorn.artifacts.')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    mutating = {
        f"runicorn.artifacts.{m}"
        for m in (
            "install",
            "download",
            "extract",
            "create",
            "materialize",
            "toml_write",
            "gcroots",
            "installed",
            "bindings",
            "usage",
        )
    }
    assert "runicorn.artifacts.lookup" in out.stdout and not mutating & set(ast.literal_eval(out.stdout))


def test_install_uses_no_private_helper_of_lookup() -> None:
    """install imports what it shares with lookup from public modules (locate, overrides,
    toml_read); lookup imports install only where a lazy artifact is installed."""
    import ast

    pkg = REPO / "runicorn" / "artifacts"
    install = ast.parse((pkg / "install.py").read_text("utf-8"))
    assert not [
        n.lineno for n in ast.walk(install) if isinstance(n, ast.ImportFrom) and n.module == "runicorn.artifacts.lookup"
    ]
    lookup = ast.parse((pkg / "lookup.py").read_text("utf-8"))
    top = [n.module for n in lookup.body if isinstance(n, ast.ImportFrom)]
    assert "runicorn.artifacts.install" not in top


def test_verify_and_remove(tmp_path: Path) -> None:
    tree = rn.create_artifact(src=make_tree(tmp_path / "src"))
    p = rn.artifact_path(tree)
    assert rn.verify_artifact(tree)
    tool = p / "sub" / "deeper" / "tool.sh"  # executables are private copies, so writable here
    tool.write_text("#!/bin/sh\necho tampered\n")
    assert not rn.verify_artifact(tree)
    assert rn.remove_artifact(tree) and not rn.artifact_exists(tree)
    assert not rn.remove_artifact(tree)
    assert not rn.verify_artifact(tree)


def test_create_artifact_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="exactly one of"):
        rn.create_artifact()
    with pytest.raises(ArtifactError, match="not a directory"):
        rn.create_artifact(src=tmp_path / "nope")
    with pytest.raises(ArtifactError, match="archive name must end in"):
        rn.archive_artifact(rn.create_artifact(lambda d: (d / "f").write_text("x")), tmp_path / "x.rar")


@pytest.mark.parametrize("cmd", ["bind", "unbind", "fetch", "path", "status", "export"])
def test_cli_help(cmd: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "runicorn", cmd, "--help"],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "Usage:" in out.stdout


def test_usage_log_survives_an_index_rebuild_and_stale_staging_is_cleaned(tmp_path: Path) -> None:
    import time

    from runicorn.store import open_store

    tree = rn.create_artifact(src=make_tree(tmp_path / "src"))
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree)
    store = open_store()
    with store.index.write() as c:
        c.execute("DELETE FROM toml_usage")
    store.rebuild_index()
    assert store.index.query("SELECT path FROM toml_usage") == [(str(toml),)]
    stale = store.artifacts_dir / ".staging-deadbeef-0000"
    (stale / "x").mkdir(parents=True)
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = store.artifacts_dir / ".staging-cafe-1111"
    fresh.mkdir()
    store.gc(grace_seconds=0)
    assert not stale.exists() and fresh.exists()
    assert store.has_tree(tree) and rn.artifact_exists(tree)


def test_create_then_bind_script_is_idempotent(tmp_path: Path) -> None:
    """The usual pattern: build the artifact once, bind it, reuse it on later runs."""
    toml = tmp_path / "Runicorn.toml"
    calls = []

    def script() -> Path:
        h = rn.artifact_hash("iris", toml)
        if h is None or not rn.artifact_exists(h):

            def fill(d: Path) -> None:
                calls.append(d)
                (d / "iris.csv").write_text("5.1,3.5,1.4,0.2,setosa\n")

            h = rn.create_artifact(fill)
            rn.bind_artifact(toml, "iris", h)
        return rn.artifact_path(h)

    first, second = script(), script()
    assert first == second and len(calls) == 1
    assert (first / "iris.csv").read_text().endswith("setosa\n")
    assert rn.artifact("iris", toml=toml) == first


def test_empty_tree_has_gits_empty_tree_id(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert rn.tree_hash(tmp_path / "empty", kind="git-tree-sha1") == "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


@pytest.mark.parametrize(
    "bad",
    ["../../x", "/abs", "/etc", "..", "", "a" * 63, "a" * 64 + "\n", "A" * 64, "../" + "a" * 61, "b" * 40 + "/.."],
)
def test_tree_arguments_must_be_tree_ids(tmp_path: Path, bad: str) -> None:
    tree = rn.create_artifact(src=make_tree(tmp_path / "src"))
    victim = tmp_path / "x"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    for fn in (rn.remove_artifact, rn.verify_artifact, rn.artifact_path, rn.artifact_exists):
        with pytest.raises(ArtifactError, match="is not a tree id"):
            fn(bad)
    assert (victim / "keep.txt").read_text() == "keep"
    assert rn.artifact_exists(tree) and rn.verify_artifact(tree)


def test_cli_path_honours_the_global_storage_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from runicorn.cli import main
    from runicorn.store.cache import forget_open_stores

    monkeypatch.delenv("RUNICORN_DIR")  # only --storage says where the store is
    root = tmp_path / "elsewhere"
    src = make_tree(tmp_path / "src")
    tree = rn.create_artifact(src=src, storage=root)
    archive = tmp_path / "d.tar.gz"
    sha = rn.archive_artifact(tree, archive, storage=root)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree, storage=root)
    rn.bind_artifact(toml, "lazy", tree, download_info=[(str(archive), sha)], lazy=True, storage=root)
    rn.remove_artifact(tree, storage=root)
    forget_open_stores()
    r = CliRunner().invoke(main, ["--storage", str(root), "path", "lazy", "--toml", str(toml)])
    assert r.exit_code == 0, r.output
    assert r.output == f"{root / 'artifacts' / tree}\n"  # installed into --storage, not ~/.runicorn
    r = CliRunner().invoke(main, ["--storage", str(root), "path", "d/sub", "--toml", str(toml)])
    assert r.exit_code == 0 and r.output == f"{root / 'artifacts' / tree / 'sub'}\n", r.output
    assert not (tmp_path / "home" / ".runicorn").exists()
