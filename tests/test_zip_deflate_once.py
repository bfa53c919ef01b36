"""snapshot --zip reads a small file once and deflates it once: compressible content is
deflated, content that does not compress is stored; the archive is valid for zipfile and
unzip, and a damaged blob still stops it (issue 12, item 2)."""

from __future__ import annotations

import os
import random
import subprocess
import zipfile
from pathlib import Path

import pytest

from runicorn.treezip import _ZIP_WHOLE_BYTES, write_zip
from runicorn.errors import DamagedBlobError
from runicorn.store import Store


def test_zip_members_stored_or_deflated_by_content(tmp_path: Path) -> None:
    rng = random.Random(5)
    files = {
        "text.txt": b"loss acc model layer " * 400,
        "random.bin": rng.randbytes(50_000),
        "tiny.txt": b"x",
        "empty": b"",
        "dir/\u00e9t\u00e9.txt": b"summer " * 100,
        "big/text.log": b"step 1 loss 0.5\n" * ((_ZIP_WHOLE_BYTES // 16) + 100),
        "big/random.bin": rng.randbytes(_ZIP_WHOLE_BYTES + 10),
    }
    with Store(tmp_path / "store") as store:
        entries = {}
        for rel, data in files.items():
            entries[rel] = (store.ingest_bytes(data).sha256, "100644", len(data))
        tree = store.put_tree(entries)
        out = write_zip(store.blob_path, store.tree_entries(tree), tmp_path / "out.zip")
    with zipfile.ZipFile(out) as zf:
        assert zf.testzip() is None
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
        for rel, data in files.items():
            assert zf.read(rel) == data, rel
    assert kinds["text.txt"] == kinds["dir/\u00e9t\u00e9.txt"] == kinds["big/text.log"] == zipfile.ZIP_DEFLATED
    assert kinds["random.bin"] == kinds["big/random.bin"] == kinds["tiny.txt"] == kinds["empty"] == zipfile.ZIP_STORED
    r = subprocess.run(["unzip", "-tq", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_small_blob_with_flipped_bytes_stops_the_zip(tmp_path: Path) -> None:
    with Store(tmp_path / "store") as store:
        sha = store.ingest_bytes(b"hello world\n" * 50).sha256
        tree = store.put_tree({"a.txt": (sha, "100644", 600)})
        path = store.blob_path(sha)
        os.chmod(path, 0o644)
        path.write_bytes(b"HELLO world\n" + b"hello world\n" * 49)
        with pytest.raises(DamagedBlobError, match="a.txt"):
            write_zip(store.blob_path, store.tree_entries(tree), tmp_path / "out.zip")
    assert not (tmp_path / "out.zip").exists()
