"""Julia's file rules: JuliaArtifacts.toml over Artifacts.toml, Overrides.toml entries.

Rules from julia stdlib/Artifacts/src/Artifacts.jl (commit 017b94bbada2a9e59930bf8c87874bec1fcb20ea:
``artifact_names``, ``parse_mapping``, ``load_overrides``) and cases from Pkg.jl
test/artifacts.jl (commit e52498951d1169fca898632ba14741c3883b1b4e: the ArtifactTOMLSearch
package with both files, the "Override.toml" testset).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.errors import ArtifactNotInstalledError, TomlFormatError

REPO = Path(__file__).resolve().parent.parent
T1, T2 = "1" * 64, "2" * 64


def test_julia_artifacts_toml_wins_over_artifacts_toml(tmp_path: Path) -> None:
    # Pkg's ArtifactTOMLSearch/julia_artifacts_test holds both files; Julia reads JuliaArtifacts.toml.
    pkg = tmp_path / "julia_artifacts_test"
    pkg.mkdir()
    (pkg / "Artifacts.toml").write_text(f'[data]\ntree-sha256 = "{T1}"\n')
    (pkg / "JuliaArtifacts.toml").write_text(f'[data]\ntree-sha256 = "{T2}"\n')
    assert rn.artifact_hash("data", pkg) == T2
    (pkg / "src").mkdir()
    (pkg / "src" / "mod.py").write_text("import runicorn as rn\nprint(rn.artifact_hash('data'))\n")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, str(pkg / "src" / "mod.py")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.stdout.strip() == T2, out.stderr
    # Runicorn's own file comes first of all
    (pkg / "Runicorn.toml").write_text(f'[data]\ntree-sha256 = "{"3" * 64}"\n')
    assert rn.artifact_hash("data", pkg) == "3" * 64


def _overrides(text: str) -> Path:
    adir = Path(os.environ["RUNICORN_DIR"]) / "artifacts"
    adir.mkdir(parents=True, exist_ok=True)
    (adir / "Overrides.toml").write_text(text)
    return adir


def test_overrides_follow_julia(tmp_path: Path) -> None:
    # Pkg's "Override.toml" testset: a hash overridden to another hash, a name (in a
    # package's UUID table) to another hash, a name to a directory on disk.
    toml = tmp_path / "Runicorn.toml"
    bar, baz, arty_t, barty_t = ("b" * 40, "c" * 40, "d" * 40, "e" * 40)
    toml.write_text(
        f'[baz]\ngit-tree-sha1 = "{baz}"\n[arty]\ngit-tree-sha1 = "{arty_t}"\n'
        f'[barty]\ngit-tree-sha1 = "{barty_t}"\n[plain]\ngit-tree-sha1 = "{bar}"\n'
    )
    barty_dir = tmp_path / "a_wild_barty_appears"
    barty_dir.mkdir()
    adir = _overrides(
        f'"{baz.upper()}" = "{bar}"\n[d57dbccd-ca19-4d82-b9b8-9d660942965b]\narty = "{bar}"\nbarty = "{barty_dir}"\n'
    )
    (adir / bar).mkdir()
    assert rn.artifact("baz", toml=toml) == adir / bar
    assert rn.artifact_path(baz) == adir / bar
    assert rn.artifact("arty", toml=toml) == adir / bar
    assert rn.artifact("barty", toml=toml) == barty_dir
    assert rn.artifact("plain", toml=toml) == adir / bar
    # An empty string means "no override": the artifact is looked up as usual.
    _overrides(f'"{baz}" = ""\nbarty = ""\n')
    with pytest.raises(ArtifactNotInstalledError, match="'baz'"):
        rn.artifact("baz", toml=toml)
    assert rn.artifact_path(baz) == adir / baz
    with pytest.raises(ArtifactNotInstalledError, match="'barty'"):
        rn.artifact("barty", toml=toml)
    assert rn.artifact("plain", toml=toml) == adir / bar  # other lookups are unaffected


@pytest.mark.parametrize(
    "body,message",
    [
        ('"not a name!" = "/x"\n', "override key 'not a name!' is neither a tree id"),
        ('"abc/def" = "/x"\n', "override key 'abc/def' is neither a tree id"),
        ('ds = "relative/dir"\n', "override 'ds' must map to an absolute path or a tree id, got 'relative/dir'"),
        ('ds = "abc123"\n', "override 'ds' must map to an absolute path or a tree id, got 'abc123'"),
        ("ds = 5\n", "override 'ds' must be a directory path string, got 5"),
        ('[notauuid]\nds = "/x"\n', r"override table \[notauuid\] must be named by a package UUID"),
        ('[d57dbccd-ca19-4d82-b9b8-9d660942965b]\n"a b" = "/x"\n', "key 'a b' is not an artifact name"),
        (
            '[d57dbccd-ca19-4d82-b9b8-9d660942965b]\nds = "rel"\n',
            "override 'd57dbccd-ca19-4d82-b9b8-9d660942965b.ds' must map to an absolute path",
        ),
    ],
)
def test_bad_override_entries_are_reported_with_file_and_key(tmp_path: Path, body: str, message: str) -> None:
    toml = tmp_path / "Runicorn.toml"
    toml.write_text(f'[ds]\ntree-sha256 = "{T1}"\n')
    adir = _overrides(body)
    with pytest.raises(TomlFormatError) as info:
        rn.artifact("ds", toml=toml)
    assert str(info.value).startswith(f"{adir}/Overrides.toml: ")
    assert re.search(message, str(info.value)), str(info.value)
    # the CLI: one line, exit 1
    r = subprocess.run(
        [sys.executable, "-m", "runicorn", "path", "ds", "--toml", str(toml)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "Overrides.toml" in r.stderr
