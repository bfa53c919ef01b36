"""The one place that hashes: SHA-256 of files and streams, with copy in the same pass.

``hashlib`` is imported inside the functions that hash, so the hex-id checks here cost
nothing on the light ``artifact()`` path (which validates ids but never hashes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from runicorn.errors import ChangedWhileReadingError

if TYPE_CHECKING:
    import hashlib

CHUNK = 1 << 20  # 1 MiB: constant memory for any file size
SHA256_HEX_LEN = 64
SHA1_HEX_LEN = 40
_HEX = frozenset("0123456789abcdef")


def is_sha256_hex(value: object) -> bool:
    """True for a 64-character lowercase hex string (no trailing newline or anything else)."""
    return isinstance(value, str) and len(value) == SHA256_HEX_LEN and set(value) <= _HEX


def is_sha1_hex(value: object) -> bool:
    """True for a 40-character lowercase hex string (a git object id)."""
    return isinstance(value, str) and len(value) == SHA1_HEX_LEN and set(value) <= _HEX


def is_tree_id(value: object) -> bool:
    """True for an artifact tree id: a ``tree-sha256`` (64 hex) or ``git-tree-sha1`` (40 hex)."""
    return is_sha256_hex(value) or is_sha1_hex(value)


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sha256_digest(data: bytes) -> bytes:
    """Raw 32-byte SHA-256 of ``data`` (S3's ``ChecksumSHA256`` is its base64)."""
    import hashlib

    return hashlib.sha256(data).digest()


def sha256_file(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes (what ``sha256sum`` prints)."""
    import hashlib

    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def copy_and_hash(src: IO[bytes], dst: IO[bytes] | None) -> tuple[str, int]:
    """Stream ``src`` into ``dst`` (if given) while hashing; return (sha256, size)."""
    import hashlib

    h = hashlib.sha256()
    total = _feed(h, src, dst)
    return h.hexdigest(), total


def sha256_resume(src: IO[bytes]) -> "hashlib._Hash":
    """An incremental SHA-256 already fed with everything readable from ``src`` (the
    prefix a resumed download continues from)."""
    h = new_sha256()
    _feed(h, src, None)
    return h


def _feed(h: Any, src: IO[bytes], dst: IO[bytes] | None) -> int:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    readinto = src.readinto  # type: ignore[attr-defined]
    write = dst.write if dst is not None else None
    while True:
        n = readinto(buf)
        if not n:
            break
        chunk = view[:n]
        h.update(chunk)
        if write is not None:
            write(chunk)
        total += n
    return total


def check_unchanged(path: Path, before: os.stat_result, fd: int) -> None:
    """Raise if a file's size or mtime changed while it was read.

    Raises:
        ChangedWhileReadingError: naming the file.
    """
    after = os.fstat(fd)
    if after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
        raise changed_while_reading(path, before, after)


def changed_while_reading(path: Path | str, before: os.stat_result, after: os.stat_result) -> ChangedWhileReadingError:
    """The error for a file whose size or mtime moved between ``before`` and ``after``."""
    return ChangedWhileReadingError(
        f"{path}: file changed while it was being read "
        f"(size {before.st_size}->{after.st_size}, mtime_ns {before.st_mtime_ns}->{after.st_mtime_ns})"
    )


class GitBlobHasher:
    """Incremental git blob id: SHA-1 of ``b"blob <size>\\0"`` followed by the bytes.

    The size must be known up front (archives and stat give it).
    """

    __slots__ = ("_h",)

    def __init__(self, size: int) -> None:
        import hashlib

        self._h = hashlib.sha1(b"blob %d\x00" % size, usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def git_blob_sha1_bytes(data: bytes) -> str:
    """The git blob id of ``data`` (what ``git hash-object`` prints)."""
    h = GitBlobHasher(len(data))
    h.update(data)
    return h.hexdigest()


def git_blob_sha1_file(path: Path | str) -> str:
    """The git blob id of a regular file's bytes, streamed."""
    with open(path, "rb") as f:
        h = GitBlobHasher(os.fstat(f.fileno()).st_size)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def git_tree_object_sha1(body: bytes) -> bytes:
    """Raw 20-byte id of a git tree object with ``body`` (``"tree <len>\\0" + body``)."""
    import hashlib

    return hashlib.sha1(b"tree %d\x00" % len(body) + body, usedforsecurity=False).digest()


def new_sha256() -> "hashlib._Hash":
    """An incremental SHA-256 (for hashing while streaming a download)."""
    import hashlib

    return hashlib.sha256()
