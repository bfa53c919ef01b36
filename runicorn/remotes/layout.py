"""Object keys of a remote and the JSON records it holds (``schema/remote.md``)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from runicorn.remotes.errors import RemoteError
from runicorn.store.store import ref_filename

FORMAT = "runicorn-remote"
FORMAT_VERSION = 1
CONFIG_KEY = "config.json"
BLOBS = "blobs/"
MANIFESTS = "manifests/"
REFS = "refs/"
LOCKS = "locks/"
TMP = "tmp/"  # file and sftp remotes: staging for create-only renames
MAX_RECORD_BYTES = 1 << 20  # refs, locks, config: anything larger is refused unread
MAX_MANIFEST_BYTES = 1 << 30


def blob_key(sha: str) -> str:
    return f"{BLOBS}{sha[:2]}/{sha}"


def manifest_key(tree: str) -> str:
    return f"{MANIFESTS}{tree[:2]}/{tree}.json"


def ref_key(kind: str, name: str) -> str:
    return f"{REFS}{kind}/{ref_filename(name)}"


def ref_prefix(kind: str, name_prefix: str = "") -> str:
    """Key prefix of the refs of ``kind`` whose names start with ``name_prefix``."""
    return f"{REFS}{kind}/" + (ref_filename(name_prefix)[: -len(".json")] if name_prefix else "")


def id_from_key(key: str, prefix: str, suffix: str = "") -> str | None:
    """The sha256 / tree id an object key names, or None for a stray key."""
    from runicorn.hashing import is_sha256_hex

    if not key.startswith(prefix) or not key.endswith(suffix):
        return None
    rest = key[len(prefix) : len(key) - len(suffix)] if suffix else key[len(prefix) :]
    aa, _, ident = rest.partition("/")
    return ident if is_sha256_hex(ident) and ident[:2] == aa else None


def config_record() -> bytes:
    return dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "hash": "sha256", "created_at": time.time()})


def check_config(data: bytes, where: str) -> None:
    """Raises RemoteError unless ``data`` is a config.json this code understands."""
    try:
        cfg = json.loads(data)
    except ValueError:
        raise RemoteError(f"{where}/{CONFIG_KEY}: not valid JSON") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise RemoteError(f"{where}/{CONFIG_KEY}: not a runicorn remote")
    if cfg.get("format_version") != FORMAT_VERSION or cfg.get("hash") != "sha256":
        raise RemoteError(
            f"{where}/{CONFIG_KEY}: format_version {cfg.get('format_version')!r} / hash "
            f"{cfg.get('hash')!r} is not supported by this runicorn (1 / sha256)"
        )


def ref_record(kind: str, name: str, tree: str, meta: dict[str, Any]) -> bytes:
    import socket

    return dumps(
        {
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "name": name,
            "tree": tree,
            "created_at": time.time(),
            "pushed_from": socket.gethostname(),
            "meta": meta,
        }
    )


def parse_ref(data: bytes, where: str) -> dict[str, Any]:
    """A remote ref record, validated.

    Raises:
        RemoteError: not a ref record.
    """
    from runicorn.hashing import is_sha256_hex

    try:
        rec = json.loads(data)
    except ValueError:
        raise RemoteError(f"{where}: ref is not valid JSON") from None
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("kind"), str)
        or not isinstance(rec.get("name"), str)
        or not is_sha256_hex(rec.get("tree"))
        or not isinstance(rec.get("meta", {}), dict)
    ):
        raise RemoteError(f"{where}: not a ref record (kind, name, tree)")
    return rec


def key_of_ref_name(key: str) -> tuple[str, str] | None:
    """``(kind, name)`` from a ref key, or None."""
    if not key.startswith(REFS) or not key.endswith(".json"):
        return None
    kind, _, enc = key[len(REFS) : -len(".json")].partition("/")
    if not kind or not enc or enc.startswith("~"):
        return None
    return kind, unquote(enc)


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
