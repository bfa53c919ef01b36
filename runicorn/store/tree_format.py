"""Tree ids and manifests: the on-disk description of one captured directory.

Tree id (``tree-sha256``, see ``schema/tree-id.md``): for every regular file and
symlink below the root, the line ``"<mode> <sha256> <path>\\n"``; lines sorted by the
path's UTF-8 bytes; the id is SHA-256 of ``b"runicorn-tree-v1\\n"`` + the lines.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.hashing import is_sha256_hex
from runicorn.relpath import validate_relpath

TREE_HEADER = b"runicorn-tree-v1\n"
MANIFEST_FORMAT = "runicorn.manifest"
MANIFEST_VERSION = 1
MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_LINK = "120000"
MODES = frozenset({MODE_FILE, MODE_EXEC, MODE_LINK})
MAX_LINK_TARGET_BYTES = 4095  # PATH_MAX less its NUL


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One file of a tree: its blob, git-style mode string and size in bytes."""

    sha256: str
    mode: str
    size: int


def path_key(path: str) -> bytes:
    """Sort key: the path's UTF-8 bytes (undecodable names survive via surrogateescape)."""
    return path.encode("utf-8", "surrogateescape")


def coerce_entry(path: str, value: Any) -> TreeEntry:
    """Validate one ``relpath -> entry`` item; accepts TreeEntry, tuple or manifest dict.

    Raises:
        UnsafePathError: bad path.
        ValueError: bad hash, mode or size (a symlink's target must be 1 to 4095 bytes).
    """
    validate_relpath(path, what="tree path")
    if isinstance(value, TreeEntry):
        entry = value
    elif isinstance(value, Mapping):
        entry = TreeEntry(value["sha256"], str(value["mode"]), value["size_bytes"])
    else:
        sha, mode, size = value
        entry = TreeEntry(sha, str(mode), size)
    if not is_sha256_hex(entry.sha256):
        raise ValueError(f"tree path {path!r}: {entry.sha256!r} is not a sha256 hex digest")
    if entry.mode not in MODES:
        raise ValueError(f"tree path {path!r}: mode {entry.mode!r} is not one of {sorted(MODES)}")
    if not isinstance(entry.size, int) or isinstance(entry.size, bool) or entry.size < 0:
        raise ValueError(f"tree path {path!r}: size {entry.size!r} is not a non-negative integer")
    if entry.mode == MODE_LINK and not 0 < entry.size <= MAX_LINK_TARGET_BYTES:
        # What the OS can create: no empty link, no target longer than PATH_MAX.
        raise ValueError(
            f"tree path {path!r}: a symlink target of {entry.size} bytes (1 to {MAX_LINK_TARGET_BYTES} can be restored)"
        )
    return entry


def normalize_entries(entries: Mapping[str, Any]) -> dict[str, TreeEntry]:
    """Validate a mapping and return it sorted by path bytes (see :func:`coerce_entry`).

    Raises:
        UnsafePathError: a bad path, or a path below another entry (a directory cannot
            also be a file or a symlink, and nothing may be written through a link).
        ValueError: a bad hash, mode or size.
    """
    items = [(p, coerce_entry(p, v)) for p, v in entries.items()]
    items.sort(key=lambda item: path_key(item[0]))
    norm = dict(items)
    check_no_nesting(norm)
    return norm


def check_no_nesting(entries: Mapping[str, TreeEntry], origin: Any = "tree") -> None:
    """Refuse entries where a path lies below another entry (file or symlink).

    Raises:
        UnsafePathError: naming ``origin`` and both paths.
    """
    for rel in entries:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in entries:
                kind = "a symlink" if entries[prefix].mode == MODE_LINK else "a file"
                raise UnsafePathError(f"{origin}: path {rel!r} lies below {prefix!r}, which is {kind}")


def compute_tree_id(entries: Mapping[str, TreeEntry]) -> str:
    """The tree id of validated entries (order of the mapping does not matter)."""
    return tree_id_of([(path, e.mode, e.sha256) for path, e in entries.items()])


def tree_id_of(items: list[tuple[str, str, str]]) -> str:
    """The tree id of validated ``(path, mode, sha256)`` triples with distinct paths.

    ``items`` is sorted in place.
    """
    items.sort()
    text = "".join([f"{mode} {sha} {path}\n" for path, mode, sha in items])
    try:
        # Without lone surrogates (names that are not UTF-8), code-point order is
        # UTF-8 byte order, so the sort above is already the specified one.
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        items.sort(key=lambda item: path_key(item[0]))
        data = b"".join([f"{mode} {sha} ".encode("ascii") + path_key(path) + b"\n" for path, mode, sha in items])
    return hashlib.sha256(TREE_HEADER + data).hexdigest()


def build_manifest(
    tree: str, entries: Mapping[str, TreeEntry], *, source: str | None = None, created_at: float | None = None
) -> dict[str, Any]:
    """The manifest JSON object for a tree (``schema/manifest.md``)."""
    files = {p: {"sha256": e.sha256, "size_bytes": e.size, "mode": e.mode} for p, e in entries.items()}
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "tree": tree,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at or time.time())),
        "source": source,
        "file_count": len(files),
        "total_size_bytes": sum(e.size for e in entries.values()),
        "files": files,
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical serialisation: keys sorted, one file per line, UTF-8, trailing newline.

    Written piecewise with the C JSON encoder: an indented ``json.dumps`` of a
    100,000-file manifest goes through the pure-Python encoder and costs seconds.
    """
    dumps = json.dumps
    parts = ["{\n"]
    keys = sorted(manifest)
    for i, key in enumerate(keys):
        value = manifest[key]
        sep = ",\n" if i < len(keys) - 1 else "\n"
        if key == "files" and isinstance(value, Mapping):
            lines = [
                f"  {dumps(path, ensure_ascii=False)}: {_entry_json(entry)}" for path, entry in sorted(value.items())
            ]
            body = "{\n" + ",\n".join(lines) + "\n }" if lines else "{}"
            parts.append(f" {dumps(key)}: {body}{sep}")
        else:
            parts.append(f" {dumps(key, ensure_ascii=False)}: {dumps(value, sort_keys=True, ensure_ascii=False)}{sep}")
    parts.append("}\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


def _entry_json(entry: Any) -> str:
    """One ``files`` entry as JSON, keys sorted (a plain f-string when the values are plain)."""
    if (
        type(entry) is dict
        and entry.keys() == {"mode", "sha256", "size_bytes"}
        and type(entry["size_bytes"]) is int
        and is_sha256_hex(entry["sha256"])
        and entry["mode"] in (MODE_FILE, MODE_EXEC, MODE_LINK)
    ):
        return f'{{"mode": "{entry["mode"]}", "sha256": "{entry["sha256"]}", "size_bytes": {entry["size_bytes"]}}}'
    return json.dumps(entry, sort_keys=True, ensure_ascii=False)


def parse_manifest(
    data: bytes, *, origin: str | Path = "<manifest>", expected_tree: str | None = None
) -> tuple[dict[str, Any], dict[str, TreeEntry]]:
    """Parse and fully validate a manifest; return (manifest, entries).

    The tree id is recomputed from the entries and must equal the recorded one (and
    ``expected_tree`` when given).

    Raises:
        CorruptManifestError: naming ``origin`` and the cause.
    """
    try:
        manifest = json.loads(data.decode("utf-8", "surrogateescape"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptManifestError(f"{origin}: not valid JSON ({exc})") from None
    except RecursionError:  # the JSON parser's depth bound
        raise CorruptManifestError(f"{origin}: not valid JSON (arrays or objects nested too deeply)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CorruptManifestError(f"{origin}: not a manifest object with a 'files' mapping")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CorruptManifestError(f"{origin}: format is {manifest.get('format')!r}, not {MANIFEST_FORMAT!r}")
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise CorruptManifestError(f"{origin}: unsupported format_version {manifest.get('format_version')!r}")
    try:
        entries = normalize_entries(manifest["files"])
    except (UnsafePathError, ValueError, KeyError, TypeError) as exc:
        raise CorruptManifestError(f"{origin}: bad file entry ({exc})") from None
    tree = compute_tree_id(entries)
    if manifest.get("tree") != tree:
        raise CorruptManifestError(
            f"{origin}: recorded tree {manifest.get('tree')!r} does not match its files ({tree})"
        )
    if expected_tree is not None and tree != expected_tree:
        raise CorruptManifestError(f"{origin}: holds tree {tree}, expected {expected_tree}")
    return manifest, entries


def mode_of(st_mode: int) -> str:
    """Map a stat mode to the tree mode string (symlink, executable or plain file)."""
    import stat

    if stat.S_ISLNK(st_mode):
        return MODE_LINK
    return MODE_EXEC if st_mode & 0o100 else MODE_FILE


def iter_lines(entries: Mapping[str, TreeEntry]) -> Iterable[bytes]:
    """The tree-id lines, in order (useful for debugging and docs)."""
    for path in sorted(entries, key=path_key):
        e = entries[path]
        yield f"{e.mode} {e.sha256} ".encode("ascii") + path_key(path) + b"\n"
