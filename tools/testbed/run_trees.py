"""Helpers for sync tests and benchmarks: build a server tree, compare mirrors."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

BOOKKEEPING = (".runicorn", ".runicorn-sync")


def make_run(
    root: Path,
    project: str,
    name: str,
    run_id: str,
    *,
    rng: random.Random,
    media: int = 2,
    log_bytes: int = 3000,
    media_bytes: int = 5000,
) -> Path:
    """Create one run directory with the usual files; returns it."""
    rd = root / project / Path(*name.split("/")) / "runs" / run_id
    (rd / "media").mkdir(parents=True, exist_ok=True)
    (rd / "meta.json").write_text(json.dumps({"run_id": run_id, "created_at": 1736937015.0, "tags": ["t"]}))
    (rd / "status.json").write_text(json.dumps({"status": "running"}))
    (rd / "summary.json").write_text(json.dumps({"loss": rng.random()}))
    (rd / "events.jsonl").write_bytes(rng.randbytes(log_bytes))
    (rd / "logs.txt").write_bytes(rng.randbytes(log_bytes))
    for i in range(media):
        (rd / "media" / f"img{i}.png").write_bytes(rng.randbytes(media_bytes))
    return rd


def make_tree(root: Path, runs: int, *, seed: int = 0, **kw: int) -> list[Path]:
    """``runs`` runs spread over a few projects/experiments (some nested deeper)."""
    rng = random.Random(seed)
    out = []
    for i in range(runs):
        name = f"exp{i % 3}" if i % 4 else f"group/sub{i % 2}"
        out.append(make_run(root, f"proj{i % 2}", name, f"20250115_1030{i:02d}_abc{i:03d}", rng=rng, **kw))
    return out


def tree_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every regular file, skipping bookkeeping directories."""
    out: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in BOOKKEEPING]
        for fn in filenames:
            p = Path(dirpath) / fn
            if p.is_symlink():
                continue
            out[os.path.relpath(p, root)] = p.read_bytes()
    return out


def assert_mirror(server: Path, cache: Path, *, check_mtime: bool = True) -> None:
    """The cache holds exactly the server's run files, byte for byte (and mtimes)."""
    a, b = tree_files(server), tree_files(cache)
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))[:10]
    for rel in a:
        assert a[rel] == b[rel], rel
        if check_mtime:
            sa, sb = os.stat(server / rel), os.stat(cache / rel)
            assert abs(sa.st_mtime - sb.st_mtime) < 1.0, rel
