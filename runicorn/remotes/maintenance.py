"""``remote add`` probing, ``remote gc`` and ``remote verify``."""

from __future__ import annotations

import os
import time
from typing import Any

from runicorn.hashing import new_sha256
from runicorn.remotes import layout
from runicorn.remotes.errors import RemoteError
from runicorn.remotes.push import Counter, ensure_config


def probe(backend: Any) -> None:
    """Check that the remote enforces create-only writes, then create ``config.json``.

    Writes ``locks/probe-<hex>`` twice: the second write must be refused.  Shared use
    relies on that (two pushers of one object, a ref created by two machines at once).

    Raises:
        RemoteError: the store overwrote an existing object, or cannot be written.
    """
    key = f"{layout.LOCKS}probe-{os.urandom(8).hex()}"
    try:
        if not backend.put_create(key, b"first\n"):
            raise RemoteError(f"{backend.url}: a fresh probe object was reported as existing")
        if backend.put_create(key, b"second\n"):
            raise RemoteError(
                f"{backend.url}: the store does not enforce create-only writes (writing {key} "
                "twice succeeded; S3 stores need If-None-Match support); refusing it for shared "
                "use, since concurrent pushes could overwrite each other"
            )
        got = backend.get(key, 64)
        if got is None or got[0] != b"first\n":
            raise RemoteError(f"{backend.url}: the probe object did not read back as written")
    finally:
        backend.delete(key)
    ensure_config(backend)


def _reachable(backend: Any) -> tuple[list[dict[str, Any]], dict[str, Any], list[str]]:
    """The remote's refs, the entries of each tree they name, and problems found."""
    from runicorn.store.tree_format import parse_manifest

    refs: list[dict[str, Any]] = []
    problems: list[str] = []
    for info in backend.list(layout.REFS):
        got = backend.get(info.key, layout.MAX_RECORD_BYTES)
        if got is None:
            continue  # removed meanwhile
        try:
            refs.append(layout.parse_ref(got[0], f"{backend.url}/{info.key}"))
        except RemoteError as exc:
            problems.append(str(exc))
    manifests: dict[str, Any] = {}
    for tree in sorted({r["tree"] for r in refs}):
        key = layout.manifest_key(tree)
        got = backend.get(key, layout.MAX_MANIFEST_BYTES)
        if got is None:
            problems.append(f"{backend.url}/{key}: missing, but a ref names tree {tree}")
            continue
        try:
            _, entries = parse_manifest(got[0], origin=f"{backend.url}/{key}", expected_tree=tree)
        except Exception as exc:  # noqa: BLE001 - CorruptManifestError, reported
            problems.append(str(exc))
            continue
        manifests[tree] = entries
    return refs, manifests, problems


def gc(backend: Any, *, grace_seconds: float = 3600.0, dry_run: bool = False) -> dict[str, Any]:
    """Delete manifests and blobs no remote ref reaches that are older than the grace period,
    and abort unfinished S3 multipart uploads started before it.

    Runs under the exclusive lock; pushes wait for it.  Manifests go before blobs (roots
    before leaves).  A dry run lists exactly what a real run deletes (both hold the lock).

    Raises:
        RemoteError: a ref or manifest is damaged or missing (gc deletes nothing then:
            what it would protect is unknown), or the remote is busy.
    """
    from runicorn.remotes.locks import acquire_exclusive, new_epoch

    b = Counter(backend)
    got = b.get(layout.CONFIG_KEY, layout.MAX_RECORD_BYTES)
    if got is None:
        raise RemoteError(f"{b.url}: not a runicorn remote (no {layout.CONFIG_KEY})")
    layout.check_config(got[0], b.url)
    with acquire_exclusive(b) as lock:
        refs, manifests, problems = _reachable(b)
        trees = set(manifests)
        blobs = {e.sha256 for entries in manifests.values() for e in entries.values()}
        if problems:
            raise RemoteError(
                f"{b.url}: remote gc stopped, nothing deleted: {problems[0]}"
                + (f" (and {len(problems) - 1} more; run `runicorn remote verify`)" if len(problems) > 1 else "")
            )
        cutoff = time.time() - grace_seconds
        dead_trees = [
            (i.key, i.size)
            for i in b.list(layout.MANIFESTS)
            if layout.id_from_key(i.key, layout.MANIFESTS, ".json") not in trees and i.mtime <= cutoff
        ]
        dead_blobs = [
            (i.key, i.size)
            for i in b.list(layout.BLOBS)
            if layout.id_from_key(i.key, layout.BLOBS) not in blobs and i.mtime <= cutoff
        ]
        stale_tmp = [(i.key, i.size) for i in b.list(layout.TMP) if i.mtime <= time.time() - max(grace_seconds, 3600)]
        # S3 multipart uploads a killed push left (pushes resume them; none runs now, under
        # the exclusive lock): aborted past the grace period, as unreached objects are
        uploads = (
            [(key, uid) for key, uid, started in b.list_uploads(layout.BLOBS) if started <= cutoff]
            if hasattr(b, "list_uploads")
            else []
        )
        if not dry_run:
            if dead_trees or dead_blobs:
                # The new epoch goes first: a gc killed halfway has already told every
                # pusher that what it cached about this remote may be gone.
                new_epoch(b, lock.epoch)
            for key, _ in dead_trees + dead_blobs + stale_tmp:
                b.delete(key)
            for key, uid in uploads:
                b.abort_upload(key, uid)
    return {
        "remote": b.url,
        "dry_run": dry_run,
        "refs": len(refs),
        "trees_kept": len(trees),
        "blobs_kept": len(blobs),
        "trees_deleted": len(dead_trees),
        "blobs_deleted": len(dead_blobs),
        "bytes_freed": sum(s for _, s in dead_trees + dead_blobs),
        "keys": [k for k, _ in dead_trees + dead_blobs],
        "uploads_aborted": len(uploads),
        "uploads": [f"{k} (unfinished upload {uid})" for k, uid in uploads],
        "requests": b.requests,
    }


def verify(backend: Any, *, deep: bool = False, jobs: int = 8) -> dict[str, Any]:
    """Check the remote: config, every ref's manifest, every manifest's blobs (present, right
    size); ``deep`` re-hashes every blob.  Returns ``ok`` and ``problems``.
    """
    from runicorn.workers import run_groups, share

    b = Counter(backend)
    problems: list[str] = []
    got = b.get(layout.CONFIG_KEY, layout.MAX_RECORD_BYTES)
    if got is None:
        problems.append(f"{b.url}/{layout.CONFIG_KEY}: missing")
    else:
        try:
            layout.check_config(got[0], b.url)
        except RemoteError as exc:
            problems.append(str(exc))
    refs, manifests, p = _reachable(b)
    problems += p
    present: dict[str, int] = {}
    for info in b.list(layout.BLOBS):
        sha = layout.id_from_key(info.key, layout.BLOBS)
        if sha is None:
            problems.append(f"{b.url}/{info.key}: stray object under blobs/")
        else:
            present[sha] = info.size
    for tree, entries in sorted(manifests.items()):
        for path, e in entries.items():
            if e.sha256 not in present:
                problems.append(f"tree {tree[:12]}: {path}: blob {e.sha256} missing on the remote")
            elif present[e.sha256] != e.size:
                problems.append(
                    f"tree {tree[:12]}: {path}: blob {e.sha256} has {present[e.sha256]} bytes, expected {e.size}"
                )
    bad: list[str] = []
    if deep:
        import threading

        lock = threading.Lock()

        def work(group: list[str]) -> None:
            for sha in group:
                h = new_sha256()
                try:
                    for chunk in b.get_chunks(layout.blob_key(sha)):
                        h.update(chunk)
                except RemoteError:
                    continue  # deleted meanwhile
                if h.hexdigest() != sha:
                    with lock:
                        bad.append(f"{b.url}/{layout.blob_key(sha)}: content hashes to {h.hexdigest()}")

        n = max(1, min(jobs, getattr(b, "max_jobs", jobs), len(present) // 4 + 1))
        run_groups(work, share(sorted(present), n, lambda s: present[s]))
        problems += sorted(bad)
    return {
        "remote": b.url,
        "ok": not problems,
        "problems": problems,
        "refs_checked": len(refs),
        "trees_checked": len(manifests),
        "blobs_checked": len(present),
        "deep": deep,
        "requests": b.requests,
    }
