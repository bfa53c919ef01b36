"""Server side: scan a root for runs and publish a sync manifest atomically.

Revisions are monotonic across processes and restarts: the next revision is one more
than the highest of the state file and the manifest already on disk, and it is only
taken when the content (everything except revision/snapshot_id/generated_at) changed.
A crash between writing the manifest and the state is therefore harmless: the manifest
on disk carries the newer revision and its content digest is recomputed from it.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runicorn.errors import CorruptManifestError, RunicornError
from runicorn.fsutil import atomic_write_bytes, atomic_write_json, open_locked
from runicorn.sync.manifest import (
    ExperimentEntry,
    FileEntry,
    ManifestType,
    SyncManifest,
    content_digest,
    is_append_only_name,
    priority_for,
    tail_hash,
)
from runicorn.sync.manifest_schema import validate_file_dict, validate_manifest_dict, validate_run_fields
from runicorn.runs.ids import valid_run_id

log = logging.getLogger(__name__)

STATE_NAME = "manifest_state.json"
SCAN_CACHE_NAME = "scan_cache.json"
LOCK_NAME = "manifest.lock"
_SCAN_CACHE_VERSION = 2  # 2: runs record the files they had to leave out


def manifest_filename(manifest_type: ManifestType) -> str:
    """``full_manifest.json`` or ``active_manifest.json``."""
    return f"{manifest_type.value}_manifest.json"


def _is_hidden(name: str) -> bool:
    # Skips .runicorn bookkeeping and writers' staging files (".name.<pid>.part").
    return name.startswith(".")


def find_run_dirs(root: Path) -> Iterator[tuple[str, str, str]]:
    """Yield ``(project, name, run_id)`` for every ``<project>/<name...>/runs/<run_id>/``.

    Symlinked directories are not followed, hidden directories are skipped, and the
    walk does not descend into run directories.
    """
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        current, parts = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            if _is_hidden(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.name == "runs" and len(parts) >= 2:
                try:
                    runs = sorted(os.scandir(entry.path), key=lambda e: e.name)
                except (FileNotFoundError, PermissionError):
                    runs = []
                for run in runs:
                    if run.is_dir(follow_symlinks=False) and valid_run_id(run.name):
                        yield parts[0], "/".join(parts[1:]), run.name
                continue
            stack.append((Path(entry.path), parts + (entry.name,)))


def _list_run_files(run_path: Path) -> list[tuple[str, os.stat_result]]:
    """Regular files under a run directory (recursive), relative POSIX paths, sorted."""
    out: list[tuple[str, os.stat_result]] = []
    stack: list[tuple[Path, str]] = [(run_path, "")]
    while stack:
        d, prefix = stack.pop()
        try:
            entries = list(os.scandir(d))
        except (FileNotFoundError, PermissionError):
            continue
        for e in entries:
            if _is_hidden(e.name):
                continue
            try:
                st = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            rel = prefix + e.name
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(e.path), rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                out.append((rel, st))
    out.sort(key=lambda t: t[0])
    return out


def _read_json(path: Path, limit: int = -1) -> Any:
    """Parse at most ``limit`` bytes (all when negative) of ``path``; None if unreadable."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(limit))
    except (OSError, ValueError):
        return None


_SMALL_JSON = 1 << 20  # bound for run metadata (status.json, meta.json) and the state file


class ManifestGenerator:
    """Scan ``remote_root`` for runs and write ``{full,active}_manifest.json[.gz]``."""

    def __init__(
        self,
        remote_root: Path,
        output_dir: Path | None = None,
        active_window_seconds: int = 3600,
        incremental: bool = True,
    ) -> None:
        self.remote_root = Path(remote_root).expanduser().absolute()
        self.output_dir = Path(output_dir) if output_dir is not None else self.remote_root / ".runicorn"
        self.active_window_seconds = active_window_seconds
        self.incremental = incremental
        self.runs_rescanned = 0  # how many runs the last generate() re-read
        # What the last scan left out because the manifest format cannot represent it:
        # (real path on this server, reason).  Each one is also logged as a warning.
        self.skipped_runs: list[tuple[str, str]] = []
        self.skipped_files: list[tuple[str, str]] = []

    # -- scanning ----------------------------------------------------------------------
    def _scan_run(
        self, project: str, name: str, run_id: str, cache: dict[str, Any]
    ) -> tuple[ExperimentEntry, dict[str, Any]] | None:
        run_rel = f"{project}/{name}/runs/{run_id}"
        run_path = self.remote_root.joinpath(*run_rel.split("/"))
        listing = _list_run_files(run_path)
        if not listing:
            return None
        signature = [[rel, st.st_size, st.st_mtime_ns, st.st_ino] for rel, st in listing]
        cached = cache.get(run_rel)
        if (
            self.incremental
            and cached is not None
            and cached.get("sig") == signature
            and isinstance(cached.get("skipped"), list)
        ):
            self._note_skipped_files(cached["skipped"], log_it=False)
            return ExperimentEntry.from_dict(cached["entry"]), cached
        self.runs_rescanned += 1
        files: list[FileEntry] = []
        kept: list[os.stat_result] = []
        skipped: list[list[str]] = []
        for rel, st in listing:
            full = run_path.joinpath(*rel.split("/"))
            fe = FileEntry(
                path=f"{run_rel}/{rel}",
                size=st.st_size,
                mtime=st.st_mtime,
                priority=priority_for(rel),
                is_append_only=is_append_only_name(rel),
                tail_hash=None,
            )
            try:
                validate_file_dict(fe.to_dict(), "file")
            except CorruptManifestError as exc:
                skipped.append([str(full), _reason(exc)])
                continue
            fe.tail_hash = tail_hash(full, st.st_size)
            files.append(fe)
            kept.append(st)
        self._note_skipped_files(skipped, log_it=True)
        status_doc = _read_json(run_path / "status.json", _SMALL_JSON)
        meta_doc = _read_json(run_path / "meta.json", _SMALL_JSON)
        status = "unknown"
        if isinstance(status_doc, dict) and isinstance(status_doc.get("status"), str):
            status = status_doc["status"][:64]
        created = min((st.st_mtime for st in kept), default=0.0)
        if (
            isinstance(meta_doc, dict)
            and isinstance(meta_doc.get("created_at"), (int, float))
            and not isinstance(meta_doc.get("created_at"), bool)
        ):
            created = float(meta_doc["created_at"])
        tags: list[str] = []
        if isinstance(meta_doc, dict) and isinstance(meta_doc.get("tags"), list):
            tags = [t[:256] for t in meta_doc["tags"] if isinstance(t, str)][:256]
        entry = ExperimentEntry(
            run_id=run_id,
            project=project,
            name=name,
            status=status,
            created_at=created,
            updated_at=max((st.st_mtime for st in kept), default=0.0),
            files=files,
            tags=tags,
        )
        return entry, {"sig": signature, "entry": entry.to_dict(), "skipped": skipped}

    def _note_skipped_files(self, skipped: list[Any], *, log_it: bool) -> None:
        for item in skipped:
            if not (isinstance(item, list) and len(item) == 2):
                continue
            path, why = str(item[0]), str(item[1])
            self.skipped_files.append((path, why))
            if log_it:
                log.warning("skipping %r: %s; rename it to include it in the manifest", path, why)

    def _run_problem(self, project: str, name: str, run_id: str) -> str | None:
        """Why the manifest format cannot describe this run, or None."""
        probe = {
            "run_id": run_id,
            "project": project,
            "name": name,
            "status": "",
            "created_at": 0.0,
            "updated_at": 0.0,
            "files": [],
        }
        try:
            validate_run_fields(probe, "run")
        except CorruptManifestError as exc:
            return _reason(exc)
        return None

    def scan(self) -> list[ExperimentEntry]:
        """All runs under the root, reusing the scan cache for unchanged runs."""
        cache_path = self.output_dir / SCAN_CACHE_NAME
        cache: dict[str, Any] = {}
        if self.incremental:
            doc = _read_json(cache_path)
            if (
                isinstance(doc, dict)
                and doc.get("version") == _SCAN_CACHE_VERSION
                and isinstance(doc.get("runs"), dict)
            ):
                cache = doc["runs"]
        self.runs_rescanned = 0
        self.skipped_runs = []
        self.skipped_files = []
        new_cache: dict[str, Any] = {}
        out: list[ExperimentEntry] = []
        for project, name, run_id in find_run_dirs(self.remote_root):
            problem = self._run_problem(project, name, run_id)
            if problem is not None:
                real = str(self.remote_root.joinpath(project, *name.split("/"), "runs", run_id))
                self.skipped_runs.append((real, problem))
                log.warning("skipping run %r: %s; rename it to include it in the manifest", real, problem)
                continue
            res = self._scan_run(project, name, run_id, cache)
            if res is None:
                continue
            entry, cache_item = res
            out.append(entry)
            new_cache[entry.run_dir] = cache_item
        if new_cache != cache:
            atomic_write_json(cache_path, {"version": _SCAN_CACHE_VERSION, "runs": new_cache}, indent=None)
        return out

    # -- publishing ---------------------------------------------------------------------
    def _existing(self, path: Path) -> dict[str, Any] | None:
        doc = _read_json(path)
        try:
            validate_manifest_dict(doc)
        except CorruptManifestError:
            return None
        return doc

    def generate(
        self, manifest_type: ManifestType = ManifestType.FULL, output_path: Path | None = None
    ) -> tuple[SyncManifest, Path]:
        """Scan the root and publish a manifest of ``manifest_type``.

        Returns ``(manifest, path_of_json)``; ``path + ".gz"`` holds the same bytes gzipped.

        Raises:
            RunicornError: if the root is not a directory or the output cannot be written.
        """
        manifest_type = ManifestType(manifest_type)
        if not self.remote_root.is_dir():
            raise RunicornError(f"{self.remote_root}: experiment root is not a directory")
        out_path = Path(output_path) if output_path is not None else self.output_dir / manifest_filename(manifest_type)
        gz_path = out_path.with_name(out_path.name + ".gz")
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunicornError(f"{self.output_dir}: cannot create output directory: {exc}") from exc
        with open_locked(self.output_dir / LOCK_NAME):
            experiments = self.scan()
            if manifest_type is ManifestType.ACTIVE:
                cutoff = time.time() - self.active_window_seconds
                experiments = [e for e in experiments if e.updated_at >= cutoff or e.status == "running"]
            manifest = SyncManifest(
                manifest_type=manifest_type,
                revision=0,
                snapshot_id=str(uuid.uuid4()),
                generated_at=time.time(),
                server_hostname=socket.gethostname()[:255],
                remote_root=str(self.remote_root)[:4096],
                experiments=experiments,
            )
            body = manifest.to_dict()
            digest = content_digest(body)

            state_path = self.output_dir / STATE_NAME
            state = _read_json(state_path, _SMALL_JSON)
            if not isinstance(state, dict):
                state = {}
            type_state = state.get(manifest_type.value)
            if not isinstance(type_state, dict):
                type_state = {}
            state_rev = type_state.get("revision")
            state_rev = state_rev if isinstance(state_rev, int) else 0
            existing = self._existing(out_path)
            existing_gz = _read_gz_manifest(gz_path)
            on_disk = [
                d for d in (existing, existing_gz) if d is not None and d["manifest_type"] == manifest_type.value
            ]
            prev_rev = max([state_rev] + [d["revision"] for d in on_disk])
            # Unchanged content: keep the published files (and their revision) as they are,
            # so clients see the same revision and skip.
            if (
                on_disk
                and all(content_digest(d) == digest and d["revision"] == prev_rev for d in on_disk)
                and len(on_disk) == 2
            ):
                kept = SyncManifest.from_dict(on_disk[0])
                if type_state.get("revision") != prev_rev or type_state.get("digest") != digest:
                    state[manifest_type.value] = {
                        "revision": prev_rev,
                        "digest": digest,
                        "snapshot_id": kept.snapshot_id,
                    }
                    atomic_write_json(state_path, state)
                return kept, out_path
            manifest.revision = prev_rev + 1
            body["revision"] = manifest.revision
            validate_manifest_dict(body)
            raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            atomic_write_bytes(gz_path, gzip.compress(raw, compresslevel=6, mtime=0))
            atomic_write_bytes(out_path, raw)
            state[manifest_type.value] = {
                "revision": manifest.revision,
                "digest": digest,
                "snapshot_id": manifest.snapshot_id,
            }
            atomic_write_json(state_path, state)
            log.debug("published %s revision %d (%d runs rescanned)", out_path, manifest.revision, self.runs_rescanned)
        return manifest, out_path


def _reason(exc: CorruptManifestError) -> str:
    """The schema's complaint (field and why) without its "manifest " prefix."""
    msg = str(exc)
    return msg[len("manifest ") :] if msg.startswith("manifest ") else msg


def _read_gz_manifest(path: Path) -> dict[str, Any] | None:
    try:
        with gzip.open(path, "rb") as f:
            doc = json.loads(f.read())
        validate_manifest_dict(doc)
    except (OSError, ValueError, EOFError, CorruptManifestError):
        return None
    return doc
