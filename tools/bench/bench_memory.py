#!/usr/bin/env python3
"""Benchmark peak memory per file: snapshots and a gc at two or more workspace sizes
(issue 12, item 4: peak RSS grows sub-linearly, or by at most ~200 bytes per file).

For each ``--files`` N: a workspace of N small files of ``--min-size`` to ``--max-size``
bytes, 100 per directory (``benchdata.make_bench_tree``), and a new store; then each
step as a CLI command of its own (``python -m runicorn``, under GNU ``time`` for its peak
RSS):

1. ``snapshot --force`` (first: every file read and stored);
2. ``snapshot --force`` again (the first re-snapshot: every blob checked once);
3. ``snapshot --force`` again (unchanged: the stat cache and the blob folders' seal vouch);
4. ``unpin`` the tree, then ``gc --grace 0`` (every blob and page collected).

Printed: a row per size (seconds and peak RSS of each step), then per step the growth of
the peak between the smallest and the largest size, in bytes per file, with PASS/FAIL
against 200 bytes per file.  A workspace and its store take about 9 KiB per file on
ext4 (two 4 KiB blocks and two inodes per file): ``--fresh-fs 20G`` holds 1,000,000.

Usage::

    python tools/bench/bench_memory.py --files 100000 1000000 [--fresh-fs 20G]
    python tools/bench/bench_memory.py --files 10000 50000      # a quicker run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdata import make_bench_tree  # noqa: E402
from benchfs import add_dir_options, bench_dirs, describe  # noqa: E402
from benchrss import require_tools, run_rss  # noqa: E402

GOAL_BYTES_PER_FILE = 200
STEPS = ("first", "again", "unchanged", "gc")


def measure(work: Path, files: int, min_size: int, max_size: int) -> dict[str, tuple[float, int]]:
    """``step -> (seconds, peak RSS in KiB)`` at ``files`` files; the data is removed after."""
    ws, store = work / f"ws{files}", work / f"store{files}"
    make_bench_tree(ws, files, max(1, files // 100), 0, 0, small_size=(min_size, max_size))
    (ws / ".rnignore").write_text("# nothing excluded\n")
    cli = [sys.executable, "-m", "runicorn", "--storage", str(store)]
    out: dict[str, tuple[float, int]] = {}
    tree = ""
    try:
        for step in STEPS[:3]:
            os.sync()
            started = time.perf_counter()
            proc = run_rss([*cli, "snapshot", "--force", "--json", str(ws)])
            out[step] = (time.perf_counter() - started, proc.rss_kib)
            tree = json.loads(proc.out)["tree"]
        run_rss([*cli, "unpin", tree])
        os.sync()
        started = time.perf_counter()
        # (Not --json: that report lists every blob id, a JSON text of 67 MB at 1,000,000.)
        proc = run_rss([*cli, "gc", "--grace", "0"])
        out["gc"] = (time.perf_counter() - started, proc.rss_kib)
        left = json.loads(run_rss([*cli, "stats", "--json"]).out)["blob_count"]
        if left:
            raise SystemExit(f"gc left {left} blobs in the store at {store}")
    finally:
        shutil.rmtree(ws, ignore_errors=True)
        shutil.rmtree(store, ignore_errors=True)
    return out


def bench(args: argparse.Namespace, work: Path) -> None:
    print("\n".join(describe(work, fresh=bool(args.fresh_fs))), flush=True)
    sizes = sorted(set(args.files))
    results = {}
    print(f"{'files':>10}" + "".join(f"{step + ' s':>14}{'MiB':>8}" for step in STEPS), flush=True)
    for files in sizes:
        results[files] = measure(work, files, args.min_size, args.max_size)
        row = results[files]
        print(f"{files:>10,}" + "".join(f"{row[s][0]:>14.2f}{row[s][1] / 1024:>8.1f}" for s in STEPS), flush=True)
    small, large = sizes[0], sizes[-1]
    print(f"\npeak RSS growth per file from {small:,} to {large:,} files (goal <= {GOAL_BYTES_PER_FILE} bytes):")
    for step in STEPS:
        per_file = (results[large][step][1] - results[small][step][1]) * 1024 / (large - small)
        verdict = "PASS" if per_file <= GOAL_BYTES_PER_FILE else "FAIL"
        print(f"  {step:<10}{per_file:>8.0f} bytes/file   {verdict}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, nargs="+", default=[100_000, 1_000_000], help="workspace sizes (two or more)")
    ap.add_argument("--min-size", type=int, default=64, help="smallest file, bytes (default 64)")
    ap.add_argument("--max-size", type=int, default=256, help="largest file, bytes (default 256)")
    add_dir_options(ap, "20G")
    args = ap.parse_args()
    if len(set(args.files)) < 2 or min(args.files) < 1:
        ap.error("--files needs two or more different positive sizes")
    if not 0 < args.min_size <= args.max_size:
        ap.error("need 0 < --min-size <= --max-size")
    require_tools()
    with bench_dirs("rn-bench-memory-", args.tmp, args.fresh_fs) as (work, _):
        bench(args, work)


if __name__ == "__main__":
    main()
