"""Getting a stored tree out other than by restoring it: as a zip, or one file's blob."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from runicorn.errors import BlobNotFoundError, DamagedBlobError
from runicorn.restore.source import blob_file, missing_blobs, read_manifest


def export_manifest_to_zip(manifest_path: Path, blob_root: Path, zip_path: Path) -> dict[str, Any]:
    """Write the tree a manifest describes to a zip (atomically), from the blobs.

    Returns ``success``, ``exported_count``, ``zip_path``, ``missing_blobs``, ``total_bytes``.
    When blobs are missing nothing is written.  Every blob is checked while it is
    streamed into the zip: its size, then its hash.

    Raises:
        FileNotFoundError / CorruptManifestError: the manifest is missing or invalid.
        DamagedBlobError (an IntegrityError): a blob is truncated, grown or altered,
            naming the blob and the file; no zip is written (an existing one is kept).
    """
    from runicorn.treezip import write_zip

    manifest, entries = read_manifest(manifest_path, blob_root)
    blob_root = Path(blob_root).expanduser()
    zip_path = Path(zip_path).expanduser().absolute()
    result: dict[str, Any] = {
        "success": False,
        "exported_count": 0,
        "zip_path": str(zip_path),
        "missing_blobs": [],
        "tree": manifest["tree"],
        "total_bytes": 0,
    }
    missing = missing_blobs(blob_root, entries)
    if missing:
        result["missing_blobs"] = missing
        result["errors"] = [f"{len(missing)} blob(s) missing from {blob_root}; no zip was written"]
        return result
    try:
        write_zip(lambda sha: blob_file(blob_root, sha), entries, zip_path)
    except DamagedBlobError as exc:
        raise DamagedBlobError(
            f"{exc}; {zip_path} was not written", sha256=exc.sha256, path=exc.path, what=exc.what
        ) from None
    result.update(success=True, exported_count=len(entries), total_bytes=sum(e.size for e in entries.values()))
    return result


def get_file_from_manifest(manifest_path: Path, blob_root: Path, rel_path: str) -> Path:
    """The blob file holding ``rel_path`` of the tree (read-only; copy it to modify).

    The blob's size is checked against the manifest (its bytes are not read here).

    Raises:
        FileNotFoundError: ``rel_path`` is not in the manifest (naming both).
        BlobNotFoundError: the path is listed but its blob is missing.
        DamagedBlobError (an IntegrityError): the blob's size differs from the manifest's.
        CorruptManifestError: the manifest is invalid.
    """
    from runicorn.store.reader import check_blob_file

    _, entries = read_manifest(manifest_path, blob_root)
    entry = entries.get(str(rel_path).replace(os.sep, "/"))
    if entry is None:
        raise FileNotFoundError(errno.ENOENT, f"{rel_path!r} is not in manifest {manifest_path}", str(rel_path))
    blob = blob_file(Path(blob_root).expanduser(), entry.sha256)
    try:
        check_blob_file(blob, entry.sha256, entry.size, f"{rel_path!r} of {manifest_path}")
    except BlobNotFoundError:
        raise BlobNotFoundError(
            f"{rel_path!r} of {manifest_path}: blob {entry.sha256} is missing from {blob_root}"
        ) from None
    return blob


__all__ = ["export_manifest_to_zip", "get_file_from_manifest"]
