"""A child process that hammers a store; used by the crash and concurrency tests.

usage: python store_worker.py STORE_ROOT ROLE SEED ITERATIONS
ROLE: "writer" (ingest overlapping content, put trees, move refs) or "gc" (collect in a loop).
Exits 0 when every operation succeeded; any exception is printed and exits 1.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runicorn.store import Store  # noqa: E402

POOL = 40  # distinct contents shared by every writer


def content(i: int) -> bytes:
    # Sizes from a few bytes to ~1.5 MiB so copies take measurable time.
    size = (i * 7919) % (1536 * 1024) + 16
    return (f"content-{i}-".encode() * (size // 12 + 1))[:size]


def writer(store: Store, rng: random.Random, iterations: int, scratch: Path) -> None:
    names = [f"w{os.getpid()}-{k}" for k in range(3)]
    for it in range(iterations):
        picks = rng.sample(range(POOL), rng.randint(1, 8))
        files = []
        for i in picks:
            p = scratch / f"c{i}.bin"
            if not p.exists():
                p.write_bytes(content(i))
            files.append(p)
        op = rng.random()
        if op < 0.5:
            infos = store.ingest_files(files)
        else:
            infos = [store.ingest_file(f) for f in files]
        entries = {f"dir{j % 3}/f{j}.bin": (info.sha256, "100644", info.size) for j, info in enumerate(infos)}
        if rng.random() < 0.2:
            entries["link"] = (store.ingest_bytes(b"dir0/f0.bin").sha256, "120000", 11)
        name = rng.choice(names)
        if rng.random() < 0.5:
            store.put_tree(entries, ref=("test", name))
        else:
            tree = store.put_tree(entries)
            store.set_ref("test", name, tree)
        if rng.random() < 0.2:
            store.delete_ref("test", rng.choice(names))


def collector(store: Store, rng: random.Random, iterations: int) -> None:
    for _ in range(iterations):
        store.gc(grace_seconds=0, dry_run=rng.random() < 0.2)


def main() -> int:
    root, role, seed, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    store = Store(Path(root))
    with tempfile.TemporaryDirectory() as scratch:
        if role == "writer":
            writer(store, rng, iterations, Path(scratch))
        else:
            collector(store, rng, iterations)
    store.close()
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
