"""A store written by index schema 4 / manifest version 1 opens with the current code and
loses nothing (issue 12, item 3: "a store written by today's main is migrated on open,
tested on a store made by today's code").

The store is ``tests/data/store-schema4.tar.gz``, frozen (``tools/make_store_fixture.py``
says how it was made and why it is never made again); ``tests/data/store-schema4.json``
says what it holds.  Every test unpacks its own copy with the tarfile ``data`` filter and
opens it writable, as a user's next command would.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from runicorn.store import Store
from tests.store_fixture import (
    BLOBS,
    FIXTURE,
    ROLES,
    TARBALL,
    TREES,
    check_all,
    check_blob,
    check_restored,
    check_tree,
    extract,
    run_trees,
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args], capture_output=True, text=True, timeout=300, env=env
    )


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """``{relpath: (mode, size)}`` of every file below ``root`` but the index and staging."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if rel.startswith(os.path.join("archive", "tmp")) or name.startswith("index.sqlite3"):
                continue
            st = os.lstat(full)
            out[rel] = (st.st_mode, st.st_size)
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return extract(tmp_path / "fixture")


@pytest.fixture
def store(root: Path) -> Iterator[Store]:
    s = Store(root)
    yield s
    s.close()


# The fixture is frozen: made again by later code it would test nothing (see
# tools/make_store_fixture.py).  A changed byte fails here, before anything else.
FROZEN = {
    "store-schema4.tar.gz": "d4187dda8c9eea34ac3f44227fd90a9a65e21faa1dee7691282da48ecbff6a2c",
    "store-schema4.json": "f0ccc75b63ab29dfbd8e5861f02d50574e3d95e77cbc59bd2ccd4ea9f22b63af",
}


def test_fixture_is_the_frozen_one() -> None:
    for name, sha in FROZEN.items():
        got = hashlib.sha256((TARBALL.parent / name).read_bytes()).hexdigest()
        assert got == sha, f"tests/data/{name} changed; it is frozen (tools/make_store_fixture.py): restore it from git"


def test_fixture_describes_a_varied_store() -> None:
    """The fixture has the cases the other tests rely on."""
    assert FIXTURE["index_schema"] == 4 and FIXTURE["manifest_version"] == 1
    v1, v2, code = (TREES[ROLES[k]] for k in ("v1", "v2", "code"))
    assert set(v1) - set(v2) == {"old.txt"} and set(v2) - set(v1) == {"src/new.py"}
    assert v1["src/main.py"][0] != v2["src/main.py"][0]
    assert (v1["tool.sh"][1], v2["tool.sh"][1]) == ("100644", "100755")
    assert v1["main-link"][1] == "120000" and v1["main-link"][0] != v2["main-link"][0]
    assert v1["src/pkg/__init__.py"][2] == 0
    assert v1["data/copy_a.txt"][0] == v1["docs/copy_b.txt"][0]
    assert any(not p.isascii() for p in v1) and "src/pkg/deep/nested/leaf.txt" in v1
    assert set(code) - set(v2) == {"src/pkg/deep/other/more.txt", "data/copy_c.txt"}
    assert ROLES["unreferenced"] not in {r["tree"] for r in FIXTURE["refs"]}
    assert ROLES["orphan_blob"] not in {e[0] for entries in TREES.values() for e in entries.values()}
    assert any(r["kind"] == "pin" and r["name"] == ROLES["pin"] for r in FIXTURE["refs"])
    assert TARBALL.stat().st_size < 200_000


def test_opened_store_has_every_tree_ref_and_blob(root: Path) -> None:
    """Trees (index entries and manifest alike), refs, blobs and a clean deep verify; a
    second opening finds the same and changes no file."""
    with Store(root) as store:
        first = check_all(store)
    after_first = files_of(root)
    with Store(root) as store:
        second = check_all(store)
        assert store.recovered == []
    assert second == first
    assert files_of(root) == after_first


def test_rebuild_from_files_after_opening_loses_nothing(store: Store) -> None:
    """``verify --repair`` (a rebuild of the index from the files) of the opened store."""
    store.rebuild_index(deep=True)
    check_all(store)


def test_every_tree_restores_through_the_seed_api_and_the_cli(store: Store, root: Path, tmp_path: Path) -> None:
    from runicorn.assets.restore import export_manifest_to_zip, restore_from_manifest

    for i, tree in enumerate(sorted(TREES)):
        target = tmp_path / f"seed-{i}"
        result = restore_from_manifest(
            store.manifest_path(tree),
            store.blobs_dir,
            target,
        )
        assert result["success"] and result["restored_count"] == len(TREES[tree]), result
        check_restored(target, tree)
        out = tmp_path / f"cli-{i}"
        link = ["--link", "hardlink"] if i % 2 else []
        r = cli("--storage", str(root), "restore", tree, str(out), *link)
        assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
        check_restored(out, tree)
    # The named pin and a prefix resolve, and an export has every file.
    r = cli("--storage", str(root), "restore", ROLES["pin"], str(tmp_path / "by-name"))
    assert r.returncode == 0, r.stderr
    check_restored(tmp_path / "by-name", ROLES["v1"])
    v1 = ROLES["v1"]
    export_manifest_to_zip(store.manifest_path(v1), store.blobs_dir, tmp_path / "v1.zip")
    with zipfile.ZipFile(tmp_path / "v1.zip") as zf:
        assert sorted(zf.namelist()) == sorted(TREES[v1])
        for path, (sha, mode, _size) in TREES[v1].items():
            assert hashlib.sha256(zf.read(path)).hexdigest() == sha, path


def test_show_and_diff_read_the_old_trees(store: Store) -> None:
    diff = store.diff(ROLES["pin"], ROLES["v2"])
    assert [d["path"] for d in diff["added"]] == ["src/new.py"]
    assert [d["path"] for d in diff["deleted"]] == ["old.txt"]
    assert sorted(d["path"] for d in diff["modified"]) == ["main-link", "src/main.py"]
    assert [d["path"] for d in diff["mode_changed"]] == ["tool.sh"]
    shown = store.show(ROLES["pin"])
    assert shown["tree"] == ROLES["v1"] and shown["file_count"] == len(TREES[ROLES["v1"]])
    assert store.resolve_tree(ROLES["v2"][:12]) == ROLES["v2"]


def test_snapshot_in_the_opened_store_shares_the_old_blobs(store: Store, root: Path, tmp_path: Path) -> None:
    import runicorn as rn
    from runicorn.assets.restore import restore_from_manifest

    v2 = ROLES["v2"]
    ws = tmp_path / "ws"
    restore_from_manifest(store.manifest_path(v2), store.blobs_dir, ws)
    (ws / "src" / "main.py").write_text("print('after the migration')\n")
    new = rn.snapshot_workspace(ws, None, storage=root)["tree"]
    assert new not in TREES
    entries = {p: [e.sha256, e.mode, e.size] for p, e in store.tree_entries(new).items()}
    assert set(entries) == set(TREES[v2])
    changed = {p for p in entries if entries[p] != TREES[v2][p]}
    assert changed == {"src/main.py"}
    new_blobs = {e[0] for e in entries.values()} - set(BLOBS)
    assert new_blobs == {hashlib.sha256(b"print('after the migration')\n").hexdigest()}
    check_all(store, more=True)  # the old trees are untouched


def test_gc_takes_exactly_the_unreferenced_tree_and_the_orphan_blob(store: Store) -> None:
    dry = store.gc(grace_seconds=0, dry_run=True)
    real = store.gc(grace_seconds=0)
    for report in (dry, real):
        assert report["tree_ids"] == [ROLES["unreferenced"]], report
        # Blobs the fixture has: only the orphan goes (whatever else a new format collects).
        assert set(report["blob_ids"]) & set(BLOBS) == {ROLES["orphan_blob"]}, report
    assert not store.has_tree(ROLES["unreferenced"])
    assert not store.has_blob(ROLES["orphan_blob"])
    for tree in TREES:
        if tree != ROLES["unreferenced"]:
            check_tree(store, tree)
    for sha in BLOBS:
        if sha != ROLES["orphan_blob"]:
            check_blob(store, sha)
    assert store.verify(deep=True)["ok"]
    again = store.gc(grace_seconds=0)
    assert again["tree_ids"] == [] and set(again["blob_ids"]) & set(BLOBS) == set()


def test_deleting_the_run_then_gc_keeps_the_pins(store: Store, root: Path, tmp_path: Path) -> None:
    from runicorn.assets.cleanup import delete_run_completely
    from runicorn.assets.restore import restore_from_manifest

    gone_trees = run_trees()
    assert ROLES["code"] in gone_trees and ROLES["v1"] not in gone_trees
    result = delete_run_completely(FIXTURE["run_id"], root)
    assert result["success"] and result["run_dir_deleted"], result
    assert set(result["tree_ids"]) == gone_trees, result
    store.gc(grace_seconds=0)
    kept_trees = set(TREES) - gone_trees - {ROLES["unreferenced"]}
    kept_blobs = {e[0] for t in kept_trees for e in TREES[t].values()}
    for tree in gone_trees | {ROLES["unreferenced"]}:
        assert not store.has_tree(tree), tree
    for tree in kept_trees:
        check_tree(store, tree)
    for sha in BLOBS:
        if sha in kept_blobs:
            check_blob(store, sha)
        else:
            assert not store.has_blob(sha), sha
    assert {r.tree for r in store.list_refs()} == kept_trees
    assert not (root / FIXTURE["run_path"] / "runs" / FIXTURE["run_id"]).exists()
    target = tmp_path / "pinned"
    restore_from_manifest(store.manifest_path(ROLES["v1"]), store.blobs_dir, target)
    check_restored(target, ROLES["v1"])
    assert store.verify(deep=True)["ok"]


@pytest.fixture
def ro_mount(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs that the test fills and then remounts read-only."""
    from runicorn.store.cache import forget_open_stores

    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (CI runs as root)")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        forget_open_stores()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_read_only_copy_is_served_or_refused_in_one_line(ro_mount: Path, tmp_path: Path) -> None:
    """On a read-only mount the store cannot be changed, so it cannot be migrated either.

    Today (schema 4 is current) it opens read-only and serves every read; code that needs
    a newer schema must refuse it with one line naming the index and saying why (what
    ``Index`` does for a read-only store of another schema), never a traceback.
    """
    from runicorn.errors import ReadOnlyStoreError, RunicornError

    root = extract(ro_mount)
    r = subprocess.run(["mount", "-o", "remount,ro", str(ro_mount)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"cannot remount {ro_mount} read-only: {r.stderr.strip()}")
    try:
        store = Store(root)
    except RunicornError as exc:
        message = str(exc)
        assert "\n" not in message and str(root / "archive" / "index.sqlite3") in message, message
        assert "read-only" in message and "cannot be upgraded" in message, message
        res = cli("--storage", str(root), "ls")
        assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "read-only" in res.stderr, res.stderr
        return
    # What the code of schema 4 does: everything that reads works, writes say read-only.
    with store:
        assert store.read_only
        check_all(store)
        with pytest.raises(ReadOnlyStoreError, match="read-only"):
            store.pin(ROLES["v2"], "not-allowed")
        dry = store.gc(grace_seconds=0, dry_run=True)
        assert dry["tree_ids"] == [ROLES["unreferenced"]] and ROLES["orphan_blob"] in dry["blob_ids"]
    res = cli("--storage", str(root), "restore", ROLES["pin"], str(tmp_path / "out"))
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    check_restored(tmp_path / "out", ROLES["v1"])
    res = cli("--storage", str(root), "gc", "--grace", "0")
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"{root}: the store is read-only" in res.stderr and len(res.stderr.strip().splitlines()) == 1
