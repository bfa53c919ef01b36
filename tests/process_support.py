"""Finding a command's worker processes (runicorn.worker_processes) from a test."""

from __future__ import annotations

import os
from pathlib import Path


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def worker_children(pid: int) -> list[int]:
    """The worker processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            if parent == pid and b"from runicorn.worker_processes import main" in _cmdline(entry):
                found.append(int(entry))
    return found
