"""The memory benchmark keeps working (tiny scale; no figure is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench" / "bench_memory.py"


def test_bench_memory_runs_at_tiny_scale(tmp_path: Path) -> None:
    """A row per size, then a growth row per step with its verdict; nothing left behind."""
    out = subprocess.run(
        [sys.executable, str(BENCH), "--files", "200", "400", "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split() for line in out.stdout.splitlines()]
    assert [r[0] for r in rows if r and r[0] in ("200", "400")] == ["200", "400"], out.stdout
    for step in ("first", "again", "unchanged", "gc"):
        assert any(r[:1] == [step] and r[2] == "bytes/file" and r[3] in ("PASS", "FAIL") for r in rows), step
    assert not list(tmp_path.glob("rn-bench-memory-*")), "the temporary directory is removed"
