"""Where the time of a first ``runicorn push`` to S3 goes, against floors measured in the same run.

Same bench tree and SeaweedFS (``weed mini`` on 127.0.0.1) as ``bench_remote.py``. Each
repetition uses fresh buckets and times:

* ``runicorn push`` (child process, ``-j 8`` and ``-j 32``), with the CPU seconds the client
  and the SeaweedFS process used meanwhile;
* the local part alone: reading and SHA-256 hashing every blob (what push does before a request);
* raw obstore floors, no runicorn code: the same objects ``put`` create-only from 8 and from 32
  threads (one request per object, as push sends them), and one ``put`` per object with no
  condition and no checksum;

so the gap between push and the raw loop is runicorn's overhead, and a raw loop that does not
speed up with more concurrency while SeaweedFS burns CPU is the server's limit.
Run from the repository root:

    python tools/bench/profile_remote_push.py [--small 10000] [--big 4] [--big-mib 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_remote import make_tree, timed, tree_options  # noqa: E402
from tools.testbed.seaweed import SeaweedServer  # noqa: E402


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def blobs_of(store_root: Path, tree: str) -> list[tuple[str, Path, int]]:
    from runicorn.store import Store

    with Store(store_root) as s:
        entries = {e.sha256: e.size for e in s.tree_entries(tree).values()}
        return [(sha, s.blob_path(sha), size) for sha, size in sorted(entries.items())]


def raw_put_loop(
    server: SeaweedServer, bucket: str, blobs: list[tuple[str, Path, int]], threads: int, conditional: bool
) -> float:
    """Put every blob once as its own object (big ones as obstore multipart) from ``threads`` threads."""
    import obstore
    from obstore.store import S3Store

    kw: dict[str, Any] = {"checksum_algorithm": "sha256"} if conditional else {}
    store = S3Store(
        bucket,
        endpoint=server.endpoint,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
        prefix="raw",
        **kw,
    )
    obstore.put(store, "created", b"")

    def one(item: tuple[str, Path, int]) -> None:
        sha, path, size = item
        key = f"blobs/{sha[:2]}/{sha}"
        if size > 16 << 20:
            with open(path, "rb") as f:
                obstore.put(store, key, f, chunk_size=16 << 20)
        else:
            obstore.put(store, key, path.read_bytes(), **({"mode": "create"} if conditional else {}))

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, blobs))
    return time.perf_counter() - t


def read_and_hash(blobs: list[tuple[str, Path, int]]) -> float:
    t = time.perf_counter()
    for sha, path, _ in blobs:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == sha
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tree_options(ap)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="runicorn-profile-push-"))
    server = SeaweedServer(work / "seaweed").start()
    try:
        os.environ.update(server.env())
        src = work / "tree"
        make_tree(args, src)
        store_a = work / "store-a"
        env = {**os.environ, **server.env(), "RUNICORN_DIR": str(store_a)}
        rn = [sys.executable, "-m", "runicorn"]
        tree = json.loads(timed(rn + ["snapshot", str(src), "--json"], env)[1])["tree"]
        timed(rn + ["pin", tree, "--name", "bench"], env)
        blobs = blobs_of(store_a, tree)
        assert server.proc is not None
        weed = server.proc.pid
        rows: dict[str, list[float]] = {}

        def measure(name: str, fn: Callable[[], float]) -> None:
            c0, w0 = os.times(), cpu_of(weed)
            wall = fn()
            c1, w1 = os.times(), cpu_of(weed)
            client = (
                c1.user
                + c1.system
                + c1.children_user
                + c1.children_system
                - c0.user
                - c0.system
                - c0.children_user
                - c0.children_system
            )
            rows.setdefault(f"{name} wall", []).append(wall)
            rows.setdefault(f"{name} client cpu", []).append(client)
            rows.setdefault(f"{name} server cpu", []).append(w1 - w0)

        for rep in range(args.repeat):
            tag = f"p{rep}{os.urandom(3).hex()}"
            for jobs in (8, 32):
                measure(
                    f"runicorn push -j {jobs}",
                    lambda: timed(
                        rn + ["push", "bench", "--remote", f"s3://{tag}-j{jobs}/rn", "-j", str(jobs)],
                        {**env, "AWS_ENDPOINT_URL": server.endpoint},
                    )[0],
                )
            measure("read + sha256 every blob", lambda: read_and_hash(blobs))
            for threads in (8, 32):
                measure(
                    f"raw obstore put, create-only + sha256, {threads} threads",
                    lambda: raw_put_loop(server, f"{tag}-raw{threads}", blobs, threads, True),
                )
            measure(
                "raw obstore put, plain, 32 threads", lambda: raw_put_loop(server, f"{tag}-plain", blobs, 32, False)
            )
        med = {k: statistics.median(v) for k, v in rows.items()}
        if args.json:
            print(json.dumps({"objects": len(blobs), "repeat": args.repeat, "medians_s": med}, indent=2))
            return 0
        print(
            f"{len(blobs)} objects ({sum(b[2] for b in blobs) / 2**20:.0f} MiB); medians of {args.repeat}; "
            f"{os.cpu_count()} CPUs; SeaweedFS at {server.endpoint}"
        )
        for k, v in med.items():
            print(f"  {k:<62} {v:8.2f} s")
        return 0
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
