"""Where the store lives: ``storage=`` argument, else ``$RUNICORN_DIR``, else ``~/.runicorn``."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RUNICORN_DIR"


def resolve_storage_root(storage: str | os.PathLike[str] | None = None) -> Path:
    """Return the absolute storage root for an optional explicit choice."""
    if storage is not None and str(storage) != "":
        return Path(storage).expanduser().absolute()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser().absolute()
    return (Path.home() / ".runicorn").absolute()
