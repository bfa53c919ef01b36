"""The content-addressed store: SHA-256 blobs, trees with manifests, refs, gc, verify.

Formats: ``schema/README.md``.  :class:`Store` is the interface; ``store.py`` lists its parts.

Layout under a storage root (``storage=`` > ``$RUNICORN_DIR`` > ``~/.runicorn``)::

    archive/index.sqlite3                 SQLite index (apsw, WAL)
    archive/blobs/<aa>/<sha256>           file contents, read-only
    archive/manifests/<aa>/<tree>.json    one manifest per tree
    archive/refs/<kind>/<name>.json       named roots that keep trees alive
    archive/tmp/                          per-writer staging on the same filesystem
"""

from runicorn.store.cache import open_store
from runicorn.store.layout import DEFAULT_GC_GRACE_SECONDS, BlobInfo, Ref
from runicorn.store.store import Store
from runicorn.store.tree import TreeEntry, compute_tree_id
from runicorn.store.walk import scan_directory, walk_files

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
