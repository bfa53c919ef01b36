"""The seed's import path for the run sync client; the code lives in :mod:`runicorn.sync.client`.

Imports are lazy so ``import runicorn`` never loads paramiko.
"""

from __future__ import annotations

from runicorn._lazy import lazy_attributes

__all__ = ["LocalCacheManager", "ManifestSyncClient", "MetadataSyncService"]

_LAZY = {
    "MetadataSyncService": "runicorn.sync.client.service:RunSyncService",
    "LocalCacheManager": "runicorn.sync.client.local_cache:LocalCacheManager",
    "ManifestSyncClient": "runicorn.sync.client.manifest_client:ManifestSyncClient",
}


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)
