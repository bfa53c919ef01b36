"""Trees stored as pages (schema/pages.md): the format, structural sharing (a one-file
change adds a few small pages, whatever the size of the tree), gc of shared pages, and
hostile pages refused with the file named."""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import pytest

from runicorn.errors import CorruptManifestError
from runicorn.hashing import sha256_bytes
from runicorn.store import Store, TreeEntry
from runicorn.store import tree_format as tf

SCHEMA = Path(__file__).resolve().parent.parent / "schema"


def _blobs(store: Store, n: int) -> list[str]:
    return [store.ingest_bytes(f"content {i}\n".encode()).sha256 for i in range(n)]


def _entries(shas: list[str], files: int, dirs: int = 100) -> dict[str, TreeEntry]:
    return {f"d{i % dirs:04d}/f{i:07d}.txt": TreeEntry(shas[i % len(shas)], "100644", 10) for i in range(files)}


def _metadata_bytes(store: Store, pages: set[str]) -> int:
    """index (+ WAL) + manifests + the page files among the blobs."""
    store.index.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = sum(os.path.getsize(p) for p in store.archive.glob("index.sqlite3*") if p.is_file()) + sum(
        p.stat().st_size for p in store.manifests_dir.rglob("*.json")
    )
    return total + sum(store.page_path(p).stat().st_size for p in pages if store.page_path(p).exists())


def _page_ids(store: Store) -> set[str]:
    return {str(r[0]) for r in store.index.query("SELECT page FROM pages")}


def test_the_documented_constants_are_the_code() -> None:
    doc = (SCHEMA / "pages.md").read_text("utf-8")
    for name in ("LEAF_SPLIT", "NODE_SPLIT", "LEAF_MAX", "NODE_MAX", "TOP_MAX"):
        assert f"`{name}` = {getattr(tf, name)}" in doc, name
    assert tf.LEAF_HEADER.decode().strip() in doc and tf.NODE_HEADER.decode().strip() in doc
    assert "depth at most 12" in doc and tf.MAX_DEPTH == 12


def test_leaves_are_cut_by_path_and_nodes_by_child_id() -> None:
    entries = _entries(["a" * 64, "b" * 64], 5000)
    pages = tf.build_pages(entries)
    assert pages.depth == 1 and 1 <= len(pages.top) <= tf.TOP_MAX
    lines: list[tuple[str, TreeEntry]] = []
    for pid in pages.top:
        node = pages.pages[pid]
        assert sha256_bytes(node) == pid and node.startswith(b"runicorn-node-v1\n")
        children = tf.parse_node(node, "node")
        for i, child in enumerate(children):  # a node ends exactly at a cut (or at the end)
            assert (int(child[:8], 16) % tf.NODE_SPLIT == 0) == (i == len(children) - 1) or pid == pages.top[-1]
        for child in children:
            leaf = pages.pages[child]
            assert sha256_bytes(leaf) == child
            got = tf.parse_leaf(leaf, "leaf")
            for i, (path, _) in enumerate(got):
                cut = zlib.crc32(path.encode()) % tf.LEAF_SPLIT == 0
                assert cut == (i == len(got) - 1) or child == children[-1]
            lines.extend(got)
    assert dict(lines) == entries and [p for p, _ in lines] == list(entries)
    # The leaf line is the tree-id line with the size before the path.
    first_path, first = lines[0]
    leaf0 = pages.pages[tf.parse_node(pages.pages[pages.top[0]], "n")[0]]
    assert leaf0.split(b"\n")[1] == f"{first.mode} {first.sha256} {first.size} {first_path}".encode()


def test_an_empty_tree_and_a_small_one(tmp_path: Path) -> None:
    with Store(tmp_path / "st") as s:
        empty = s.put_tree({})
        assert s.tree_entries(empty) == {} and s.get_manifest(empty)["files"] == {}
        sha = _blobs(s, 1)[0]
        small = s.put_tree({"a.txt": TreeEntry(sha, "100644", 10)})
        manifest = json.loads(s.manifest_path(small).read_bytes())
        assert manifest["format_version"] == 2 and manifest["depth"] == 0 and len(manifest["pages"]) == 1
        assert "files" not in manifest
        assert s.get_manifest(small)["files"] == {"a.txt": {"sha256": sha, "size_bytes": 10, "mode": "100644"}}
        # Remotes get version 1, listing every file.
        portable = json.loads(s.portable_manifest(small))
        assert portable["format_version"] == 1 and list(portable["files"]) == ["a.txt"]
        assert "pages" not in portable


def test_one_changed_file_adds_a_few_small_pages_whatever_the_tree(tmp_path: Path) -> None:
    with Store(tmp_path / "st") as s:
        shas = _blobs(s, 50)
        entries = _entries(shas, 100_000, dirs=1000)
        first = s.put_tree(entries)
        s.pin(first, "first")
        depth = json.loads(s.manifest_path(first).read_bytes())["depth"]
        assert depth >= 1
        before_pages = _page_ids(s)
        before = _metadata_bytes(s, before_pages)
        growth = []
        for k in range(5):
            path = f"d{k:04d}/f{k:07d}.txt"
            entries[path] = TreeEntry(shas[(k + 7) % 50], "100644", 10)
            tree = s.put_tree(entries)
            s.pin(tree, f"t{k}")
            now_pages = _page_ids(s)
            added = now_pages - before_pages
            # one leaf, and one node per level above it
            assert len(added) <= depth + 2, len(added)
            after = _metadata_bytes(s, now_pages)
            growth.append(after - before)
            before, before_pages = after, now_pages
        # Index pages are allocated as B-trees split, so one snapshot may take more than
        # its share: the bound is on the mean (issue 12 measures over 20 such snapshots).
        assert sum(growth) / len(growth) <= 64 * 1024, growth
        # the stored trees read back exactly, and the index agrees with the files
        assert s.tree_entries(tree) == entries
        assert s.verify(deep=True)["ok"]


def test_gc_keeps_shared_pages_and_collects_them_with_the_last_tree(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        shas = _blobs(s, 20)
        entries = _entries(shas, 3000, dirs=30)
        a = s.put_tree(entries)
        s.pin(a, "a")
        entries["d0001/f0000001.txt"] = TreeEntry(s.ingest_bytes(b"only in b\n").sha256, "100644", 10)
        b = s.put_tree(entries)
        s.pin(b, "b")
        pages_a = set(tf.build_pages(s.tree_entries(a)).pages)
        pages_b = set(tf.build_pages(s.tree_entries(b)).pages)
        shared = pages_a & pages_b
        assert shared and pages_b - pages_a
    with Store(root) as s:
        s.unpin("b")
        report = s.gc(grace_seconds=0)
        assert report["trees_deleted"] == 1 and report["pages_deleted"] == len(pages_b - pages_a)
        assert report["blobs_deleted"] == 1  # the one blob only b named
        assert all(s.page_path(p).exists() for p in pages_a)
        assert not any(s.page_path(p).exists() for p in pages_b - pages_a)
        assert s.tree_entries(a) and s.verify(deep=True)["ok"]
        s.unpin("a")
        report = s.gc(grace_seconds=0)
        assert report["pages_deleted"] == len(pages_a) and report["blobs_deleted"] == 20
        assert not any(s.page_path(p).exists() for p in pages_a)
        assert s.index.scalar("SELECT COUNT(*) FROM pages") == 0
        assert s.index.scalar("SELECT COUNT(*) FROM page_blobs") == 0
        assert s.verify(deep=True)["ok"]


def test_a_tree_and_its_manifest_are_restorable_from_the_blob_folder_alone(tmp_path: Path) -> None:
    import shutil

    from runicorn.assets.restore import restore_from_manifest

    root = tmp_path / "st"
    ws = tmp_path / "ws"
    for i in range(300):
        (ws / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (ws / f"d{i % 7}" / f"f{i}.txt").write_text(f"file {i}\n")
    with Store(root) as s:
        tree = s.ingest_directory(ws)
        plain = tmp_path / "plain-blobs"
        shutil.copytree(s.blobs_dir, plain)
        manifest = tmp_path / "tree.json"
        shutil.copyfile(s.manifest_path(tree), manifest)
    out = tmp_path / "out"
    assert restore_from_manifest(manifest, plain, out)["success"]
    assert sorted(p.relative_to(out) for p in out.rglob("*.txt")) == sorted(
        p.relative_to(ws) for p in ws.rglob("*.txt")
    )


def _hostile(tmp_path: Path, edit: str) -> tuple[Path, Path]:
    """A copied manifest and blob folder, with one thing made hostile."""
    import shutil

    root = tmp_path / "st"
    with Store(root) as s:
        shas = _blobs(s, 3)
        tree = s.put_tree(_entries(shas, 400, dirs=4))
        blobs = tmp_path / "blobs"
        shutil.copytree(s.blobs_dir, blobs)
        data = json.loads(s.manifest_path(tree).read_bytes())
    top = data["pages"][0]
    page = blobs / top[:2] / top
    os.chmod(page, 0o644)
    if edit == "flip":
        raw = bytearray(page.read_bytes())
        raw[-3] ^= 1
        page.write_bytes(bytes(raw))
    elif edit == "missing":
        page.unlink()
    elif edit == "depth":
        data["depth"] = 99
    elif edit == "count":
        data["file_count"] = 10
    elif edit in ("escape", "nested", "empty-link"):
        # Well-hashed pages whose lines break the tree rules: found by those, not the hash.
        line = {
            "escape": [b"100644 %s 10 ../../etc/evil"],  # a path that climbs out
            "nested": [b"120000 %s 3 a", b"100644 %s 10 a/b"],  # written through a link
            "empty-link": [b"120000 %s 0 a"],  # a symlink the OS cannot create
        }[edit]
        body = b"runicorn-leaf-v1\n" + b"".join(x % shas[0].encode() + b"\n" for x in line)
        pid = sha256_bytes(body)
        (blobs / pid[:2]).mkdir(exist_ok=True)
        (blobs / pid[:2] / pid).write_bytes(body)
        data.update(pages=[pid], depth=0, file_count=len(line))
    manifest = tmp_path / "hostile.json"
    manifest.write_text(json.dumps(data))
    return manifest, blobs


@pytest.mark.parametrize(
    "edit,cause",
    [
        ("flip", "does not hash to its name"),
        ("missing", "is missing"),
        ("depth", "depth 99 is out of range"),
        ("count", "more than the 10 files it declares"),
        ("escape", "bad file entry"),
        ("nested", "'a/b' lies below 'a', which is a symlink"),
        ("empty-link", "a symlink target of 0 bytes"),
    ],
)
def test_hostile_pages_are_refused_naming_the_file_and_nothing_is_written(
    tmp_path: Path, edit: str, cause: str
) -> None:
    from runicorn.assets.restore import restore_from_manifest

    manifest, blobs = _hostile(tmp_path, edit)
    out = tmp_path / "out"
    with pytest.raises(CorruptManifestError, match=re.escape(cause)) as info:
        restore_from_manifest(manifest, blobs, out)
    assert "hostile.json" in str(info.value) or "page" in str(info.value)
    assert not out.exists()
    assert not (tmp_path / "etc").exists()


def test_a_damaged_page_in_the_store_is_found_by_verify_and_named_by_readers(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        shas = _blobs(s, 3)
        tree = s.put_tree(_entries(shas, 400, dirs=4))
        s.pin(tree, "t")
        top = json.loads(s.manifest_path(tree).read_bytes())["pages"][0]
        page = s.page_path(top)
        os.chmod(page, 0o644)
        raw = bytearray(page.read_bytes())
        raw[-3] ^= 1
        page.write_bytes(bytes(raw))
        with pytest.raises(CorruptManifestError, match="does not hash to its name"):
            s.tree_entries(tree)
        kinds = {p["kind"] for p in s.verify(deep=True)["problems"]}
        assert {"corrupt_page", "corrupt_manifest"} <= kinds
        # gc deletes nothing a damaged tree may name: the tree is pinned, its blobs stay
        s.gc(grace_seconds=0)
        assert all(s.blob_path(sha).exists() for sha in shas)


def test_a_writer_killed_between_placing_pages_and_commit_is_recovered(tmp_path: Path) -> None:
    """Pages staged, intent written, then SIGKILL: the next open adopts the tree and
    leaves no page file without a row."""
    import signal
    import subprocess
    import sys

    root = tmp_path / "st"
    code = (
        "import os, signal, sys\n"
        "from runicorn.store import Store, TreeEntry\n"
        "import runicorn.store.trees as trees\n"
        "s = Store(sys.argv[1])\n"
        "shas = [s.ingest_bytes(f'c{i}'.encode()).sha256 for i in range(5)]\n"
        "real = trees.write_pages\n"
        "def die(*a, **k):\n"
        "    real(*a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "trees.write_pages = die\n"
        "s.put_tree({f'd/f{i:05d}': TreeEntry(shas[i % 5], '100644', 2) for i in range(2000)})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    with Store(root) as s:
        assert any("adopted tree" in a for a in s.recovered), s.recovered
        report = s.verify(deep=True)
        assert report["ok"], report["problems"]
        (tree,) = [str(r[0]) for r in s.index.query("SELECT tree FROM trees")]
        assert len(s.tree_entries(tree)) == 2000


def test_a_lost_page_is_written_again_by_the_next_snapshot_of_the_same_files(tmp_path: Path) -> None:
    from runicorn import snapshot_workspace

    root = tmp_path / "st"
    ws = tmp_path / "ws"
    for i in range(500):
        (ws / f"d{i % 5}").mkdir(parents=True, exist_ok=True)
        (ws / f"d{i % 5}" / f"f{i}.txt").write_text(f"file {i}\n")
    first = snapshot_workspace(root=ws, out_zip=None, storage=root)
    with Store(root) as s:
        pages = s.tree_page_sizes(first["tree"])
        files = s.tree_entries(first["tree"])
        assert len(pages) >= 2
        lost = sorted(pages)[0]
        s.page_path(lost).unlink()
        assert not s.verify()["ok"]
    # The unchanged re-snapshot does not vouch for a tree it cannot read back.
    again = snapshot_workspace(root=ws, out_zip=None, storage=root)
    assert again["tree"] == first["tree"]
    with Store(root) as s:
        assert s.page_path(lost).exists()
        assert s.verify(deep=True)["ok"]
        assert s.tree_entries(first["tree"]) == files


def test_a_gc_that_takes_cached_blobs_before_the_commit_makes_the_snapshot_read_them_again(tmp_path: Path) -> None:
    """The slow path holds no blob the stat cache vouches for: a gc between its check and
    the commit collects them, the commit says which, and their files are read again."""
    from runicorn import snapshot_workspace
    from runicorn.store import store as store_module

    root = tmp_path / "st"
    ws = tmp_path / "ws"
    for i in range(200):
        (ws / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (ws / f"d{i % 4}" / f"f{i}.txt").write_text(f"file {i}\n")
    old = 1_700_000_000
    for p in ws.rglob("*.txt"):
        os.utime(p, (old, old))
    first = snapshot_workspace(root=ws, out_zip=None, storage=root)
    with Store(root) as s:
        for ref in s.list_refs(tree=first["tree"]):
            s.delete_ref(ref.kind, ref.name)
    (ws / "d1" / "f1.txt").write_text("changed\n")
    os.utime(ws / "d1" / "f1.txt", (old, old + 5))
    real = store_module.Store.put_tree_pages
    calls: list[dict[str, Any]] = []

    def gc_first(self: Store, tree: str, pages: Any, **kw: Any) -> None:
        if not calls:
            with Store(root) as other:
                calls.append(other.gc(grace_seconds=0))
        real(self, tree, pages, **kw)

    store_module.Store.put_tree_pages = gc_first  # type: ignore[method-assign]
    try:
        second = snapshot_workspace(root=ws, out_zip=None, storage=root)
    finally:
        store_module.Store.put_tree_pages = real  # type: ignore[method-assign]
    assert calls and calls[0]["blobs_deleted"] >= 199  # the gc really took the cached blobs
    assert second["files_read"] >= 200
    with Store(root) as s:
        entries = s.tree_entries(second["tree"])
        assert len(entries) == 201 and all(s.blob_path(e.sha256).exists() for e in entries.values())
        assert s.verify(deep=True)["ok"]
