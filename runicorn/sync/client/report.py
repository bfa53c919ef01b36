"""What every sync reports: its statistics (the seed's keys) and the errors it raises."""

from __future__ import annotations

from typing import Any

from runicorn.errors import RunicornError


class SyncError(RunicornError):
    """A sync could not run (lock held, disk full, unusable cache)."""


class FileChangedError(RunicornError):
    """A server file no longer matches what the manifest says about it."""


def sync_stats(method: str, **kw: Any) -> dict[str, Any]:
    """The statistics every sync returns (the seed's keys), zeroed, updated with ``kw``."""
    stats: dict[str, Any] = {
        "files_synced": 0,
        "bytes_downloaded": 0,
        "incremental_count": 0,
        "full_count": 0,
        "failed_count": 0,
        "duration": 0.0,
        "manifest_revision": None,
        "skipped": False,
        "reason": "",
        "sftp_requests": 0,
        "sftp_wire_requests": 0,
        "files_deleted": 0,
        "files_unchanged": 0,
        "manifest_bytes": 0,
        "method": method,
        "conflicts": [],  # runs and files left alone because sync did not write them
    }
    stats.update(kw)
    return stats
