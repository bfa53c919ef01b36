"""The seed's import path for :class:`LocalCacheManager` (code: :mod:`runicorn.sync.client.local_cache`)."""

from __future__ import annotations

from runicorn.sync.client.local_cache import LocalCacheManager

__all__ = ["LocalCacheManager"]
