"""What a restore reads: a tree manifest and the blob folder it names blobs in."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from runicorn.errors import UnsafePathError
from runicorn.hashing import is_sha256_hex
from runicorn.store.tree_format import ManifestEntries, PageLoader, TreeEntry, open_manifest, parse_manifest
from runicorn.store.trees import page_loader


def read_manifest(
    manifest_path: Path, blob_root: Path | None = None, *, with_files: bool = False
) -> tuple[dict[str, Any], dict[str, TreeEntry]]:
    """Read and validate a manifest of either version: its header (with ``files`` of a
    version-2 manifest only when ``with_files``; a version-1 manifest has them) and its
    entries.  A version-2 manifest's pages are read from ``blob_root`` (a store keeps
    them among its blobs), else from the blob folder of the store the manifest lies in
    (``archive/blobs``).

    Raises:
        FileNotFoundError: no such file.
        CorruptManifestError: not a valid manifest, or a page missing or damaged.
    """
    data, path, load = _manifest_source(manifest_path, blob_root)
    return parse_manifest(data, origin=path, load_page=load, with_files=with_files)


def open_manifest_file(manifest_path: Path, blob_root: Path | None = None) -> tuple[dict[str, Any], ManifestEntries]:
    """:func:`read_manifest`, the entries left to be read through the object returned
    (:func:`runicorn.store.tree_format.open_manifest`).

    Raises:
        FileNotFoundError: no such file.
        CorruptManifestError: not a valid manifest (what its header shows).
    """
    data, path, load = _manifest_source(manifest_path, blob_root)
    return open_manifest(data, origin=path, load_page=load)


def _manifest_source(manifest_path: Path, blob_root: Path | None) -> tuple[bytes, Path, PageLoader | None]:
    """A manifest's bytes, its path and the reader of the pages it names."""
    path = Path(manifest_path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "manifest not found", str(path)) from None
    if blob_root is None:  # the store's layout (or the seed's flat manifests/ folder)
        for archive in (path.parent.parent.parent, path.parent.parent):
            if path.parent.name == "manifests" or path.parent.parent.name == "manifests":
                if (archive / "blobs").is_dir():
                    blob_root = archive / "blobs"
                    break
    load = page_loader(Path(blob_root).expanduser()) if blob_root is not None else None
    return data, path, load


def load_manifest(manifest_path: Path) -> dict[str, Any]:
    """Read and validate a manifest; return it (``manifest["files"]`` maps path -> entry).

    Raises:
        FileNotFoundError: no such file.
        CorruptManifestError: not a valid manifest (bad JSON, bad path, wrong tree id).
    """
    return read_manifest(manifest_path, with_files=True)[0]


def blob_file(blob_root: Path, sha: str) -> Path:
    if not is_sha256_hex(sha):
        raise UnsafePathError(f"{sha!r} is not a sha256 hex digest")
    return blob_root / sha[:2] / sha


def missing_blobs(blob_root: Path, entries: dict[str, TreeEntry]) -> list[str]:
    return sorted({e.sha256 for e in entries.values() if not os.path.isfile(blob_file(blob_root, e.sha256))})


def store_root_of(blob_root: Path) -> Path:
    return blob_root.parent.parent if blob_root.name == "blobs" and blob_root.parent.name == "archive" else blob_root


__all__ = ["read_manifest", "open_manifest_file", "load_manifest", "blob_file", "missing_blobs", "store_root_of"]
