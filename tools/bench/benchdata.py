"""Deterministic benchmark data shared by the benchmarks in tools/bench/."""

from __future__ import annotations

import random
from pathlib import Path


def make_bench_tree(root: Path, small_files: int = 10_000, dirs: int = 100, big_files: int = 4,
                    big_size: int = 64 << 20, seed: int = 0) -> dict[str, int]:
    """Create ``small_files`` files of 1-8 KiB spread over ``dirs`` directories plus
    ``big_files`` files of ``big_size`` bytes under ``root``; return counts and bytes."""
    rng = random.Random(seed)
    root = Path(root)
    total = 0
    for d in range(dirs):
        (root / f"dir{d:03d}").mkdir(parents=True, exist_ok=True)
    for i in range(small_files):
        size = rng.randint(1024, 8192)
        (root / f"dir{i % dirs:03d}" / f"file{i:05d}.bin").write_bytes(rng.randbytes(size))
        total += size
    (root / "big").mkdir(parents=True, exist_ok=True)
    chunk = 8 << 20
    for b in range(big_files):
        with open(root / "big" / f"weights{b}.bin", "wb") as f:
            left = big_size
            while left:
                n = min(chunk, left)
                f.write(rng.randbytes(n))
                left -= n
        total += big_size
    return {"files": small_files + big_files, "bytes": total}


def rewrite_fraction(root: Path, fraction: float = 0.01, seed: int = 1, dirs: int = 100) -> int:
    """Rewrite ``fraction`` of the small files with new random bytes; return how many."""
    rng = random.Random(seed)
    small = sorted(Path(root).glob("dir*/file*.bin"))
    picked = rng.sample(small, max(1, int(len(small) * fraction)))
    for p in picked:
        p.write_bytes(rng.randbytes(rng.randint(1024, 8192)))
    return len(picked)
