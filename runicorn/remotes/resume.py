"""Durable records of unfinished large uploads, so an interrupted push resumes where it stopped.

One JSON file per (remote, blob) in the local store,
``archive/remote-uploads/<sha256(remote identity)[:32]>/<blob sha256>.json``, written
atomically (:func:`runicorn.fsutil.atomic_write_json`) after every part the remote
confirmed, and removed once the blob is published.  S3 records the multipart ``upload_id``
and each part's ETag and SHA-256; file and SFTP remotes the staged partial file's name and
the length written and fsynced there.  A record is a cache: a damaged or outdated one only
means the upload starts again.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

from runicorn.hashing import is_sha256_hex, sha256_bytes

FORMAT_VERSION = 1
DEFAULT_PART_SIZE = 16 << 20
MIN_PART_SIZE = 5 << 20  # S3's smallest part (but the last)


def part_size() -> int:
    """Bytes per part (S3) or per fsynced checkpoint (file, sftp): ``$RUNICORN_REMOTE_PART_SIZE``
    (at least 5 MiB), default 16 MiB.  Blobs larger than one part go this way."""
    try:
        size = int(os.environ.get("RUNICORN_REMOTE_PART_SIZE", DEFAULT_PART_SIZE))
    except ValueError:
        size = DEFAULT_PART_SIZE
    return max(MIN_PART_SIZE, size)


class Resume:
    """The upload record of blob ``sha`` to one remote."""

    def __init__(self, store_archive: Path, remote_identity: str, sha: str) -> None:
        assert is_sha256_hex(sha)
        rid = sha256_bytes(remote_identity.encode())[:32]
        self.dir = Path(store_archive) / "remote-uploads" / rid
        self.path = self.dir / f"{sha}.json"
        self.sha = sha

    def load(self, **expect: Any) -> dict[str, Any] | None:
        """The record, or None when there is none, it is damaged, or a field differs from ``expect``."""
        try:
            rec = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("format_version") != FORMAT_VERSION:
            return None
        if any(rec.get(k) != v for k, v in expect.items()):
            return None
        return rec

    def save(self, rec: dict[str, Any]) -> None:
        """Write the record atomically and durably (stage, fsync, rename)."""
        from runicorn.fsutil import atomic_write_json

        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path, {**rec, "format_version": FORMAT_VERSION})

    def clear(self) -> None:
        for path in (self.path, self.dir / f"{self.sha}.lock"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """An exclusive flock for this upload; yields False when another process of this
        store is uploading the same blob to the same remote (then it is not resumed: the
        upload goes apart, as a fresh one)."""
        from runicorn.fsutil import open_locked

        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(open_locked(self.dir / f"{self.sha}.lock", blocking=False))
                mine = True
            except BlockingIOError:
                mine = False
            yield mine
