"""Benchmark: ``runicorn push`` / ``pull`` against ``rclone copy`` and ``dvc push`` / ``dvc pull``,
all to the same throwaway SeaweedFS (``weed mini``) on 127.0.0.1.

The bench tree is 10,000 small files (1-8 KiB) plus 4 x 64 MiB (``benchdata.make_bench_tree``),
already in a local store and pinned (as ``dvc add`` has it in its cache: neither is timed).
Each repetition uses fresh buckets and measures, as child processes a user would run:

* first push: ``runicorn push`` vs ``rclone copy`` of the same files vs ``dvc push``;
* unchanged push: ``runicorn push`` again (wall time and the requests it made);
* pull into an empty store: ``runicorn pull`` vs ``dvc pull`` into an empty cache (dvc also
  checks the files out into its workspace; ``runicorn pull`` then ``restore`` is shown too).

Medians of ``--repeat`` runs; ratios are against the references measured in the same run.
References missing on the machine (``rclone``, ``dvc`` with ``dvc-s3``) are reported as such.
Run from the repository root:

    python tools/bench/bench_remote.py [--small 10000] [--big 4] [--big-mib 64] [--repeat 3] [--json]
    [--dvc PATH] [--rclone PATH]
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdata import make_bench_tree  # noqa: E402
from tools.testbed.seaweed import SeaweedServer  # noqa: E402


def timed(args: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])}... exited {p.returncode}: {p.stderr[-2000:]}")
    return elapsed, p.stdout


def tree_options(ap: argparse.ArgumentParser) -> None:
    """The bench tree's size and the repetitions (shared with profile_remote_push.py)."""
    ap.add_argument("--small", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)


def make_tree(args: argparse.Namespace, src: Path) -> dict[str, int]:
    return make_bench_tree(
        src,
        small_files=args.small,
        dirs=max(1, min(100, args.small // 100 or 1)),
        big_files=args.big,
        big_size=args.big_mib << 20,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tree_options(ap)
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--dvc", default=shutil.which("dvc"), help="dvc executable (with dvc-s3)")
    ap.add_argument("--rclone", default=shutil.which("rclone"), help="rclone executable")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    work = Path(os.environ.get("BENCH_DIR") or tempfile.mkdtemp(prefix="runicorn-bench-remote-"))
    work.mkdir(parents=True, exist_ok=True)
    server = SeaweedServer(work / "seaweed").start()
    try:
        return run(args, work, server)
    finally:
        server.stop()
        if not os.environ.get("BENCH_DIR"):
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: Path, server: SeaweedServer) -> int:
    src = work / "tree"
    info = make_tree(args, src)
    base_env = {**os.environ, **server.env(), "AWS_ENDPOINT_URL": server.endpoint, "DVC_NO_ANALYTICS": "1"}
    store_a = work / "store-a"
    rn = [sys.executable, "-m", "runicorn"]
    env_a = {**base_env, "RUNICORN_DIR": str(store_a)}
    tree = json.loads(timed(rn + ["snapshot", str(src), "--json"], env_a)[1])["tree"]
    timed(rn + ["pin", tree, "--name", "bench"], env_a)
    rows: dict[str, list[float]] = {
        k: [] for k in ("push", "push_unchanged", "pull", "pull_restore", "rclone", "dvc_push", "dvc_pull")
    }
    unchanged_requests: list[int] = []
    dvc_repo = None
    if args.dvc:
        dvc_repo = work / "dvc-repo"
        dvc_repo.mkdir()
        shutil.copytree(src, dvc_repo / "tree")
        timed([args.dvc, "init", "--no-scm", "-q"], base_env, dvc_repo)
        timed([args.dvc, "add", "-q", "tree"], base_env, dvc_repo)  # hashing into its cache: not timed
    for rep in range(args.repeat):
        bucket = f"bench{rep}{os.urandom(3).hex()}"
        remote = f"s3://{bucket}/rn"
        t, _ = timed(
            rn + ["push", "bench", "--remote", remote, "-j", str(args.jobs)],
            {**env_a, "AWS_ENDPOINT_URL": server.endpoint},
        )
        rows["push"].append(t)
        t, out = timed(rn + ["push", "bench", "--remote", remote, "--json"], env_a)
        rows["push_unchanged"].append(t)
        unchanged_requests.append(json.loads(out)["requests"])
        env_b = {**base_env, "RUNICORN_DIR": str(work / f"store-b{rep}")}
        t, _ = timed(rn + ["pull", "bench", "--remote", remote, "-j", str(args.jobs)], env_b)
        rows["pull"].append(t)
        t2, _ = timed(rn + ["restore", tree, str(work / f"restored{rep}")], env_b)
        rows["pull_restore"].append(t + t2)
        shutil.rmtree(work / f"store-b{rep}")
        shutil.rmtree(work / f"restored{rep}")
        if args.rclone:
            # a CA bundle variable makes rclone refuse its plain-HTTP transport; the endpoint is http://
            renv = {k: v for k, v in base_env.items() if k != "AWS_CA_BUNDLE"}
            renv = {
                **renv,
                "RCLONE_CONFIG_SW_TYPE": "s3",
                "RCLONE_CONFIG_SW_PROVIDER": "Other",
                "RCLONE_CONFIG_SW_ENDPOINT": server.endpoint,
                "RCLONE_CONFIG_SW_ENV_AUTH": "true",
                "RCLONE_CONFIG_SW_REGION": "us-east-1",
            }
            t, _ = timed(
                [
                    args.rclone,
                    "copy",
                    str(src),
                    f"sw:{bucket}-rclone/tree",
                    "--transfers",
                    str(args.jobs),
                    "--checkers",
                    str(2 * args.jobs),
                    "--s3-no-check-bucket",
                ],
                renv,
            )
            rows["rclone"].append(t)
        if dvc_repo is not None:
            import obstore

            obstore.put(server.store(f"{bucket}-dvc"), "created", b"")  # dvc needs the bucket to exist
            timed([args.dvc, "remote", "add", "-f", "-d", "sw", f"s3://{bucket}-dvc/dvc"], base_env, dvc_repo)
            timed([args.dvc, "remote", "modify", "sw", "endpointurl", server.endpoint], base_env, dvc_repo)
            t, _ = timed([args.dvc, "push", "-q", "-j", str(args.jobs)], base_env, dvc_repo)
            rows["dvc_push"].append(t)
            shutil.rmtree(dvc_repo / ".dvc" / "cache")
            shutil.rmtree(dvc_repo / "tree")
            t, _ = timed([args.dvc, "pull", "-q", "-j", str(args.jobs)], base_env, dvc_repo)
            rows["dvc_pull"].append(t)
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    result: dict[str, Any] = {
        "files": info["files"],
        "bytes": info["bytes"],
        "repeat": args.repeat,
        "medians_s": med,
        "unchanged_push_requests": max(unchanged_requests),
    }
    ratios: dict[str, float] = {}
    if "rclone" in med:
        ratios["push / rclone copy"] = med["push"] / med["rclone"]
    if "dvc_push" in med:
        ratios["dvc push / push"] = med["dvc_push"] / med["push"]
        ratios["dvc pull / pull"] = med["dvc_pull"] / med["pull"]
        ratios["dvc pull / (pull + restore)"] = med["dvc_pull"] / med["pull_restore"]
    result["ratios"] = ratios
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"bench tree: {info['files']} files, {info['bytes'] / 2**20:.0f} MiB; medians of {args.repeat}; "
        f"SeaweedFS at {server.endpoint}"
    )
    names = {
        "push": "runicorn push (first)",
        "push_unchanged": "runicorn push (unchanged)",
        "pull": "runicorn pull (empty store)",
        "pull_restore": "runicorn pull + restore",
        "rclone": "rclone copy",
        "dvc_push": "dvc push",
        "dvc_pull": "dvc pull (+checkout)",
    }
    for k, v in med.items():
        print(f"  {names[k]:<30} {v:8.2f} s")
    print(f"  unchanged push requests: {result['unchanged_push_requests']}")
    if not args.rclone:
        print("  rclone: not installed (apt install rclone), no reference")
    if not args.dvc:
        print("  dvc: not installed (pip install dvc dvc-s3), no reference")
    for k, v in ratios.items():
        print(f"  {k:<30} {v:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
