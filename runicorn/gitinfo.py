"""Git provenance of a workspace: commit, branch and dirty flag, when it is a git checkout.

Asked of the ``git`` program (never parsed by hand).  Absent git, a directory outside a
checkout, a repository without commits or any failure of ``git`` all give ``None``:
provenance is a note, and never fails the snapshot or run that records it.
"""

from __future__ import annotations

import os
import time
from typing import Any

GIT_TIMEOUT_S = 10.0


class GitQuery:
    """``git status`` of a checkout, started at once and read by :meth:`result`: a snapshot
    starts it before its own walk, so in a large checkout git's walk of the same files
    runs beside it instead of after it.  Its output goes to an unnamed temporary file,
    so a long listing (a dirty checkout) never stalls git on a full pipe."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import shutil
        import subprocess
        import tempfile

        self._proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None
        self._deadline = time.monotonic() + GIT_TIMEOUT_S
        git = shutil.which("git")
        if git is None:
            return
        env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")  # read only: take no index lock
        try:
            self._out = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                [git, "-C", os.fspath(path), "status", "--porcelain=v2", "--branch"],
                stdin=subprocess.DEVNULL,
                stdout=self._out,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except (OSError, subprocess.SubprocessError):
            self.close()

    def result(self) -> dict[str, Any] | None:
        """``{"commit": hex, "branch": name or None (detached), "dirty": bool}``, or None
        when there is no checkout, no commit, no ``git`` or git failed (or took longer
        than ``GIT_TIMEOUT_S`` from the start).  Raises nothing; the query is closed."""
        import subprocess

        try:
            if self._proc is None:
                return None
            try:
                code = self._proc.wait(timeout=max(0.0, self._deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return None
            if code != 0:
                return None
            self._out.seek(0)
            return parse_status(self._out.read().decode("utf-8", "replace"))
        except OSError:
            return None
        finally:
            self.close()

    def close(self) -> None:
        """Stop git if it still runs and release the output file (idempotent)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._out is not None:
            self._out.close()
            self._out = None


def parse_status(porcelain_v2: str) -> dict[str, Any] | None:
    """The provenance that ``git status --porcelain=v2 --branch`` output describes, or None
    when the repository has no commit yet.

    ``dirty`` is True when tracked files differ from the commit or untracked files that
    git does not ignore exist: either way the workspace is not the commit.
    """
    commit: str | None = None
    branch: str | None = None
    dirty = False
    for line in porcelain_v2.splitlines():
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


def git_provenance(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance (:meth:`GitQuery.result`) of the git checkout holding ``path``, or
    None when there is none (or ``git`` is not on PATH).  Raises nothing."""
    return GitQuery(path).result()


__all__ = ["GitQuery", "git_provenance", "parse_status"]
