"""The README's first command: the quickstart runs end to end as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_quickstart_runs_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "RUNICORN_DIR": str(tmp_path / "must-not-be-used")}
    out = subprocess.run(
        [sys.executable, "-m", "runicorn", "quickstart", "--keep", str(tmp_path / "qs")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "quickstart finished: all steps passed" in out.stdout
    assert not (tmp_path / "must-not-be-used").exists(), "the tour uses its own store"
