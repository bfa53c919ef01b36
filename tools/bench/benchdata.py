"""Benchmark data shared by the store and snapshot benchmarks.

``make_bench_tree(root)`` writes, deterministically from ``seed``: ``small_files``
files of 1-8 KiB (``small_size``) spread over ``dirs`` directories (``d000/f00000.txt`` ...) plus
``big_files`` files of ``big_size`` bytes (``big/big0.bin`` ...).  Small files are
text-like (compressible), big ones random (incompressible), like code next to weights.
"""

from __future__ import annotations

import random
from pathlib import Path


def make_bench_tree(
    root: Path,
    small_files: int = 10_000,
    dirs: int = 100,
    big_files: int = 4,
    big_size: int = 64 << 20,
    seed: int = 0,
    small_size: tuple[int, int] = (1024, 8192),
) -> dict[str, int]:
    """Create the benchmark tree under ``root`` (created if needed); return counts and bytes."""
    root = Path(root)
    rng = random.Random(seed)
    total = 0
    big_dir = root / "big"
    big_dir.mkdir(parents=True, exist_ok=True)
    # Big files first, so the small ones written last are what "recently modified" means.
    for i in range(big_files):
        with open(big_dir / f"big{i}.bin", "wb") as f:
            left = big_size
            block_rng = random.Random(f"{seed}-big-{i}")
            while left:
                n = min(left, 1 << 20)
                f.write(block_rng.randbytes(n))
                left -= n
        total += big_size
    words = [
        f"{w}_{i}"
        for i, w in enumerate(["loss", "acc", "model", "layer", "train", "eval", "step", "batch", "epoch", "grad"] * 20)
    ]
    for d in range(dirs):
        (root / f"d{d:03d}").mkdir(exist_ok=True)
    for i in range(small_files):
        size = rng.randint(*small_size)
        text = f"# file {i} seed {seed}\n"
        while len(text) < size:
            text += " ".join(rng.choices(words, k=12)) + "\n"
        data = text[:size].encode()
        (root / f"d{i % dirs:03d}" / f"f{i:05d}.txt").write_bytes(data)
        total += size
    return {"files": small_files + big_files, "bytes": total}


def rewrite_fraction(
    root: Path,
    fraction: float = 0.01,
    small_files: int = 10_000,
    dirs: int = 100,
    seed: int = 1,
    rewritten: list[Path] | None = None,
) -> int:
    """Rewrite ``fraction`` of the small files with new content; return how many
    (their paths are appended to ``rewritten`` when given)."""
    rng = random.Random(seed)
    picks = rng.sample(range(small_files), max(1, int(small_files * fraction)))
    for i in picks:
        path = Path(root) / f"d{i % dirs:03d}" / f"f{i:05d}.txt"
        data = path.read_bytes()
        path.write_bytes(f"# rewritten {seed} {rng.random()}\n".encode() + data[:-40])
        if rewritten is not None:
            rewritten.append(path)
    return len(picks)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(make_bench_tree(Path(sys.argv[1])))
