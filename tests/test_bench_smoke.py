"""The benchmarks keep working (tiny scale; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"


def test_bench_store_runs_at_tiny_scale(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_store.py"),
            "--mode",
            "all",
            "--runs",
            "1",
            "--scale",
            "0.002",
            "--blobs",
            "2000",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"BENCH_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    assert "ingest / (sha256sum + cp -r)" in out.stdout
    assert "gc --dry-run (in process)" in out.stdout
    assert "gc / rm -rf = " in out.stdout and "runicorn gc --grace 0 (CLI)" in out.stdout


def test_bench_snapshot_runs_at_tiny_scale(tmp_path: Path) -> None:
    """Every step with its references (git status, zip, cp -r, rm -rf) and peak RSS."""
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_snapshot.py"),
            "--repeats",
            "1",
            "--small-files",
            "60",
            "--dirs",
            "6",
            "--big-files",
            "1",
            "--big-size",
            "70000",
            "--skip-dvc",
            "--tmp",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    for ref in (
        "first.ref_durable",
        "unchanged.git",
        "change1.ref",
        "change1.git",
        "zip.zip",
        "restore.cp_durable",
        "delete.rm",
        "rss ",
    ):
        assert ref in out.stdout, ref
    assert "peak RSS (KiB):" in out.stdout


def test_bench_extract_runs_at_tiny_scale(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / "bench_extract.py"), "--mib", "2", "--reps", "1", "--files", "30", "--no-check"],
        capture_output=True,
        text=True,
        timeout=300,
        env={"BENCH_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    for label in (
        "zeros  tar.gz",
        "zeros  tar.bz2",
        "zeros  tar.xz",
        "zeros  tar.zst",
        "random zip",
        "files  tar.gz",
        "files  zip",
    ):
        assert label in out.stdout
    assert "speed ratio ref/ours" in out.stdout and "over baseline" in out.stdout
