"""tree_hash: tree-sha256 equals the store's tree id; git-tree-sha1 equals `git write-tree`."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.errors import ArtifactError
from tests.artifacts_support import make_tree

GIT = shutil.which("git")  # tools/run-tests.sh installs git; without it these tests fail


def _git_write_tree(path: Path) -> str:
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(["git", "init", "-q", str(path)], check=True, env=env)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True, env=env)
    out = subprocess.run(["git", "-C", str(path), "write-tree"], check=True, env=env, capture_output=True, text=True)
    return out.stdout.strip()


def _random_tree(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = ["a", "a.b", "a-", "a0", "b", "Zed", "ünï", "日本語", "sp ace", "x_y", "a.b.c"]
    dirs = [root]
    root.mkdir()
    for i in range(rng.randint(8, 20)):
        parent = rng.choice(dirs)
        name = rng.choice(names) + ("" if rng.random() < 0.6 else str(i))
        p = parent / name
        if p.exists() or p.is_symlink():
            continue
        kind = rng.random()
        if kind < 0.3:
            p.mkdir()
            dirs.append(p)
        elif kind < 0.45:
            os.symlink(rng.choice(["a", "../b", "nowhere", "ünï/x"]), p)
        else:
            p.write_bytes(rng.randbytes(rng.randint(0, 300)))
            if rng.random() < 0.3:
                os.chmod(p, 0o755)
    (root / "empty" / "nested-empty").mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("seed", range(6))
def test_git_tree_sha1_equals_git_write_tree(tmp_path: Path, seed: int) -> None:
    root = tmp_path / "t"
    _random_tree(root, seed)
    ours = rn.tree_hash(root, kind="git-tree-sha1")
    assert ours == _git_write_tree(root)


def test_git_sort_order_dir_vs_file(tmp_path: Path) -> None:
    # git sorts a directory "a" as "a/": after "a.b" and "a-" ('/' > '-' and '.')
    root = tmp_path / "t"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_text("1")
    (root / "a.b").write_text("2")
    (root / "a-").write_text("3")
    (root / "a0").write_text("4")
    make_tree(root / "fixture")
    assert rn.tree_hash(root, kind="git-tree-sha1") == _git_write_tree(root)


def test_tree_sha256_equals_ingest_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "t")
    (root / "empty").mkdir()
    from runicorn.store import open_store

    assert rn.tree_hash(root) == rn.tree_hash(root, kind="tree-sha256") == open_store().ingest_directory(root)


def test_tree_hash_errors(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not a directory"):
        rn.tree_hash(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="unknown tree hash kind 'md5'"):
        rn.tree_hash(tmp_path, kind="md5")
