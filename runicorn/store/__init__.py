"""The content-addressed store: SHA-256 blobs, trees with manifests, refs, gc, verify.

Formats: ``schema/README.md``.  :class:`Store` is the interface; ``store.py`` lists its parts.
Importing the package is light (its names load on first use), so a feature can register
its extension (:mod:`runicorn.store.extensions`) without loading the store.

Layout under a storage root (``storage=`` > ``$RUNICORN_DIR`` > ``~/.runicorn``)::

    archive/index.sqlite3                 SQLite index (apsw, WAL)
    archive/blobs/<aa>/<sha256>           file contents, read-only
    archive/manifests/<aa>/<tree>.json    one manifest per tree
    archive/refs/<kind>/<name>.json       named roots that keep trees alive
    archive/tmp/                          per-writer staging on the same filesystem
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runicorn._lazy import lazy_attributes

if TYPE_CHECKING:
    from runicorn.store.cache import open_store as open_store
    from runicorn.store.layout import DEFAULT_GC_GRACE_SECONDS as DEFAULT_GC_GRACE_SECONDS
    from runicorn.store.layout import BlobInfo as BlobInfo
    from runicorn.store.layout import Ref as Ref
    from runicorn.store.store import Store as Store
    from runicorn.store.tree_format import TreeEntry as TreeEntry
    from runicorn.store.tree_format import compute_tree_id as compute_tree_id
    from runicorn.store.walk import scan_directory as scan_directory
    from runicorn.store.walk import walk_files as walk_files

_LAZY: dict[str, str] = {
    "DEFAULT_GC_GRACE_SECONDS": "runicorn.store.layout:DEFAULT_GC_GRACE_SECONDS",
    "BlobInfo": "runicorn.store.layout:BlobInfo",
    "Ref": "runicorn.store.layout:Ref",
    "Store": "runicorn.store.store:Store",
    "TreeEntry": "runicorn.store.tree_format:TreeEntry",
    "compute_tree_id": "runicorn.store.tree_format:compute_tree_id",
    "open_store": "runicorn.store.cache:open_store",
    "scan_directory": "runicorn.store.walk:scan_directory",
    "walk_files": "runicorn.store.walk:walk_files",
}

__getattr__, __dir__ = lazy_attributes(__name__, globals(), _LAZY)

__all__ = [
    "DEFAULT_GC_GRACE_SECONDS",
    "BlobInfo",
    "Ref",
    "Store",
    "TreeEntry",
    "compute_tree_id",
    "open_store",
    "scan_directory",
    "walk_files",
]
