"""Runicorn.toml reading, writing, platform selection, overrides and lookup from the caller's file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts.platform import parse_platform
from runicorn.artifacts.toml_read import load_toml
from runicorn.errors import ArtifactError, TomlFormatError

REPO = Path(__file__).resolve().parent.parent
T1, T2, T3 = "1" * 64, "2" * 64, "3" * 64
S = "a" * 64


def test_example_file_parses() -> None:
    parsed = load_toml(str(REPO / "Runicorn.toml.example"))
    assert set(parsed.artifacts) == {"mnist", "ffmpeg", "julia_style", "fixtures"}
    assert (
        rn.artifact_meta("ffmpeg", REPO / "Runicorn.toml.example", platform={"os": "linux", "arch": "aarch64"})[
            "tree-sha256"
        ]
        == "3" * 64
    )
    sel = rn.select_downloadable_artifacts(
        REPO / "Runicorn.toml.example", platform={"os": "linux", "arch": "x86_64", "libc": "glibc"}
    )
    assert set(sel) == {"ffmpeg", "julia_style", "fixtures"} and sel["ffmpeg"]["tree-sha256"] == "1" * 64
    assert "mnist" in rn.select_downloadable_artifacts(REPO / "Runicorn.toml.example", include_lazy=True)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[a\ntree-sha256 = 1", "not valid TOML: Expected ']' at the end of a table declaration (at line 1"),
        ('[a]\ntree-sha256 = "abc"', "artifact 'a': 'tree-sha256' must be 64 hex digits, got 'abc'"),
        ("[a]\nlazy = true", "artifact 'a': needs 'tree-sha256'"),
        (f'[a]\ntree-sha256 = "{T1}"\nlazy = "yes"', "artifact 'a': 'lazy' must be true or false"),
        (
            f'[[a]]\nos = "linux"\ntree-sha256 = "{T1}"',
            "artifact 'a' variant 1: platform variants ([[...]]) need 'arch'",
        ),
        (f'[a]\ntree-sha256 = "{T1}"\n[[a.download]]\nurl = "http://x"', "artifact 'a' download 1: 'sha256' must be"),
        (f'[a]\ntree-sha256 = "{T1}"\n[[a.download]]\nsha256 = "{S}"', "download 1: 'url' must be a non-empty string"),
        (f'[a]\ntree-sha256 = "{T1}"\n[[a.download]]\nurl = "u"\nsha256 = "{S}"\nsize = -1', "'size' must be"),
        ("a = 3", "artifact 'a': must be a table"),
        (f'[a]\ntree-sha256 = "{T1}"\nos = 3', "platform tag 'os' must be a non-empty string"),
        # a trailing newline is not part of a valid id or name (a "$" regex would accept it)
        (f'[a]\ntree-sha256 = "{T1}\\n"', "artifact 'a': 'tree-sha256' must be 64 hex digits"),
        (f'[a]\ngit-tree-sha1 = "{"b" * 40}\\n"', "artifact 'a': 'git-tree-sha1' must be 40 hex"),
        (
            f'[a]\ntree-sha256 = "{T1}"\n[[a.download]]\nurl = "u"\nsha256 = "{S}\\n"',
            "artifact 'a' download 1: 'sha256' must be 64 hex digits",
        ),
        (f'["a\\n"]\ntree-sha256 = "{T1}"', "artifact 'a\\n': name must be letters"),
    ],
)
def test_malformed_files_name_file_artifact_and_cause(tmp_path: Path, text: str, needle: str) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(text)
    with pytest.raises(TomlFormatError) as ei:
        rn.artifact("a", toml=toml)
    assert str(ei.value).startswith(f"{toml}: ") and needle in str(ei.value)
    # binding into a broken file refuses and leaves it untouched
    with pytest.raises(TomlFormatError):
        rn.bind_artifact(toml, "b", T2)
    assert toml.read_text() == text


HAND_WRITTEN = f"""\
# Project artifacts -- keep this comment!
# second header line

[weights]   # trailing comment on a table
tree-sha256 = "{T1}"  # the weights we ship
lazy    =   true      # odd spacing kept

    # indented comment before a download
    [[weights.download]]
    url = "https://example.org/w.tar.gz"   # primary
    sha256 = "{S}"

# a comment between artifacts

[[tool]]  # platform table comment
os = "linux"
arch = "x86_64"
tree-sha256 = "{T2}"
# the end
"""


def test_bind_refuses_a_name_or_tree_with_a_trailing_newline(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    with pytest.raises(ArtifactError, match="artifact name 'x\\\\n' must be"):
        rn.bind_artifact(toml, "x\n", T1)
    with pytest.raises(ArtifactError, match="is not a tree id"):
        rn.bind_artifact(toml, "x", T1 + "\n")
    assert not toml.exists()


def test_tomlkit_round_trip_keeps_every_comment(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(HAND_WRITTEN)
    rn.bind_artifact(toml, "extra", T3, download_info=[{"url": "https://m/x.tgz", "sha256": S, "size": 5}])
    rn.bind_artifact(toml, "tool", T3, platform={"os": "linux", "arch": "aarch64"})
    rn.bind_artifact(toml, "tool", T1, platform={"os": "linux", "arch": "x86_64"}, force=True)
    text = toml.read_text()
    for line in HAND_WRITTEN.splitlines():
        if "#" in line:
            assert line.split("#", 1)[1] in text, line
    assert text.startswith(HAND_WRITTEN.split("[weights]")[0])
    assert "lazy    =   true      # odd spacing kept" in text
    assert rn.artifact_meta("extra", toml)["download"] == [{"url": "https://m/x.tgz", "sha256": S, "size": 5}]
    assert rn.artifact_hash("tool", toml, platform={"os": "linux", "arch": "x86_64"}) == T1
    assert rn.artifact_hash("tool", toml, platform={"os": "linux", "arch": "aarch64"}) == T3
    rn.unbind_artifact(toml, "tool", platform={"os": "linux", "arch": "aarch64"})
    rn.unbind_artifact(toml, "extra")
    assert rn.artifact_meta("extra", toml) is None
    assert "# the end" in toml.read_text() and "# a comment between artifacts" in toml.read_text()


def test_rebinding_needs_force(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "a", T1)
    rn.bind_artifact(toml, "p", T1, platform={"os": "linux", "arch": "x86_64"})
    before = toml.read_text()
    with pytest.raises(ArtifactError, match=f"{toml}: artifact 'a' is already bound"):
        rn.bind_artifact(toml, "a", T2)
    with pytest.raises(ArtifactError, match="already bound for platform x86_64-linux-gnu"):
        rn.bind_artifact(toml, "p", T2, platform={"os": "linux", "arch": "amd64"})
    with pytest.raises(ArtifactError, match="bound without a platform"):
        rn.bind_artifact(toml, "a", T2, platform={"os": "linux", "arch": "x86_64"})
    with pytest.raises(ArtifactError, match="needs 'arch'"):
        rn.bind_artifact(toml, "q", T2, platform={"os": "linux"})
    with pytest.raises(ArtifactError, match="not a tree id"):
        rn.bind_artifact(toml, "q", "xyz")
    with pytest.raises(ArtifactError, match="no artifact named 'zzz'"):
        rn.unbind_artifact(toml, "zzz")
    assert toml.read_text() == before
    rn.bind_artifact(toml, "a", T2, force=True)
    assert rn.artifact_hash("a", toml) == T2


def test_concurrent_binders_lose_nothing(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text("# shared file\n")
    code = textwrap.dedent(f"""
        import sys, runicorn as rn
        i = int(sys.argv[1])
        for j in range(5):
            rn.bind_artifact({str(toml)!r}, f"a{{i}}_{{j}}", "%064x" % (i * 100 + j))
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], env=env) for i in range(4)]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    parsed = load_toml(str(toml))
    assert set(parsed.artifacts) == {f"a{i}_{j}" for i in range(4) for j in range(5)}
    assert toml.read_text().startswith("# shared file\n")


def test_platform_selection_follows_julia_rules(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(
        textwrap.dedent(f"""
        [[lib]]
        os = "linux"
        arch = "x86_64"
        tree-sha256 = "{T1}"
        [[lib]]
        os = "linux"
        arch = "x86_64"
        cuda = "12"
        tree-sha256 = "{T2}"
        [[lib]]
        os = "macos"
        arch = "aarch64"
        tree-sha256 = "{T3}"
    """)
    )
    h = lambda **p: rn.artifact_hash("lib", toml, platform=p)  # noqa: E731
    assert h(os="linux", arch="x86_64") == T1  # the extra cuda tag costs: fewest differing tags
    assert h(os="linux", arch="x86_64", cuda="12") == T2  # exact tag set wins
    assert h(os="linux", arch="x86_64", cuda="11") == T1  # cuda present on both and differs: no match
    assert h(os="darwin", arch="arm64") == T3  # aliases normalised
    assert h(os="windows", arch="x86_64") is None
    assert h(os="linux", arch="amd64", libc="glibc") == T1
    with pytest.raises(ArtifactError, match="'lib' has no variant for platform x86_64-w64-mingw32"):
        rn.artifact("lib", toml=toml, platform={"os": "windows", "arch": "x86_64"})
    assert parse_platform("os=Linux, arch=AMD64,libc=glibc") == {"os": "linux", "arch": "x86_64", "libc": "glibc"}
    with pytest.raises(ArtifactError, match="neither a triplet such as x86_64-linux-gnu nor KEY=VALUE"):
        parse_platform("linux")
    host = rn.host_platform()
    assert {"os", "arch"} <= set(host)
    assert rn.artifact_hash("lib", toml, platform=host) in (T1, T2, T3, None)


def test_overrides_by_name_and_by_tree(tmp_path: Path) -> None:
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "ds", T1)
    rn.bind_artifact(toml, "other", T2)
    shared = tmp_path / "shared-disk" / "ds"
    shared.mkdir(parents=True)
    by_tree = tmp_path / "by-tree"
    by_tree.mkdir()
    adir = Path(os.environ["RUNICORN_DIR"]) / "artifacts"
    adir.mkdir(parents=True, exist_ok=True)
    (adir / "Overrides.toml").write_text(f'ds = "{shared}"\n"{T2}" = "{by_tree}"\n')
    assert rn.artifact("ds", toml=toml) == shared
    assert rn.artifact("other/x.txt", toml=toml) == by_tree / "x.txt"
    assert rn.artifact_path(T2) == by_tree and rn.artifact_exists(T2)
    assert rn.ensure_artifact_installed("ds", toml) == shared
    (adir / "Overrides.toml").write_text("ds = 5\n")
    with pytest.raises(TomlFormatError, match="Overrides.toml: override 'ds' must be a directory path"):
        rn.artifact("ds", toml=toml)


def test_artifact_finds_toml_from_the_calling_file_then_cwd(tmp_path: Path) -> None:
    src = tmp_path / "data-src"
    src.mkdir()
    (src / "f.txt").write_text("hi")
    tree = rn.create_artifact(src=src)
    proj = tmp_path / "proj"
    (proj / "pkg" / "deep").mkdir(parents=True)
    rn.bind_artifact(proj / "Runicorn.toml", "d", tree)
    (proj / "pkg" / "deep" / "mod.py").write_text("import runicorn as rn\nprint(rn.artifact('d/f.txt').read_text())\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run(
        [sys.executable, str(proj / "pkg" / "deep" / "mod.py")], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert out.stdout == "hi\n", out.stderr
    # code without a file (python -c) falls back to the working directory
    out = subprocess.run(
        [sys.executable, "-c", "import runicorn as rn; print(rn.artifact('d'))"],
        cwd=proj / "pkg",
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip().endswith(tree), out.stderr
    out = subprocess.run(
        [sys.executable, "-c", "import runicorn as rn; rn.artifact('d')"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "no Runicorn.toml / JuliaArtifacts.toml / Artifacts.toml found upward" in out.stderr
    with pytest.raises(ArtifactError, match="no artifact named 'nope'"):
        rn.artifact("nope", toml=proj / "Runicorn.toml")
    with pytest.raises(Exception, match="forbidden component"):
        rn.artifact("d/../etc", toml=proj / "Runicorn.toml")


def test_observers_see_each_lookup(tmp_path: Path) -> None:
    from runicorn.artifacts import observers

    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("x")
    tree = rn.create_artifact(src=src)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", tree)
    seen: list[tuple[str, str, Path]] = []
    observers.append(lambda *a: seen.append(a))
    try:
        p = rn.artifact("d", toml=toml)
    finally:
        observers.clear()
    assert seen == [("d", tree, p)]


def test_write_keeps_file_mode_and_uses_a_hidden_lock(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    toml = proj / "Runicorn.toml"
    toml.write_text("# mine\n")
    os.chmod(toml, 0o600)
    rn.bind_artifact(toml, "a", T1)
    assert (toml.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in proj.iterdir()) == [".Runicorn.toml.lock", "Runicorn.toml"]
