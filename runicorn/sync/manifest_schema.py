"""Structural validation of sync manifests, with no third-party dependency.

Enforces the rules of ``schema/sync-manifest.schema.json`` (a test checks that this
module and ``jsonschema`` agree).  Both the generator (before publishing) and the
client (before trusting a server) call :func:`validate_manifest_dict`.
"""

from __future__ import annotations

import re
from typing import Any

from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.relpath import validate_relpath
from runicorn.runs.ids import RUN_ID_MAX_LEN, RUN_ID_RE

MAX_FILES = 1_000_000
MAX_EXPERIMENTS = 1_000_000
MAX_FILE_SIZE = 1 << 40  # 1 TiB: anything larger is treated as hostile
MAX_MTIME = 32503680000  # year 3000
MAX_REVISION = (1 << 53) - 1

# Matched with fullmatch: "$" would also accept a trailing newline.
_FORMAT_RE = re.compile(r"1\.[0-9]{1,4}")
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SEGMENT_RE = re.compile(r"(?!\.)[^/\\\x00\n\r]+")
_HASH_RE = re.compile(r"[0-9a-f]{64}")


def _fail(where: str, why: str) -> CorruptManifestError:
    return CorruptManifestError(f"manifest {where}: {why}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # NaN fails


def _str(
    obj: dict[str, Any],
    key: str,
    where: str,
    *,
    max_len: int,
    pattern: re.Pattern[str] | None = None,
    min_len: int = 0,
    relpath: bool = False,
) -> None:
    v = obj[key]
    if not isinstance(v, str):
        raise _fail(f"{where}.{key}", "must be a string")
    if not (min_len <= len(v) <= max_len):
        raise _fail(f"{where}.{key}", f"length {len(v)} outside [{min_len}, {max_len}]")
    if pattern is not None and not pattern.fullmatch(v):
        raise _fail(f"{where}.{key}", f"{v[:80]!r} is not allowed")
    if relpath:
        try:
            validate_relpath(v, what="path", portable=True)
        except UnsafePathError as exc:
            raise _fail(f"{where}.{key}", str(exc)) from None


def _int(obj: dict[str, Any], key: str, where: str, lo: int, hi: int) -> None:
    v = obj[key]
    if not _is_int(v) or not lo <= v <= hi:
        raise _fail(f"{where}.{key}", f"must be an integer in [{lo}, {hi}], got {str(v)[:40]}")


def _num(obj: dict[str, Any], key: str, where: str, lo: float | None = None, hi: float | None = None) -> None:
    v = obj[key]
    if not _is_num(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _fail(f"{where}.{key}", f"must be a number in range, got {str(v)[:40]}")


def _require(obj: Any, keys: tuple[str, ...], where: str) -> None:
    if not isinstance(obj, dict):
        raise _fail(where, "must be an object")
    for k in keys:
        if k not in obj:
            raise _fail(where, f"missing required field {k!r}")


def validate_file_dict(f: Any, where: str) -> None:
    """Check one ``files[]`` entry.

    Raises:
        CorruptManifestError: naming ``where`` and the offending field.
    """
    _require(f, ("path", "size", "mtime"), where)
    _str(f, "path", where, max_len=4096, min_len=1, relpath=True)
    _int(f, "size", where, 0, MAX_FILE_SIZE)
    _num(f, "mtime", where, 0, MAX_MTIME)
    if "priority" in f:
        _int(f, "priority", where, 1, 4)
    if "is_append_only" in f and not isinstance(f["is_append_only"], bool):
        raise _fail(f"{where}.is_append_only", "must be a boolean")
    if "tail_hash" in f:
        _str(f, "tail_hash", where, max_len=64, pattern=_HASH_RE)


def validate_run_fields(e: Any, where: str) -> None:
    """Check an ``experiments[]`` entry except its ``files`` list.

    Raises:
        CorruptManifestError: naming ``where`` and the offending field.
    """
    _require(e, ("run_id", "project", "name", "status", "created_at", "updated_at", "files"), where)
    _str(e, "run_id", where, max_len=RUN_ID_MAX_LEN, pattern=RUN_ID_RE, min_len=1)
    _str(e, "project", where, max_len=255, pattern=_SEGMENT_RE, min_len=1)
    _str(e, "name", where, max_len=4096, min_len=1, relpath=True)
    _str(e, "status", where, max_len=64)
    _num(e, "created_at", where)
    _num(e, "updated_at", where)
    if "tags" in e:
        tags = e["tags"]
        if not isinstance(tags, list) or len(tags) > 256:
            raise _fail(f"{where}.tags", "must be a list of at most 256 strings")
        for t in tags:
            if not isinstance(t, str) or len(t) > 256:
                raise _fail(f"{where}.tags", "must contain strings of at most 256 characters")


def _validate_experiment(e: Any, where: str) -> int:
    validate_run_fields(e, where)
    files = e["files"]
    if not isinstance(files, list) or len(files) > MAX_FILES:
        raise _fail(f"{where}.files", f"must be a list of at most {MAX_FILES} entries")
    for i, f in enumerate(files):
        validate_file_dict(f, f"{where}.files[{i}]")
    return len(files)


def validate_manifest_dict(d: Any) -> None:
    """Check a parsed manifest against the schema rules.

    Raises:
        CorruptManifestError: naming the first offending field.
    """
    _require(
        d,
        (
            "format_version",
            "manifest_type",
            "revision",
            "snapshot_id",
            "generated_at",
            "server_hostname",
            "remote_root",
            "experiments",
        ),
        "root",
    )
    _str(d, "format_version", "root", max_len=8, pattern=_FORMAT_RE)
    if d["manifest_type"] not in ("full", "active"):
        raise _fail("root.manifest_type", "must be 'full' or 'active'")
    _int(d, "revision", "root", 0, MAX_REVISION)
    _str(d, "snapshot_id", "root", max_len=36, pattern=_UUID_RE)
    _num(d, "generated_at", "root", 0)
    _str(d, "server_hostname", "root", max_len=255)
    _str(d, "remote_root", "root", max_len=4096)
    if "generator_version" in d:
        _str(d, "generator_version", "root", max_len=64)
    if "statistics" in d:
        st = d["statistics"]
        if not isinstance(st, dict):
            raise _fail("root.statistics", "must be an object")
        for k in ("total_experiments", "total_files", "total_bytes"):
            if k in st and (not _is_int(st[k]) or st[k] < 0):
                raise _fail(f"root.statistics.{k}", "must be a non-negative integer")
    exps = d["experiments"]
    if not isinstance(exps, list) or len(exps) > MAX_EXPERIMENTS:
        raise _fail("root.experiments", f"must be a list of at most {MAX_EXPERIMENTS} entries")
    total = 0
    for i, e in enumerate(exps):
        total += _validate_experiment(e, f"experiments[{i}]")
        if total > MAX_FILES:
            raise _fail("root.experiments", f"lists more than {MAX_FILES} files")
