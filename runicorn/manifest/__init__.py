"""Sync manifests: what a server publishes so clients can sync runs incrementally."""

from __future__ import annotations

from runicorn.manifest.generator import ManifestGenerator
from runicorn.manifest.model import (
    ExperimentEntry,
    FileEntry,
    ManifestType,
    SyncManifest,
)
from runicorn.manifest.schema import validate_manifest_dict

__all__ = ["ExperimentEntry", "FileEntry", "ManifestGenerator", "ManifestType",
           "SyncManifest", "validate_manifest_dict"]
