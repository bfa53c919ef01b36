"""A real full filesystem (a 4 MiB tmpfs): a clear error, nothing half-written, store intact."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runicorn.errors import StorageFullError
from runicorn.store import Store


def test_ingest_on_a_full_disk_fails_cleanly(tiny_fs: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"fits\n" * 100)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(6 << 20))
    with Store(tiny_fs / "store") as store:
        kept = store.put_tree({"small.txt": vars_of(store.ingest_file(small))}, ref=("pin", "small"))
        with pytest.raises(StorageFullError, match=r"no space left on device while storing .*big\.bin"):
            store.ingest_file(big)
        with pytest.raises(StorageFullError):
            store.ingest_files([small, big])
        leftovers = [p for p in store.writer_dir().iterdir() if p.name != "lock"]
        assert leftovers == [], "staged bytes are removed"
        assert store.verify(deep=True)["ok"]
        assert store.tree_entries(kept)["small.txt"].size == 500
        assert store.stats()["blob_count"] == 1
        # once space is back, the same ingest works
        store.ingest_file(tmp_path / "small.txt")


def vars_of(info) -> tuple:  # type: ignore[no-untyped-def]
    return (info.sha256, "100644", info.size)


def test_snapshot_on_a_full_disk_names_the_cause(tiny_fs: Path, tmp_path: Path) -> None:
    import runicorn

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / ".rnignore").write_text("")
    for i in range(40):  # many small files: they are staged in memory, then written at once
        (ws / f"f{i}.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(StorageFullError, match="no space left on device"):
        runicorn.snapshot_workspace(ws, None, storage=tiny_fs / "store")
    with Store(tiny_fs / "store") as store:
        assert store.verify(deep=True)["ok"]
        assert store.stats()["blob_count"] == 0
