"""Julia's file rules: JuliaArtifacts.toml over Artifacts.toml, Overrides.toml entries.

Rules from julia stdlib/Artifacts/src/Artifacts.jl (commit 017b94bbada2a9e59930bf8c87874bec1fcb20ea:
``artifact_names``, ``parse_mapping``, ``load_overrides``) and cases from Pkg.jl
test/artifacts.jl (commit e52498951d1169fca898632ba14741c3883b1b4e: the ArtifactTOMLSearch
package with both files, the "Override.toml" testset).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import runicorn as rn

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
    out = subprocess.run([sys.executable, str(pkg / "src" / "mod.py")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.stdout.strip() == T2, out.stderr
    # Runicorn's own file comes first of all
    (pkg / "Runicorn.toml").write_text(f'[data]\ntree-sha256 = "{"3" * 64}"\n')
    assert rn.artifact_hash("data", pkg) == "3" * 64
