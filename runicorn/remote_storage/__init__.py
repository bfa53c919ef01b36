"""Syncing runs from remote servers over SFTP.

Imports are lazy so ``import runicorn`` never loads paramiko.
"""

from __future__ import annotations

from runicorn._lazy import lazy_attributes

__all__ = ["LocalCacheManager", "ManifestSyncClient", "MetadataSyncService"]

_LAZY = {
    "MetadataSyncService": "runicorn.remote_storage.service:MetadataSyncService",
    "LocalCacheManager": "runicorn.remote_storage.cache_manager:LocalCacheManager",
    "ManifestSyncClient": "runicorn.remote_storage.manifest_sync:ManifestSyncClient",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
