"""The one-file re-snapshot benchmark keeps working (tiny scale; no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench" / "bench_one_file.py"


def test_bench_one_file_runs_at_tiny_scale(tmp_path: Path) -> None:
    """A row per round, then the time and metadata-growth rows with their verdicts."""
    out = subprocess.run(
        [sys.executable, str(BENCH), "--files", "300", "--dirs", "10", "--rounds", "3", "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["round", "file"])
    rounds = [line.split() for line in lines[header + 1 : header + 4]]
    assert [r[0] for r in rounds] == ["1", "2", "3"], out.stdout
    assert len({r[1] for r in rounds}) == 3, "a different file each round"
    for row in (
        "one-file re-snapshot (API)",
        "one-file - unchanged",
        "metadata growth, one-file snap",
        "metadata growth, unchanged snap",
        "metadata growth per round",
        "growth by part of archive/",
        "peak RSS",
    ):
        assert row in out.stdout, row
    assert "goal <= +0.05 s: " in out.stdout and "goal <= 64.0 KiB: " in out.stdout
    assert out.stdout.count("PASS") + out.stdout.count("FAIL") == 2
    assert not list(tmp_path.glob("rn-bench-one-file-*")), "the temporary directory is removed"
