"""The project's own metadata says one thing once: the version, the license, the markers."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import runicorn
from runicorn._version import __version__

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


def test_one_version_source() -> None:
    # pyproject reads the version from runicorn/_version.py; nothing else writes it.
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "runicorn._version.__version__"}
    assert runicorn.__version__ == __version__
    out = subprocess.run([sys.executable, "-m", "runicorn", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"runicorn, version {__version__}"
    written = [
        p
        for p in (ROOT / "runicorn").rglob("*.py")
        if p.name != "_version.py" and re.search(r"__version__\s*=", p.read_text("utf-8"))
    ]
    assert written == []


def test_license_file_is_the_declared_mit() -> None:
    assert PYPROJECT["project"]["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text("utf-8").startswith("MIT License\n")


def test_markers_are_registered_and_documented() -> None:
    registered = {m.split(":")[0] for m in PYPROJECT["tool"]["pytest"]["ini_options"]["markers"]}
    assert {"root", "sshd", "s3", "slow"} <= registered
    contributing = (ROOT / "CONTRIBUTING.md").read_text("utf-8")
    for marker in registered:
        assert f"| `{marker}` |" in contributing, marker
    assert '-m "not sshd"' in contributing and '-m "not root and not sshd"' in contributing
