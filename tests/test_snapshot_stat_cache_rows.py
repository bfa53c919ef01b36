"""The stat cache's folder rows (``stat_cache_dirs``) against what can happen to them: a
writer of the earlier per-file table on the same store, damaged rows, a row vouching for a
blob the store lost, and folders whose symlinks come between their files."""

from __future__ import annotations

import filecmp
from pathlib import Path

import runicorn
from runicorn.assets.restore import restore_from_manifest
from runicorn.store import open_store

from tests.assets_helpers import write


def _generation(ws: Path) -> int:
    base = str(ws.resolve())
    return open_store().stat_cache.dirs_in_order(base + "/", base + "0")[1]


def _restores_as(tree: str, ws: Path, out: Path, excluded: list[str] | None = None) -> None:
    store = open_store()
    restore_from_manifest(store.manifest_path(tree), store.blobs_dir, out)
    cmp = filecmp.dircmp(ws, out, ignore=excluded or [])
    assert not (cmp.left_only or cmp.right_only or cmp.diff_files), (cmp.left_only, cmp.right_only, cmp.diff_files)


def test_leaves_an_earlier_release_recorded_are_not_trusted_with_this_layouts_rows(tmp_path: Path) -> None:
    """An earlier release keeps its own rows (``stat_cache``) but the same leaves, seals and
    generation: the leaves it recorded describe its rows, not this layout's.  Made here as
    it would: this layout's rows say {a, x, z}, the leaves {a, b, z}.  The snapshot stores
    the workspace as it is, and the next write drops the earlier table."""
    ws = tmp_path / "ws"
    for name in ("a", "b", "x", "z"):
        write(ws / name, f"content-{name}\n", age=60)
    write(ws / ".rnignore", "", age=60)
    write(tmp_path / "keep" / "x", "content-x\n", age=60)
    runicorn.snapshot_workspace(tmp_path / "keep", None)  # keeps x's blob
    store = open_store()
    first = runicorn.snapshot_workspace(ws, None, extra_excludes=["b"])
    rows = store.index.query("SELECT * FROM stat_cache_dirs")
    store.unpin(first["tree"])
    store.gc(grace_seconds=0)
    runicorn.snapshot_workspace(ws, None, extra_excludes=["x"])  # leaves for {a, b, z}
    with store.index.write() as c:
        c.executemany("INSERT OR REPLACE INTO stat_cache_dirs VALUES (?, ?, ?, ?, ?, ?)", [tuple(r) for r in rows])
        c.execute("CREATE TABLE stat_cache (path TEXT PRIMARY KEY)")  # the earlier release's mark
    assert _generation(ws) == -1
    again = runicorn.snapshot_workspace(ws, None, extra_excludes=["b"])
    assert again["tree"] == first["tree"] and again["files_read"] == 0
    _restores_as(again["tree"], ws, tmp_path / "out", excluded=["b"])
    assert not store.index.query("SELECT name FROM sqlite_master WHERE name = 'stat_cache'")
    assert _generation(ws) >= 0 and store.verify()["ok"]


def test_an_unchanged_folder_with_symlinks_writes_nothing(tmp_path: Path) -> None:
    """A folder whose symlinks come between its files is met file by file, but its row
    stands: an unchanged re-snapshot writes no stat cache row (the generation stays)."""
    ws = tmp_path / "ws"
    write(ws / "d" / "f1", "one\n", age=60)
    write(ws / "d" / "f2", "two\n", age=60)
    write(ws / ".rnignore", "", age=60)
    (ws / "d" / "f15").symlink_to("f1")
    first = runicorn.snapshot_workspace(ws, None)
    second = runicorn.snapshot_workspace(ws, None)
    generation = _generation(ws)
    third = runicorn.snapshot_workspace(ws, None)
    assert first["tree"] == second["tree"] == third["tree"] and third["files_read"] == 0
    assert _generation(ws) == generation


def test_a_damaged_row_is_written_again_whatever_its_columns_hold(tmp_path: Path) -> None:
    """``names`` as a BLOB (read as the same names), text that is not UTF-8, a folder key
    that is not UTF-8: the snapshot still works (the folder's files read again where its
    row names none of them), and the damage is gone after it."""
    ws = tmp_path / "ws"
    for folder in ("p", "q"):
        for i in range(3):
            write(ws / folder / f"f{i}", f"{folder} {i}\n", age=60)
    write(ws / ".rnignore", "", age=60)
    first = runicorn.snapshot_workspace(ws, None)
    base = str(ws.resolve())
    store = open_store()
    with store.index.write() as c:
        c.execute("UPDATE stat_cache_dirs SET names = CAST(names AS BLOB) WHERE dir = ?", (f"{base}/p/",))
        c.execute("UPDATE stat_cache_dirs SET names = CAST(X'66ff' AS TEXT) WHERE dir = ?", (f"{base}/q/",))
        c.execute(
            "INSERT INTO stat_cache_dirs VALUES (CAST(? AS TEXT), 'f0', X'', X'', X'', 1)",
            (f"{base}/p0\xff/".encode("utf-8", "surrogateescape"),),
        )
    again = runicorn.snapshot_workspace(ws, None)
    assert again["tree"] == first["tree"] and again["files_read"] == 3  # q's
    assert len(store.index.query("SELECT dir FROM stat_cache_dirs")) == 3  # root, p, q: the stray went
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0


def test_a_row_whose_digest_names_a_lost_blob_is_dropped_once_its_file_is_read_again(tmp_path: Path) -> None:
    """A folder vouched for whole, one of whose digests is wrong (a damaged index): the
    file is read again as its blob is not in the store, and the folder's row goes, so the
    next snapshot reads the folder once and records it right, not that file every time."""
    ws = tmp_path / "ws"
    for i in range(4):
        write(ws / "d" / f"f{i}", f"file {i}\n", age=60)
    write(ws / ".rnignore", "", age=60)
    first = runicorn.snapshot_workspace(ws, None)
    directory = f"{ws.resolve()}/d/"
    store = open_store()
    with store.index.write() as c:
        c.execute(
            "UPDATE stat_cache_dirs SET digests = zeroblob(32) || substr(digests, 33) WHERE dir = ?", (directory,)
        )
    reads = [runicorn.snapshot_workspace(ws, None) for _ in range(3)]
    assert [r["files_read"] for r in reads] == [1, 4, 0]
    assert all(r["tree"] == first["tree"] for r in reads)
    _restores_as(first["tree"], ws, tmp_path / "out")
