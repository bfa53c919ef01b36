"""The per-process open stores: one shared :class:`~runicorn.store.store.Store` per storage
root and process, closed at exit."""

from __future__ import annotations

import os
import threading

from runicorn.config import resolve_storage_root
from runicorn.store.store import Store

_open_stores: dict[tuple[str, int], Store] = {}
_open_lock = threading.Lock()


def open_store(storage: str | os.PathLike[str] | None = None) -> Store:
    """A per-process shared :class:`Store` for a storage root (closed at exit)."""
    root = resolve_storage_root(storage)
    key = (str(root), os.getpid())
    with _open_lock:
        store = _open_stores.get(key)
        if store is None:
            store = Store(root)
            if not _open_stores:
                import atexit

                atexit.register(_close_all)
            _open_stores[key] = store
        return store


def _close_all() -> None:
    for (root, pid), store in list(_open_stores.items()):
        if pid == os.getpid():
            try:
                store.close()
            except Exception:
                pass
    _open_stores.clear()


def forget_open_stores() -> None:
    """Drop cached stores (tests that delete a storage root call this)."""
    _close_all()
