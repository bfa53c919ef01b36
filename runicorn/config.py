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

        raise RunicornError(f"{DIR_MODE_VAR}={text!r} is not an octal directory mode giving the owner "
                            "rwx (e.g. 700, 750, 2770)")
    return mode
