"""Helpers shared by the snapshot, restore and runs tests."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path


def write(path: Path, data: bytes | str, *, age: float | None = 60.0, mode: int | None = None) -> Path:
    """Write a file; backdate its mtime by ``age`` seconds (so the stat cache may trust it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    if mode is not None:
        os.chmod(path, mode)
    if age is not None:
        t = time.time() - age
        os.utime(path, (t, t))
    return path


def tree_files(root: Path) -> dict[str, tuple[str, bytes]]:
    """relpath -> (kind/mode, content or link target) of everything below ``root``."""
    out: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.fsencode(os.readlink(p)))
            else:
                out[rel] = (oct(p.stat().st_mode & 0o777), p.read_bytes())
    return out


def hostile_manifest(path: Path, files: dict[str, tuple[str, str, int]]) -> Path:
    """Write a manifest whose recorded tree id matches its (possibly hostile) paths."""
    h = hashlib.sha256(b"runicorn-tree-v1\n")
    for p in sorted(files, key=lambda s: s.encode()):
        sha, mode, _ = files[p]
        h.update(f"{mode} {sha} ".encode() + p.encode() + b"\n")
    manifest = {
        "format": "runicorn.manifest",
        "format_version": 1,
        "tree": h.hexdigest(),
        "created_at": "2025-01-01T00:00:00Z",
        "source": None,
        "file_count": len(files),
        "total_size_bytes": sum(s for _, _, s in files.values()),
        "files": {p: {"sha256": sha, "mode": mode, "size_bytes": size} for p, (sha, mode, size) in files.items()},
    }
    path.write_text(json.dumps(manifest))
    return path
