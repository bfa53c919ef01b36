"""A snapshot takes over the leaves of its root's last tree where no file changed
(``stat_cache_leaves``): the trees and pages it stores are exactly those a store
without that memory stores, through edits, deletions, renames, links, ignore rules,
snapshots of subdirectories and concurrent writers."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from runicorn import snapshot_workspace
from runicorn.store import Store
from runicorn.store.tree_format import build_pages

OLD = 1_700_000_000


def _age(ws: Path, since: float = 0.0) -> None:
    """Put the mtime of every file changed since ``since`` (by ctime) well outside the stat
    cache's racy window (touching only those: utime moves the ctime the cache checks)."""
    for i, p in enumerate(sorted(ws.rglob("*"))):
        if p.is_file() and not p.is_symlink() and p.stat().st_ctime >= since:
            os.utime(p, (OLD, OLD + i))


def _make(ws: Path, n: int = 400) -> None:
    for i in range(n):
        d = ws / f"d{i % 7}" / f"s{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    (ws / ".rnignore").write_text("# nothing excluded\n")
    _age(ws)


def _now(ws: Path) -> float:
    """The filesystem's clock (a file's ctime): later changes have a ctime at least this."""
    probe = ws.parent / ".probe"
    probe.write_text("")
    t = probe.stat().st_ctime
    probe.unlink()
    return t


def _leaves(store_root: Path, ws: Path) -> dict[str, Any]:
    with Store(store_root) as s:
        base = str(ws.resolve())
        _, generation = s.stat_cache.dirs_in_order(base + "/", base + "0")
        return s.stat_cache.leaves(base, generation)


def _check(store_root: Path, tree: str, fresh_root: Path, ws: Path) -> None:
    """``tree`` is the tree a fresh store makes of ``ws``, stored with the canonical pages."""
    fresh = snapshot_workspace(root=ws, out_zip=None, storage=fresh_root)
    assert fresh["tree"] == tree
    with Store(store_root) as s:
        entries = s.tree_entries(tree)
        pages = build_pages(entries)
        manifest = s.get_manifest(tree)
        assert len(manifest["files"]) == len(entries)
        assert s.tree_page_sizes(tree).keys() == set(pages.pages)
        report = s.verify(deep=True)
        assert report["ok"], report


def test_random_edits_give_the_trees_a_fresh_store_gives(tmp_path: Path) -> None:
    rng = random.Random(5)
    ws = tmp_path / "ws"
    _make(ws)
    store_root = tmp_path / "st"
    first = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    assert _leaves(store_root, ws), "the first snapshot records its leaves"
    for rnd in range(14):
        since = _now(ws)
        files = sorted(p for p in ws.rglob("*") if p.is_file() or p.is_symlink())
        for _ in range(rng.randrange(1, 6)):
            op = rng.randrange(8)
            victim = rng.choice(files)
            if not victim.exists() and not victim.is_symlink():
                continue
            if op == 0:
                victim.write_text(victim.read_text() + "more\n") if not victim.is_symlink() else None
            elif op == 1 and not victim.is_symlink():
                victim.unlink()
            elif op == 2:
                (victim.parent / f"new{rnd}-{rng.randrange(999)}.txt").write_text(f"new {rnd}\n")
            elif op == 3 and not victim.is_symlink():
                victim.rename(victim.with_name(victim.name + ".moved"))
            elif op == 4 and not victim.is_symlink():
                victim.chmod(0o755)
            elif op == 5:
                link = victim.parent / f"link{rnd}-{rng.randrange(999)}"
                if not link.exists():
                    link.symlink_to(victim.name)
            elif op == 6:
                (ws / ".rnignore").write_text(f"d{rng.randrange(7)}/s{rng.randrange(3)}/\n")
            else:
                (ws / ".rnignore").unlink(missing_ok=True)
        _age(ws, since)
        res = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
        assert _leaves(store_root, ws)
        _check(store_root, res["tree"], tmp_path / f"fresh{rnd}", ws)
    assert first["tree"] != res["tree"]


def test_a_one_file_change_reads_one_file_and_keeps_the_other_leaves(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _make(ws, 2000)
    store_root = tmp_path / "st"
    snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    before = _leaves(store_root, ws)
    since = _now(ws)
    target = ws / "d3" / "s1" / "f10.txt"
    target.write_text("changed\n")
    _age(ws, since)
    res = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    assert res["files_read"] == 1
    after = _leaves(store_root, ws)
    assert len(before) > 30
    assert len(set(before.values()) - set(after.values())) <= 2  # the changed file's leaf (and one beside)
    _check(store_root, res["tree"], tmp_path / "fresh", ws)


def test_a_snapshot_of_a_subdirectory_drops_the_parents_leaves(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _make(ws)
    store_root = tmp_path / "st"
    snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    assert _leaves(store_root, ws)
    since = _now(ws)
    (ws / "d2" / "s2" / "f5.txt").write_text("edited under the parent's feet\n")
    _age(ws, since)
    snapshot_workspace(root=ws / "d2", out_zip=None, storage=store_root)
    assert not _leaves(store_root, ws)  # its rows changed: its leaves no longer describe them
    since = _now(ws)
    (ws / "d4" / "s1" / "f4.txt").write_text("another\n")
    _age(ws, since)
    res = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    _check(store_root, res["tree"], tmp_path / "fresh", ws)
    assert _leaves(store_root, ws)


def test_a_write_to_the_cache_during_a_snapshot_keeps_it_from_recording_leaves(tmp_path: Path) -> None:
    ws, other = tmp_path / "ws", tmp_path / "other"
    _make(ws)
    _make(other, 20)
    store_root = tmp_path / "st"
    snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    since = _now(ws)
    (ws / "d1" / "s1" / "f1.txt").write_text("changed\n")
    (other / "d0" / "s0" / "f0.txt").write_text("changed too\n")
    _age(ws, since)
    _age(other, since)
    done: list[str] = []

    def meanwhile(_done: int, _total: int) -> None:
        if not done:  # another writer records its own files while this one reads
            done.append(snapshot_workspace(root=other, out_zip=None, storage=store_root)["tree"])

    res = snapshot_workspace(root=ws, out_zip=None, storage=store_root, progress=meanwhile)
    assert done
    assert not _leaves(store_root, ws)
    since = _now(ws)
    (ws / "d5" / "s2" / "f5.txt").write_text("and again\n")
    _age(ws, since)
    again = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    assert again["tree"] != res["tree"]
    _check(store_root, again["tree"], tmp_path / "fresh", ws)
    assert _leaves(store_root, ws)


def test_leaves_whose_pages_a_gc_took_are_written_again(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _make(ws)
    store_root = tmp_path / "st"
    first = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    with Store(store_root) as s:
        for ref in s.list_refs(tree=first["tree"]):
            s.delete_ref(ref.kind, ref.name)
        report = s.gc(grace_seconds=0)
        assert report["trees_deleted"] == 1
    assert _leaves(store_root, ws)  # the memory of the leaves outlives their pages
    since = _now(ws)
    (ws / "d6" / "s0" / "f6.txt").write_text("changed\n")
    _age(ws, since)
    res = snapshot_workspace(root=ws, out_zip=None, storage=store_root)
    assert res["files_read"] >= 400  # the gc took the blobs too: every file is read again
    _check(store_root, res["tree"], tmp_path / "fresh", ws)
