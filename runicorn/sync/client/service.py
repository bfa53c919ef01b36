"""``RunSyncService`` (the seed's ``MetadataSyncService``): sync every run of a server, from its
sync manifest first, by walking its directories when that is impossible."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from runicorn.errors import RunicornError
from runicorn.sync.client.local_cache import LocalCacheManager
from runicorn.sync.client.report import SyncError

log = logging.getLogger(__name__)


@dataclass
class SyncProgress:
    """What the last ``sync_all`` did."""

    synced_files: int = 0
    synced_bytes: int = 0
    failed_files: int = 0
    method: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


class RunSyncService:
    """Sync every run of a remote root into a :class:`LocalCacheManager`'s directory."""

    def __init__(
        self,
        ssh_session: Any,
        sftp_client: Any,
        remote_root: str,
        cache_manager: LocalCacheManager,
        use_manifest_sync: bool = True,
        manifest_sync_jitter: float = 5.0,
    ) -> None:
        self.ssh_session = ssh_session
        self.sftp_client = sftp_client
        self.remote_root = remote_root
        self.cache_manager = cache_manager
        self.use_manifest_sync = use_manifest_sync
        self.manifest_sync_jitter = manifest_sync_jitter
        self.progress = SyncProgress()
        self.max_workers: int | None = None

    def run(self, progress_callback: Any = None) -> dict[str, Any]:
        """Sync and return the statistics of the method that ran.

        Falls back to the legacy walk when the manifest is missing, unreadable, invalid
        or hostile.  Raises SyncError (another sync running, disk too small) as is.
        """
        from runicorn.sync.client.walk_client import WalkSyncClient
        from runicorn.sync.client.manifest_client import ManifestSyncClient

        cache = self.cache_manager.ensure()
        stats: dict[str, Any] | None = None
        if self.use_manifest_sync:
            client = ManifestSyncClient(self.sftp_client, self.remote_root, cache, jitter_max=self.manifest_sync_jitter)
            if self.max_workers:
                client.MAX_WORKERS = self.max_workers
            try:
                stats = client.sync(progress_callback)
            except SyncError:
                raise
            except EOFError as exc:
                raise SyncError(f"connection to the server failed: {exc}") from exc
            except (OSError, ValueError, RunicornError) as exc:
                log.warning("manifest sync unavailable (%s); falling back to legacy sync", exc)
                fallback_reason = str(exc)
            else:
                fallback_reason = ""
        if stats is None:
            import paramiko

            try:
                stats = WalkSyncClient(self.sftp_client, self.remote_root, cache).sync(progress_callback)
            except (paramiko.SSHException, EOFError) as exc:
                raise SyncError(f"connection to the server failed: {exc}") from exc
            if self.use_manifest_sync:
                stats["reason"] = f"fallback: {fallback_reason}"
        self.progress = SyncProgress(
            synced_files=stats["files_synced"],
            synced_bytes=stats["bytes_downloaded"],
            failed_files=stats["failed_count"],
            method=stats["method"],
            stats=stats,
        )
        return stats

    def sync_all(self) -> bool:
        """Sync everything; True when every file arrived."""
        try:
            stats = self.run()
        except (OSError, RunicornError) as exc:
            log.error("sync failed: %s", exc)
            return False
        return stats["failed_count"] == 0
