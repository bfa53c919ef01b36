"""A snapshot checks the blobs its stat cache vouches for outside the sealed folders by
name in a listing of each folder crowded with them, and with a ``stat`` each elsewhere
(``Store.blob_files_missing``, :meth:`runicorn.snapshot.statcache.BlobCheck.off`): a lost
blob is found either way and its file read again; in a store whose blobs were
hard-linked out nothing is listed, so a blob grown or cut in place is found by its size."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from runicorn import snapshot_workspace
from runicorn.store import Store, layout
from runicorn.store.layout import note_blobs_linked_out
from runicorn.store.tree_format import MODE_FILE
from runicorn.store.tree_lines import TreeLines

OLD = 1_700_000_000


def _make(ws: Path, n: int) -> None:
    for i in range(n):
        d = ws / f"d{i % 20}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.txt").write_text(f"file {i}\n")
    (ws / ".rnignore").write_text("")
    for i, p in enumerate(sorted(ws.rglob("*"))):
        if p.is_file():
            os.utime(p, (OLD, OLD + i))  # out of the stat cache's racy window


@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The blob folders checks list (the real listing runs)."""
    seen: list[str] = []
    real = layout._names_if_crowded

    def spying(folder: str, wanted: int) -> set[str] | None:
        names = real(folder, wanted)
        if names is not None:
            seen.append(os.path.basename(folder))
        return names

    monkeypatch.setattr(layout, "_names_if_crowded", spying)
    return seen


def _crowded_store(tmp_path: Path) -> tuple[Path, Path, str]:
    """4,000 files (about 16 blobs per folder), snapshotted twice within the racy window:
    no folder is sealed, every vouched blob is checked."""
    ws, storage = tmp_path / "ws", tmp_path / "store"
    _make(ws, 4000)
    first = snapshot_workspace(ws, None, storage=storage)
    assert snapshot_workspace(ws, None, storage=storage)["files_read"] == 0
    return ws, storage, first["tree"]


def _blob(storage: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return storage / "archive" / "blobs" / sha[:2] / sha


def test_a_lost_blob_in_a_listed_folder_is_read_again(tmp_path: Path, listed: list[str]) -> None:
    ws, storage, tree = _crowded_store(tmp_path)
    contents = [f"file {i}\n".encode() for i in range(4000)]
    crowd = Counter(hashlib.sha256(data).hexdigest()[:2] for data in contents)
    victim = next(data for data in contents if hashlib.sha256(data).hexdigest()[:2] == crowd.most_common(1)[0][0])
    lost = _blob(storage, victim)
    lost.unlink()
    del listed[:]
    again = snapshot_workspace(ws, None, storage=storage)
    assert again["tree"] == tree and again["files_read"] == 1
    assert lost.parent.name in listed and len(listed) > 128  # most folders: no stat per blob there
    assert lost.read_bytes() == victim
    with Store(storage) as s:
        assert s.verify()["problems"] == []


def test_a_store_whose_blobs_were_linked_out_stats_every_blob(tmp_path: Path, listed: list[str]) -> None:
    ws, storage, tree = _crowded_store(tmp_path)
    with Store(storage) as s:
        note_blobs_linked_out(s.blobs_dir)  # as a hard-linked restore does before its first link
    grown = _blob(storage, b"file 77\n")
    os.chmod(grown, 0o644)
    with open(grown, "a") as f:
        f.write("grown through a link\n")
    del listed[:]
    again = snapshot_workspace(ws, None, storage=storage)
    assert again["tree"] == tree and again["files_read"] == 1
    assert listed == []
    assert grown.read_bytes() == b"file 77\n"  # the grown file set aside, the bytes stored again


def _ingested(storage: Path, n: int) -> tuple[Store, dict[str, int]]:
    s = Store(storage)
    datas = [f"blob {i}".encode() * (i + 1) for i in range(n)]
    return s, {s.ingest_bytes(d).sha256: len(d) for d in datas}


def _by_folder(sizes: dict[str, int]) -> list[tuple[str, list[str], list[int]]]:
    folders: dict[str, list[str]] = {}
    for sha in sorted(sizes):
        folders.setdefault(sha[:2], []).append(sha)
    return [(prefix, shas, [sizes[sha] for sha in shas]) for prefix, shas in sorted(folders.items())]


@pytest.mark.parametrize("by_name", [True, False])
def test_blob_files_missing_by_name_or_by_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listed: list[str], by_name: bool
) -> None:
    # Every folder crowded (listed), or none (a stat per blob).
    monkeypatch.setattr(layout, "_FOLDER_BYTES_PER_STAT", 1 << 40 if by_name else 0)
    s, sizes = _ingested(tmp_path / "st", 60)
    with s:
        assert s.blob_files_missing(_by_folder(sizes)) == []
        shas = sorted(sizes)
        lost, resized = shas[5], shas[40]
        s.blob_path(lost).unlink()
        os.chmod(s.blob_path(resized), 0o644)
        s.blob_path(resized).write_bytes(b"x")
        # Listed, a folder tells which files are there, not their sizes.
        assert s.blob_files_missing(_by_folder(sizes)) == ([lost] if by_name else [lost, resized])
        assert s.blob_files_missing(_by_folder(sizes), first=True) == [lost]
        assert bool(listed) is by_name
        # A folder gone: each of its blobs is missing, listed or not.
        folder = s.blob_path(shas[20]).parent
        os.rename(folder, folder.with_name("aside"))
        gone = [sha for sha in shas if sha[:2] == folder.name]
        expected = sorted({lost, *gone} | (set() if by_name else {resized}))
        assert s.blob_files_missing(_by_folder(sizes)) == expected


def test_lines_by_folder_leave_out_open_lines_and_skipped_folders() -> None:
    lines = TreeLines()
    shas = [hashlib.sha256(f"{i}".encode()).hexdigest() for i in range(600)]
    for i, sha in enumerate(shas):
        lines.add(f"f{i:04d}", MODE_FILE, sha, i)
    lines.add(f"f{len(shas)}", MODE_FILE, shas[0], 0)  # one blob named twice
    lines.add_open("open", MODE_FILE, 3)  # an open line's digest is all zeros: folder "00"
    skip = {shas[1][:2], "00"}
    got: list[Any] = list(lines.blobs_by_folder(skip_prefixes=skip))
    assert [prefix for prefix, _, _ in got] == sorted({sha[:2] for sha in shas} - skip)
    assert all(sha[:2] == prefix for prefix, in_folder, _ in got for sha in in_folder)
    flat = sorted(pair for _, in_folder, sizes in got for pair in zip(in_folder, sizes))
    assert flat == sorted(pair for pair in lines.blob_sizes() if pair[0][:2] not in skip)
    assert not any(sha == "0" * 64 for sha, _ in flat)
    assert list(lines.blobs_by_folder(skip_prefixes={f"{b:02x}" for b in range(256)})) == []
    zeros = sorted(
        pair for prefix, in_folder, sizes in lines.blobs_by_folder() if prefix == "00" for pair in zip(in_folder, sizes)
    )
    assert zeros == sorted((sha, i) for i, sha in enumerate(shas) if sha[:2] == "00")
