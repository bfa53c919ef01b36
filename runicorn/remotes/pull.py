"""``runicorn pull`` and installing artifacts from a remote: trees and refs into the store.

A tree's manifest is fetched and validated (its tree id recomputed); the blobs the store
lacks are downloaded concurrently, each hashed before anything is written and refused
when its sha256 or size differs (:meth:`BlobBatch.add_data` / ``add_chunks``); the batches
commit only when every blob arrived intact, so a bad blob lets nothing of the tree into
the store.  Then the tree is recorded and the local refs set.  Pulling a run recreates
its directory from ``run/<id>/files`` where ``runicorn runs`` lists it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from runicorn.errors import IntegrityError, option
from runicorn.hashing import is_sha256_hex
from runicorn.remotes import layout
from runicorn.remotes.errors import RemoteError
from runicorn.remotes.push import SMALL, Counter, RefSpec
from runicorn.store import Store
from runicorn.store.remote_cache import BLOB, TREE, RemoteCache

Progress = Callable[[int, int], None]


def _limited(chunks: Iterable[bytes], size: int, where: str) -> Iterator[bytes]:
    got = 0
    for chunk in chunks:
        got += len(chunk)
        if got > size:
            raise IntegrityError(f"{where}: larger than the {size} bytes its manifest says; refused")
        yield chunk
    if got != size:
        raise IntegrityError(f"{where}: {got} bytes, its manifest says {size}; refused")


def fetch_tree(
    store: Store, backend: Any, tree: str, *, jobs: int = 8, progress: Progress | None = None
) -> dict[str, int]:
    """Make ``tree`` and all its blobs present in ``store`` from ``backend``.

    The tree is held for this process until a ref names it.

    Raises:
        RemoteError: the tree or a blob is missing on the remote.
        CorruptManifestError: the remote manifest is damaged.
        IntegrityError: a blob's bytes differ from its name or size (nothing enters the store).
    """
    from runicorn.store.ingest import BlobBatch
    from runicorn.store.tree_format import parse_manifest
    from runicorn.workers import run_queue

    key = layout.manifest_key(tree)
    got = backend.get(key, layout.MAX_MANIFEST_BYTES)
    if got is None:
        raise RemoteError(f"{backend.url}: tree {tree} is not on the remote ({key} missing)")
    if len(got[0]) > layout.MAX_MANIFEST_BYTES:
        raise RemoteError(f"{backend.url}/{key}: larger than {layout.MAX_MANIFEST_BYTES} bytes; refused")
    _, entries = parse_manifest(got[0], origin=f"{backend.url}/{key}", expected_tree=tree)
    sizes = {e.sha256: e.size for e in entries.values()}
    with store.lease() as lease:  # the blobs it had and those it fetches, let go of by the tree at once
        missing = sorted(store.hold_blobs(sizes, lease=lease))
        total = sum(sizes[s] for s in missing)
        done = [0]
        batches: list[BlobBatch] = []
        import threading

        lock = threading.Lock()

        def work(group: Iterator[str]) -> None:
            batch = BlobBatch(store, lease)
            with lock:
                batches.append(batch)
            for sha in group:
                size = sizes[sha]
                bkey = layout.blob_key(sha)
                where = f"{backend.url}/{bkey}"
                if size == 0:
                    batch.add_data(b"", sha, origin=where)
                elif size <= SMALL:
                    blob = backend.get(bkey, size)
                    if blob is None:
                        raise RemoteError(f"{where}: missing on the remote (tree {tree[:12]} names it)")
                    if len(blob[0]) != size:
                        raise IntegrityError(
                            f"{where}: {len(blob[0])}{'+' if len(blob[0]) > size else ''} bytes, "
                            f"its manifest says {size}; refused"
                        )
                    batch.add_data(blob[0], sha, origin=where)
                else:
                    batch.add_chunks(_limited(backend.get_chunks(bkey), size, where), sha, origin=where)
                with lock:
                    done[0] += size
                    if progress is not None:
                        progress(done[0], total)

        n = max(1, min(jobs, getattr(backend, "max_jobs", jobs), len(missing) // 4 + 1))
        try:
            run_queue(work, missing, n, lambda s: sizes[s])
        except BaseException:
            for batch in batches:
                batch.discard()
            raise
        for batch in batches:
            batch.commit()
        store.put_tree(entries, source=backend.url, held=lease)
    return {"blobs_downloaded": len(missing), "bytes_downloaded": total}


def resolve_remote_refs(
    backend: Any, selectors: Iterable[str], *, everything: bool = False
) -> list[tuple[RefSpec, str]]:
    """Remote refs (with their etags) for ``PIN | RUN_ID | TREE`` arguments or ``--all``.

    A bare tree id (or unique prefix of at least 6 digits) becomes ``pin/<tree>``.

    Raises:
        RemoteError: an argument names nothing on the remote; a ref record is damaged.
    """
    from runicorn.runs.index import valid_run_id

    out: list[tuple[RefSpec, str]] = []

    def load(key: str) -> tuple[RefSpec, str] | None:
        got = backend.get(key, layout.MAX_RECORD_BYTES)
        if got is None:
            return None
        rec = layout.parse_ref(got[0], f"{backend.url}/{key}")
        return RefSpec(rec["kind"], rec["name"], rec["tree"], dict(rec.get("meta") or {})), got[1]

    if everything:
        for info in backend.list(layout.REFS):
            if info.key.endswith(".json"):
                item = load(info.key)
                if item is not None:
                    out.append(item)
    for sel in selectors:
        item = load(layout.ref_key("pin", sel))
        if item is not None:
            out.append(item)
            continue
        if valid_run_id(sel):
            loaded = [load(i.key) for i in backend.list(layout.ref_prefix("run", sel + "/"))]
            found = [f for f in loaded if f is not None and f[0].name.startswith(sel + "/")]
            if found:
                out.extend(found)
                continue
        tree = _remote_tree(backend, sel)
        if tree is None:
            raise RemoteError(f"{sel!r} is not a pin, run or tree on {backend.url}")
        out.append((RefSpec("pin", tree, tree, {}), ""))
    return out


def _remote_tree(backend: Any, sel: str) -> str | None:
    sel = sel.lower()
    if is_sha256_hex(sel):
        return sel if backend.head(layout.manifest_key(sel)) is not None else None
    if len(sel) < 6 or any(c not in "0123456789abcdef" for c in sel):
        return None
    hits = [
        layout.id_from_key(i.key, layout.MANIFESTS, ".json") for i in backend.list(f"{layout.MANIFESTS}{sel[:2]}/{sel}")
    ]
    hits = [h for h in hits if h]
    if len(hits) > 1:
        raise RemoteError(f"tree prefix {sel!r} matches {len(hits)} trees on {backend.url}")
    return hits[0] if hits else None


def pull(
    store: Store,
    remote: Any,
    backend: Any,
    selectors: Iterable[str],
    *,
    everything: bool = False,
    force: bool = False,
    jobs: int = 8,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Pull refs (and their trees) from ``backend`` into ``store``; return a report.

    A local ref that names another tree is a conflict (reported, left alone) unless
    ``force``.  A pulled run's directory is recreated unless it exists with other content.

    Raises:
        RemoteError: the remote cannot be used or an argument names nothing on it.
        IntegrityError / CorruptManifestError: remote content is damaged (nothing of it kept).
    """
    b = Counter(backend)
    got = b.get(layout.CONFIG_KEY, layout.MAX_RECORD_BYTES)
    if got is None:
        raise RemoteError(f"{b.url}: not a runicorn remote (no {layout.CONFIG_KEY}); nothing was pushed there")
    layout.check_config(got[0], b.url)
    cache = RemoteCache(store, remote.identity)
    refs = resolve_remote_refs(b, selectors, everything=everything)
    stats = {"blobs_downloaded": 0, "bytes_downloaded": 0}
    fetched: set[str] = set()
    rows: list[dict[str, Any]] = []
    for spec, etag in refs:
        if spec.tree not in fetched:
            s = fetch_tree(store, b, spec.tree, jobs=jobs, progress=progress)
            for k in stats:
                stats[k] += s[k]
            fetched.add(spec.tree)
            cache.record(TREE, [spec.tree])
            cache.record(BLOB, {e.sha256 for e in store.tree_entries(spec.tree).values()})
        rows.append(_set_local_ref(store, cache, spec, etag, force))
    for row, (spec, _) in zip(rows, refs):
        if spec.kind == "run" and spec.meta.get("role") == "files" and row["status"] != "conflict":
            row["run"] = _recreate_run(store, spec, force)
    return {
        "remote": remote.url,
        "refs": rows,
        **stats,
        "requests": b.requests,
        "ok": all(r["status"] != "conflict" for r in rows),
    }


def _set_local_ref(store: Store, cache: RemoteCache, spec: RefSpec, etag: str, force: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"ref": spec.label, "tree": spec.tree}
    local = store.get_ref(spec.kind, spec.name)
    if local is not None and local.tree == spec.tree:
        row["status"] = "unchanged"
        store.release_holds({spec.tree})
    elif local is not None and not force:
        row.update(
            status="conflict",
            local_tree=local.tree,
            detail=f"local {spec.label} is {local.tree[:12]}; pull with {option('force')} to replace it",
        )
        store.release_holds({spec.tree})
        return row
    else:
        store.set_ref(spec.kind, spec.name, spec.tree, meta=spec.meta)
        row["status"] = "created" if local is None else "updated"
    if etag:
        cache.set_ref_state(spec.kind, spec.name, spec.tree, etag)
    return row


def _recreate_run(store: Store, spec: RefSpec, force: bool) -> str:
    """Restore a pulled run's directory; return what happened."""
    from runicorn.restore.engine import restore_from_manifest
    from runicorn.relpath import validate_relpath
    from runicorn.runs.index import RESERVED_TOP, read_meta, read_status, upsert_run, valid_run_id

    run_id = spec.meta.get("run_id")
    rel = spec.meta.get("run_dir")
    if not (isinstance(run_id, str) and valid_run_id(run_id) and isinstance(rel, str)):
        return "skipped: the remote ref does not say where the run lives"
    try:
        validate_relpath(rel, what="run directory")
    except ValueError as exc:
        return f"skipped: {exc}"
    parts = rel.split("/")
    if parts[0] in RESERVED_TOP or parts[-2:] != ["runs", run_id]:
        return f"skipped: {rel!r} is not a run directory path"
    target = store.root.joinpath(*parts)
    if target.exists():
        if _dir_tree(store, target) == spec.tree:
            return f"unchanged at {target}"
        if not force:
            return f"kept the local run directory {target} (it differs; pull with {option('force')} replaces it)"
    target.parent.mkdir(parents=True, exist_ok=True)
    restore_from_manifest(store.manifest_path(spec.tree), store.blobs_dir, target, overwrite=force, link="copy")
    meta = read_meta(target) or {}
    created = meta.get("created_at")
    upsert_run(
        store,
        run_id,
        str(meta.get("path") or "/".join(parts[:-2])),
        target,
        read_status(target),
        float(created) if isinstance(created, (int, float)) else target.stat().st_mtime,
    )
    return f"restored at {target}"


def _dir_tree(store: Store, directory: os.PathLike[str]) -> str | None:
    from pathlib import Path

    from runicorn.store.walk import directory_tree_id

    try:
        return directory_tree_id(Path(directory))
    except Exception:  # noqa: BLE001 - an unreadable directory simply differs
        return None


def install_tree_from_remote(
    store: Store, url: str, tree: str, *, endpoint: str | None = None, jobs: int = 8, progress: Progress | None = None
) -> None:
    """Fetch ``tree`` from the remote at ``url`` (an artifact's ``remote`` download source).

    Raises: as :func:`fetch_tree`, plus RemoteError when the remote cannot be opened.
    """
    from runicorn.remotes.config import Remote, canonical_url, open_backend

    remote = Remote(url, canonical_url(url), endpoint)
    backend = open_backend(remote)
    try:
        fetch_tree(store, backend, tree, jobs=jobs, progress=progress)
    finally:
        backend.close()
