"""Client side of manifest-based sync: one manifest download, then only what changed.

Nothing from the server is trusted: the manifest is size-bounded (compressed and
decompressed), validated against the schema, every path must be a safe relative path
inside its run's directory and inside the cache, and the total download must fit on
the local disk.  The cursor (last applied revision) advances only after every file
arrived and was flushed, so a failed or interrupted sync is simply retried.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from queue import SimpleQueue
from typing import Any

from runicorn.errors import CorruptManifestError, RunicornError, UnsafePathError
from runicorn.fsutil import atomic_write_json, open_locked, sync_written
from runicorn.hashing import sha256_bytes
from runicorn.sync.manifest import TAIL_WINDOW, FileEntry, ManifestType, SyncManifest, tail_hash
from runicorn.sync.manifest_schema import validate_manifest_dict
from runicorn.relpath import validate_relpath
from runicorn.sync.client.budget import unplanned_budget
from runicorn.sync.client.downloader import Downloader, FetchResult, mtime_ns, same_mtime
from runicorn.sync.client.local_cache import RESERVED_TOP_LEVEL, SYNC_DIR, CachePaths
from runicorn.sync.client.pipelined_fetch import PipeItem, PipelinedFetcher
from runicorn.sync.client.report import SyncError, sync_stats
from runicorn.sync.client.sftp_io import CountingSFTP, OpCounter, set_nodelay
from runicorn.sync.client.written_ledger import (
    WrittenLedger,
    collision_message,
    foreign_files,
    remove_stale,
)

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 256 << 20
ProgressCallback = Callable[[int, int, str], None]


def _connection_errors() -> tuple[type[BaseException], ...]:
    """What paramiko raises when the connection itself fails (not OSError subclasses)."""
    import paramiko

    return (EOFError, paramiko.SSHException)


def _transfer_errors() -> tuple[type[BaseException], ...]:
    """Failures a single file transfer may hit; anything else is a bug and propagates."""
    return (OSError, RunicornError) + _connection_errors()


def decode_manifest(raw: bytes, gz: bool) -> dict[str, Any]:
    """Decompress (bounded), parse and validate manifest bytes.

    Raises:
        CorruptManifestError: too large, not gzip, not JSON or not schema-valid.
    """
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CorruptManifestError(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    if gz:
        d = zlib.decompressobj(wbits=31)
        try:
            raw = d.decompress(raw, MAX_MANIFEST_BYTES + 1)
        except zlib.error as exc:
            raise CorruptManifestError(f"manifest is not valid gzip: {exc}") from None
        if len(raw) > MAX_MANIFEST_BYTES or d.unconsumed_tail:
            raise CorruptManifestError(f"manifest expands beyond {MAX_MANIFEST_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptManifestError(f"manifest is not valid JSON: {exc}") from None
    except RecursionError:  # the JSON parser's depth bound
        raise CorruptManifestError("manifest is not valid JSON: arrays or objects nested too deeply") from None
    validate_manifest_dict(doc)
    return doc


def check_manifest_paths(manifest: SyncManifest, cache: Path) -> CachePaths:
    """Refuse any file that is not inside its own run directory within the cache.

    Runs whose project name is reserved by the store (``archive``, ``artifacts``) are
    dropped from ``manifest`` with a warning.

    Raises:
        UnsafePathError: traversal, absolute paths, symlinked cache dirs, duplicates.
    """
    seen: set[str] = set()
    paths = CachePaths(cache)
    reserved = [e for e in manifest.experiments if e.project in RESERVED_TOP_LEVEL]
    for exp in reserved:
        log.warning("skipping run %s: project name %r is reserved by the local store", exp.run_dir, exp.project)
    manifest.experiments = [e for e in manifest.experiments if e.project not in RESERVED_TOP_LEVEL]
    for exp in manifest.experiments:
        run_dir = validate_relpath(exp.run_dir, what="run directory")
        for fe in exp.files:
            if not fe.path.startswith(run_dir + "/"):
                raise UnsafePathError(f"manifest path {fe.path!r} is outside its run {run_dir!r}")
            if fe.path in seen:
                raise UnsafePathError(f"manifest lists {fe.path!r} twice")
            seen.add(fe.path)
            paths(fe.path)
    return paths


class ManifestSyncClient:
    """Sync runs from ``remote_root`` on an SFTP server into ``cache_dir``."""

    MAX_WORKERS = 4
    BATCH_SIZE = 5  # kept for API compatibility; work is scheduled per file
    CHANNEL_TIMEOUT = 120.0  # seconds without any response before a request fails

    def __init__(
        self,
        sftp_client: Any,
        remote_root: str,
        cache_dir: Path,
        jitter_max: float = 5.0,
        manifest_type: ManifestType = ManifestType.FULL,
    ) -> None:
        self.sftp_client = sftp_client
        self.remote_root = str(remote_root).rstrip("/") or "/"
        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.jitter_max = max(0.0, float(jitter_max))
        self.manifest_type = ManifestType(manifest_type)
        self.counter = OpCounter()
        self._clients: list[CountingSFTP] = []
        self._paths = CachePaths(self.cache_dir)

    # -- bookkeeping ---------------------------------------------------------------------
    @property
    def sync_dir(self) -> Path:
        return self.cache_dir / SYNC_DIR

    def _cursor_path(self, server: str) -> Path:
        key = sha256_bytes(f"{server}\0{self.remote_root}".encode())[:16]
        return self.sync_dir / "servers" / key / f"{self.manifest_type.value}_cursor.json"

    def _load_cursor(self, path: Path) -> dict[str, Any]:
        try:
            doc = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError):
            return {}
        return doc if isinstance(doc, dict) else {}

    # -- manifest ------------------------------------------------------------------------
    def fetch_manifest(self, sftp: CountingSFTP) -> tuple[SyncManifest, int]:
        """Download and validate the manifest (``.gz`` first); returns it and its size.

        Raises:
            IOError: no manifest on the server or the transfer failed.
            ValueError: (CorruptManifestError) it is malformed, hostile or of the wrong type.
        """
        base = f"{self.remote_root}/.runicorn/{self.manifest_type.value}_manifest.json"
        last_exc: Exception | None = None
        for path, gz in ((base + ".gz", True), (base, False)):
            try:
                with sftp.open(path, "rb") as f:
                    raw = f.read(MAX_MANIFEST_BYTES + 1)
            except FileNotFoundError as exc:
                last_exc = exc
                continue
            except _connection_errors() as exc:
                raise OSError(f"{path}: download failed: {exc}") from exc
            doc = decode_manifest(raw, gz)
            if doc["manifest_type"] != self.manifest_type.value:
                raise CorruptManifestError(
                    f"{path}: is a {doc['manifest_type']!r} manifest, expected {self.manifest_type.value!r}"
                )
            return SyncManifest.from_dict(doc), len(raw)
        raise OSError(f"no manifest at {base}[.gz]: {last_exc}")

    # -- planning ------------------------------------------------------------------------
    def _plan(self, fe: FileEntry, ledger: WrittenLedger) -> tuple[str, int]:
        """('skip'|'touch'|'append'|'full'|'foreign', local_size) for one manifest file.

        'foreign': a local file sync did not write, or that changed since; left alone.
        """
        dest = self._paths(fe.path)
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            return "full", 0
        if not ledger.owns(fe.path, st):
            return "foreign", 0
        if st.st_size == fe.size and same_mtime(st, fe.mtime):
            return "skip", st.st_size
        if fe.is_append_only and 0 < st.st_size < fe.size:
            return "append", st.st_size
        if (
            fe.is_append_only
            and st.st_size > fe.size
            and fe.tail_hash is not None
            and tail_hash(dest, fe.size) == fe.tail_hash
        ):
            # Our copy already extends what this (older) manifest describes, e.g. after
            # syncing a newer active manifest: keep it rather than step back in time.
            return "skip", st.st_size
        if (
            st.st_size == fe.size
            and fe.tail_hash is not None
            and fe.size <= TAIL_WINDOW
            and tail_hash(dest, fe.size) == fe.tail_hash
        ):
            return "touch", st.st_size  # identical bytes; only the mtime differs
        return "full", 0

    def _worker_clients(self, n: int) -> list[CountingSFTP]:
        """The main client plus up to n-1 extra SFTP channels on the same transport.

        paramiko's SFTPClient reads responses without a per-request lock, so sharing one
        client between threads can lose responses; each worker gets its own channel.
        The channels are opened concurrently because each costs a few round trips.
        """
        clients = [self._clients[0]]
        try:
            import paramiko

            transport = self.sftp_client.get_channel().get_transport()
        except Exception as exc:  # noqa: BLE001 - extra channels are an optimisation
            log.debug("no extra SFTP channels: %s", exc)
            return clients

        def open_one() -> Any:
            try:
                extra = paramiko.SFTPClient.from_transport(transport)
            except Exception as exc:  # noqa: BLE001 - e.g. the server's MaxSessions
                log.debug("extra SFTP channel refused: %s", exc)
                return None
            channel = extra.get_channel() if extra is not None else None
            if channel is not None:
                channel.settimeout(self.CHANNEL_TIMEOUT)
            return extra

        with ThreadPoolExecutor(max_workers=max(1, n - 1)) as ex:
            extras = list(ex.map(lambda _: open_one(), range(n - 1)))
        clients += [CountingSFTP(e, self.counter) for e in extras if e is not None]
        return clients

    # -- sync ----------------------------------------------------------------------------
    def sync(self, progress_callback: ProgressCallback | None = None) -> dict[str, Any]:
        """Run one manifest-based sync and return its statistics.

        Raises:
            IOError: the manifest could not be downloaded.
            ValueError: the manifest is malformed or hostile (CorruptManifestError,
                UnsafePathError).
            SyncError: another sync holds the cache, or the disk is too small.
        """
        start = time.monotonic()
        if self.jitter_max:
            time.sleep(random.uniform(0, self.jitter_max))  # spread clients polling together
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        channel = getattr(self.sftp_client, "get_channel", lambda: None)()
        old_timeout = channel.gettimeout() if channel is not None else None
        if channel is not None and old_timeout is None:
            channel.settimeout(self.CHANNEL_TIMEOUT)  # a stalled server must not hang us
        try:
            with open_locked(self.sync_dir / "lock", blocking=False):
                return self._sync_locked(progress_callback, start)
        except BlockingIOError:
            raise SyncError(f"{self.cache_dir}: another sync is running") from None
        finally:
            for c in self._clients[1:]:
                c.raw.close()
            self._clients = []
            if channel is not None:
                channel.settimeout(old_timeout)

    def _cache_intact(self, cursor: dict[str, Any]) -> bool:
        """True if every file the cursor recorded is still there as we wrote it.

        Local checks only (no SFTP traffic): a cache someone pruned or edited is
        repaired even when the server's revision did not move.
        """
        files = cursor.get("files")
        if not isinstance(files, dict):
            return False
        for rel, rec in files.items():
            try:
                st = os.lstat(self._paths(rel))
                size, mns = rec
            except (OSError, UnsafePathError, TypeError, ValueError):
                return False
            if st.st_size != size or abs(st.st_mtime_ns - mns) > 2000:
                return False
        return True

    def _sync_locked(self, progress: ProgressCallback | None, start: float) -> dict[str, Any]:
        staging = self.sync_dir / "tmp"
        shutil.rmtree(staging, ignore_errors=True)  # leftovers of an interrupted sync
        set_nodelay(self.sftp_client)
        main = CountingSFTP(self.sftp_client, self.counter)
        self._clients = [main]
        manifest, mbytes = self.fetch_manifest(main)
        self._paths = check_manifest_paths(manifest, self.cache_dir)
        cursor_path = self._cursor_path(manifest.server_hostname)
        cursor = self._load_cursor(cursor_path)
        stats = sync_stats(
            "manifest", manifest_revision=manifest.revision, manifest_bytes=mbytes, bytes_downloaded=mbytes
        )
        if (
            cursor.get("revision") == manifest.revision
            and cursor.get("snapshot_id") == manifest.snapshot_id
            and self._cache_intact(cursor)
        ):
            stats.update(
                skipped=True,
                reason=f"manifest revision {manifest.revision} unchanged",
                sftp_requests=self.counter.value,
                sftp_wire_requests=main.wire_requests,
                duration=time.monotonic() - start,
            )
            return stats

        tasks: list[tuple[FileEntry, str, int]] = []
        unchanged = 0
        need = 0
        ledger = WrittenLedger(self.cache_dir)
        conflicts: list[str] = stats["conflicts"]
        touches: list[FileEntry] = []
        for exp in manifest.experiments:
            foreign = foreign_files(self.cache_dir, exp.run_dir, ledger)
            if foreign:  # a run made (or edited) here with the server run's id: left alone
                conflicts.append(collision_message(exp.run_dir, foreign))
                log.warning("%s", conflicts[-1])
                continue
            for fe in exp.files:
                action, local_size = self._plan(fe, ledger)
                if action == "skip":
                    unchanged += 1
                elif action == "foreign":
                    conflicts.append(f"{fe.path}: a local file sync did not write; left alone")
                elif action == "touch":
                    touches.append(fe)
                    unchanged += 1
                else:
                    tasks.append((fe, action, local_size))
                    need += fe.size - local_size + (fe.size if action == "append" else 0)
        self._touch(touches, ledger)
        free = shutil.disk_usage(self.cache_dir).free
        if need > free:
            raise SyncError(f"{self.cache_dir}: sync needs {need} bytes but only {free} are free")
        tasks.sort(key=lambda t: (t[0].priority, t[0].path))

        downloader = Downloader(self.cache_dir, self.remote_root, unplanned_budget(free, need), self._paths, ledger)
        results = self._run_tasks(tasks, downloader, progress)
        downloader.settle()
        ledger.save()
        for path in downloader.refused:  # a local file appeared (or changed) meanwhile
            results.pop(path, None)
            conflicts.append(f"{path}: changed locally during the sync; left alone")
        failed = [p for p, r in results.items() if isinstance(r, BaseException)]
        for path, r in results.items():
            if isinstance(r, FetchResult):
                stats["bytes_downloaded"] += r.received
                stats["files_synced"] += 1
                stats["incremental_count" if r.kind == "incremental" else "full_count"] += 1
        stats["bytes_downloaded"] += downloader.wasted
        stats["failed_count"] = len(failed)
        stats["files_unchanged"] = unchanged
        for path in failed[:5]:
            log.warning("sync of %s failed: %s", path, results[path])
        if not failed:
            changed = set(downloader.batch.changed_dirs)  # folders the sync's renames changed
            listed = {fe.path for exp in manifest.experiments for fe in exp.files}
            tracked: dict[str, list[int]] = cursor["files"] if isinstance(cursor.get("files"), dict) else {}
            if self.manifest_type is ManifestType.FULL:
                stats["files_deleted"] = remove_stale(self.cache_dir, tracked, listed, ledger, changed)
            files: dict[str, list[int]] = dict(tracked) if self.manifest_type is ManifestType.ACTIVE else {}
            for rel in listed:
                try:
                    st = os.lstat(self._paths(rel))
                except OSError:
                    continue
                if ledger.owns(rel, st):  # only what sync wrote; "unchanged" is not "ours"
                    files[rel] = [st.st_size, st.st_mtime_ns]
            # every file durable before the cursor says so (the bytes were, before the renames)
            sync_written(self.cache_dir, dirs=changed)
            ledger.save()
            atomic_write_json(
                cursor_path,
                {
                    "revision": manifest.revision,
                    "snapshot_id": manifest.snapshot_id,
                    "manifest_type": manifest.manifest_type.value,
                    "server_hostname": manifest.server_hostname,
                    "remote_root": self.remote_root,
                    "synced_at": time.time(),
                    "files": files,
                },
                indent=None,
            )
        stats["sftp_requests"] = self.counter.value
        stats["sftp_wire_requests"] = sum(c.wire_requests for c in self._clients)
        stats["duration"] = time.monotonic() - start
        return stats

    def _touch(self, files: list[FileEntry], ledger: WrittenLedger) -> None:
        """Give files sync wrote, whose bytes are the server's, the server's mtime.

        The ledger learns the new records (durably) before the mtimes change, so a
        crash in between never makes sync's own files look foreign.
        """
        if not files:
            return
        for fe in files:
            st = os.lstat(self._paths(fe.path))
            ledger.add(fe.path, [st.st_size, mtime_ns(fe.mtime), st.st_ino])
        ledger.save()
        for fe in files:
            dest = self._paths(fe.path)
            os.utime(dest, ns=(mtime_ns(fe.mtime), mtime_ns(fe.mtime)))
            ledger.settle(fe.path, os.lstat(dest))

    POOL_MIN_FILES = 16  # below this, extra channels (~0.1 s each to open) do not pay off
    POOL_MIN_BYTES = 64 << 20

    def _run_tasks(
        self, tasks: list[tuple[FileEntry, str, int]], dl: Downloader, progress: ProgressCallback | None
    ) -> dict[str, FetchResult | BaseException]:
        """Fetch in priority order.  Within a priority, small whole files go through the
        pipeline on the main channel; appends and large files run one by one on it, or
        on a small pool of extra channels when there are many of them."""
        results: dict[str, FetchResult | BaseException] = {}
        errors = _transfer_errors()
        total = len(tasks)
        lock = threading.Lock()
        done = 0
        main = self._clients[0]

        def report(path: str, res: FetchResult | BaseException) -> None:
            nonlocal done
            with lock:  # also serialises the callback, which writer threads call too
                results[path] = res
                done += 1
                if progress is not None:
                    progress(done, total, path)

        def run(sftp: CountingSFTP, fe: FileEntry, action: str, local_size: int) -> None:
            try:
                if action == "append":
                    res: FetchResult | BaseException = dl.fetch_append(
                        sftp, fe.path, local_size, fe.size, fe.mtime, fe.tail_hash
                    )
                else:
                    res = dl.fetch_full(sftp, fe.path, fe.size, fe.mtime, fe.tail_hash)
            except errors as exc:
                res = exc
            report(fe.path, res)

        def pipelined(t: tuple[FileEntry, str, int]) -> bool:
            return t[1] == "full" and t[0].size <= PipelinedFetcher.MAX_SIZE

        for prio in sorted({t[0].priority for t in tasks}):
            group = [t for t in tasks if t[0].priority == prio]
            small = [
                PipeItem(fe.path, fe.size, fe.mtime, fe.tail_hash)
                for fe, action, _ in group
                if pipelined((fe, action, 0))
            ]
            other = [t for t in group if not pipelined(t)]
            retry, untouched = PipelinedFetcher(main, dl).run(small, lambda it, res: report(it.rel, res))
            for it in retry:
                run(main, FileEntry(it.rel, it.size, it.mtime, prio, False, it.tail_hash), "full", 0)
            for it in untouched:
                report(it.rel, ConnectionError(f"{it.rel}: connection lost before transfer"))
            big = len(other) >= self.POOL_MIN_FILES or sum(t[0].size - t[2] for t in other) >= self.POOL_MIN_BYTES
            if big and int(self.MAX_WORKERS) > 1 and len(self._clients) == 1:
                self._clients = self._worker_clients(int(self.MAX_WORKERS))
            if not big or len(self._clients) == 1:
                for t in other:
                    run(main, *t)
                continue
            pool: SimpleQueue[CountingSFTP] = SimpleQueue()
            for c in self._clients:
                pool.put(c)

            def pooled(t: tuple[FileEntry, str, int]) -> None:
                sftp = pool.get()
                try:
                    run(sftp, *t)
                finally:
                    pool.put(sftp)

            with ThreadPoolExecutor(max_workers=len(self._clients), thread_name_prefix="runicorn-sync") as ex:
                for fut in [ex.submit(pooled, t) for t in other]:
                    fut.result()
        for path, exc in dl.commit().items():  # data durable, then renamed into place
            results[path] = exc
        for fe, _, _ in tasks:  # belt and braces: a file without an outcome is a failure
            results.setdefault(fe.path, RuntimeError(f"{fe.path}: no transfer outcome"))
        return results
