#!/usr/bin/env python3
"""Benchmark a re-snapshot after a one-file change: its time against an unchanged re-snapshot, and
how much the store's metadata grows per such snapshot (issue 12).

Data: ``benchdata.make_bench_tree`` with ``--files`` small files of ``--min-size`` to
``--max-size`` bytes (a few hundred by default) in ``--dirs`` directories, no big files;
100,000 files in 1,000 directories by default.  The workspace and the store live in one
temporary directory (on one filesystem; ``--fresh-fs SIZE`` makes that a new, journaled
ext4 image, loop-mounted, as ``bench_snapshot.py`` does).

After a first snapshot, each of ``--rounds`` rounds (20 by default):

1. appends one line to ONE file (a different file each round, spread over the directories)
   and waits until its mtime is outside the stat cache's racy window (2 s: a real edit is
   older than that when its snapshot is taken, and the cache then trusts the next scan);
2. re-snapshots the workspace (the one-file snapshot: one file read, a new tree);
3. re-snapshots it again, unchanged (the reference of the same round: no file read, the
   same tree).

Every snapshot is the in-process ``runicorn.snapshot_workspace`` call, timed inside a
child process of its own (``bench_snapshot.API_SNAPSHOT``; so its peak RSS, from GNU
``time``, is its own), after an untimed ``sync``.

After every snapshot the store's metadata is measured, in a way that does not depend on
how trees are stored: every byte of the files under ``archive/`` (``index.sqlite3`` after
a WAL checkpoint, ``manifests/``, ``refs/``, any other directory), minus the bytes of the
blob files whose SHA-256 is a file's content in some stored tree (the union of
``Store.tree_entries(tree)`` over the trees the refs name and the trees the benchmark
made).  What is left is what the store keeps to describe the trees (and its caches), in
whatever form: index rows, manifests, or tree pages stored as blobs.

Printed: a row per round (times, metadata growth of each snapshot, peak RSS), then
medians, maxima and totals, with PASS/FAIL beside the two goals of issue 12: a one-file
re-snapshot <= the unchanged one + 0.05 s (medians of the rounds), and metadata growth
<= 64 KiB per one-file snapshot (the growth over all rounds, both snapshots of each,
divided by the rounds).

Usage::

    python tools/bench/bench_one_file.py [--files 100000 --dirs 1000] [--rounds 20] [--fresh-fs 4G]
    python tools/bench/bench_one_file.py --files 10000 --dirs 100      # a quicker run
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_snapshot import API_SNAPSHOT, REPO, run_rss, timed  # noqa: E402
from benchdata import make_bench_tree  # noqa: E402
from benchfs import add_dir_options, bench_dirs, describe  # noqa: E402
from benchrss import require_tools  # noqa: E402

KIB = 1024
GOAL_SECONDS = 0.05
GOAL_BYTES = 64 * KIB


def snapshot(ws: Path, store: Path) -> dict[str, Any]:
    """One in-process snapshot, timed in a child: ``seconds``, ``tree``, ``files_read``, ``rss_kib``."""
    t, proc = timed(lambda: run_rss([sys.executable, "-c", API_SNAPSHOT, str(ws), str(store)]))
    res: dict[str, Any] = json.loads(proc.out)
    res["rss_kib"] = proc.rss_kib
    return res


def small_file(ws: Path, index: int, dirs: int) -> Path:
    return ws / f"d{index % dirs:03d}" / f"f{index:05d}.txt"


class Metadata:
    """The store's metadata bytes: everything under ``archive/`` minus the blobs of file contents.

    Trees are immutable and every tree here stays pinned, so the content blobs (and their
    sizes) of a tree already seen are remembered rather than listed again."""

    def __init__(self, store_root: Path) -> None:
        self.root = store_root
        self.seen_trees: set[str] = set()
        self.content: dict[str, int] = {}  # sha256 -> size of its blob file

    def measure(self, trees: set[str]) -> dict[str, int]:
        """Bytes per top-level entry of ``archive/`` (``blobs`` without the content blobs) and
        ``total``; ``content`` is the bytes of the content blobs left out."""
        from runicorn.store import Store

        with Store.open(self.root) as store:
            known = trees | {ref.tree for ref in store.list_refs()}
            for tree in sorted(known - self.seen_trees):
                for entry in store.tree_entries(tree).values():
                    if entry.sha256 not in self.content:
                        self.content[entry.sha256] = os.stat(store.blob_path(entry.sha256)).st_size
                self.seen_trees.add(tree)
            archive, blobs_dir, index_path = store.archive, store.blobs_dir, store.index_path
        wal_left = checkpoint(index_path)
        parts: dict[str, int] = {}
        for top in archive.iterdir():
            name = "index" if top.name.startswith(index_path.name) else top.name
            parts[name] = parts.get(name, 0) + tree_bytes(top)
        content = sum(self.content.values())
        parts[blobs_dir.name] = parts.get(blobs_dir.name, 0) - content
        parts["total"] = sum(parts.values())
        parts["content"] = content
        parts["wal_left"] = wal_left
        return parts


def tree_bytes(path: Path) -> int:
    """Bytes (st_size) of the regular files at or below ``path``."""
    st = path.lstat()
    if not path.is_dir() or path.is_symlink():
        return st.st_size if path.is_file() else 0
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                pass
    return total


def checkpoint(index_path: Path) -> int:
    """Checkpoint the index's WAL into the database file and truncate it, so the file's size
    is what the index holds; return the bytes of WAL left (0 unless a reader was in the way,
    in which case those bytes are counted as they are)."""
    import apsw

    conn = apsw.Connection(str(index_path), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.set_busy_timeout(10_000)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()
    wal = index_path.with_name(index_path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def fmt_bytes(n: float) -> str:
    return f"{n / KIB:,.1f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--dirs", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--min-size", type=int, default=200, help="smallest file, bytes (default 200)")
    ap.add_argument("--max-size", type=int, default=800, help="largest file, bytes (default 800)")
    add_dir_options(ap, "4G")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if args.rounds < 1 or args.rounds > args.files or args.dirs < 1 or args.files < args.dirs:
        ap.error("need 1 <= --rounds <= --files and 1 <= --dirs <= --files")
    if not 0 < args.min_size <= args.max_size:
        ap.error("need 0 < --min-size <= --max-size")
    require_tools()
    with bench_dirs("rn-bench-one-file-", args.tmp, args.fresh_fs, keep=args.keep) as (work, _):
        bench(args, work)


def bench(args: argparse.Namespace, work: Path) -> None:
    print("\n".join(describe(work, fresh=bool(args.fresh_fs))), flush=True)
    inodes_need = 2 * args.files + 4 * args.rounds + 2 * args.dirs + 600
    if os.statvfs(work).f_favail < inodes_need:
        raise SystemExit(f"not enough inodes in {work}: about {inodes_need:,} needed (use a larger --fresh-fs)")
    ws, store = work / "ws", work / "store"
    t_gen, info = timed(
        lambda: make_bench_tree(ws, args.files, args.dirs, 0, 0, small_size=(args.min_size, args.max_size))
    )
    (ws / ".rnignore").write_text("# nothing excluded\n")
    print(
        f"data: {info['files']} files in {args.dirs} dirs, {info['bytes'] / 2**20:.1f} MiB (generated in {t_gen:.1f} s)"
    )
    print(f"runicorn: {REPO} ({sys.executable})", flush=True)
    time.sleep(2.1)  # the files' mtimes out of the racy window, as a real workspace's are

    meta = Metadata(store)
    trees: set[str] = set()
    first = snapshot(ws, store)
    trees.add(first["tree"])
    before = meta.measure(trees)
    print(
        f"first snapshot: {first['seconds']:.2f} s, rss {first['rss_kib'] / 1024:.0f} MiB; metadata "
        f"{fmt_bytes(before['total'])} ({', '.join(f'{k} {fmt_bytes(v)}' for k, v in sorted(before.items()) if k not in ('total', 'content', 'wal_left'))}), "
        f"content blobs {fmt_bytes(before['content'])}",
        flush=True,
    )
    start = dict(before)

    picks = random.Random(12).sample(range(args.files), args.rounds)
    rows: list[dict[str, Any]] = []
    header = (
        f"{'round':>5}  {'file':<16} {'one-file s':>10} {'unchanged s':>11} {'diff s':>7}  "
        f"{'growth one-file':>16} {'growth unchanged':>16} {'metadata':>14}  {'rss MiB':>9}"
    )
    print(header)
    for rnd, pick in enumerate(picks, 1):
        path = small_file(ws, pick, args.dirs)
        with open(path, "a") as f:
            f.write(f"# round {rnd}: one more line\n")
        wait = path.stat().st_mtime + 2.1 - time.time()
        if wait > 0:
            time.sleep(wait)
        one = snapshot(ws, store)
        assert one["files_read"] == 1 and one["tree"] not in trees, one
        trees.add(one["tree"])
        after_one = meta.measure(trees)
        same = snapshot(ws, store)
        assert same["files_read"] == 0 and same["tree"] == one["tree"], same
        after_same = meta.measure(trees)
        row = {
            "round": rnd,
            "file": str(path.relative_to(ws)),
            "one_s": one["seconds"],
            "unchanged_s": same["seconds"],
            "growth_one": after_one["total"] - before["total"],
            "growth_unchanged": after_same["total"] - after_one["total"],
            "metadata": after_same["total"],
            "rss_one_kib": one["rss_kib"],
            "rss_unchanged_kib": same["rss_kib"],
            "wal_left": max(after_one["wal_left"], after_same["wal_left"]),
        }
        rows.append(row)
        before = after_same
        print(
            f"{rnd:>5}  {row['file']:<16} {row['one_s']:>10.3f} {row['unchanged_s']:>11.3f} "
            f"{row['one_s'] - row['unchanged_s']:>+7.3f}  {fmt_bytes(row['growth_one']):>16} "
            f"{fmt_bytes(row['growth_unchanged']):>16} {fmt_bytes(row['metadata']):>14}  "
            f"{row['rss_one_kib'] / 1024:>4.0f}/{row['rss_unchanged_kib'] / 1024:<4.0f}",
            flush=True,
        )
    report(args, rows, start, before)


def report(args: argparse.Namespace, rows: list[dict[str, Any]], start: dict[str, int], end: dict[str, int]) -> None:
    n = len(rows)
    med = statistics.median
    one = [r["one_s"] for r in rows]
    same = [r["unchanged_s"] for r in rows]
    diff = med(one) - med(same)
    paired = med([r["one_s"] - r["unchanged_s"] for r in rows])
    g_one = [r["growth_one"] for r in rows]
    g_same = [r["growth_unchanged"] for r in rows]
    total = end["total"] - start["total"]
    per = total / n
    verdict = {True: "PASS", False: "FAIL"}
    print(f"\nsummary ({args.files} files in {args.dirs} dirs, {n} rounds):")
    print(
        f"  one-file re-snapshot (API)        median {med(one):.3f} s (max {max(one):.3f} s); "
        f"unchanged median {med(same):.3f} s (max {max(same):.3f} s)"
    )
    print(
        f"  one-file - unchanged              {diff:+.3f} s (medians; paired per round {paired:+.3f} s)  "
        f"goal <= +{GOAL_SECONDS} s: {verdict[diff <= GOAL_SECONDS]}"
    )
    print(
        f"  metadata growth, one-file snap    median {fmt_bytes(med(g_one))}, max {fmt_bytes(max(g_one))}, "
        f"total {fmt_bytes(sum(g_one))}"
    )
    print(
        f"  metadata growth, unchanged snap   median {fmt_bytes(med(g_same))}, max {fmt_bytes(max(g_same))}, "
        f"total {fmt_bytes(sum(g_same))}"
    )
    print(
        f"  metadata growth per round         {fmt_bytes(per)} ({fmt_bytes(total)} over {n} rounds)  "
        f"goal <= {fmt_bytes(GOAL_BYTES)}: {verdict[per <= GOAL_BYTES]}"
    )
    parts = sorted(k for k in set(start) | set(end) if k not in ("total", "content", "wal_left"))
    print(
        "  growth by part of archive/        "
        + ", ".join(f"{k} {fmt_bytes(end.get(k, 0) - start.get(k, 0))}" for k in parts)
        + f" (blobs: without the {fmt_bytes(end['content'])} of content blobs)"
    )
    rss_one = [r["rss_one_kib"] for r in rows]
    rss_same = [r["rss_unchanged_kib"] for r in rows]
    print(
        f"  peak RSS                          one-file median {med(rss_one) / 1024:.0f} MiB (max "
        f"{max(rss_one) / 1024:.0f}), unchanged median {med(rss_same) / 1024:.0f} MiB (max {max(rss_same) / 1024:.0f})"
    )
    wal = max(r["wal_left"] for r in rows)
    if wal:
        print(f"  note: a WAL checkpoint was blocked; up to {fmt_bytes(wal)} of WAL counted as it was")
    print("all rounds:", json.dumps(rows))


if __name__ == "__main__":
    main()
