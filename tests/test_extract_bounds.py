"""Extraction is bounded: memory whatever the archive, extracted bytes by a limit; a
local-directory source is sized and hashed before anything enters the store."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts.extract import extract_into_store
from runicorn.errors import DownloadError, UnsafeArchiveError
from runicorn.hashing import sha256_file
from runicorn.store import Store, open_store

MIB = 1 << 20
CHUNK = 8 * MIB


def _compress(fmt: str, data: bytes) -> bytes:
    """One complete stream of ``data``; these formats allow streams back to back."""
    if fmt == "gz":
        return gzip.compress(data, mtime=0)
    if fmt == "bz2":
        return bz2.compress(data)
    if fmt == "xz":
        return lzma.compress(data)
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def zeros_tar(path: Path, fmt: str, size: int, name: str = "zeros.bin") -> Path:
    """A compressed tar of one member of ``size`` zero bytes (``size`` a multiple of
    :data:`CHUNK`), built from one compressed stream of zeros repeated: a tar.bz2 of
    4 GiB takes well under a second to make."""
    head = tarfile.TarInfo(name)
    head.size = size
    zeros = _compress(fmt, bytes(CHUNK))
    with open(path, "wb") as f:
        f.write(_compress(fmt, head.tobuf(format=tarfile.PAX_FORMAT)))
        for _ in range(size // CHUNK):
            f.write(zeros)
        f.write(_compress(fmt, bytes(1024)))  # end-of-archive blocks
    return path


def zeros_zip(path: Path, size: int, compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        info = zipfile.ZipInfo("zeros.bin")
        info.compress_type = compression
        with zf.open(info, "w", force_zip64=True) as out:
            for _ in range(size // MIB):
                out.write(bytes(MIB))
    return path


def _bind(tmp_path: Path, archive: Path, tree: str) -> Path:
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "bomb", tree, download_info=[(str(archive), sha256_file(archive))], force=True)
    return toml


def _nothing_left(store: Store) -> None:
    """Nothing installed, staged or stored by the refused archive; the store verifies clean."""
    adir = store.artifacts_dir
    leftovers = [p.name for p in adir.iterdir() if p.name not in (".locks", ".downloads", "usage.log")]
    assert leftovers == []
    store.gc(grace_seconds=0)
    assert [p for p in store.blobs_dir.rglob("*") if p.is_file()] == []
    assert list(store.writer_dir().parent.glob("*/blob-*")) == []
    assert store.verify()["ok"], store.verify()


def test_zip_bomb_is_refused_before_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNICORN_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", str(16 * MIB))
    bomb = zeros_zip(tmp_path / "bomb.zip", 64 * MIB)
    assert bomb.stat().st_size < MIB
    toml = _bind(tmp_path, bomb, "0" * 64)
    with pytest.raises(DownloadError) as ei:
        rn.ensure_artifact_installed("bomb", toml)
    msg = str(ei.value)
    assert f"{bomb} -> {bomb}: refused: it expands to more than {16 * MIB} bytes" in msg
    assert f"RUNICORN_EXTRACT_MAX={16 * MIB} bytes" in msg and "'zeros.bin'" in msg
    assert "\n" not in msg
    _nothing_left(open_store())


def test_tar_bz2_bomb_is_refused_without_memory_or_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNICORN_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", str(1 << 30))
    bomb = zeros_tar(tmp_path / "bomb.tar.bz2", "bz2", 4 << 30)  # 4 GiB of zeros in a few KB
    assert bomb.stat().st_size < 64 * 1024
    toml = _bind(tmp_path, bomb, "0" * 64)
    with pytest.raises(DownloadError) as ei:
        rn.ensure_artifact_installed("bomb", toml)
    assert f"{bomb}: refused: it expands to more than {1 << 30} bytes (RUNICORN_EXTRACT_MAX=" in str(ei.value)
    assert f"declares {4 << 30} bytes" in str(ei.value)
    _nothing_left(open_store())


def test_many_members_over_the_limit_leave_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNICORN_DIR", str(tmp_path / "root"))
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", str(5 * MIB))
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(4):
            ti = tarfile.TarInfo(f"part-{i}")
            ti.size = 2 * MIB
            tf.addfile(ti, io.BytesIO(bytes([i]) * ti.size))
    toml = _bind(tmp_path, archive, "0" * 64)
    with pytest.raises(DownloadError, match=r"refused: it expands to more than 5242880 bytes .*'part-2'"):
        rn.ensure_artifact_installed("bomb", toml)
    _nothing_left(open_store())  # the parts stored before the refusal were not kept
    # within the limit the same archive installs
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", str(8 * MIB))
    store = Store(tmp_path / "other")
    ex = extract_into_store(store, archive)
    assert sorted(ex.entries) == [f"part-{i}" for i in range(4)]


def test_extract_limit_setting_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runicorn.artifacts.extract import DEFAULT_EXTRACT_MAX, extract_limit
    from runicorn.errors import ArtifactError

    store = Store(tmp_path / "s")
    monkeypatch.delenv("RUNICORN_EXTRACT_MAX", raising=False)
    limit, why = extract_limit(store)
    assert limit <= DEFAULT_EXTRACT_MAX and ("free on" in why or "default limit" in why)
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", "lots")
    with pytest.raises(ArtifactError, match="RUNICORN_EXTRACT_MAX='lots' is not a non-negative number"):
        extract_limit(store)


def test_a_known_tree_bounds_by_its_size(tmp_path: Path) -> None:
    from runicorn.artifacts.install import _size_limit

    store = Store(tmp_path / "s")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 1000)
    os.symlink("a", src / "l")
    tree = store.ingest_directory(src)
    assert _size_limit(store, tree) == (1001, f"the 1001 bytes of tree {tree[:12]}")
    with pytest.raises(UnsafeArchiveError, match=r"more than 1001 bytes \(the 1001 bytes of tree"):
        extract_into_store(store, zeros_zip(tmp_path / "z.zip", MIB), limit=_size_limit(store, tree))


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_zip_bzip2_and_lzma_members_decode_bounded(tmp_path: Path, method: int) -> None:
    store = Store(tmp_path / "s")
    path = tmp_path / "m.zip"
    data = os.urandom(3000) + bytes(5 * MIB)
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        zf.writestr("d.bin", data)
    ex = extract_into_store(store, path)
    assert store.blob_path(ex.entries["d.bin"].sha256).read_bytes() == data
    # a member holding more than its declared size is refused
    bad = tmp_path / "lying.zip"
    raw = path.read_bytes().replace((len(data)).to_bytes(4, "little"), (1000).to_bytes(4, "little"))
    bad.write_bytes(raw)
    from runicorn.errors import ArtifactError

    with pytest.raises(ArtifactError, match=f"{bad}: corrupt or unsupported archive"):
        extract_into_store(store, bad)


RSS_CHILD = r"""
import resource, sys
from pathlib import Path
from runicorn.store import Store
from runicorn.artifacts.extract import extract_into_store
store = Store(Path(sys.argv[3]))
extract_into_store(store, Path(sys.argv[1]))  # warm: imports and first-use allocations
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
ex = extract_into_store(store, Path(sys.argv[2]))
assert ex.entries["zeros.bin"].size == int(sys.argv[4]), ex.entries
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
"""


@pytest.mark.parametrize("fmt", ["gz", "bz2", "xz", "zst", "zip"])
def test_peak_memory_is_bounded_whatever_the_ratio(tmp_path: Path, fmt: str) -> None:
    """128 MiB of zeros (compressing ~1000x to ~1,000,000x) extract with < 64 MiB of extra
    peak RSS: nothing expands a whole input buffer at once or keeps a member in memory."""
    size = 128 * MIB
    if fmt == "zip":
        warm, big = zeros_zip(tmp_path / "warm.zip", MIB), zeros_zip(tmp_path / "big.zip", size)
    else:
        warm = zeros_tar(tmp_path / f"warm.tar.{fmt}", fmt, CHUNK, name="w.bin")
        big = zeros_tar(tmp_path / f"big.tar.{fmt}", fmt, size)
    out = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, str(warm), str(big), str(tmp_path / "s"), str(size)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    extra = int(out.stdout)
    assert extra < 64 * MIB, f"{fmt}: peak RSS grew by {extra / MIB:.1f} MiB"


def test_local_directory_of_another_tree_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNICORN_DIR", str(tmp_path / "root"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "key").write_text("secret\n")
    os.chmod(src / "key", 0o600)
    (src / "pub.txt").write_text("public\n")
    tree = rn.tree_hash(src)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "d", "1" * 64, download_info=[(str(src), "0" * 64)])
    with pytest.raises(
        DownloadError, match=f"directory {src} holds tree-sha256 {tree}, expected 1{{64}}; nothing was stored"
    ):
        rn.ensure_artifact_installed("d", toml)
    store = open_store()
    assert [p for p in store.blobs_dir.rglob("*") if p.is_file()] == []
    assert store.index.scalar("SELECT count(*) FROM trees") == 0
    # too big: refused before it is even hashed
    rn.bind_artifact(toml, "d", tree, download_info=[(str(src), "0" * 64)], force=True)
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", "10")
    with pytest.raises(
        DownloadError,
        match=f"directory {src} holds more than 10 bytes "
        r"\(RUNICORN_EXTRACT_MAX=10 bytes\); nothing was stored",
    ):
        rn.ensure_artifact_installed("d", toml)
    assert [p for p in store.blobs_dir.rglob("*") if p.is_file()] == []
    # the right tree installs, and the 0600 file's blob is not readable by others
    monkeypatch.delenv("RUNICORN_EXTRACT_MAX")
    installed = rn.ensure_artifact_installed("d", toml)
    assert installed.name == tree
    entries = store.tree_entries(tree)
    assert store.blob_path(entries["key"].sha256).stat().st_mode & 0o077 == 0
    assert store.blob_path(entries["pub.txt"].sha256).stat().st_mode & 0o004


def test_decoding_thread_ends_with_every_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread decoding ahead stops when the archive is refused, corrupt or done."""
    import threading

    from runicorn.errors import ArtifactError

    store = Store(tmp_path / "s")
    whole = zeros_tar(tmp_path / "z.tar.gz", "gz", 4 * CHUNK)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    monkeypatch.setenv("RUNICORN_EXTRACT_MAX", str(CHUNK))
    with pytest.raises(UnsafeArchiveError, match="refused: it expands to more than"):
        extract_into_store(store, whole)
    monkeypatch.delenv("RUNICORN_EXTRACT_MAX")
    with pytest.raises(ArtifactError, match=f"{cut}: corrupt or unsupported archive"):
        extract_into_store(store, cut)
    assert extract_into_store(store, whole).entries["zeros.bin"].size == 4 * CHUNK
    assert [t.name for t in threading.enumerate() if t.name == "runicorn-decode"] == []


def test_gnu_sparse_member_reads_through_tarfile(tmp_path: Path) -> None:
    """Plain members are read straight from the decoded stream; a sparse one through tarfile."""
    import hashlib

    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse.bin", "wb") as f:
        f.truncate(3 * MIB)
        f.seek(MIB + 17)
        f.write(b"hello")
    (src / "plain.txt").write_bytes(b"plain\n" * 1000)
    archive = tmp_path / "sp.tar.gz"
    subprocess.run(["tar", "-C", str(src), "--sparse", "-czf", str(archive), "."], check=True)
    store = Store(tmp_path / "s")
    ex = extract_into_store(store, archive)
    for name in ("sparse.bin", "plain.txt"):
        assert ex.entries[name].sha256 == hashlib.sha256((src / name).read_bytes()).hexdigest()
