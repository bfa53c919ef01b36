#!/usr/bin/env python3
"""Benchmark archive extraction into the store against ``tar -x`` / ``unzip`` in the same run.

For each payload (``--mib`` MiB of zeros, and of random bytes, one file each; and
``--files`` small files of random bytes, 2 KiB each in 20 directories, where the cost per
member shows) and each format (tar.gz, tar.bz2, tar.xz, tar.zst, zip) it times, ``--reps`` times each:

* the reference: ``tar -xf`` (``tar --zstd -xf`` for zst) or ``unzip -q`` into a fresh
  directory, then ``sync -f`` of that filesystem (timed apart: the store waits for its data
  to reach the disk, so "reference + sync" is the durable reference);
* ours: a fresh Python process streaming the archive into a fresh store
  (``runicorn.artifacts.extract.extract_into_store``), interpreter start included.

It prints medians of wall time and of peak RSS (``wait4``'s ``ru_maxrss`` of the child,
so tar's decompressor child counts too; it also counts the pages the forked child shares
with this script before exec, so ~15 MiB is a floor, not tar's own use), the speed ratio (reference time / ours: >= 0.7
is the target) and ours' peak RSS above its own baseline (measured in the child after
imports: <= 64 MiB is the target).

Usage: python tools/bench/bench_extract.py [--mib 256] [--reps 3] [--formats gz,bz2,...]
The archives live under $BENCH_DIR (else a temporary directory).  Exits 1 when a target
is missed (unless --no-check).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FORMATS = ("gz", "bz2", "xz", "zst", "zip")
SPEED_TARGET = 0.7
RSS_TARGET_MIB = 64

CHILD = r"""
import resource, sys, time
from pathlib import Path
from runicorn.store import Store
from runicorn.artifacts import extract
store = Store(Path(sys.argv[2]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ex = extract.extract_into_store(store, Path(sys.argv[1]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(ex.entries), base, peak - base)
"""


def _run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Run ``cmd``; return (wall seconds, peak RSS in KiB from wait4, stdout)."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = b"", b""
    assert p.stdout is not None and p.stderr is not None
    out = p.stdout.read()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    elapsed = time.perf_counter() - t
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({p.returncode}): {err.decode(errors='replace').strip()}")
    return elapsed, usage.ru_maxrss, out.decode()


def _payload(src: Path, kind: str, mib: int, files: int) -> int:
    """Write the payload under ``src``; return its number of files."""
    src.mkdir(parents=True)
    if kind == "files":
        for i in range(files):
            d = src / f"d{i % 20}"
            d.mkdir(exist_ok=True)
            (d / f"f{i}.bin").write_bytes(os.urandom(2048))
        return files
    with open(src / f"{kind}.bin", "wb") as f:
        for _ in range(mib):
            f.write(b"\0" * (1 << 20) if kind == "zeros" else os.urandom(1 << 20))
    return 1


def _make_archive(src: Path, fmt: str, out: Path) -> None:
    if fmt == "zip":
        subprocess.run(["zip", "-q", "-r", str(out), "."], cwd=src, check=True)
        return
    flag = {"gz": "-z", "bz2": "-j", "xz": "-J", "zst": "--zstd"}[fmt]
    subprocess.run(
        ["tar", "-C", str(src), flag, "-cf", str(out), "."], check=True, env={**os.environ, "XZ_DEFAULTS": "-T2"}
    )


def _reference_cmd(fmt: str, archive: Path, out: Path) -> list[str]:
    if fmt == "zip":
        return ["unzip", "-q", "-o", str(archive), "-d", str(out)]
    if fmt == "zst":
        return ["tar", "--zstd", "-C", str(out), "-xf", str(archive)]
    return ["tar", "-C", str(out), "-xf", str(archive)]


def bench(
    work: Path, mib: int, reps: int, formats: list[str], files: int
) -> list[tuple[str, float, float, float, float]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rows = []
    for kind in ("zeros", "random", "files")[: 3 if files else 2]:
        src = work / f"src-{kind}"
        count = _payload(src, kind, mib, files)
        for fmt in formats:
            ext = "zip" if fmt == "zip" else f"tar.{fmt}"
            archive = work / f"{kind}.{ext}"
            _make_archive(src, fmt, archive)
            ref_t, ref_sync_t, ref_rss, our_t, our_rss, our_delta = [], [], [], [], [], []
            for r in range(reps):
                out = work / f"ref-{r}"
                out.mkdir()
                t, rss, _ = _run(_reference_cmd(fmt, archive, out))
                sync_t, _, _ = _run(["sync", "-f", str(out)])
                shutil.rmtree(out)
                ref_t.append(t)
                ref_sync_t.append(t + sync_t)
                ref_rss.append(rss)
                store = work / f"store-{r}"
                t, rss, text = _run([sys.executable, "-c", CHILD, str(archive), str(store)], env=env)
                shutil.rmtree(store)
                entries, _base, delta = (int(x) for x in text.split())
                assert entries == count, text
                our_t.append(t)
                our_rss.append(rss)
                our_delta.append(delta)
            med = statistics.median
            ratio = med(ref_t) / med(our_t)
            label = f"{kind:6s} {ext:7s} ({archive.stat().st_size / 2**20:7.1f} MiB)"
            print(
                f"{label}  ref {med(ref_t):6.2f} s {med(ref_rss) / 1024:6.1f} MiB | ours {med(our_t):6.2f} s "
                f"{med(our_rss) / 1024:6.1f} MiB (+{med(our_delta) / 1024:5.1f} MiB over baseline) | "
                f"speed ratio ref/ours {ratio:4.2f}; ref + sync {med(ref_sync_t):6.2f} s, durable ratio "
                f"{med(ref_sync_t) / med(our_t):4.2f}",
                flush=True,
            )
            rows.append((label, ratio, med(our_delta) / 1024, med(ref_t), med(our_t)))
            archive.unlink()
        shutil.rmtree(src)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=256, help="payload size in MiB (default 256)")
    ap.add_argument("--reps", type=int, default=3, help="runs per measurement; medians are printed")
    ap.add_argument(
        "--files", type=int, default=5000, help="small files in the many-files payload (default 5000; 0 leaves it out)"
    )
    ap.add_argument("--formats", default=",".join(FORMATS), help="comma-separated subset of " + ",".join(FORMATS))
    ap.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    args = ap.parse_args()
    formats = [f for f in args.formats.split(",") if f]
    unknown = set(formats) - set(FORMATS)
    if unknown:
        ap.error(f"unknown format(s): {', '.join(sorted(unknown))}")
    parent = os.environ.get("BENCH_DIR") or None
    work = Path(tempfile.mkdtemp(prefix="bench-extract-", dir=parent))
    try:
        print(
            f"payloads {args.mib} MiB of zeros, {args.mib} MiB random, {args.files} files of 2 KiB; "
            f"{args.reps} runs each, medians; work dir {work}"
        )
        rows = bench(work, args.mib, args.reps, formats, args.files)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    missed = [label for label, ratio, delta, _, _ in rows if ratio < SPEED_TARGET or delta > RSS_TARGET_MIB]
    print(
        f"targets: speed ratio >= {SPEED_TARGET}, peak RSS <= {RSS_TARGET_MIB} MiB over baseline; "
        f"missed: {', '.join(missed) if missed else 'none'}"
    )
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
