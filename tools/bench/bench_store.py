#!/usr/bin/env python3
"""Store benchmark.

Mode ``ingest`` (default): 10,000 files of 1-8 KiB in 100 directories plus 4 files of
64 MiB; ingest into a fresh store beside ``sha256sum`` over the same files and ``cp -r`` of
the same tree, all in this run, page cache warm for every contender; medians of N runs.

Mode ``index``: an index of 1,000,000 blobs (synthetic rows, referenced by 1,000 pinned
trees) and the time of ``stats`` and ``gc --dry-run`` with nothing to collect, in process
and as whole CLI commands.

Every run copies and ingests into directories of its own, kept until the end: on ext4
without a journal, creating files right after a bulk deletion is slowed down (recently
freed inodes are skipped), so no timed step follows a deletion made by the benchmark.
``--fresh-fs SIZE`` (root only) runs everything on a new journaled ext4 image,
loop-mounted in a temporary directory and removed at the end; the filesystem used is
printed first, with a warning on ext4 without a journal.  Work goes to ``$BENCH_DIR``
(default: the system's temporary directory).

    python tools/bench/bench_store.py [--mode ingest|index|all] [--runs 3] [--scale 1.0] [--fresh-fs 4G]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdata import make_bench_tree  # noqa: E402
from benchfs import describe, fresh_fs  # noqa: E402

from runicorn.store import Store  # noqa: E402


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def bench_ingest(runs: int, scale: float, parent: Path | None) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="rn-bench-store-", dir=parent))
    try:
        src = work / "src"
        info = make_bench_tree(src, small_files=int(10_000 * scale), big_size=int((64 << 20) * scale))
        print(f"data: {info['files']} files, {info['bytes'] / 2**20:.0f} MiB in {src}")
        sh(f"cat $(find {src} -type f) > /dev/null")  # warm the page cache for everyone
        results: dict[str, list[float]] = {"sha256sum": [], "cp -r": [], "runicorn ingest": []}
        for r in range(runs):
            results["sha256sum"].append(timed(lambda: sh(
                f"cd {src} && find . -type f -print0 | xargs -0 sha256sum > /dev/null")))
            dst = work / f"cp{r}"
            results["cp -r"].append(timed(lambda: sh(f"cp -r {src} {dst}")))
            store_root = work / f"store{r}"

            def ingest() -> None:
                with Store(store_root) as store:
                    store.ingest_directory(src)

            results["runicorn ingest"].append(timed(ingest))
        med = {k: statistics.median(v) for k, v in results.items()}
        ref = med["sha256sum"] + med["cp -r"]
        print(f"\n{'contender':<22}{'median s':>10}   runs")
        for k, v in results.items():
            print(f"{k:<22}{med[k]:>10.3f}   {', '.join(f'{x:.3f}' for x in v)}")
        print(f"\ningest / (sha256sum + cp -r) = {med['runicorn ingest']:.3f} / {ref:.3f} = "
              f"{med['runicorn ingest'] / ref:.2f}x   (target <= 1.3x)")
        med["ratio"] = med["runicorn ingest"] / ref
        return med
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_big_index(root: Path, blobs: int, trees: int) -> None:
    store = Store(root)
    per_tree = blobs // trees
    now = time.time()
    with store.index.write() as c:
        c.executemany("INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) VALUES (?, ?, 0, ?, ?)",
                      ((f"{i:064x}", 1000 + i % 5000, now, now) for i in range(blobs)))
        for t in range(trees):
            tree = f"{t:063x}f"
            c.execute("INSERT INTO trees (tree, file_count, total_size, refcount, created_at, touched_at) "
                      "VALUES (?, ?, 0, 0, ?, ?)", (tree, per_tree, now, now))
            c.executemany("INSERT INTO tree_entries (tree, path, blob, mode, size) VALUES (?, ?, ?, '100644', 0)",
                          ((tree, f"f{i}", f"{i:064x}") for i in range(t * per_tree, (t + 1) * per_tree)))
            c.execute("INSERT INTO refs (kind, name, tree, created_at, meta) VALUES ('pin', ?, ?, ?, '{}')",
                      (f"t{t}", tree, now))
            # gc checks the ref files on disk against the index: they must exist too
            ref = store.ref_path("pin", f"t{t}")
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(json.dumps({"kind": "pin", "name": f"t{t}", "tree": tree, "created_at": now, "meta": {}}))
    store.close()


def bench_index(runs: int, blobs: int, parent: Path | None) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="rn-bench-index-", dir=parent))
    try:
        root = work / "store"
        t = timed(lambda: build_big_index(root, blobs, 1000))
        print(f"built an index of {blobs:,} blobs in 1,000 pinned trees in {t:.1f} s")
        results: dict[str, list[float]] = {"stats (in process)": [], "gc --dry-run (in process)": [],
                                           "runicorn stats (CLI)": [], "runicorn gc --dry-run (CLI)": [],
                                           "python -c pass": []}
        for _ in range(max(runs, 5)):
            with Store(root) as store:
                results["stats (in process)"].append(timed(store.stats))
                report: dict = {}
                results["gc --dry-run (in process)"].append(
                    timed(lambda: report.update(store.gc(grace_seconds=0, dry_run=True))))
                assert report["blobs_deleted"] == 0 and report["trees_deleted"] == 0
                assert store.stats()["blob_count"] == blobs
            cli = [sys.executable, "-m", "runicorn", "--storage", str(root)]
            results["runicorn stats (CLI)"].append(timed(lambda: subprocess.run(
                cli + ["stats", "--json"], check=True, stdout=subprocess.DEVNULL)))
            results["runicorn gc --dry-run (CLI)"].append(timed(lambda: subprocess.run(
                cli + ["gc", "--dry-run", "--grace", "0"], check=True, stdout=subprocess.DEVNULL)))
            results["python -c pass"].append(timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\n{'operation':<30}{'median s':>10}   runs")
        for k, v in results.items():
            print(f"{k:<30}{med[k]:>10.4f}   {', '.join(f'{x:.4f}' for x in v)}")
        print("\ntarget: stats and gc --dry-run each < 0.2 s on 1,000,000 blobs")
        return med
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["ingest", "index", "all"], default="all")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink the ingest data (tests use 0.01)")
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--fresh-fs", metavar="SIZE", default=None,
                    help="measure on a new journaled ext4 image of SIZE (e.g. 4G), loop-mounted and "
                         "removed at the end (needs root)")
    ap.add_argument("--json", action="store_true", help="print the medians as JSON at the end")
    args = ap.parse_args()
    bench_dir = os.environ.get("BENCH_DIR")
    if not args.fresh_fs:
        run_all(args, Path(bench_dir) if bench_dir else None)
        return
    outer = Path(tempfile.mkdtemp(prefix="rn-bench-store-fs-", dir=bench_dir))
    try:
        with fresh_fs(outer, args.fresh_fs) as mnt:
            run_all(args, mnt, fresh=True)
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def run_all(args: argparse.Namespace, parent: Path | None, fresh: bool = False) -> None:
    print("\n".join(describe(parent or Path(tempfile.gettempdir()), fresh=fresh)), flush=True)
    out = {}
    if args.mode in ("ingest", "all"):
        out["ingest"] = bench_ingest(args.runs, args.scale, parent)
    if args.mode in ("index", "all"):
        out["index"] = bench_index(args.runs, args.blobs, parent)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
