"""The mutating path: install, materialise, remove and verify artifacts.

Install = for each download source in file order: fetch (sha256 checked while
streaming), stream the archive's members into the blob store, check the tree id (and
``git-tree-sha1`` for Julia files), record the tree, then materialise it at
``artifacts/<tree>/`` by one atomic rename.  An ``flock`` on
``artifacts/.locks/<tree>.lock`` makes concurrent installers of one tree do the work
once.  Bindings keep installed trees alive through refs of kind ``binding``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from runicorn.artifacts.bindings import BINDING_KIND, binding_ref_name, installed_tree
from runicorn.artifacts.download import Progress, fetch, is_remote, partial_lock
from runicorn.artifacts.locate import artifacts_dir, require_tree_id, resolve_toml_path
from runicorn.artifacts.materialize import materialize
from runicorn.artifacts.overrides import override_dir
from runicorn.artifacts.toml_read import copy_entry, entry_hash, load_toml, require_entry, select_entry
from runicorn.artifacts.usage import USAGE_LOG, usage_key, usage_line
from runicorn.errors import ArtifactError, DownloadError, IntegrityError, RunicornError, TreeNotFoundError
from runicorn.fsutil import append_line_durable, open_locked
from runicorn.store import Store, open_store
from runicorn.store.tree_format import compute_tree_id


def downloads_of(entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The ``[[name.download]]`` tables of an entry, in file order."""
    d = entry.get("download", [])
    return [d] if isinstance(d, dict) else list(d)


def record_usage(store: Store, toml_path: str) -> None:
    """Log that ``toml_path`` binds or fetches artifacts (a gc root source).

    A path not seen before first gets a durable line in ``artifacts/usage.log`` (from
    which the index can be rebuilt), then the index row is written; so a crash in
    between leaves a line the next index rebuild recovers, never an index row without
    it.  Known paths only get their ``last_seen`` updated.  (Two first-time recorders
    may both append: :func:`runicorn.artifacts.gcroots.rebuild_usage` ignores repeats.)
    """
    key = usage_key(toml_path)
    if not store.toml_usage.known(key):
        append_line_durable(store.artifacts_dir / USAGE_LOG, usage_line(toml_path))
    store.toml_usage.seen(key, time.time())


def _bind_ref(store: Store, toml_path: str, name: str, entry: Mapping[str, Any]) -> None:
    h = entry_hash(entry)
    tree = entry.get("tree-sha256") or installed_tree(store, h)
    if tree and store.has_tree(tree):
        ref_name = binding_ref_name(toml_path, name, entry)
        current = store.get_ref(BINDING_KIND, ref_name)
        if current is None or current.tree != tree:  # already right: no write
            store.set_ref(BINDING_KIND, ref_name, tree, meta={"toml": toml_path, "artifact": name})


def ensure_artifact_installed(
    name: str,
    toml: str | os.PathLike[str] | None = None,
    *,
    platform: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    storage: str | os.PathLike[str] | None = None,
) -> Path:
    """Install the artifact ``name`` (for ``platform``) if needed; return its directory.

    Raises:
        ArtifactError: unknown name / no variant for the platform.
        DownloadError: every source failed (each one is named with its reason);
            nothing is installed.
        TomlFormatError: the TOML is malformed.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
    entry = require_entry(load_toml(tpath), name, platform)
    store = open_store(storage)
    record_usage(store, tpath)
    h = entry_hash(entry)
    override = override_dir(str(store.artifacts_dir), name, h)
    if override is not None:
        return Path(override)
    dest = store.artifacts_dir / h
    where = f"{tpath}: artifact {name!r}"
    if dest.is_dir() and _bound(store, tpath, name, entry):
        return dest  # the binding ref keeps the tree, so gc keeps the directory
    with open_locked(store.artifacts_dir / ".locks" / f"{h}.lock"):
        tree = install_entry(store, entry, base_dir=Path(tpath).parent, where=where, progress=progress, keep_hold=True)
    try:
        _bind_ref(store, tpath, name, entry)
    finally:
        store.release_holds({tree})  # the binding ref keeps it from here
    if not dest.is_dir():
        # Success means installed: never hand out a directory that is not there.
        raise ArtifactError(
            f"{where}: {h[:12]} was installed but {dest} is gone (a concurrent gc or remove?); run the command again"
        )
    return dest


def _bound(store: Store, toml_path: str, name: str, entry: Mapping[str, Any]) -> bool:
    """True when this file's binding ref of the entry names its installed tree (no write)."""
    tree = entry.get("tree-sha256") or installed_tree(store, entry_hash(entry))
    ref = store.get_ref(BINDING_KIND, binding_ref_name(toml_path, name, entry)) if tree else None
    return ref is not None and ref.tree == tree


def install_entry(
    store: Store,
    entry: Mapping[str, Any],
    *,
    base_dir: Path,
    where: str,
    progress: Progress | None = None,
    keep_hold: bool = False,
) -> str:
    """Install one entry (caller holds the tree lock); return its tree-sha256.

    The tree is held against gc from the moment it is found in the store (or stored)
    until it is materialised, so a concurrent gc cannot collect it mid-install; with
    ``keep_hold`` the hold is the caller's to release (after it set a ref), so the tree
    is never unprotected in between.

    Raises:
        DownloadError: listing every source tried and why it failed.
    """
    tree = _install_entry(store, entry, base_dir=base_dir, where=where, progress=progress)
    if not keep_hold:
        store.release_holds({tree})
    return tree


def _install_entry(
    store: Store, entry: Mapping[str, Any], *, base_dir: Path, where: str, progress: Progress | None
) -> str:
    """:func:`install_entry`, returning the tree held for this operation."""
    want_tree: str | None = entry.get("tree-sha256")
    want_git: str | None = entry.get("git-tree-sha1")
    # A git-tree-sha1 entry already installed names its tree through its link.
    known = want_tree or (installed_tree(store, want_git) if want_git else None)
    if known and store.has_tree(known):
        try:
            # Held in the transaction that finds it: a gc either ran before (and we
            # install from the sources) or keeps it until we let go.
            store.resolve_tree(known, hold=True)
        except TreeNotFoundError:
            pass
        else:
            if _blobs_present(store, known):
                try:
                    materialize(store, known, name=None if want_tree else want_git)
                except BaseException:
                    store.release_holds({known})
                    raise
                return known
            store.release_holds({known})
    failures: list[str] = []
    work = store.artifacts_dir / ".downloads"
    for d in downloads_of(entry):
        if "remote" in d:
            try:
                return _install_from_remote(store, d, want_tree, progress)  # type: ignore[arg-type]
            except RunicornError as exc:
                failures.append(f"remote {d['remote']} -> {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - as for any source: report, try the next
                failures.append(f"remote {d['remote']} -> {type(exc).__name__}: {exc}")
                continue
        url = d["url"]
        try:
            # the partial file is per archive, which entries with other tree ids may share
            with (
                partial_lock(store.artifacts_dir / ".locks", d["sha256"])
                if is_remote(url)
                else contextlib.nullcontext()
            ):
                src = fetch(
                    url, base_dir=base_dir, work_dir=work, sha256=d["sha256"], size=d.get("size"), progress=progress
                )
                tree = _ingest_source(store, src, url, want_tree, want_git)
                materialize(store, tree, name=want_tree or want_git)
                if src.parent == work:
                    src.unlink(missing_ok=True)
            return tree
        except RunicornError as exc:
            failures.append(f"{url} -> {exc}")
        except Exception as exc:  # noqa: BLE001 - any failure of one source means: try the next
            failures.append(f"{url} -> {type(exc).__name__}: {exc}")
    if not failures:
        raise DownloadError(
            f"{where}: cannot be installed: tree {entry_hash(entry)} is not in the store and "
            "the entry has no [[download]] sources; bind it again from its directory or an archive"
        )
    tried = "; ".join(f"[{i}] {f}" for i, f in enumerate(failures, 1))
    raise DownloadError(
        f"{where}: could not install {entry_hash(entry)[:12]}, nothing was installed; "
        f"tried {len(failures)} source(s): {tried}"
    )


def _install_from_remote(store: Store, d: Mapping[str, Any], tree: str, progress: Progress | None) -> str:
    """Fetch ``tree`` from a runicorn remote (only the blobs the store lacks) and materialise it."""
    from runicorn.remotes.pull import install_tree_from_remote

    install_tree_from_remote(store, d["remote"], tree, endpoint=d.get("endpoint"), progress=progress)
    materialize(store, tree)
    return tree


def _blobs_present(store: Store, tree: str) -> bool:
    return all(store.blob_path(e.sha256).exists() for e in store.tree_entries(tree).values())


def _ingest_source(store: Store, src: Path, origin: str, want_tree: str | None, want_git: str | None) -> str:
    """Put a fetched archive (or local directory) into the store, checking the expected ids.

    Raises:
        IntegrityError: the source holds another tree (nothing of a directory is stored).
        UnsafeArchiveError / ArtifactError: a hostile archive, or more bytes than allowed.
    """
    from runicorn.artifacts.githash import git_tree_sha1

    limit = _size_limit(store, want_tree)
    if src.is_dir():
        return _ingest_directory_source(store, src, origin, want_tree, want_git, limit)
    from runicorn.artifacts.extract import extract_into_store

    with store.lease() as lease:  # what the archive stores, let go of by its tree at once
        ex = extract_into_store(store, src, want_git=bool(want_git), origin=origin, limit=limit, lease=lease)
        tree = compute_tree_id(ex.entries)
        if want_tree and tree != want_tree:
            raise IntegrityError(f"archive holds tree-sha256 {tree}, expected {want_tree}")
        if want_git:
            git = git_tree_sha1(ex.git)
            if git != want_git:
                raise IntegrityError(f"archive holds git-tree-sha1 {git}, expected {want_git}")
        return store.put_tree(ex.entries, source=origin, held=lease)


def _size_limit(store: Store, want_tree: str | None) -> tuple[int, str]:
    """The most bytes a source may put in the store, and how to name that bound: the size
    of the declared tree when the store knows it (its manifest is there, blobs missing),
    else :func:`runicorn.artifacts.extract.extract_limit`."""
    from runicorn.artifacts.extract import extract_limit

    if want_tree and store.has_tree(want_tree):
        size = sum(e.size for e in store.tree_entries(want_tree).values())
        return size, f"the {size} bytes of tree {want_tree[:12]}"
    return extract_limit(store)


def _ingest_directory_source(
    store: Store, src: Path, origin: str, want_tree: str | None, want_git: str | None, limit: tuple[int, str]
) -> str:
    """Store a local directory source only if it is the declared tree.

    It is sized and hashed first, so a directory that is too big or not the declared tree
    puts nothing in the store; then it is stored (blobs no more readable than their files)
    and the stored tree checked again, since the directory may change in between.

    Raises:
        ArtifactError: more bytes than ``limit``.
        IntegrityError: another tree (before or after storing).
    """
    from runicorn.artifacts.create import tree_hash
    from runicorn.store import walk_files

    most, why = limit
    total = 0
    for _rel, _full, st in walk_files(src):
        total += st.st_size  # a symlink's lstat size is its target's length, as stored
        if total > most:
            raise ArtifactError(f"directory {src} holds more than {most} bytes ({why}); nothing was stored")
    if want_tree:
        got = tree_hash(src)
        if got != want_tree:
            raise IntegrityError(f"directory {src} holds tree-sha256 {got}, expected {want_tree}; nothing was stored")
    elif want_git:
        got = tree_hash(src, kind="git-tree-sha1")
        if got != want_git:
            raise IntegrityError(f"directory {src} holds git-tree-sha1 {got}, expected {want_git}; nothing was stored")
    tree = store.ingest_directory(src, source=origin)
    try:
        if want_tree and tree != want_tree:
            raise IntegrityError(
                f"directory {src} holds tree-sha256 {tree}, expected {want_tree} (it changed while it was stored)"
            )
        if want_git:
            git = _stored_git_tree_sha1(store, tree)
            if git != want_git:
                raise IntegrityError(
                    f"directory {src} holds git-tree-sha1 {git}, expected {want_git} (it changed while it was stored)"
                )
    except BaseException:
        store.release_holds({tree})  # recorded but unwanted: gc may take it
        raise
    return tree


def _stored_git_tree_sha1(store: Store, tree: str) -> str:
    """The git-tree-sha1 of a stored tree, from its entries and blobs (not the source)."""
    from runicorn.artifacts.githash import git_tree_sha1
    from runicorn.hashing import git_blob_sha1_file

    blob_ids: dict[str, str] = {}
    git: dict[str, tuple[str, str]] = {}
    for path, e in store.tree_entries(tree).items():
        if e.sha256 not in blob_ids:
            blob_ids[e.sha256] = git_blob_sha1_file(store.blob_path(e.sha256))
        git[path] = (e.mode, blob_ids[e.sha256])
    return git_tree_sha1(git)


def remove_artifact(tree: str, *, storage: str | os.PathLike[str] | None = None) -> bool:
    """Delete the installed directory of ``tree`` (a tree id or git-tree-sha1); True if it existed.

    The content stays in the store until ``runicorn gc`` finds it unbound.

    Raises:
        ArtifactError: ``tree`` is not a tree id.
    """
    require_tree_id(tree)
    store = open_store(storage)
    adir = store.artifacts_dir
    with open_locked(adir / ".locks" / f"{tree}.lock"):
        d = adir / tree
        existed = d.exists() or d.is_symlink()
        if d.is_symlink():
            d.unlink()
        elif d.is_dir():
            trash = adir / f".trash-{tree[:16]}-{os.urandom(6).hex()}"
            os.rename(d, trash)
            shutil.rmtree(trash, ignore_errors=True)
            for other in adir.iterdir():  # git-tree-sha1 links to the removed tree
                if other.is_symlink() and os.readlink(other) == tree:
                    other.unlink()
        return existed


def verify_artifact(tree: str, *, storage: str | os.PathLike[str] | None = None) -> bool:
    """True if the installed directory of ``tree`` still hashes to ``tree`` (sha256 or git sha1).

    Raises:
        ArtifactError: ``tree`` is not a tree id.
    """
    from runicorn.artifacts.create import tree_hash

    require_tree_id(tree)
    d = Path(artifacts_dir(storage)) / tree
    if not d.is_dir():
        return False
    kind = "git-tree-sha1" if len(tree) == 40 else "tree-sha256"
    return tree_hash(d, kind=kind) == tree


def select_downloadable_artifacts(
    toml: str | os.PathLike[str] | None = None, *, platform: Mapping[str, Any] | None = None, include_lazy: bool = False
) -> dict[str, dict[str, Any]]:
    """``{name: entry}`` of every artifact with download sources for ``platform``
    (lazy ones only with ``include_lazy``).

    Raises:
        TomlFormatError: malformed TOML.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
    parsed = load_toml(tpath)
    out: dict[str, dict[str, Any]] = {}
    for name in parsed.artifacts:
        entry = select_entry(parsed, name, platform)
        if entry is None or not downloads_of(entry):
            continue
        if entry.get("lazy") and not include_lazy:
            continue
        out[name] = copy_entry(entry)
    return out
