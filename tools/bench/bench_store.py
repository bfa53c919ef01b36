#!/usr/bin/env python3
"""Store benchmark.

Mode ``ingest`` (default): 10,000 files of 1-8 KiB in 100 directories plus 4 files of
64 MiB; ingest into a fresh store beside ``sha256sum`` over the same files and ``cp -r`` of
the same tree, all in this run, page cache warm for every contender; medians of N runs.

Mode ``index``: an index of 1,000,000 blobs (synthetic rows, referenced by 1,000 pinned
trees) and the time of ``stats`` and ``gc --dry-run`` with nothing to collect, in process
and as whole CLI commands.

Mode ``gc``: a store of ``--blobs`` (default 1,000,000) blobs of which ``--collect``
(default 100,000) can be collected.  The live ones are index rows referenced by 1,000
pinned trees, as in mode ``index``; the collectable ones are real files (100 B - 4 KiB,
named by their SHA-256, under ``blobs/<aa>/``) named by 100 unpinned trees with real
manifests.  Timed, as whole CLI commands, with the peak RSS of each (GNU ``time``):
``runicorn stats`` and ``runicorn gc --dry-run`` before, then ``runicorn gc --grace 0``
(every collectable blob goes) vs ``rm -rf`` of a copy of the same files in the same
layout, made beside them.  The collectable part is made again for every run (untimed).
Building the 1,000,000-row index takes about a minute; the files about 0.5 GiB of disk
per run until that run's deletion.

    python tools/bench/bench_store.py --mode gc --runs 3 [--blobs 1000000 --collect 100000]

Every run copies and ingests into directories of its own, kept until the end: on ext4
without a journal, creating files right after a bulk deletion is slowed down (recently
freed inodes are skipped), so no timed step follows a deletion made by the benchmark.
``--fresh-fs SIZE`` (root only) runs everything on a new journaled ext4 image,
loop-mounted in a temporary directory and removed at the end; the filesystem used is
printed first, with a warning on ext4 without a journal.  Work goes to ``$BENCH_DIR``
(default: the system's temporary directory).

    python tools/bench/bench_store.py [--mode ingest|index|gc|all] [--runs 3] [--scale 1.0] [--fresh-fs 4G]
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
from benchrss import require_tools, run_rss  # noqa: E402

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
            results["sha256sum"].append(
                timed(lambda: sh(f"cd {src} && find . -type f -print0 | xargs -0 sha256sum > /dev/null"))
            )
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
        print(
            f"\ningest / (sha256sum + cp -r) = {med['runicorn ingest']:.3f} / {ref:.3f} = "
            f"{med['runicorn ingest'] / ref:.2f}x   (target <= 1.3x)"
        )
        med["ratio"] = med["runicorn ingest"] / ref
        return med
    finally:
        shutil.rmtree(work, ignore_errors=True)


def build_big_index(root: Path, blobs: int, trees: int) -> None:
    from runicorn.store.rows import insert_blob_rows
    from runicorn.store.tree_format import TreeEntry, build_pages
    from runicorn.store.trees import index_tree, summary_of

    store = Store(root)
    per_tree = blobs // trees
    now = time.time()
    with store.index.write() as c:
        insert_blob_rows(c, ((f"{i:064x}", 1000 + i % 5000, now, now) for i in range(blobs)))
        for t in range(trees):
            tree = f"{t:063x}f"
            end = blobs if t == trees - 1 else (t + 1) * per_tree  # the last tree takes the rest
            entries = {f"f{i:09d}": TreeEntry(f"{i:064x}", "100644", 0) for i in range(t * per_tree, end)}
            index_tree(store, c, tree, summary_of(entries), build_pages(entries), now, check_blobs=False)
            c.execute(
                "INSERT INTO refs (kind, name, tree, created_at, meta) VALUES ('pin', ?, ?, ?, '{}')",
                (f"t{t}", tree, now),
            )
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
        results: dict[str, list[float]] = {
            "stats (in process)": [],
            "gc --dry-run (in process)": [],
            "runicorn stats (CLI)": [],
            "runicorn gc --dry-run (CLI)": [],
            "python -c pass": [],
        }
        for _ in range(max(runs, 5)):
            with Store(root) as store:
                results["stats (in process)"].append(timed(store.stats))
                report: dict = {}
                results["gc --dry-run (in process)"].append(
                    timed(lambda: report.update(store.gc(grace_seconds=0, dry_run=True)))
                )
                assert report["blobs_deleted"] == 0 and report["trees_deleted"] == 0
                assert store.stats()["blob_count"] == blobs
            cli = [sys.executable, "-m", "runicorn", "--storage", str(root)]
            results["runicorn stats (CLI)"].append(
                timed(lambda: subprocess.run(cli + ["stats", "--json"], check=True, stdout=subprocess.DEVNULL))
            )
            results["runicorn gc --dry-run (CLI)"].append(
                timed(
                    lambda: subprocess.run(
                        cli + ["gc", "--dry-run", "--grace", "0"], check=True, stdout=subprocess.DEVNULL
                    )
                )
            )
            results["python -c pass"].append(timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True)))
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\n{'operation':<30}{'median s':>10}   runs")
        for k, v in results.items():
            print(f"{k:<30}{med[k]:>10.4f}   {', '.join(f'{x:.4f}' for x in v)}")
        print("\ntarget: stats and gc --dry-run each < 0.2 s on 1,000,000 blobs")
        return med
    finally:
        shutil.rmtree(work, ignore_errors=True)


def add_collectable(root: Path, ref_copy: Path, count: int, trees: int, seed: int) -> int:
    """Add ``count`` unreferenced blobs (files and rows) named by ``trees`` unpinned trees
    with manifests to the store at ``root``, and the same files under ``ref_copy``;
    return their bytes."""
    import hashlib
    import random

    from runicorn.store.tree_format import (
        TreeEntry,
        build_paged_manifest,
        build_pages,
        compute_tree_id,
        manifest_bytes,
    )
    from runicorn.store.rows import insert_blob_rows
    from runicorn.store.trees import index_tree, summary_of

    store = Store(root)
    rng = random.Random(seed)
    now = time.time() - 7200  # older than any grace period
    total = 0
    rows = []
    made: set[str] = set()
    for i in range(count):
        data = rng.randbytes(rng.randint(100, 4096))
        sha = hashlib.sha256(data).hexdigest()
        for base in (store.blobs_dir, ref_copy):
            d = base / sha[:2]
            if sha[:2] not in made or base == ref_copy:
                d.mkdir(parents=True, exist_ok=True)
            (d / sha).write_bytes(data)
        made.add(sha[:2])
        os.chmod(store.blob_path(sha), 0o444)
        rows.append((sha, len(data)))
        total += len(data)
    per_tree = -(-count // trees)
    with store.index.write() as c:
        insert_blob_rows(c, ((sha, size, now, now) for sha, size in rows))
        for t in range(trees):
            part = rows[t * per_tree : (t + 1) * per_tree]
            entries = {f"run{seed}/t{t}/f{i}.bin": TreeEntry(sha, "100644", size) for i, (sha, size) in enumerate(part)}
            entries = dict(sorted(entries.items()))
            tree = compute_tree_id(entries)
            pages = build_pages(entries)
            index_tree(store, c, tree, summary_of(entries), pages, now)
            c.execute("UPDATE trees SET created_at = ?, touched_at = ? WHERE tree = ?", (now, now, tree))
            dest = store.manifest_path(tree)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tree_bytes = sum(e.size for e in entries.values())
            dest.write_bytes(manifest_bytes(build_paged_manifest(tree, pages, len(entries), tree_bytes)))
            os.chmod(dest, 0o444)
    store.close()
    return total


def bench_gc(runs: int, blobs: int, collect: int, parent: Path | None) -> dict[str, float]:
    require_tools("rm")
    work = Path(tempfile.mkdtemp(prefix="rn-bench-gc-", dir=parent))
    try:
        root = work / "store"
        t = timed(lambda: build_big_index(root, blobs - collect, 1000))
        print(f"built an index of {blobs - collect:,} live blobs in 1,000 pinned trees in {t:.1f} s", flush=True)
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        cli = [sys.executable, "-m", "runicorn", "--storage", str(root)]
        results: dict[str, list[float]] = {}
        rss: dict[str, list[int]] = {}

        def step(key: str, cmd: list[str]) -> str:
            os.sync()
            t = time.perf_counter()
            proc = run_rss(cmd, env=env)
            results.setdefault(key, []).append(time.perf_counter() - t)
            rss.setdefault(key, []).append(proc.rss_kib)
            return proc.out

        for r in range(runs):
            ref_copy = work / f"rm_{r}"
            t = timed(lambda: add_collectable(root, ref_copy, collect, 100, seed=r))
            print(f"run {r + 1}/{runs}: {collect:,} collectable blobs made in {t:.1f} s", flush=True)
            out = json.loads(step("runicorn stats (CLI)", cli + ["stats", "--json"]))
            assert out["blob_count"] == blobs and out["unreferenced_blob_count"] == 0, out
            step("runicorn gc --dry-run (CLI)", cli + ["gc", "--dry-run", "--grace", "0"])
            out = json.loads(step("runicorn gc --grace 0 (CLI)", cli + ["gc", "--grace", "0", "--json"]))
            assert out["blobs_deleted"] == collect and out["trees_deleted"] == 100, {
                k: v for k, v in out.items() if not k.endswith("_ids")
            }
            step("rm -rf (same files)", ["rm", "-rf", str(ref_copy)])
            step("python -c pass", [sys.executable, "-c", "pass"])
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"\n{blobs:,} blobs, {collect:,} collected; medians of {runs} run(s)")
        print(f"{'operation':<30}{'median s':>10}{'peak RSS':>12}   runs")
        for k, v in results.items():
            print(f"{k:<30}{med[k]:>10.3f}{max(rss[k]) / 1024:>8.1f} MiB   {', '.join(f'{x:.3f}' for x in v)}")
        paired = statistics.median(
            a / b for a, b in zip(results["runicorn gc --grace 0 (CLI)"], results["rm -rf (same files)"])
        )
        print(
            f"\ngc / rm -rf = {med['runicorn gc --grace 0 (CLI)']:.3f} / {med['rm -rf (same files)']:.3f} = "
            f"{med['runicorn gc --grace 0 (CLI)'] / med['rm -rf (same files)']:.2f}x "
            f"(paired {paired:.2f}x)   goal <= 1.2x"
        )
        print("goal: stats and gc --dry-run each < 0.2 s from the CLI")
        med["ratio"] = paired
        return med
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["ingest", "index", "gc", "all"], default="all")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0, help="shrink the ingest data (tests use 0.01)")
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument(
        "--collect", type=int, default=None, help="mode gc: how many of --blobs gc collects (default: a tenth)"
    )
    ap.add_argument(
        "--fresh-fs",
        metavar="SIZE",
        default=None,
        help="measure on a new journaled ext4 image of SIZE (e.g. 4G), loop-mounted and "
        "removed at the end (needs root)",
    )
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
    if args.mode in ("gc", "all"):
        collect = args.blobs // 10 if args.collect is None else args.collect
        if not 0 < collect < args.blobs:
            raise SystemExit(f"--collect must be between 1 and --blobs ({args.blobs}), not {collect}")
        out["gc"] = bench_gc(args.runs, args.blobs, collect, parent)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
