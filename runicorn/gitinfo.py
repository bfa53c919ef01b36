"""Git provenance of a workspace: commit, branch and dirty flag, when it is a git checkout.

Asked of the ``git`` program (never parsed by hand).  Absent git, a directory outside a
checkout, a repository without commits or any failure of ``git`` all give ``None``:
provenance is a note, and never fails the snapshot or run that records it.
"""

from __future__ import annotations

import os
from typing import Any

GIT_TIMEOUT_S = 10.0


def git_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """``{"commit": hex, "branch": name or None (detached), "dirty": bool}`` of the git
    checkout holding ``path``, or None when there is none (or ``git`` is not on PATH).

    ``dirty`` is True when tracked files differ from the commit or untracked files that
    git does not ignore exist: either way the workspace is not the commit.  Raises nothing.
    """
    import shutil
    import subprocess

    git = shutil.which("git")
    if git is None:
        return None
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")  # read only: take no index lock
    try:
        out = subprocess.run(
            [git, "-C", os.fspath(path), "status", "--porcelain=v2", "--branch"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            env=env,
            stdin=subprocess.DEVNULL,
            errors="replace",
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit: str | None = None
    branch: str | None = None
    dirty = False
    for line in out.stdout.splitlines():
        if line.startswith("# branch.oid "):
            oid = line.split(" ", 2)[2].strip()
            commit = oid if oid != "(initial)" else None
        elif line.startswith("# branch.head "):
            head = line.split(" ", 2)[2].strip()
            branch = None if head == "(detached)" else head
        elif line and not line.startswith("#"):
            dirty = True
    if commit is None:
        return None  # no commit to name yet
    return {"commit": commit, "branch": branch, "dirty": dirty}


__all__ = ["git_provenance"]
