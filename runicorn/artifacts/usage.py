"""``artifacts/usage.log`` lines and ``toml_usage`` keys: the TOML files that bind artifacts.

A path is written as itself, or as a JSON string when it could not be read back whole
(``schema/runicorn-toml.md``).  Recording a use is :func:`runicorn.artifacts.install.record_usage`.
"""

from __future__ import annotations

import json

USAGE_LOG = "usage.log"


def usage_key(toml_path: str) -> str:
    """How ``toml_usage.path`` holds a path: itself, or -- when it is not valid UTF-8 (a
    directory name in another encoding, held by lone surrogates) -- its JSON string, which
    starts with ``"`` where an absolute path starts with ``/``.  :func:`usage_path` inverts it."""
    try:
        toml_path.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(toml_path, ensure_ascii=True)
    return toml_path


def usage_path(key: str) -> str:
    """The path a ``toml_usage.path`` value stands for (see :func:`usage_key`)."""
    return (parse_usage_line(key) or key) if key.startswith('"') else key


def usage_line(toml_path: str) -> str:
    """One ``usage.log`` line for a path: the path itself, or -- when it holds a newline,
    a carriage return or a backslash, or starts with ``"`` -- a JSON string (ASCII-escaped),
    so every line is one whole path (``schema/runicorn-toml.md``)."""
    if "\n" in toml_path or "\r" in toml_path or "\\" in toml_path or toml_path.startswith('"'):
        return json.dumps(toml_path, ensure_ascii=True)
    return toml_path


def parse_usage_line(line: str) -> str | None:
    """The path a ``usage.log`` line records (see :func:`usage_line`); None for a line that
    is not one (torn, or a quoted line that is not a JSON string)."""
    if not line.startswith('"'):
        return line or None
    try:
        path = json.loads(line)
    except ValueError:
        return None
    return path if isinstance(path, str) and path else None


__all__ = ["USAGE_LOG", "usage_key", "usage_path", "usage_line", "parse_usage_line"]
