"""Sync manifest data model: what a server publishes about its runs.

The JSON form is specified by ``schema/sync-manifest.schema.json``; :mod:`.manifest_schema`
enforces it without third-party libraries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from runicorn.hashing import sha256_bytes

FORMAT_VERSION = "1.0"
GENERATOR_VERSION = "1.0"
# tail_hash covers the last TAIL_WINDOW bytes of a file (the whole file when smaller).
TAIL_WINDOW = 4096


def tail_hash(path: Path, size: int) -> str | None:
    """The manifest's ``tail_hash`` of a file: SHA-256 of its bytes in [size - TAIL_WINDOW, size).

    The server computes it for the manifest and the client for its local copy, so both
    sides use this one function.  None when the file is unreadable or shorter than ``size``.
    """
    start = max(0, size - TAIL_WINDOW)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return None
    return sha256_bytes(data) if len(data) == size - start else None


# Files a run only ever appends to; the client fetches just their new bytes.
APPEND_ONLY_NAMES = frozenset({"events.jsonl", "logs.txt"})
APPEND_ONLY_SUFFIXES = (".jsonl", ".log")
PRIORITY_BY_NAME = {
    "meta.json": 1,
    "status.json": 1,
    "summary.json": 2,
    "events.jsonl": 3,
    "logs.txt": 3,
}


class ManifestType(str, Enum):
    """Which runs a manifest lists: all of them, or only recently active ones."""

    FULL = "full"
    ACTIVE = "active"


def priority_for(rel_in_run: str) -> int:
    """Download priority (1 = first) for a path relative to its run directory."""
    return PRIORITY_BY_NAME.get(rel_in_run, 4)


def is_append_only_name(rel_in_run: str) -> bool:
    """True for files the run writer only appends to (logs, event streams)."""
    if "/" in rel_in_run:
        return False
    return rel_in_run in APPEND_ONLY_NAMES or rel_in_run.endswith(APPEND_ONLY_SUFFIXES)


@dataclass
class FileEntry:
    """One file of a run, as seen by the generator."""

    path: str
    size: int
    mtime: float
    priority: int = 4
    is_append_only: bool = False
    tail_hash: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime,
            "priority": self.priority,
            "is_append_only": self.is_append_only,
        }
        if self.tail_hash is not None:
            d["tail_hash"] = self.tail_hash
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileEntry":
        return cls(
            path=d["path"],
            size=int(d["size"]),
            mtime=float(d["mtime"]),
            priority=int(d.get("priority", 4)),
            is_append_only=bool(d.get("is_append_only", False)),
            tail_hash=d.get("tail_hash"),
        )


@dataclass
class ExperimentEntry:
    """One run: identity, status and its files."""

    run_id: str
    project: str
    name: str
    status: str
    created_at: float
    updated_at: float
    files: list[FileEntry] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def run_dir(self) -> str:
        """The run's directory relative to the root."""
        return f"{self.project}/{self.name}/runs/{self.run_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "project": self.project,
            "name": self.name,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "files": [f.to_dict() for f in self.files],
            "tags": list(self.tags),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExperimentEntry":
        return cls(
            run_id=d["run_id"],
            project=d["project"],
            name=d["name"],
            status=d["status"],
            created_at=float(d["created_at"]),
            updated_at=float(d["updated_at"]),
            files=[FileEntry.from_dict(f) for f in d["files"]],
            tags=list(d.get("tags", [])),
        )


@dataclass
class SyncManifest:
    """A whole manifest: header fields plus the experiments it lists."""

    manifest_type: ManifestType
    revision: int
    snapshot_id: str
    generated_at: float
    server_hostname: str
    remote_root: str
    experiments: list[ExperimentEntry] = field(default_factory=list)
    format_version: str = FORMAT_VERSION
    generator_version: str = GENERATOR_VERSION

    @property
    def total_experiments(self) -> int:
        return len(self.experiments)

    @property
    def total_files(self) -> int:
        return sum(len(e.files) for e in self.experiments)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for e in self.experiments for f in e.files)

    @property
    def statistics(self) -> dict[str, int]:
        return {
            "total_experiments": self.total_experiments,
            "total_files": self.total_files,
            "total_bytes": self.total_bytes,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "manifest_type": self.manifest_type.value,
            "revision": self.revision,
            "snapshot_id": self.snapshot_id,
            "generated_at": self.generated_at,
            "server_hostname": self.server_hostname,
            "remote_root": self.remote_root,
            "experiments": [e.to_dict() for e in self.experiments],
            "statistics": self.statistics,
            "generator_version": self.generator_version,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SyncManifest":
        """Build from a dict that already passed :func:`validate_manifest_dict`."""
        return cls(
            manifest_type=ManifestType(d["manifest_type"]),
            revision=int(d["revision"]),
            snapshot_id=d["snapshot_id"],
            generated_at=float(d["generated_at"]),
            server_hostname=d["server_hostname"],
            remote_root=d["remote_root"],
            experiments=[ExperimentEntry.from_dict(e) for e in d["experiments"]],
            format_version=d["format_version"],
            generator_version=d.get("generator_version", GENERATOR_VERSION),
        )


VOLATILE_KEYS = ("revision", "snapshot_id", "generated_at")


def content_digest(d: dict[str, Any]) -> str:
    """SHA-256 of a manifest dict without the fields that change on every generation."""
    body = {k: v for k, v in d.items() if k not in VOLATILE_KEYS}
    canon = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return sha256_bytes(canon.encode("utf-8"))
