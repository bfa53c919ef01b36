"""The store's pieces for remotes: known-hash batch ingest, the remote cache, migration 1 -> 2."""

from __future__ import annotations

import hashlib
from pathlib import Path

import apsw
import pytest

from runicorn.errors import IntegrityError
from runicorn.store import Store
from runicorn.store.index import SCHEMA_VERSION
from runicorn.store.ingest import BlobBatch
from runicorn.store.remote_cache import BLOB, TREE, RemoteCache


def test_batch_ingests_data_and_chunks_of_known_hash(store: Store) -> None:
    small, large = b"small blob", bytes(range(256)) * 8192
    batch = BlobBatch(store)
    batch.add_data(small, hashlib.sha256(small).hexdigest())
    batch.add_chunks([large[:1000], large[1000:]], hashlib.sha256(large).hexdigest())
    batch.commit()
    for data in (small, large):
        sha = hashlib.sha256(data).hexdigest()
        assert store.has_blob(sha) and store.blob_path(sha).read_bytes() == data
    assert store.verify(deep=True)["ok"]


def test_batch_refuses_data_whose_hash_differs(store: Store) -> None:
    batch = BlobBatch(store)
    wrong = "0" * 64
    with pytest.raises(IntegrityError, match="expected 0000"):
        batch.add_data(b"tampered", wrong, origin="remote blobs/00/000")
    with pytest.raises(IntegrityError, match="refused"):
        batch.add_chunks([b"x" * 10], wrong)
    batch.commit()
    batch.discard()
    assert store.stats()["blob_count"] == 0
    assert not any(p.is_file() for p in store.blobs_dir.rglob("*"))


def test_remote_cache_rows_and_epoch(store: Store) -> None:
    cache = RemoteCache(store, "s3://bucket/prefix")
    assert cache.check_epoch("e1") is False
    cache.record(BLOB, ["a" * 64, "b" * 64])
    cache.record(TREE, ["c" * 64])
    assert cache.known(BLOB, ["a" * 64, "c" * 64, "d" * 64]) == {"a" * 64}
    assert cache.check_epoch("e1") is True
    assert cache.known(BLOB, ["a" * 64]) == {"a" * 64}
    assert cache.check_epoch("e2") is False  # a remote gc ran: nothing cached is trusted
    assert cache.known(BLOB, ["a" * 64]) == set()
    cache.set_ref_state("pin", "best", "c" * 64, '"etag1"')
    assert cache.ref_state("pin", "best") == ("c" * 64, '"etag1"')
    assert RemoteCache(store, "file:///elsewhere").ref_state("pin", "best") is None
    cache.forget()
    assert cache.ref_state("pin", "best") is None


def test_index_of_version_1_is_migrated(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    tree = s.ingest_directory(Path(__file__).parent.parent / "schema")
    s.pin(tree, "keep")
    s.close()
    conn = apsw.Connection(str(tmp_path / "s" / "archive" / "index.sqlite3"))
    for table in ("remote_objects", "remote_state", "remote_refs"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    s = Store(tmp_path / "s")
    try:
        assert s.index.version == SCHEMA_VERSION
        assert s.get_ref("pin", "keep").tree == tree
        RemoteCache(s, "file:///x").record(BLOB, ["a" * 64])
        assert s.verify()["ok"]
    finally:
        s.close()
