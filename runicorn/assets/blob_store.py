"""The seed's blob-store functions.

When ``blob_root`` is a store's ``<storage_root>/archive/blobs`` these go through that
store and its index (stats come from the index, not a directory walk).  Any other
directory is treated as a bare content-addressed folder with the same layout and the
same atomic write rules, but no index.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from runicorn.errors import BlobNotFoundError, UnsafePathError
from runicorn.fsutil import StagedFile, fsync_dir, publish_link
from runicorn.hashing import check_unchanged, copy_and_hash, is_sha256_hex


def _store_for(blob_root: Path) -> Any:
    """The indexed store owning ``blob_root``, or None for a bare blob folder."""
    blob_root = Path(blob_root).expanduser()
    if blob_root.name == "blobs" and blob_root.parent.name == "archive":
        from runicorn.store import open_store

        return open_store(blob_root.parent.parent)
    return None


def _check_sha(sha256: str) -> str:
    if not is_sha256_hex(sha256):
        raise UnsafePathError(f"{sha256!r} is not a lowercase sha256 hex digest")
    return sha256


def store_blob(src_path: Path, blob_root: Path) -> str:
    """Store a file by content; return its SHA-256.  Storing the same bytes again is a no-op.

    Raises:
        FileNotFoundError: ``src_path`` does not exist.
        ChangedWhileReadingError: the file changed while being read.
    """
    store = _store_for(blob_root)
    if store is not None:
        return store.ingest_file(src_path).sha256
    blob_root = Path(blob_root).expanduser()
    staging = blob_root / ".tmp"
    with open(src_path, "rb") as src, StagedFile(staging, mode=0o600) as staged:
        before = os.fstat(src.fileno())
        sha, _ = copy_and_hash(src, staged.file)
        check_unchanged(Path(src_path), before, src.fileno())
        staged.finish(fsync=True, mode=0o444)
        dest = get_blob_path(sha, blob_root)
        if publish_link(staged.path, dest):
            fsync_dir(dest.parent)
    return sha


def get_blob_path(sha256: str, blob_root: Path) -> Path:
    """Where the blob with this hash lives under ``blob_root`` (``<sha[:2]>/<sha>``).

    Raises:
        UnsafePathError: ``sha256`` is not a hex digest.
    """
    _check_sha(sha256)
    return Path(blob_root).expanduser() / sha256[:2] / sha256


def blob_exists(sha256: str, blob_root: Path) -> bool:
    """True if the blob is stored (per the index for an indexed store)."""
    if not is_sha256_hex(sha256):
        return False
    store = _store_for(blob_root)
    if store is not None:
        return store.has_blob(sha256) and store.blob_path(sha256).exists()
    return get_blob_path(sha256, blob_root).is_file()


def read_blob(sha256: str, blob_root: Path) -> bytes:
    """The bytes of a stored blob, checked against its name (and, in an indexed store,
    the size the index records).

    Raises:
        BlobNotFoundError: no such blob.
        DamagedBlobError: the file's size or hash differs (truncated or altered).
    """
    from runicorn.store.reader import read_checked

    path = get_blob_path(sha256, blob_root)
    store = _store_for(blob_root)
    size = None
    if store is not None:
        try:
            size = store.blob_size(sha256)
        except BlobNotFoundError:
            pass  # not indexed: checked against its name only
    try:
        return read_checked(path, sha256, None if size is None else int(size))
    except BlobNotFoundError:
        raise BlobNotFoundError(f"blob {sha256} not found under {blob_root}") from None


def get_blob_stats(blob_root: Path) -> dict[str, int]:
    """``{"blob_count", "total_size_bytes"}`` (from the index for an indexed store)."""
    store = _store_for(blob_root)
    if store is not None:
        stats = store.stats()
        return {"blob_count": stats["blob_count"], "total_size_bytes": stats["total_size_bytes"]}
    count = total = 0
    root = Path(blob_root).expanduser()
    if root.is_dir():
        for sub in root.iterdir():
            if sub.is_dir() and len(sub.name) == 2:
                for f in sub.iterdir():
                    if is_sha256_hex(f.name):
                        count += 1
                        total += f.stat().st_size
    return {"blob_count": count, "total_size_bytes": total}


__all__ = ["store_blob", "get_blob_path", "blob_exists", "read_blob", "get_blob_stats"]
