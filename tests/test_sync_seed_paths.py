"""The seed's import paths for run sync keep working as thin facades over runicorn.sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_seed_import_paths_name_the_sync_package_objects() -> None:
    from runicorn.manifest import ManifestGenerator, ManifestType
    from runicorn.remote_storage import MetadataSyncService
    from runicorn.remote_storage.cache_manager import LocalCacheManager
    from runicorn.remote_storage.manifest_sync import ManifestSyncClient
    from runicorn.sync.client.local_cache import LocalCacheManager as Cache
    from runicorn.sync.client.manifest_client import ManifestSyncClient as Client
    from runicorn.sync.client.service import RunSyncService as Service
    from runicorn.sync.manifest import ManifestType as Type
    from runicorn.sync.server.generator import ManifestGenerator as Generator

    assert (ManifestGenerator, ManifestType, MetadataSyncService, LocalCacheManager, ManifestSyncClient) == (
        Generator,
        Type,
        Service,
        Cache,
        Client,
    )


def test_seed_import_paths_do_not_load_paramiko() -> None:
    code = (
        "import sys; from runicorn.manifest import ManifestGenerator, ManifestType;"
        "from runicorn.remote_storage import MetadataSyncService;"
        "from runicorn.remote_storage.cache_manager import LocalCacheManager;"
        "from runicorn.remote_storage.manifest_sync import ManifestSyncClient;"
        "print('paramiko' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
        env=dict(os.environ),
    ).stdout
    assert out.strip() == "False"
