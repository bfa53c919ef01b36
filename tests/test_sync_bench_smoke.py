"""The sync benchmark runs end to end on a tiny tree (figures are not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The benchmark starts its own sshd; `-m "not sshd"` deselects it like the fixtures' tests.
pytestmark = pytest.mark.sshd

ROOT = Path(__file__).resolve().parents[1]


def test_bench_sync_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "bench" / "bench_sync.py"), "--runs", "4", "--repeat", "1", "--json"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        timeout=300,
    )
    summary = json.loads(out.stdout)
    assert summary["files"] == 4 * 8
    for scen in ("first", "unchanged", "changed"):
        assert set(summary["scenarios"][scen]) == {"legacy", "manifest", "rsync"}
    assert summary["scenarios"]["unchanged"]["manifest"]["ops"] <= 3
    assert summary["scenarios"]["first"]["manifest"]["files"] == 4 * 8
