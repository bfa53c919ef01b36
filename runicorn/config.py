"""Where the store lives: ``storage=`` argument, else ``$RUNICORN_DIR``, else ``~/.runicorn``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RUNICORN_DIR"
# Mode of the directories a new store creates (octal).  Private to the owner by default;
# a store shared by a group is created with e.g. RUNICORN_DIR_MODE=2770 (docs/permissions.md).
DIR_MODE_VAR = "RUNICORN_DIR_MODE"
DEFAULT_DIR_MODE = 0o700


def resolve_storage_root(storage: str | os.PathLike[str] | None = None) -> Path:
    """Return the absolute storage root for an optional explicit choice."""
    if storage is not None and str(storage) != "":
        return Path(storage).expanduser().absolute()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().absolute()
    return (Path.home() / ".runicorn").absolute()


def storage_root_origin(root: Path) -> str:
    """What chose ``root`` as the storage root, for messages: ``RUNICORN_DIR``, the default,
    or the ``storage=`` argument / ``--storage`` option."""
    env = os.environ.get(ENV_VAR)
    if env and Path(env).expanduser().absolute() == root:
        return f"set by {ENV_VAR}"
    if root == (Path.home() / ".runicorn").absolute():
        return f"the default; choose another with {ENV_VAR} or --storage"
    return "set by --storage / storage="


def new_store_dir_mode() -> int:
    """The mode for a new store's directories: ``$RUNICORN_DIR_MODE`` (octal), else 0700.

    Raises:
        RunicornError: the variable is not an octal mode that lets the owner in (rwx).
    """
    text = os.environ.get(DIR_MODE_VAR, "").strip()
    if not text:
        return DEFAULT_DIR_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777 or mode & 0o700 != 0o700:
        from runicorn.errors import RunicornError

        raise RunicornError(
            f"{DIR_MODE_VAR}={text!r} is not an octal directory mode giving the owner rwx (e.g. 700, 750, 2770)"
        )
    return mode


# How long gc keeps the bindings of a logged Runicorn.toml that has gone missing (a checkout
# of another branch, a project moved or deleted) before it lets their trees go.  A duration
# like ``30d``, ``12h`` or ``0``; ``runicorn gc --keep-missing-toml`` overrides it.
KEEP_MISSING_TOML_VAR = "RUNICORN_KEEP_MISSING_TOML"
DEFAULT_KEEP_MISSING_TOML = "30d"
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``30s``, ``15m``, ``2h``, ``7d`` or ``1w`` (a bare number is seconds).

    Raises:
        ValueError: anything else, or a negative duration.
    """
    t = text.strip().lower()
    scale = 1
    if t and t[-1] in _DURATION_UNITS:
        t, scale = t[:-1], _DURATION_UNITS[t[-1]]
    seconds = float(t) * scale
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(text)
    return seconds


def keep_missing_toml_seconds() -> float:
    """How long a missing Runicorn.toml keeps its bindings: ``$RUNICORN_KEEP_MISSING_TOML``
    (a duration), else 30 days.

    Raises:
        RunicornError: the variable is not a duration.
    """
    text = os.environ.get(KEEP_MISSING_TOML_VAR, "").strip() or DEFAULT_KEEP_MISSING_TOML
    try:
        return parse_duration(text)
    except ValueError:
        from runicorn.errors import RunicornError

        raise RunicornError(f"{KEEP_MISSING_TOML_VAR}={text!r} is not a duration like 30d, 12h or 0") from None
