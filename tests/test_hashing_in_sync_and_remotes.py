"""Run sync and the remotes hash through runicorn.hashing only (one way to hash)."""

from __future__ import annotations

import ast
from pathlib import Path

import runicorn

PACKAGE = Path(runicorn.__file__).parent
# Packages whose code must not import hashlib itself (runicorn/hashing.py names what they need).
OWNED = ["sync", "manifest", "remote_storage", "remotes"]


def test_no_direct_hashlib_import() -> None:
    found = []
    for pkg in OWNED:
        for path in sorted((PACKAGE / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n.split(".")[0] == "hashlib" for n in names):
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert found == []
