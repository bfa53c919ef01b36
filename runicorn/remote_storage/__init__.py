"""Syncing runs from remote servers over SFTP.

Imports are lazy so ``import runicorn`` never loads paramiko.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LocalCacheManager", "ManifestSyncClient", "MetadataSyncService"]

_LAZY = {
    "MetadataSyncService": "runicorn.remote_storage.service",
    "LocalCacheManager": "runicorn.remote_storage.cache_manager",
    "ManifestSyncClient": "runicorn.remote_storage.manifest_sync",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'runicorn.remote_storage' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
