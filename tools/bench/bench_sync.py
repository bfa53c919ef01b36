"""Benchmark: legacy walk vs manifest sync vs ``rsync -a``, all through the same local sshd.

Builds a server root of N runs (default 100 runs x 8 files, ~20 MB), starts a throwaway
OpenSSH sshd on 127.0.0.1 and measures three scenarios, each repeated (median reported):

* first sync into an empty cache,
* unchanged server,
* after 10 runs changed: 1 MiB appended across 10 logs and 10 status files rewritten.

For every method it prints SFTP operations (and protocol-level requests), bytes received
and wall time; rsync is the reference for time and bytes.  Every cache is compared with
the server byte for byte after every scenario.  Run from the repository root:

    python tools/bench/bench_sync.py [--runs 100] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from runicorn.sync.server.generator import ManifestGenerator  # noqa: E402
from runicorn.sync.client.walk_client import WalkSyncClient  # noqa: E402
from runicorn.sync.client.manifest_client import ManifestSyncClient  # noqa: E402
from tools.testbed.sshd import SshdServer  # noqa: E402
from tools.testbed.run_trees import assert_mirror, make_run  # noqa: E402

APPEND_TOTAL = 1 << 20
CHANGED_RUNS = 10


def build_server(root: Path, runs: int) -> list[Path]:
    rng = random.Random(1234)
    return [
        make_run(
            root,
            f"proj{i % 4}",
            f"exp{i % 10}",
            f"20250115_10{i:04d}_r{i:04d}",
            rng=rng,
            media=3,
            log_bytes=25_000,
            media_bytes=50_000,
        )
        for i in range(runs)
    ]


def run_rsync(server: SshdServer, root: Path, cache: Path) -> dict[str, Any]:
    ssh = (
        f"ssh -p {server.port} -i {server.key_path} -o BatchMode=yes "
        f"-o UserKnownHostsFile={server.known_hosts_path} -o StrictHostKeyChecking=yes"
    )
    t = time.perf_counter()
    out = subprocess.run(
        [
            "rsync",
            "-a",
            "--stats",
            "--exclude=/.runicorn",
            "-e",
            ssh,
            f"{server.user}@{server.host}:{root}/",
            f"{cache}/",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    wall = time.perf_counter() - t
    m = re.search(r"Total bytes received: ([\d,]+)", out)
    return {"wall": wall, "bytes": int(m.group(1).replace(",", "")) if m else -1, "ops": None, "wire": None}


def run_client(server: SshdServer, root: Path, cache: Path, method: str) -> dict[str, Any]:
    t = time.perf_counter()
    client = server.connect()
    try:
        sftp = client.open_sftp()
        if method == "manifest":
            st = ManifestSyncClient(sftp, str(root), cache, jitter_max=0).sync()
        else:
            st = WalkSyncClient(sftp, str(root), cache).sync()
    finally:
        client.close()
    wall = time.perf_counter() - t
    if st["failed_count"]:
        raise RuntimeError(f"{method}: {st['failed_count']} files failed")
    return {
        "wall": wall,
        "sync": st["duration"],
        "bytes": st["bytes_downloaded"],
        "ops": st["sftp_requests"],
        "wire": st["sftp_wire_requests"],
        "files": st["files_synced"],
        "manifest_bytes": st["manifest_bytes"],
    }


def change_runs(runs: list[Path], rng: random.Random, rep: int) -> None:
    per = APPEND_TOTAL // CHANGED_RUNS
    for i, rd in enumerate(runs[:CHANGED_RUNS]):
        with open(rd / "logs.txt", "ab") as f:
            f.write(rng.randbytes(per + (APPEND_TOTAL % CHANGED_RUNS if i == 0 else 0)))
        (rd / "status.json").write_text(json.dumps({"status": "running", "step": rep, "t": time.time()}))


def median(rows: list[dict[str, Any]], key: str) -> Any:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="runicorn-bench-sync-"))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        root = work / "server"
        runs = build_server(root, args.runs)
        nfiles = sum(1 for p in root.rglob("*") if p.is_file())
        nbytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        t = time.perf_counter()
        ManifestGenerator(root).generate()
        gen_first = time.perf_counter() - t
        t = time.perf_counter()
        ManifestGenerator(root).generate()
        gen_again = time.perf_counter() - t
        methods = ("legacy", "manifest", "rsync")
        with SshdServer(work / "sshd") as server:
            caches = {m: work / f"cache-{m}" for m in methods}

            def one(method: str, cache: Path) -> dict[str, Any]:
                if method == "rsync":
                    return run_rsync(server, root, cache)
                return run_client(server, root, cache, method)

            # First sync: fresh caches each repetition, methods interleaved so machine
            # noise hits them alike.
            for rep in range(args.repeat):
                for m in methods:
                    shutil.rmtree(caches[m], ignore_errors=True)
                    caches[m].mkdir()
                    os.sync()
                    results.setdefault("first", {}).setdefault(m, []).append(one(m, caches[m]))
                    assert_mirror(root, caches[m], check_mtime=(m != "legacy"))
            for rep in range(args.repeat):
                for m in methods:
                    results.setdefault("unchanged", {}).setdefault(m, []).append(one(m, caches[m]))
                    assert_mirror(root, caches[m], check_mtime=(m != "legacy"))
            rng = random.Random(99)
            for rep in range(args.repeat):
                change_runs(runs, rng, rep)
                ManifestGenerator(root).generate()
                os.sync()
                for m in methods:
                    results.setdefault("changed", {}).setdefault(m, []).append(one(m, caches[m]))
                    assert_mirror(root, caches[m], check_mtime=(m != "legacy"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary: dict[str, Any] = {
        "runs": args.runs,
        "files": nfiles,
        "bytes": nbytes,
        "repeat": args.repeat,
        "generate_first_s": gen_first,
        "generate_unchanged_s": gen_again,
        "scenarios": {},
    }
    for scen, by_method in results.items():
        summary["scenarios"][scen] = {
            m: {k: median(rows, k) for k in ("wall", "sync", "bytes", "ops", "wire", "files", "manifest_bytes")}
            for m, rows in by_method.items()
        }
    s = summary["scenarios"]
    man_first = s["first"]["manifest"]
    checks = [
        ("unchanged server <= 3 SFTP ops", s["unchanged"]["manifest"]["ops"] <= 3),
        ("10 runs changed <= 100 SFTP ops", s["changed"]["manifest"]["ops"] <= 100),
        ("first sync <= 3.5 ops per file fetched", man_first["ops"] <= 3.5 * man_first["files"]),
        (
            "1 MiB appended: bytes <= 1 MiB + manifest + 64 KiB",
            s["changed"]["manifest"]["bytes"] <= APPEND_TOTAL + s["changed"]["manifest"]["manifest_bytes"] + 65536,
        ),
        ("first sync wall <= 1.5x rsync", man_first["wall"] <= 1.5 * s["first"]["rsync"]["wall"]),
    ]
    summary["checks"] = {name: ok for name, ok in checks}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"server: {args.runs} runs, {nfiles} files, {nbytes / 1e6:.1f} MB; "
        f"median of {args.repeat} runs; sshd on 127.0.0.1"
    )
    print(f"generate-manifest: first {gen_first:.3f}s, unchanged {gen_again:.3f}s")
    hdr = (
        f"{'scenario':<10} {'method':<9} {'SFTP ops':>9} {'wire req':>9} {'files':>6} "
        f"{'bytes recv':>12} {'wall s':>7} {'vs rsync':>8}"
    )
    print(hdr)
    print("-" * len(hdr))
    for scen in ("first", "unchanged", "changed"):
        ref = s[scen]["rsync"]["wall"]
        for m in ("legacy", "manifest", "rsync"):
            r = s[scen][m]
            ops = "-" if r["ops"] is None else f"{r['ops']:.0f}"
            wire = "-" if r["wire"] is None else f"{r['wire']:.0f}"
            files = "-" if r["files"] is None else f"{r['files']:.0f}"
            print(
                f"{scen:<10} {m:<9} {ops:>9} {wire:>9} {files:>6} {r['bytes']:>12.0f} "
                f"{r['wall']:>7.3f} {r['wall'] / ref:>7.2f}x"
            )
    print(f"(wall = connect + sync for every method; manifest sync alone: first {s['first']['manifest']['sync']:.3f}s)")
    for name, ok in checks:
        print(f"[{'PASS' if ok else 'FAIL'}] {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
