"""The remote benchmark keeps working (tiny scale, its own SeaweedFS; no timing is asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmark starts its own SeaweedFS; `-m "not s3"` deselects it like the fixtures' tests.
pytestmark = pytest.mark.s3

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench" / "bench_remote.py"


def test_bench_remote_runs_at_tiny_scale(tmp_path: Path) -> None:
    env = {**os.environ, "BENCH_DIR": str(tmp_path)}
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--small",
            "40",
            "--big",
            "1",
            "--big-mib",
            "2",
            "--repeat",
            "1",
            "--json",
            "--dvc",
            "",
            "--rclone",
            "",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["files"] == 41 and result["unchanged_push_requests"] <= 5
    assert {"push", "push_unchanged", "pull", "pull_restore"} <= set(result["medians_s"])


def test_push_profile_runs_at_tiny_scale() -> None:
    profile = BENCH.parent / "profile_remote_push.py"
    out = subprocess.run(
        [sys.executable, str(profile), "--small", "30", "--big", "1", "--big-mib", "20", "--repeat", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["objects"] == 32  # 30 small files, the big one, the snapshot's .rnignore
    assert {"runicorn push -j 8 wall", "raw obstore put, plain, 32 threads server cpu"} <= set(result["medians_s"])
