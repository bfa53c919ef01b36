"""Where synced runs land locally: by default the storage root, so ``runicorn runs`` sees them."""

from __future__ import annotations

import os
from pathlib import Path

from runicorn.config import resolve_storage_root
from runicorn.sync.client.transfer import SYNC_DIR


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
