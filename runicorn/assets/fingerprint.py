"""File fingerprints (SHA-256), as in the assets guide."""

from __future__ import annotations

from pathlib import Path

from runicorn.hashing import sha256_file as _sha256_file


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes (equal to what ``sha256sum`` prints)."""
    return _sha256_file(path)


__all__ = ["sha256_file"]
