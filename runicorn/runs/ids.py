"""The run-id rule, in one place: runs, the sync manifest generator, its validator and sync use it.

A run id is one safe path component: an ASCII letter or digit, then up to 127 letters,
digits, ``.``, ``_`` or ``-`` (``20250115_103015_abc123``).  Matched against the whole
string (``\\Z``, never ``$``, which would also accept a trailing newline).
"""

from __future__ import annotations

import re

RUN_ID_MAX_LEN = 128
RUN_ID_RE = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX_LEN - 1}}}\Z")


def valid_run_id(run_id: object) -> bool:
    """True for a string that follows the run-id rule (``"abc\\n"``, ``".."``, ``""`` do not)."""
    return isinstance(run_id, str) and RUN_ID_RE.match(run_id) is not None


__all__ = ["RUN_ID_MAX_LEN", "RUN_ID_RE", "valid_run_id"]
