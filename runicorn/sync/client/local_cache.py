"""Where synced runs land locally: by default the storage root, so ``runicorn runs`` sees them."""

from __future__ import annotations

import os
from pathlib import Path

from runicorn.config import resolve_storage_root
from runicorn.errors import UnsafePathError
from runicorn.relpath import ensure_no_symlink_parents, validate_relpath

SYNC_DIR = ".runicorn-sync"
# Top-level names under the storage root that belong to the store itself (runicorn.store
# keeps blobs, manifests and its index under archive/, pinned artifacts under artifacts/).
# Runs from a server project with one of these names are skipped, never merged in.
RESERVED_TOP_LEVEL = frozenset({SYNC_DIR, ".runicorn", "archive", "artifacts"})


class CachePaths:
    """Where server paths land in the cache, checking each parent directory only once."""

    def __init__(self, cache: Path) -> None:
        self.cache = cache
        self._root = str(cache)
        self._checked: set[str] = set()
        self._memo: dict[str, Path] = {}

    def __call__(self, rel: str) -> Path:
        """Where ``rel`` lands in the cache, refusing paths that could leave it.

        Raises:
            UnsafePathError: absolute, ``..``, bookkeeping area, or through a symlink.
        """
        dest = self._memo.get(rel)
        if dest is not None:
            return dest
        validate_relpath(rel, what="server path")
        if rel.split("/", 1)[0] in RESERVED_TOP_LEVEL:
            raise UnsafePathError(f"server path {rel!r} targets the store's own directories")
        parent = rel.rpartition("/")[0]
        if parent not in self._checked:
            ensure_no_symlink_parents(self.cache, rel)
            while parent and parent not in self._checked:
                self._checked.add(parent)
                parent = parent.rpartition("/")[0]
        dest = Path(os.path.join(self._root, rel))
        self._memo[rel] = dest
        return dest


class LocalCacheManager:
    """The local cache directory: ``<root>/<project>/<experiment>/runs/<run_id>/``.

    Client bookkeeping (cursors, staging) lives under ``<root>/.runicorn-sync/``.
    """

    def __init__(self, root_dir: Path | str | os.PathLike[str] | None = None) -> None:
        self.root_dir = resolve_storage_root(root_dir)

    @property
    def sync_dir(self) -> Path:
        return self.root_dir / SYNC_DIR

    def ensure(self) -> Path:
        """Create the cache directory if needed and return it."""
        self.root_dir.mkdir(parents=True, exist_ok=True)
        return self.root_dir

    def run_dir(self, project: str, name: str, run_id: str) -> Path:
        """Local directory of one synced run."""
        return self.root_dir.joinpath(project, *name.split("/"), "runs", run_id)
