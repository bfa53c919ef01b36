"""The seed's import path for the sync manifest generator; the code lives in :mod:`runicorn.sync`."""

from __future__ import annotations

from runicorn.sync.server.generator import ManifestGenerator
from runicorn.sync.manifest import (
    ExperimentEntry,
    FileEntry,
    ManifestType,
    SyncManifest,
)
from runicorn.sync.manifest_schema import validate_manifest_dict

__all__ = [
    "ExperimentEntry",
    "FileEntry",
    "ManifestGenerator",
    "ManifestType",
    "SyncManifest",
    "validate_manifest_dict",
]
