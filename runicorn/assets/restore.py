"""The seed's restore functions; the restore engine is :mod:`runicorn.restore`."""

from __future__ import annotations

from runicorn.restore.engine import restore_from_manifest
from runicorn.restore.export import export_manifest_to_zip, get_file_from_manifest
from runicorn.restore.source import load_manifest

__all__ = ["load_manifest", "restore_from_manifest", "export_manifest_to_zip", "get_file_from_manifest"]
