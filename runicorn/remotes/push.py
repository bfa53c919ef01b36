"""``runicorn push``: send trees and refs to a remote, leaves before roots.

1. Each ref is read from the remote; one already naming the same tree is done (an
   unchanged push costs one request per ref and nothing else).
2. Otherwise, under a shared lock (:mod:`runicorn.remotes.locks`), the blobs the remote
   is not known to hold (the index's ``remote_objects``, dropped when the remote's gc
   epoch changed) are uploaded create-only, concurrently (blobs larger than one part
   resumably, :mod:`runicorn.remotes.resume`); then each tree's manifest;
   only then the refs, by compare-and-swap.  A remote ref that moved since this store
   last saw it is a conflict, reported and left alone unless ``force``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from runicorn.errors import IntegrityError, option
from runicorn.hashing import sha256_bytes
from runicorn.remotes import layout
from runicorn.remotes.errors import RemoteConflictError, RemoteError
from runicorn.remotes.resume import Resume, part_size
from runicorn.store import refkinds
from runicorn.store import Store
from runicorn.store.remote_cache import BLOB, TREE, RemoteCache

Progress = Callable[[int, int], None]
SMALL = 1 << 20  # blobs up to this size are read whole, hashed and sent in one request
# Requests in flight: an object store answers each small PUT in tens of milliseconds, mostly
# waiting, so many overlap (measured: tools/bench/profile_remote_push.py, 32 against 8 threads).
# SFTP caps it at its channels (max_jobs).
JOBS = 32
RUN_KIND = refkinds.RUN
ARTIFACT_KIND = refkinds.ARTIFACT


@dataclass
class RefSpec:
    kind: str
    name: str
    tree: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


class Counter:
    """Counts requests made through a backend (reported as ``requests``)."""

    def __init__(self, backend: Any) -> None:
        self._b = backend
        self.url = backend.url
        self.requests = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._b, name)
        if name in ("get", "get_chunks", "head", "list", "put_create", "put_cas", "put_replace", "delete", "put_large"):

            def counted(*a: Any, **kw: Any) -> Any:
                with self._lock:
                    self.requests += 1
                return attr(*a, **kw)

            return counted
        return attr


def ensure_config(backend: Any) -> None:
    """Create ``config.json`` on a new remote (create-only), or check the one there.

    Raises:
        RemoteError: the location holds something that is not a runicorn remote of this version.
    """
    got = backend.get(layout.CONFIG_KEY, layout.MAX_RECORD_BYTES)
    if got is None:
        if backend.put_create(layout.CONFIG_KEY, layout.config_record()):
            return
        got = backend.get(layout.CONFIG_KEY, layout.MAX_RECORD_BYTES)
        if got is None:
            raise RemoteError(f"{backend.url}/{layout.CONFIG_KEY}: appears and vanishes")
    layout.check_config(got[0], backend.url)


# ---------------------------------------------------------------------- what to push
def specs_for_run(store: Store, run_id: str) -> list[RefSpec]:
    """A run's refs: its code, archives and inputs, plus ``run/<id>/files`` (the run
    directory itself, captured into the store now).

    Raises:
        RemoteError: no such run.
    """
    from runicorn.runs.index import find_run_dir

    run_dir = find_run_dir(store, run_id)
    if run_dir is None:
        raise RemoteError(f"no run {run_id!r} in {store.root}")
    rel = os.path.relpath(run_dir, store.root).replace(os.sep, "/")
    tree = store.ingest_directory(run_dir, source=str(run_dir))
    store.set_ref(RUN_KIND, f"{run_id}/files", tree, meta={"run_id": run_id, "role": "files", "run_dir": rel})
    prefix = run_id + "/"
    return [
        RefSpec(r.kind, r.name, r.tree, dict(r.meta)) for r in store.list_refs(RUN_KIND) if r.name.startswith(prefix)
    ]


def specs_for_artifacts(store: Store) -> list[RefSpec]:
    """Every tree bound as an artifact in this store, as ``artifact/<tree>``."""
    out: dict[str, RefSpec] = {}
    for r in store.list_refs(refkinds.BINDING):
        out[r.tree] = RefSpec(ARTIFACT_KIND, r.tree, r.tree, {"artifact": r.meta.get("artifact")})
    return list(out.values())


def resolve_specs(
    store: Store, selectors: Iterable[str], *, artifacts: bool = False, everything: bool = False
) -> list[RefSpec]:
    """Turn ``TREE | PIN | RUN_ID`` arguments (and --artifacts / --all) into refs to push.

    Raises:
        RemoteError: an argument names nothing in the store.
    """
    from runicorn.errors import TreeNotFoundError
    from runicorn.runs.index import find_run_dir, valid_run_id

    specs: list[RefSpec] = []
    for sel in selectors:
        pin = store.get_ref("pin", sel)
        if pin is not None:
            specs.append(RefSpec("pin", pin.name, pin.tree, dict(pin.meta)))
            continue
        if valid_run_id(sel) and find_run_dir(store, sel) is not None:
            specs.extend(specs_for_run(store, sel))
            continue
        try:
            tree = store.resolve_tree(sel)
        except TreeNotFoundError:
            raise RemoteError(f"{sel!r} is not a pin, run id or tree in {store.root}") from None
        specs.append(RefSpec("pin", tree, tree, {}))
    if everything:
        specs.extend(RefSpec("pin", r.name, r.tree, dict(r.meta)) for r in store.list_refs("pin"))
        from runicorn.runs.index import list_runs

        for row in list_runs(store):
            specs.extend(specs_for_run(store, row["run_id"]))
    if artifacts or everything:
        specs.extend(specs_for_artifacts(store))
    unique: dict[tuple[str, str], RefSpec] = {}
    for s in specs:
        unique[(s.kind, s.name)] = s
    return list(unique.values())


# ---------------------------------------------------------------------- sending
def upload_trees(
    store: Store, backend: Any, cache: RemoteCache, trees: Iterable[str], *, jobs: int, progress: Progress | None = None
) -> dict[str, int]:
    """Upload what the remote lacks of ``trees``: blobs first, then manifests.

    The caller holds a shared lock and has checked the cache's epoch.

    Raises:
        IntegrityError: a local blob does not match its name (nothing of it is sent).
        RemoteError: the remote failed.
    """
    from runicorn.workers import run_queue

    trees = sorted(set(trees))
    need_trees = [t for t in trees if t not in cache.known(TREE, trees)]
    sizes: dict[str, int] = {}
    for t in need_trees:
        for e in store.tree_entries(t).values():
            sizes[e.sha256] = e.size
    unknown = sorted(set(sizes) - cache.known(BLOB, sizes))
    total = sum(sizes[s] for s in unknown)
    done = [0, 0, 0, 0, 0]  # bytes handled, blobs sent, blobs already there, bytes sent, bytes resumed
    lock = threading.Lock()
    part = part_size()

    def advance(nbytes: int, sent: int = 0, kept: int = 0, created: bool | None = None) -> None:
        with lock:
            done[0] += nbytes
            done[3] += sent
            done[4] += kept
            if created is not None:
                done[1 if created else 2] += 1
            if progress is not None:
                progress(done[0], total)

    def work(group: Iterator[str]) -> None:
        confirmed: list[str] = []
        for sha in group:
            size = sizes[sha]
            key = layout.blob_key(sha)
            path = store.blob_path(sha)
            if size <= SMALL:
                with open(path, "rb") as f:
                    data: Any = f.read(size + 1)
                if len(data) != size or sha256_bytes(data) != sha:
                    raise IntegrityError(
                        f"{path}: local blob is damaged (size or sha256 differs); "
                        "run `runicorn verify --deep`; nothing of it was pushed"
                    )
                created = backend.put_create(key, data)
                advance(size, size if created else 0, created=created)
            elif size > part:
                # multipart (S3) or a staged partial file (file, sftp), recorded so that a
                # killed push resumes it; put_large checks the whole blob's sha256 before publishing
                resume = Resume(store.archive, cache.remote, sha)
                with resume.held() as mine:
                    created, sent, kept = backend.put_large(
                        key, path, size, sha, resume if mine else None, lambda n: advance(n)
                    )
                advance(0, sent, kept, created=created)
            else:
                if os.stat(path).st_size != size:
                    raise IntegrityError(f"{path}: local blob has the wrong size; run `runicorn verify --deep`")
                created = False if backend.head(key) is not None else backend.put_create(key, path)
                advance(size, size if created else 0, created=created)
            confirmed.append(sha)
            if len(confirmed) >= 512:
                cache.record(BLOB, confirmed)
                confirmed = []
        cache.record(BLOB, confirmed)

    n = max(1, min(jobs, getattr(backend, "max_jobs", jobs), len(unknown) // 4 + 1))
    run_queue(work, unknown, n, lambda s: sizes[s])
    manifests = 0
    for t in need_trees:
        if backend.put_create(layout.manifest_key(t), store.portable_manifest(t)):
            manifests += 1
    cache.record(TREE, need_trees)
    return {
        "blobs_uploaded": done[1],
        "blobs_present": done[2],
        "bytes_uploaded": done[3],
        "bytes_resumed": done[4],
        "manifests_uploaded": manifests,
    }


def push(
    store: Store,
    remote: Any,
    backend: Any,
    specs: list[RefSpec],
    *,
    force: bool = False,
    jobs: int = JOBS,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Push ``specs`` (refs and their trees) to ``backend``; return a report.

    ``report["refs"]`` has one row per ref with ``status`` created / updated / unchanged /
    conflict; ``ok`` is False when any conflicted.

    Raises:
        RemoteError / RemoteBusyError: the remote cannot be used.
        IntegrityError: a local blob is damaged.
    """
    from runicorn.remotes.locks import acquire_shared

    b = Counter(backend)
    cache = RemoteCache(store, remote.identity)
    rows: list[dict[str, Any]] = []
    pending: list[tuple[RefSpec, dict[str, Any] | None, str | None]] = []
    stats = {"blobs_uploaded": 0, "blobs_present": 0, "bytes_uploaded": 0, "bytes_resumed": 0, "manifests_uploaded": 0}
    for spec in specs:
        key = layout.ref_key(spec.kind, spec.name)
        got = b.get(key, layout.MAX_RECORD_BYTES)
        current = layout.parse_ref(got[0], f"{b.url}/{key}") if got else None
        if current is not None and current["tree"] == spec.tree:
            cache.set_ref_state(spec.kind, spec.name, spec.tree, got[1])
            rows.append({"ref": spec.label, "tree": spec.tree, "status": "unchanged"})
        else:
            pending.append((spec, current, got[1] if got else None))
    if pending:
        ensure_config(b)
        with acquire_shared(b) as lock:
            cache.check_epoch(lock.epoch)
            stats = upload_trees(store, b, cache, [s.tree for s, _, _ in pending], jobs=jobs, progress=progress)
            for spec, current, etag in pending:
                rows.append(_write_ref(b, cache, spec, current, etag, force))
    return {
        "remote": remote.url,
        "refs": rows,
        **stats,
        "requests": b.requests,
        "ok": all(r["status"] != "conflict" for r in rows),
    }


def _write_ref(
    b: Any, cache: RemoteCache, spec: RefSpec, current: dict[str, Any] | None, etag: str | None, force: bool
) -> dict[str, Any]:
    key = layout.ref_key(spec.kind, spec.name)
    row: dict[str, Any] = {"ref": spec.label, "tree": spec.tree}
    if current is not None and not force:
        known = cache.ref_state(spec.kind, spec.name)
        if known is None or known[0] != current["tree"]:
            row.update(
                status="conflict",
                remote_tree=current["tree"],
                detail=f"the remote's {spec.label} is {current['tree'][:12]} (from "
                f"{current.get('pushed_from', '?')}), which this store never saw; "
                f"pull it first, or push with {option('force')} to overwrite",
            )
            return row
    try:
        new_etag = b.put_cas(key, layout.ref_record(spec.kind, spec.name, spec.tree, spec.meta), etag)
    except RemoteConflictError:
        row.update(status="conflict", detail=f"{spec.label} changed on the remote during the push; push again")
        return row
    if not new_etag:  # a store that returns no etag: read it back
        got = b.get(key, layout.MAX_RECORD_BYTES)
        new_etag = got[1] if got else ""
    cache.set_ref_state(spec.kind, spec.name, spec.tree, new_etag)
    row["status"] = "created" if current is None else "updated"
    return row


def publish_tree(store: Store, storage: Any, remote_name: str, tree: str, artifact: str) -> dict[str, str]:
    """Push ``tree`` as ``artifact/<tree>`` to a remote (``bind --push``); return the download
    source to record: ``{"remote": URL}`` (plus ``endpoint``).

    Raises:
        RemoteError: the remote cannot be used, or the push conflicted.
    """
    from runicorn.config import resolve_storage_root
    from runicorn.remotes.config import open_backend, resolve_remote

    remote = resolve_remote(resolve_storage_root(storage), remote_name)
    backend = open_backend(remote)
    try:
        report = push(store, remote, backend, [RefSpec(ARTIFACT_KIND, tree, tree, {"artifact": artifact})])
    finally:
        backend.close()
    if not report["ok"]:
        raise RemoteError(f"{remote.url}: {report['refs'][0].get('detail', 'push failed')}")
    source = {"remote": remote.url}
    if remote.endpoint:
        source["endpoint"] = remote.endpoint
    return source
