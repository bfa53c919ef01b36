"""The frozen store of index schema 4 / manifest version 1 (``tests/data/store-schema4.*``,
made by ``tools/make_store_fixture.py``) and the checks that it lost nothing.

Only public Store methods are used (``tree_entries``, ``get_manifest``, ``list_refs``,
``has_blob``, ``read_blob``, ``verify`` ...), never the index tables or the manifest file
format, so the checks hold whatever the way trees are stored.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
TARBALL = DATA / "store-schema4.tar.gz"
FIXTURE: dict[str, Any] = json.loads((DATA / "store-schema4.json").read_text())
TREES: dict[str, dict[str, list[Any]]] = {t: v["entries"] for t, v in FIXTURE["trees"].items()}
BLOBS: dict[str, int] = FIXTURE["blobs"]
ROLES: dict[str, str] = FIXTURE["roles"]


def _keep_read_only(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    """The ``data`` filter, except that a file keeps no more permission than it had: the
    filter gives every file owner write, and a blob or manifest made writable is damage to
    ``verify``."""
    safe = tarfile.data_filter(member, dest)
    if safe is not None and safe.isreg() and safe.mode is not None:
        safe = safe.replace(mode=safe.mode & member.mode, deep=False)
    return safe


def extract(dest: Path, tarball: Path = TARBALL) -> Path:
    """Unpack the fixture (or another frozen store, ``tarball``) under ``dest``; return its
    storage root."""
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter=_keep_read_only)
    return dest / "store"


def as_lists(entries: dict[str, Any]) -> dict[str, list[Any]]:
    """``{path: TreeEntry}`` as the JSON records it: ``{path: [sha256, mode, size]}``."""
    return {p: [e.sha256, e.mode, e.size] for p, e in entries.items()}


def manifest_files(manifest: dict[str, Any]) -> dict[str, list[Any]]:
    return {p: [f["sha256"], f["mode"], f["size_bytes"]] for p, f in manifest["files"].items()}


def ref_records(store: Any) -> list[dict[str, Any]]:
    return [
        {"kind": r.kind, "name": r.name, "tree": r.tree, "meta": r.meta, "created_at": r.created_at}
        for r in sorted(store.list_refs(), key=lambda r: (r.kind, r.name))
    ]


def check_tree(store: Any, tree: str) -> None:
    """``tree`` is stored with exactly the fixture's entries, from the index and the manifest."""
    want = TREES[tree]
    assert store.has_tree(tree), tree
    assert as_lists(store.tree_entries(tree)) == want, tree
    manifest = store.get_manifest(tree)
    assert manifest["tree"] == tree
    assert manifest_files(manifest) == want, tree
    assert len(manifest["files"]) == len(want) == FIXTURE["trees"][tree]["file_count"]
    info = store.tree_info(tree)
    assert info is not None and info.file_count == len(want), (tree, info)
    assert info.total_size == FIXTURE["trees"][tree]["total_size"], (tree, info)


def check_blob(store: Any, sha: str) -> None:
    """Blob ``sha`` is stored, of the recorded size, and its bytes hash to its name."""
    size = BLOBS[sha]
    assert store.has_blob(sha), sha
    assert store.blob_size(sha) == size, sha
    data = store.read_blob(sha)
    assert len(data) == size and hashlib.sha256(data).hexdigest() == sha, sha


def check_all(store: Any, *, more: bool = False) -> dict[str, Any]:
    """Every tree, ref and blob of the fixture is in ``store``, and ``verify --deep`` is
    clean; return what was read (for comparing two openings).  ``more``: the store may
    also hold trees and refs made since it was opened."""
    for tree in TREES:
        check_tree(store, tree)
    want = [(r["kind"], r["name"], r["tree"], r["meta"], r["created_at"]) for r in FIXTURE["refs"]]
    refs = ref_records(store)
    got = [(r["kind"], r["name"], r["tree"], r["meta"], r["created_at"]) for r in refs]
    if more:
        by_name = {(g[0], g[1]): g for g in got}
        got = [by_name[(w[0], w[1])] for w in want if (w[0], w[1]) in by_name]
    assert [g[:4] for g in got] == [w[:4] for w in want]
    for g, w in zip(got, want):
        assert abs(g[4] - w[4]) < 1e-3, (g, w)  # the time a ref was set is kept
    for sha in BLOBS:
        check_blob(store, sha)
    report = store.verify(deep=True)
    assert report["ok"] and report["problems"] == [], report["problems"]
    stats = store.stats()
    if not more:
        assert report["trees_checked"] == len(TREES) and report["refs_checked"] == len(FIXTURE["refs"])
        for key in ("tree_count", "ref_count", "unreferenced_tree_count"):
            assert stats[key] == FIXTURE["stats"][key], (key, stats)
    return {
        "trees": {t: as_lists(store.tree_entries(t)) for t in TREES},
        "refs": refs,
        "stats": {k: v for k, v in stats.items() if k != "storage_root"},
        "verify": {k: v for k, v in report.items() if k != "recovered"},
    }


def check_restored(target: Path, tree: str) -> None:
    """``target`` holds exactly the files of ``tree``: content, executable bit, symlink
    target, and private files still private."""
    want = TREES[tree]
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(target):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(os.path.relpath(os.path.join(dirpath, name), target))
    assert found == set(want), (tree, sorted(found ^ set(want)))
    for path, (sha, mode, size) in want.items():
        full = target / path
        st = os.lstat(full)
        if mode == "120000":
            assert stat.S_ISLNK(st.st_mode), path
            data = os.fsencode(os.readlink(full))
        else:
            assert stat.S_ISREG(st.st_mode), path
            data = full.read_bytes()
            assert bool(st.st_mode & stat.S_IXUSR) == (mode == "100755"), (path, oct(st.st_mode))
            if path in FIXTURE["private_paths"]:
                assert st.st_mode & 0o077 == 0, (path, oct(st.st_mode))
        assert len(data) == size and hashlib.sha256(data).hexdigest() == sha, path


def run_trees() -> set[str]:
    """Trees named only by refs of the fixture's run."""
    kept = {r["tree"] for r in FIXTURE["refs"] if r["kind"] != "run"}
    return {r["tree"] for r in FIXTURE["refs"] if r["kind"] == "run"} - kept
