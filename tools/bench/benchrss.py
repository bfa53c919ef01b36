"""Run a benchmark's command and measure its peak RSS.

``run_rss(cmd)`` runs ``cmd`` under GNU ``time`` (``/usr/bin/time``) and returns its
standard output with the peak resident set in KiB (``%M``: the largest of the command
and the children it waited for; a shell pipeline's largest member).  Not ``wait4``
from the benchmark itself: a child inherits the high-water mark of the process it was
forked from, so every figure would be at least the benchmark's own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

TIME = "/usr/bin/time"


@dataclass
class Proc:
    """What a finished command left: its standard output and its peak RSS (KiB)."""

    out: str
    rss_kib: int


def require_tools(*tools: str) -> None:
    """Exit with a one-line message naming the first missing tool."""
    for tool in (TIME, *tools):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: the benchmark needs it (apt-get install time git zip)")


def run_rss(
    cmd: list[str] | str, *, cwd: Path | None = None, shell: bool = False, env: dict[str, str] | None = None
) -> Proc:
    """Run ``cmd`` (a shell command line with ``shell``); exit naming it on failure."""
    argv = ["sh", "-c", cmd] if shell and isinstance(cmd, str) else list(cmd)
    with tempfile.NamedTemporaryFile(mode="r") as rss:
        proc = subprocess.run(
            [TIME, "-q", "-f", "%M", "-o", rss.name, *argv],
            cwd=cwd,
            env=os.environ if env is None else env,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {cmd}\n{proc.stdout}\n{proc.stderr}")
        return Proc(proc.stdout, int(rss.read().split()[-1]))
