"""git-tree-sha1 as Pkg's GitTools.tree_hash computes it: every entry named ``.git`` is skipped.

Known hashes from Pkg.jl test/artifacts.jl ("Artifact Creation", commit
e52498951d1169fca898632ba14741c3883b1b4e); the rule from Pkg.jl src/GitTools.jl
(``tree_hash``: "Skip `.git` directories", any entry whose basename is ``.git``).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.hashing import sha256_file


def _empty(p: Path) -> None:
    pass


def _single(p: Path) -> None:
    (p / "foo").write_text("Hello, world!")


def _multiple(p: Path) -> None:
    (p / "foo1").write_text("Hello")
    (p / "foo2").write_text("world!")


def _nested(p: Path) -> None:
    (p / "bar" / "bar").mkdir(parents=True)
    (p / "bar" / "bar" / "foo1").write_text("Hello")
    (p / "bar" / "foo2").write_text("world!")
    (p / "foo3").write_text("baz!")
    (p / "Xq8rTz1a" / "inner").mkdir(parents=True)  # empty directories do not count
    os.symlink("foo3", p / "foo3_link")
    os.symlink("../bar", p / "bar" / "infinite_link")


CREATORS: list[tuple[Callable[[Path], None], str]] = [
    (_empty, "4b825dc642cb6eb9a060e54bf8d69288fbee4904"),
    (_single, "339aad93c0f854604248ea3b7c5b7edea20625a9"),
    (_multiple, "98cda294312216b19e2a973e9c291c0f5181c98c"),
    (_nested, "86a1ce580587d5851fdfa841aeb3c8d55663f6f9"),
]


def _add_git_dirs(p: Path) -> None:
    (p / ".git" / "objects").mkdir(parents=True)
    (p / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (p / "sub" / ".git").mkdir(parents=True)  # a nested repository's .git
    (p / "sub" / ".git" / "config").write_text("[core]\n")
    (p / "gitfile").mkdir()
    (p / "gitfile" / ".git").write_text("gitdir: ../.git/modules/x\n")  # a worktree's .git file


@pytest.mark.parametrize("creator,known", CREATORS)
def test_known_julia_hashes_and_dot_git_is_skipped(tmp_path: Path, creator: Callable[[Path], None], known: str) -> None:
    root = tmp_path / "t"
    root.mkdir()
    creator(root)
    assert rn.tree_hash(root, kind="git-tree-sha1") == known
    _add_git_dirs(root)
    assert rn.tree_hash(root, kind="git-tree-sha1") == known


def test_git_checkout_hashes_as_git_write_tree(tmp_path: Path) -> None:
    # The documented equality: `git add -A && git write-tree` of a checkout, whose .git
    # directory exists when it is hashed.
    root = tmp_path / "repo"
    root.mkdir()
    _nested(root)
    env = dict(os.environ, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(["git", "init", "-q", str(root)], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    written = subprocess.run(
        ["git", "-C", str(root), "write-tree"], check=True, env=env, capture_output=True, text=True
    ).stdout.strip()
    assert (root / ".git").is_dir()
    assert rn.tree_hash(root, kind="git-tree-sha1") == written == "86a1ce580587d5851fdfa841aeb3c8d55663f6f9"


def test_archive_with_dot_git_installs_against_julia_hash(tmp_path: Path) -> None:
    # A tarball packed from a checkout (with its .git) verifies against the hash Julia
    # computes for it, which leaves .git out.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (
            ("foo", b"Hello, world!"),
            (".git/HEAD", b"ref: refs/heads/main\n"),
            ("deep/.git/config", b"[core]\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(buf.getvalue())
    toml = tmp_path / "Artifacts.toml"
    toml.write_text(
        f'[hello]\ngit-tree-sha1 = "339aad93c0f854604248ea3b7c5b7edea20625a9"\n'
        f'[[hello.download]]\nurl = "a.tar.gz"\nsha256 = "{sha256_file(archive)}"\n'
    )
    path = rn.ensure_artifact_installed("hello", toml)
    assert (path / "foo").read_text() == "Hello, world!"
