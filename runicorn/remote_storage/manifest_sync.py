"""The seed's import path for :class:`ManifestSyncClient` (code: :mod:`runicorn.sync.client.manifest_client`)."""

from __future__ import annotations

from runicorn.sync.client.manifest_client import ManifestSyncClient

__all__ = ["ManifestSyncClient"]
