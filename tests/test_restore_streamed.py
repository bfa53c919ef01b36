"""A large tree's restore reads its pages while worker processes write the entries read
before: each entry is checked before it (or a folder for it) is written, and whatever
fails later (a page, an entry, the file count, the tree id) leaves nothing restored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runicorn.errors import CorruptManifestError
from runicorn.hashing import sha256_bytes
from runicorn.restore import engine
from runicorn.store import tree_format as tf

Leaf = list[tuple[str, bytes]]  # (path, content) of regular files, in path order


def _paged_tree(
    root: Path, leaves: list[Leaf], blobs: Path | None = None, **manifest: object
) -> tuple[Path, Path, dict[str, bytes]]:
    """A blob folder (``blobs``, else ``root/blobs``) holding the files' blobs and one leaf
    page per item of ``leaves`` (depth 0: the manifest names the leaves), and a manifest
    naming them in ``root`` (``manifest`` overrides its fields); return the manifest, the
    blob folder and the pages."""
    blobs = root / "blobs" if blobs is None else blobs
    root.mkdir(parents=True, exist_ok=True)
    entries: dict[str, tf.TreeEntry] = {}
    pages: dict[str, bytes] = {}

    def put(data: bytes) -> str:
        sha = sha256_bytes(data)
        (blobs / sha[:2]).mkdir(parents=True, exist_ok=True)
        (blobs / sha[:2] / sha).write_bytes(data)
        return sha

    top = []
    for leaf in leaves:
        lines = []
        for path, content in leaf:
            entry = tf.TreeEntry(put(content), tf.MODE_FILE, len(content))
            entries[path] = entry
            lines.append(f"{entry.mode} {entry.sha256} {entry.size} {path}\n".encode())
        page = tf.LEAF_HEADER + b"".join(lines)
        top.append(put(page))
        pages[top[-1]] = page
    fields: dict[str, object] = {
        "format": tf.MANIFEST_FORMAT,
        "format_version": tf.MANIFEST_PAGED,
        "tree": tf.compute_tree_id(entries),
        "file_count": len(entries),
        "total_size_bytes": sum(e.size for e in entries.values()),
        "created_at": "2026-12-01T00:00:00Z",
        "source": None,
        "depth": 0,
        "pages": top,
    }
    fields.update(manifest)
    path = root / "tree.json"
    path.write_text(json.dumps(fields))
    return path, blobs, pages


def _files(n: int, prefix: str = "d") -> Leaf:
    return [(f"{prefix}{i // 10:02d}/f{i:04d}.txt", f"file {prefix} {i}\n".encode() * (1 + i % 7)) for i in range(n)]


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Restores go through two worker processes in batches of 5 files; the list returned
    counts the batches the workers were given."""
    given: list[int] = []
    real = engine._payload

    def counted(batch: list[tuple[str, tf.TreeEntry]]) -> list[tuple[str, str, str, int]]:
        given.append(len(batch))
        return real(batch)

    monkeypatch.setenv("RUNICORN_WORKER_PROCESSES", "2")
    monkeypatch.setattr(engine, "_PROCESS_BATCH_FILES", 5)
    monkeypatch.setattr(engine, "_payload", counted)
    return given


def _nothing_restored(parent: Path, target: Path) -> None:
    assert not target.exists()
    assert [p.name for p in parent.iterdir() if ".rn-restore-" in p.name] == []


def test_a_streamed_restore_writes_every_file_of_every_page(tmp_path: Path, streamed: list[int]) -> None:
    leaves = [_files(40, "a"), _files(3, "b"), _files(57, "c")]
    manifest, blobs, _ = _paged_tree(tmp_path, leaves)
    target = tmp_path / "out" / "tree"
    progress: list[tuple[int, int]] = []
    result = engine.restore_from_manifest(manifest, blobs, target, progress=lambda d, t: progress.append((d, t)))
    assert result["success"] and result["restored_count"] == 100 and result["created"] == 100
    for leaf in leaves:
        for path, content in leaf:
            assert (target / path).read_bytes() == content
    assert sum(streamed) == 100 and len(streamed) == 20  # batches of 5: both workers had some
    assert result["total_bytes"] == sum(len(c) for leaf in leaves for _, c in leaf)
    assert progress[-1] == (result["total_bytes"], result["total_bytes"])


@pytest.mark.parametrize(
    "late, match",
    [
        ([("z/../../escape.txt", b"x\n")], "bad file entry"),
        ([("z/./x.txt", b"x\n")], "bad file entry"),
        ([("a03/f0039.txt/below", b"x\n")], "lies below"),  # below the first page's last file
    ],
)
def test_a_bad_entry_in_a_late_page_leaves_nothing(tmp_path: Path, streamed: list[int], late: Leaf, match: str) -> None:
    manifest, blobs, _ = _paged_tree(tmp_path / "src", [_files(40, "a"), sorted(late)])
    target = tmp_path / "out" / "new" / "tree"
    progress: list[tuple[int, int]] = []
    with pytest.raises(CorruptManifestError, match=match) as caught:
        engine.restore_from_manifest(manifest, blobs, target, progress=lambda d, t: progress.append((d, t)))
    assert str(manifest) in str(caught.value) and f"nothing was restored to {target}" in str(caught.value)
    assert streamed and progress  # the first page's files were written before the bad one was read
    assert not (tmp_path / "out").exists()  # the folders made for the target went too
    assert not (tmp_path / "escape.txt").exists()


def test_a_manifest_refused_at_its_first_page_leaves_the_store_unmarked(tmp_path: Path, streamed: list[int]) -> None:
    """A hard-link restore marks the store (its snapshots then check the blobs they rely
    on) before its first link: not when nothing could be linked."""
    from runicorn.store.layout import LINKED_OUT
    from runicorn.store.store import Store

    with Store(tmp_path / "store") as store:
        archive = store.blobs_dir.parent
        bad, _, _ = _paged_tree(tmp_path / "bad", [[("../escape.txt", b"x\n")]], blobs=store.blobs_dir)
        with pytest.raises(CorruptManifestError, match="bad file entry"):
            engine.restore_from_manifest(bad, store.blobs_dir, tmp_path / "out" / "tree", link="hardlink")
        assert not (tmp_path / "out").exists() and not (archive / LINKED_OUT).exists()
        good, _, _ = _paged_tree(tmp_path / "good", [_files(20, "a")], blobs=store.blobs_dir)
        result = engine.restore_from_manifest(good, store.blobs_dir, tmp_path / "out" / "tree", link="hardlink")
        assert result["success"] and result["methods"] == {"hardlink": 20}
        assert (archive / LINKED_OUT).exists()


@pytest.mark.parametrize("declared", [10**9, 10, None])
def test_progress_ends_full_whatever_size_the_manifest_declares(
    tmp_path: Path, streamed: list[int], declared: int | None
) -> None:
    """The declared size (not part of the tree id, so not checked) is only a first guess."""
    manifest, blobs, _ = _paged_tree(tmp_path / "src", [_files(30, "a")], total_size_bytes=declared)
    progress: list[tuple[int, int]] = []
    result = engine.restore_from_manifest(
        manifest, blobs, tmp_path / "out", progress=lambda d, t: progress.append((d, t))
    )
    assert result["success"]
    assert progress[-1] == (result["total_bytes"], result["total_bytes"])
    assert all(done <= total for done, total in progress)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"tree": "0" * 64}, "does not match its files"),
        ({"file_count": 101}, "file_count 101 but its pages list 100 files"),
        ({"file_count": 99}, "more than the 99 files it declares"),
    ],
)
def test_a_manifest_whose_whole_is_wrong_leaves_nothing(
    tmp_path: Path, streamed: list[int], fields: dict[str, object], match: str
) -> None:
    manifest, blobs, _ = _paged_tree(tmp_path / "src", [_files(50, "a"), _files(50, "b")], **fields)
    target = tmp_path / "out"
    with pytest.raises(CorruptManifestError, match=match):
        engine.restore_from_manifest(manifest, blobs, target)
    assert streamed
    _nothing_restored(tmp_path, target)


def test_a_missing_or_damaged_late_page_leaves_nothing(tmp_path: Path, streamed: list[int]) -> None:
    manifest, blobs, pages = _paged_tree(tmp_path / "src", [_files(40, "a"), _files(40, "b")])
    late = list(pages)[1]
    page_file = blobs / late[:2] / late
    target = tmp_path / "out"
    page_file.write_bytes(pages[late].replace(b"b00", b"b01", 1))
    with pytest.raises(CorruptManifestError, match=f"page {late} does not hash to its name"):
        engine.restore_from_manifest(manifest, blobs, target)
    _nothing_restored(tmp_path, target)
    page_file.unlink()
    with pytest.raises(CorruptManifestError, match=late):
        engine.restore_from_manifest(manifest, blobs, target)
    _nothing_restored(tmp_path, target)


def test_missing_blobs_are_all_listed_even_those_of_pages_not_read_yet(tmp_path: Path, streamed: list[int]) -> None:
    leaves = [_files(30, "a"), _files(30, "b"), _files(30, "c")]
    manifest, blobs, _ = _paged_tree(tmp_path / "src", leaves)
    gone = [sha256_bytes(leaves[0][2][1]), sha256_bytes(leaves[2][29][1])]  # first page and last
    for sha in gone:
        os.unlink(blobs / sha[:2] / sha)
    target = tmp_path / "out"
    result = engine.restore_from_manifest(manifest, blobs, target)
    assert not result["success"]
    assert result["missing_blobs"] == sorted(gone)
    _nothing_restored(tmp_path, target)


def test_a_non_empty_target_is_checked_out_from_every_entry(tmp_path: Path, streamed: list[int]) -> None:
    leaves = [_files(40, "a"), _files(40, "b")]
    manifest, blobs, _ = _paged_tree(tmp_path / "src", leaves)
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("kept\n")
    result = engine.restore_from_manifest(manifest, blobs, target, overwrite=True)
    assert result["success"] and result["created"] == 80
    assert (target / "mine.txt").read_text() == "kept\n"
    assert all((target / p).read_bytes() == c for leaf in leaves for p, c in leaf)
