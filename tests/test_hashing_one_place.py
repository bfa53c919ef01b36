"""Hashing goes through runicorn.hashing: the engines never import hashlib themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import runicorn

PACKAGE = Path(runicorn.__file__).parent
# The engines and features that hash only through runicorn.hashing.
THROUGH_HASHING = [
    "snapshot",
    "restore",
    "runs",
    "artifacts",
    "assets",
    "treezip.py",
    "sync",
    "manifest",
    "remote_storage",
    "remotes",
]


def test_engines_hash_through_runicorn_hashing() -> None:
    found = []
    for part in THROUGH_HASHING:
        root = PACKAGE / part
        for path in sorted([root] if root.is_file() else root.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text("utf-8"))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else []
                )
                if any(n.split(".")[0] == "hashlib" for n in names):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == [], f"import hashlib outside runicorn/hashing.py: {found}"
