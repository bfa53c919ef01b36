"""A snapshot stats the blobs its stat cache vouches for only in the blob folders that
changed since its root's last snapshot checked them (``stat_cache_seals``,
:class:`runicorn.snapshot.statcache.BlobCheck`): a blob removed, renamed or quarantined
changes its folder, so it is still found and its file read again; a folder changed
within the racy window, a snapshot of an overlapping root or a damaged seal row make
every blob checked again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from runicorn import snapshot_workspace
from runicorn.snapshot import statcache
from runicorn.store import Store, store as store_module

OLD = 1_700_000_000


def _make(ws: Path, n: int = 300) -> None:
    for i in range(n):
        d = ws / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    (ws / ".rnignore").write_text("# nothing excluded\n")
    for i, p in enumerate(sorted(ws.rglob("*"))):
        if p.is_file():
            os.utime(p, (OLD, OLD + i))  # out of the stat cache's racy window


@pytest.fixture
def stats(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many blobs each check of blob files ``stat`` s (the real check runs)."""
    seen: list[int] = []
    real = store_module.blob_files_off

    def counting(blobs_dir: Any, blobs: Any, *, first: bool = False) -> list[str]:
        listed = list(blobs)
        seen.append(len(listed))
        return real(blobs_dir, listed, first=first)

    monkeypatch.setattr(store_module, "blob_files_off", counting)
    return seen


def _blob_stats(seen: list[int], fn: Any) -> tuple[Any, int]:
    """``fn()``'s result and the blobs it stat'd beyond the tree's pages."""
    del seen[:]
    result = fn()
    return result, sum(seen)


def _seal(storage: Path, ws: Path) -> dict[str, tuple[int, ...]]:
    with Store(storage) as s:
        base = str(ws.resolve())
        _, generation = s.stat_cache.dirs_in_order(base + "/", base + "0")
        return s.stat_cache.seal(base, generation)


def _pages(storage: Path, tree: str) -> int:
    with Store(storage) as s:
        return len(s.tree_page_sizes(tree))


def test_an_unchanged_snapshot_stats_no_blob_of_a_sealed_folder(
    tmp_path: Path, stats: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", 0)  # every folder old enough to seal
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws)
    first = snapshot_workspace(ws, None, storage=storage)
    assert first["files_read"] == 301
    # The seal was taken before the first snapshot stored its blobs: their folders moved.
    second, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
    assert second["tree"] == first["tree"] and second["files_read"] == 0
    pages = _pages(storage, first["tree"])
    assert checked == 301 + pages
    assert set(_seal(storage, ws)) == {p.name for p in (storage / "archive" / "blobs").iterdir()}
    third, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
    assert third["tree"] == first["tree"] and third["files_read"] == 0
    assert checked == pages  # the tree's pages only

    # A change of one file: the slow path, the same trust; its blob's folder moves.
    (ws / "d0" / "f0.txt").write_text("changed\n")
    os.utime(ws / "d0" / "f0.txt", (OLD, OLD - 1))
    fourth, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
    assert fourth["files_read"] == 1 and fourth["tree"] != first["tree"]
    assert checked < pages + _pages(storage, fourth["tree"])
    with Store(storage) as s:
        assert s.verify()["problems"] == []


@pytest.mark.parametrize("damage", ["removed", "moved aside", "removed, folder time put back"])
def test_a_blob_gone_from_a_sealed_folder_is_found_and_read_again(
    tmp_path: Path, stats: list[int], monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws)
    first = snapshot_workspace(ws, None, storage=storage)
    snapshot_workspace(ws, None, storage=storage)  # records the seal
    with Store(storage) as s:
        sha = s.tree_entries(first["tree"])["d1/f1.txt"].sha256
        blob = s.blob_path(sha)
    folder = blob.parent
    before = folder.stat()
    if damage == "moved aside":
        os.rename(blob, tmp_path / "aside")
    else:
        blob.unlink()
    if damage.endswith("put back"):
        os.utime(folder, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    again, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
    assert again["tree"] == first["tree"] and again["files_read"] == 1
    assert checked > 0
    assert blob.read_bytes() == b"file 1\n"
    with Store(storage) as s:
        assert s.verify()["problems"] == []


def test_folders_changed_within_the_racy_window_are_not_sealed(tmp_path: Path, stats: list[int]) -> None:
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 40)
    first = snapshot_workspace(ws, None, storage=storage)
    for _ in range(2):  # the blob folders changed moments ago: nothing is trusted yet
        again, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
        assert again["tree"] == first["tree"] and checked >= 41
    assert _seal(storage, ws) == {}


def test_a_snapshot_of_an_overlapping_root_drops_the_seal(
    tmp_path: Path, stats: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws)
    sub = ws / "d2"
    (sub / ".rnignore").write_text("# nothing excluded\n")
    os.utime(sub / ".rnignore", (OLD, OLD))
    snapshot_workspace(sub, None, storage=storage)
    snapshot_workspace(sub, None, storage=storage)
    assert _seal(storage, sub)
    snapshot_workspace(ws, None, storage=storage)  # writes rows for the files below d2
    assert _seal(storage, sub) == {}
    again, checked = _blob_stats(stats, lambda: snapshot_workspace(sub, None, storage=storage))
    assert again["files_read"] == 0 and checked >= 60


def test_a_damaged_seal_row_trusts_nothing(tmp_path: Path, stats: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 50)
    first = snapshot_workspace(ws, None, storage=storage)
    snapshot_workspace(ws, None, storage=storage)
    for bad in ("not json", json.dumps(["00"]), json.dumps({"00": "x"})):
        with Store(storage) as s, s.index.write() as c:
            c.execute("UPDATE stat_cache_seals SET folders = ?", (bad,))
        again, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
        assert again["tree"] == first["tree"] and checked >= 51


def test_a_symlinks_blob_is_checked_even_in_a_sealed_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stat cache row vouches for a symlink's blob: a link flipped back to a target whose
    blob was lost before the seal still gets its blob stored again."""
    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 20)
    os.symlink("bar-target", ws / "latest")
    first = snapshot_workspace(ws, None, storage=storage)
    with Store(storage) as s:
        link_blob = s.blob_path(s.tree_entries(first["tree"])["latest"].sha256)
    link_blob.unlink()
    (ws / "latest").unlink()
    os.symlink("foo-target", ws / "latest")
    assert snapshot_workspace(ws, None, storage=storage)["tree"] != first["tree"]  # seals every folder
    (ws / "latest").unlink()
    os.symlink("bar-target", ws / "latest")
    again = snapshot_workspace(ws, None, storage=storage)
    assert again["tree"] == first["tree"]
    assert link_blob.read_bytes() == b"bar-target"
    with Store(storage) as s:
        assert s.verify()["problems"] == []


def test_blobs_hard_linked_out_of_the_store_are_never_trusted(
    tmp_path: Path, stats: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hard-linked restore hands out the blob files themselves: one grown in place
    (root needs no chmod) keeps its folder's state, so no seal is trusted afterwards."""
    from runicorn.assets.restore import restore_from_manifest
    from runicorn.store.layout import LINKED_OUT

    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 20)
    first = snapshot_workspace(ws, None, storage=storage)
    snapshot_workspace(ws, None, storage=storage)
    assert _seal(storage, ws)
    with Store(storage) as s:
        blob = s.blob_path(s.tree_entries(first["tree"])["d1/f1.txt"].sha256)
        restore_from_manifest(s.manifest_path(first["tree"]), s.blobs_dir, tmp_path / "out", link="hardlink")
    assert (storage / "archive" / LINKED_OUT).exists()
    linked = tmp_path / "out" / "d1" / "f1.txt"
    assert os.path.samefile(linked, blob)
    os.chmod(linked, 0o644)
    with open(linked, "a") as f:
        f.write("grown through the link\n")
    again, checked = _blob_stats(stats, lambda: snapshot_workspace(ws, None, storage=storage))
    assert again["tree"] == first["tree"] and again["files_read"] == 1 and checked >= 21
    assert blob.read_bytes() == b"file 1\n"  # the grown copy was set aside, the bytes stored again
    assert _seal(storage, ws) == {}
    with Store(storage) as s:
        assert [p["kind"] for p in s.verify()["problems"]] in ([], ["writable_blob"])


def test_installing_an_artifact_marks_the_store_and_a_plain_folder_of_blobs_is_left_alone(tmp_path: Path) -> None:
    from runicorn.artifacts.materialize import materialize
    from runicorn.store.layout import LINKED_OUT, note_blobs_linked_out

    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 5)
    tree = snapshot_workspace(ws, None, storage=storage)["tree"]
    with Store(storage) as s:
        assert not (s.archive / LINKED_OUT).exists()
        materialize(s, tree)
        assert (s.archive / LINKED_OUT).exists()
        assert s.blob_folder_states() == {}
    plain = tmp_path / "plain" / "blobs"
    plain.mkdir(parents=True)
    note_blobs_linked_out(plain)
    assert not (tmp_path / "plain" / LINKED_OUT).exists()


def test_a_store_older_than_the_link_bookkeeping_trusts_no_seal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store made before links out were recorded (no ``blobs-links-tracked``) may have
    handed blobs out unrecorded: it counts as marked.  A restore reaching a store's blobs
    through a symlinked folder marks the store all the same."""
    from runicorn.assets.restore import restore_from_manifest
    from runicorn.store.layout import LINKED_OUT, LINKS_TRACKED

    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 10)
    first = snapshot_workspace(ws, None, storage=storage)
    assert (storage / "archive" / LINKS_TRACKED).exists()
    with Store(storage) as s:
        assert s.blob_folder_states()
    (storage / "archive" / LINKS_TRACKED).unlink()  # as a store made by an older version
    snapshot_workspace(ws, None, storage=storage)
    assert _seal(storage, ws) == {}
    with Store(storage) as s:
        assert s.blob_folder_states() == {}

    other = tmp_path / "other"
    tree = snapshot_workspace(ws, None, storage=other)["tree"]
    alias = tmp_path / "alias"
    os.symlink(other / "archive", alias)
    with Store(other) as s:
        assert s.blob_folder_states()
        restore_from_manifest(s.manifest_path(tree), alias / "blobs", tmp_path / "out", link="hardlink")
        assert (other / "archive" / LINKED_OUT).exists() and s.blob_folder_states() == {}
    assert first["tree"] == tree


def test_a_blob_resized_in_place_in_a_crowded_changed_folder_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that changed since the seal gets a ``stat`` per blob however many it
    holds: a blob cut in place there (its folder untouched) is found by its size, and the
    tree stays restorable.  (Checking such a folder by a listing of names would miss it.)"""
    import hashlib
    from collections import Counter

    from runicorn.assets.restore import restore_from_manifest

    monkeypatch.setattr(statcache, "RACY_NS", 0)
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 4000)  # about 16 blobs per folder
    contents = [f"file {i}\n".encode() for i in range(4000)]
    crowd = Counter(hashlib.sha256(data).hexdigest()[:2] for data in contents).most_common(1)[0][0]
    victim = next(data for data in contents if hashlib.sha256(data).hexdigest()[:2] == crowd)
    first = snapshot_workspace(ws, None, storage=storage)
    snapshot_workspace(ws, None, storage=storage)  # records the seal of every folder
    k = 0
    while hashlib.sha256(b"new %d\n" % k).hexdigest()[:2] != crowd:
        k += 1
    (ws / "new.txt").write_bytes(b"new %d\n" % k)  # a new blob in the victim's folder
    os.utime(ws / "new.txt", (OLD, OLD))
    tree = snapshot_workspace(ws, None, storage=storage)["tree"]
    assert tree != first["tree"]
    with Store(storage) as s:
        blob = s.blob_path(hashlib.sha256(victim).hexdigest())
    state = blob.parent.stat()
    with open(blob, "r+b") as f:  # root needs no chmod; the folder does not change
        f.truncate(3)
    assert (blob.parent.stat().st_mtime_ns, blob.parent.stat().st_ctime_ns) == (state.st_mtime_ns, state.st_ctime_ns)
    again = snapshot_workspace(ws, None, storage=storage)
    assert again["tree"] == tree and again["files_read"] == 1
    assert blob.read_bytes() == victim
    with Store(storage) as s:
        restore_from_manifest(s.manifest_path(tree), s.blobs_dir, tmp_path / "out")
        assert [p["kind"] for p in s.verify()["problems"]] in ([], ["writable_blob"])
    assert (tmp_path / "out" / "new.txt").read_bytes() == b"new %d\n" % k
