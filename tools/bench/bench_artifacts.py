#!/usr/bin/env python3
"""Benchmark artifacts against references measured in the same run.

1. Fetch of a ~256 MiB tar.gz artifact from a local HTTP server (``runicorn fetch``)
   vs. ``curl`` + ``sha256sum`` + ``tar xzf`` of the same file from the same server.
2. Warm ``artifact("name")`` latency: median of 10,000 calls.
3. ``python -c "import runicorn"`` vs. ``python -c "pass"``.

Usage: python tools/bench/bench_artifacts.py [--mib 256] [--reps 3] [--json]
Prints medians and ratios; exits 1 if a target is missed (fetch <= 1.3x the plain
baseline, warm artifact() <= 50 us, import adds <= 60 ms).  ``--json`` adds one last
line with the figures as a JSON object (for ``tools/bench/ab.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _make_payload(src: Path, mib: int) -> None:
    """Files that compress a little (like real data): random blocks mixed with repeats."""
    rng = random.Random(42)
    src.mkdir(parents=True)
    left = mib << 20
    i = 0
    while left > 0:
        size = min(left, rng.choice([1, 4, 16, 32]) << 20)
        with open(src / f"part-{i:03d}.bin", "wb") as f:
            written = 0
            while written < size:
                block = rng.randbytes(1 << 16) if rng.random() < 0.85 else b"\0" * (1 << 16)
                f.write(block[: size - written])
                written += len(block)
        left -= size
        i += 1
    (src / "bin").mkdir()
    (src / "bin" / "run.sh").write_text("#!/bin/sh\necho run\n")
    os.chmod(src / "bin" / "run.sh", 0o755)


def _timed(cmd: list[str] | str, **kw: object) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    return time.perf_counter() - t


def bench_fetch(work: Path, mib: int, reps: int, env: dict[str, str]) -> tuple[float, float]:
    src = work / "src"
    _make_payload(src, mib)
    serve = work / "serve"
    serve.mkdir()
    archive = serve / "payload.tar.gz"
    subprocess.run(f"tar -C {src} -cf - . | gzip -6 > {archive}", shell=True, check=True)
    print(
        f"payload: {sum(f.stat().st_size for f in src.rglob('*') if f.is_file()) / 2**20:.0f} MiB in "
        f"{len(list(src.rglob('*')))} entries; archive {archive.stat().st_size / 2**20:.0f} MiB"
    )
    sha = subprocess.run(["sha256sum", str(archive)], capture_output=True, text=True, check=True).stdout.split()[0]
    code = "import sys, runicorn as rn; print(rn.tree_hash(sys.argv[1]))"
    tree = subprocess.run(
        [sys.executable, "-c", code, str(src)], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(serve)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/payload.tar.gz"
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        proj = work / "proj"
        proj.mkdir()
        (proj / "Runicorn.toml").write_text(
            f'[payload]\ntree-sha256 = "{tree}"\n\n[[payload.download]]\nurl = "{url}"\n'
            f'sha256 = "{sha}"\nsize = {archive.stat().st_size}\n'
        )
        base_times, ours_times = [], []
        for r in range(reps):
            out = work / f"plain-{r}"
            out.mkdir()
            base_times.append(
                _timed(
                    f"curl -sf -o {out}/p.tar.gz {url} && sha256sum {out}/p.tar.gz && "
                    f"mkdir {out}/x && tar -C {out}/x -xzf {out}/p.tar.gz",
                    shell=True,
                )
            )
            shutil.rmtree(out)
            store = work / f"store-{r}"
            ours_times.append(
                _timed(
                    [
                        sys.executable,
                        "-m",
                        "runicorn",
                        "--storage",
                        str(store),
                        "fetch",
                        "--toml",
                        str(proj / "Runicorn.toml"),
                    ],
                    env=env,
                )
            )
            shutil.rmtree(store)
    finally:
        server.terminate()
        server.wait()
    return statistics.median(base_times), statistics.median(ours_times)


def bench_warm_lookup(work: Path, env: dict[str, str]) -> float:
    code = f"""
import os, statistics, sys, time
os.environ["RUNICORN_DIR"] = {str(work / "lookup-store")!r}
import runicorn as rn
src = {str(work / "lookup-src")!r}
os.makedirs(src, exist_ok=True)
open(os.path.join(src, "f.txt"), "w").write("x")
tree = rn.create_artifact(src=src)
toml = {str(work / "lookup-proj" / "Runicorn.toml")!r}
os.makedirs(os.path.dirname(toml), exist_ok=True)
rn.bind_artifact(toml, "name", tree)
os.chdir(os.path.dirname(toml))
artifact = rn.artifact
artifact("name")
heavy = [m for m in ("tomlkit", "click", "paramiko", "urllib.request", "tarfile", "http.client")
         if m in sys.modules]
samples = []
clock = time.perf_counter_ns
for _ in range(10000):
    t = clock(); artifact("name"); samples.append(clock() - t)
print(statistics.median(samples) / 1000)
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def bench_import(env: dict[str, str], n: int = 30) -> tuple[float, float]:
    bare, ours = [], []
    for _ in range(n):
        bare.append(_timed([sys.executable, "-c", "pass"], env=env))
        ours.append(_timed([sys.executable, "-c", "import runicorn"], env=env))
    return statistics.median(bare), statistics.median(ours)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="end with one line of the figures as JSON")
    args = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = True
    with tempfile.TemporaryDirectory(prefix="rn-bench-art-") as tmp:
        work = Path(tmp)
        base, ours = bench_fetch(work, args.mib, args.reps, env)
        ratio = ours / base
        ok &= ratio <= 1.3
        print(
            f"fetch {args.mib} MiB tar.gz over HTTP: runicorn fetch {ours:.2f} s (median of {args.reps}) vs "
            f"curl+sha256sum+tar xzf {base:.2f} s -> {ratio:.2f}x (target <= 1.30x)"
        )
        warm = bench_warm_lookup(work, env)
        ok &= warm <= 50
        print(f'warm artifact("name"): median {warm:.1f} us over 10,000 calls (target <= 50 us)')
        bare, imp = bench_import(env)
        added = (imp - bare) * 1000
        ok &= added <= 60
        print(
            f"import runicorn: {imp * 1000:.1f} ms vs python -c pass {bare * 1000:.1f} ms -> "
            f"+{added:.1f} ms (target <= 60 ms)"
        )
    print("all targets met" if ok else "TARGET MISSED")
    if args.json:
        print(
            json.dumps(
                {
                    "fetch_s": ours,
                    "fetch_baseline_s": base,
                    "fetch_ratio": ratio,
                    "warm_artifact_us": warm,
                    "import_s": imp,
                    "python_pass_s": bare,
                    "import_added_ms": added,
                    "targets_met": bool(ok),
                }
            )
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
