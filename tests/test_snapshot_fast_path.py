"""The unchanged re-snapshot's fast path (issue 12): what sends a file, or the whole
snapshot, back to reading, and the blob check it relies on (``Store.blob_files_off``)."""

from __future__ import annotations

import gc
import hashlib
import os
import time
from pathlib import Path

import pytest

import runicorn
from runicorn.store import open_store
from tests.assets_helpers import write


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    for i in range(30):
        write(ws / f"d{i % 3}" / f"f{i}.txt", f"file {i}\n" * (i + 1), age=3600)
    write(ws / "notes.log", "a log line\n", age=3600)
    write(ws / ".rnignore", "", age=3600)
    return ws


def _fast(ws: Path) -> dict:
    """Snapshot twice: the second one must come from the stat cache alone."""
    first = runicorn.snapshot_workspace(ws, None)
    again = runicorn.snapshot_workspace(ws, None)
    assert again["files_read"] == 0 and again["tree"] == first["tree"]
    return again


def _files(result: dict) -> dict[str, dict]:
    return open_store().get_manifest(result["tree"])["files"]


def _blob(sha: str) -> Path:
    return open_store().blob_path(sha)


def test_a_changed_file_is_read_and_changes_the_tree(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    before = _fast(ws)
    write(ws / "d1" / "f4.txt", "new content\n", age=1800)
    after = runicorn.snapshot_workspace(ws, None)
    assert after["files_read"] == 1 and after["tree"] != before["tree"]
    assert _files(after)["d1/f4.txt"]["sha256"] == hashlib.sha256(b"new content\n").hexdigest()
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0


def test_a_touched_but_same_file_is_read_and_keeps_the_tree(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    before = _fast(ws)
    t = time.time() - 1800
    os.utime(ws / "d2" / "f5.txt", (t, t))  # new mtime, same bytes
    after = runicorn.snapshot_workspace(ws, None)
    assert after["files_read"] == 1 and after["tree"] == before["tree"]
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0  # the cache row was refreshed


@pytest.mark.parametrize("how", ["lost", "resized", "folder"])
def test_a_lost_blob_sends_the_snapshot_back_to_reading(tmp_path: Path, how: str) -> None:
    ws = _workspace(tmp_path)
    before = _fast(ws)
    sha = _files(before)["d0/f9.txt"]["sha256"]
    blob = _blob(sha)
    os.chmod(blob.parent, 0o700)
    if how == "lost":
        blob.unlink()
    elif how == "resized":
        os.chmod(blob, 0o644)
        blob.write_bytes(blob.read_bytes()[:3])
    else:  # the whole blobs/<aa> folder is gone
        lost = {p.name for p in blob.parent.iterdir()}
        os.rename(blob.parent, blob.parent.with_name("moved-away"))
    after = runicorn.snapshot_workspace(ws, None)
    assert after["tree"] == before["tree"]
    assert after["files_read"] >= 1
    if how == "folder":  # every file whose blob was in that folder is read again
        shas = [f["sha256"] for f in _files(after).values()]
        assert after["files_read"] == sum(1 for s in shas if s in lost)
    else:
        assert after["files_read"] == 1
    assert _blob(sha).read_bytes() == (ws / "d0" / "f9.txt").read_bytes()
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0


def test_a_changed_rnignore_is_applied_on_the_fast_path(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    before = _fast(ws)
    assert "notes.log" in _files(before)
    write(ws / ".rnignore", "*.log\nd2/\n", age=1800)
    after = runicorn.snapshot_workspace(ws, None)
    assert after["files_read"] == 1  # the .rnignore itself; the rest comes from the cache
    files = _files(after)
    assert "notes.log" not in files and not any(p.startswith("d2/") for p in files)
    assert after["excluded_count"] == 2 and after["tree"] != before["tree"]
    write(ws / ".rnignore", "", age=1700)
    back = runicorn.snapshot_workspace(ws, None)
    # the excluded files' rows went with them: re-included, they are read (and .rnignore)
    assert back["tree"] == before["tree"] and back["files_read"] == 1 + 1 + 10


@pytest.mark.parametrize("enabled", [True, False])
def test_snapshot_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path, enabled: bool) -> None:
    ws = _workspace(tmp_path)
    (gc.enable if enabled else gc.disable)()
    try:
        runicorn.snapshot_workspace(ws, None)  # slow path
        runicorn.snapshot_workspace(ws, None)  # fast path
        with pytest.raises(runicorn.RunicornError):
            runicorn.snapshot_workspace(ws / "d0" / "f0.txt", None)
        assert gc.isenabled() is enabled
    finally:
        gc.enable()


def test_blob_files_off_names_missing_resized_and_unreachable_blobs(tmp_path: Path) -> None:
    store = open_store()
    datas = [f"blob {i}".encode() * (i + 1) for i in range(40)]
    sizes = {store.ingest_bytes(d).sha256: len(d) for d in datas}
    assert store.blob_files_off(sizes.items()) == []
    shas = sorted(sizes)
    lost, resized = shas[3], shas[17]
    for sha in (lost, resized):
        os.chmod(_blob(sha).parent, 0o700)
    _blob(lost).unlink()
    os.chmod(_blob(resized), 0o644)
    _blob(resized).write_bytes(b"x")
    assert store.blob_files_off(sizes.items()) == [lost, resized]
    assert store.blob_files_off(sizes.items(), first=True) in ([lost], [resized])
    # a size the caller expects wrongly counts as off too
    assert store.blob_files_off({shas[0]: sizes[shas[0]] + 1}.items()) == [shas[0]]
    # a whole folder missing, and a file standing where the folder belongs
    folder = _blob(shas[30]).parent
    in_folder = [s for s in shas if s[:2] == folder.name]
    os.rename(folder, folder.with_name("aside"))
    folder.write_bytes(b"not a folder")
    assert store.blob_files_off(sizes.items()) == sorted([lost, resized, *in_folder])
    # no blobs folder at all: everything is off
    os.rename(store.blobs_dir, store.blobs_dir.with_name("blobs-aside"))
    assert store.blob_files_off(sizes.items()) == shas
    assert len(store.blob_files_off(sizes.items(), first=True)) == 1


def test_blob_files_off_without_descriptors_to_spare_still_answers(tmp_path: Path) -> None:
    """Out of file descriptors (one folder descriptor per blobs/<aa>), whole paths are used."""
    import subprocess
    import sys

    code = r"""
import os, resource, sys
from runicorn.store import open_store
store = open_store(sys.argv[1])
datas = [f"blob {i}".encode() for i in range(300)]
sizes = {store.ingest_bytes(d).sha256: len(d) for d in datas}
lost = sorted(sizes)[-1]
os.chmod(store.blob_path(lost).parent, 0o700)
store.blob_path(lost).unlink()
store.index.query("SELECT 1")
open_now = len(os.listdir("/proc/self/fd"))
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print(store.blob_files_off(sizes.items()) == [lost], len({s[:2] for s in sizes}) > 8)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "st")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]
