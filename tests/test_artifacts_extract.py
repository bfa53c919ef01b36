"""Archives: every format round-trips, archives are reproducible, hostile archives are refused."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.artifacts.extract import extract_into_store
from runicorn.errors import ArtifactError, DownloadError, UnsafeArchiveError
from runicorn.hashing import sha256_file
from runicorn.store import Store, open_store
from tests.artifacts_support import make_tree


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".zip"])
def test_formats_round_trip_and_are_reproducible(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    src = make_tree(tmp_path / "src")
    tree = rn.create_artifact(src=src)
    a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    sha = rn.archive_artifact(tree, a)
    assert rn.archive_artifact(tree, b) == sha == sha256_file(a)
    assert a.read_bytes() == b.read_bytes()
    # another store, same tree -> same bytes
    other = Store(tmp_path / "other")
    assert rn.archive_artifact(other.ingest_directory(src), tmp_path / f"c{suffix}", store=other) == sha
    other.close()
    # installing from the archive into a fresh storage root gives the same tree back
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    monkeypatch.setenv("RUNICORN_DIR", str(tmp_path / "fresh-root"))
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "x", tree, download_info=[(str(a), sha)])
    p = rn.ensure_artifact_installed("x", toml)
    assert rn.tree_hash(p) == tree and p.parent == tmp_path / "fresh-root" / "artifacts"
    if suffix in (".tar", ".tar.gz"):
        with tarfile.open(a) as tf:
            members = tf.getmembers()
        assert [m.name for m in members] == sorted(m.name for m in members)
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for ti, data in members:
            if data is not None:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def _ti(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.linkname = link
    ti.mode = 0o644
    return ti


HOSTILE = {
    "absolute path": ([(_ti("/tmp/evil-abs"), b"x")], "evil-abs"),
    "dotdot": ([(_ti("ok/../../evil-dotdot"), b"x")], "evil-dotdot"),
    "symlink escape": ([(_ti("link", tarfile.SYMTYPE, "../../outside"), None)], "link"),
    "absolute symlink": ([(_ti("link", tarfile.SYMTYPE, "/etc"), None)], "link"),
    "write through symlink": (
        [
            (_ti("sub", tarfile.DIRTYPE), None),
            (_ti("d", tarfile.SYMTYPE, "sub"), None),
            (_ti("d/evil", tarfile.REGTYPE), b"x"),
        ],
        "through the symlink",
    ),
    "chained symlink escape": (
        [
            (_ti("d", tarfile.DIRTYPE), None),
            (_ti("d/x", tarfile.SYMTYPE, ".."), None),
            (_ti("d/y", tarfile.SYMTYPE, "x/.."), None),
        ],
        "outside",
    ),
    "hardlink escape": ([(_ti("h", tarfile.LNKTYPE, "../../etc/passwd"), None)], "h"),
    "hardlink to unknown": ([(_ti("h", tarfile.LNKTYPE, "later"), None), (_ti("later"), b"x")], "hardlink"),
    "device node": ([(_ti("dev", tarfile.CHRTYPE), None)], "dev"),
    "fifo": ([(_ti("pipe", tarfile.FIFOTYPE), None)], "pipe"),
    "duplicate": ([(_ti("f"), b"1"), (_ti("f"), b"2")], "duplicate"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tar_is_refused_and_nothing_lands(tmp_path: Path, case: str) -> None:
    members, needle = HOSTILE[case]
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.tar"
    archive.write_bytes(_tar(members))
    store = open_store()
    before = set(os.listdir(tmp_path))
    with pytest.raises(UnsafeArchiveError) as ei:
        extract_into_store(store, archive)
    assert str(archive) in str(ei.value) and needle in str(ei.value)
    assert set(os.listdir(tmp_path)) == before and os.listdir(work) == ["evil.tar"]
    assert not Path("/tmp/evil-abs").exists()
    assert store.index.scalar("SELECT COUNT(*) FROM trees") == 0
    assert store.index.scalar("SELECT COUNT(*) FROM holds") == 0


def test_hostile_archive_through_install_installs_nothing(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar([(_ti("good"), b"fine"), (_ti("../evil"), b"x")]))
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "x", "0" * 64, download_info=[(str(archive), sha256_file(archive))])
    with pytest.raises(DownloadError, match=r"refused member '\.\./evil'"):
        rn.ensure_artifact_installed("x", toml)
    store = open_store()
    assert [p.name for p in store.artifacts_dir.iterdir() if not p.name.startswith(".")] == ["usage.log"]
    assert not (tmp_path / "evil").exists()


def _zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3
            zi.external_attr = mode << 16
            zf.writestr(zi, data)
    return buf.getvalue()


@pytest.mark.parametrize(
    "entries,needle",
    [
        ([("../evil", b"x", 0o100644)], "../evil"),
        ([("/abs", b"x", 0o100644)], "/abs"),
        ([("l", b"../../x", 0o120777)], "outside"),
        ([("l", b"sub", 0o120777), ("l/f", b"x", 0o100644)], "through the symlink"),
        ([("fifo", b"", 0o010644)], "FIFO"),
    ],
)
def test_hostile_zip_is_refused(tmp_path: Path, entries: list, needle: str) -> None:
    archive = tmp_path / "evil.zip"
    archive.write_bytes(_zip(entries))
    with pytest.raises(UnsafeArchiveError, match="refused") as ei:
        extract_into_store(open_store(), archive)
    assert needle in str(ei.value)


def test_oversized_link_targets_are_refused(tmp_path: Path) -> None:
    store = open_store()
    zarchive = tmp_path / "biglink.zip"
    zarchive.write_bytes(_zip([("ok", b"fine", 0o100644), ("l", b"a/" * 25_000, 0o120777)]))  # 50 KB
    with pytest.raises(UnsafeArchiveError) as ei:
        extract_into_store(store, zarchive)
    assert str(ei.value) == (f"{zarchive}: refused symlink 'l': its target is longer than 4096 bytes")
    # tar: a PAX linkpath record carries a long target
    tarchive = tmp_path / "biglink.tar"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(_ti("l", tarfile.SYMTYPE, "a/" * 25_000))
    tarchive.write_bytes(buf.getvalue())
    with pytest.raises(UnsafeArchiveError, match=r"refused symlink 'l': its target is longer than 4096"):
        extract_into_store(store, tarchive)
    # a target of exactly the limit is fine
    okzip = tmp_path / "ok.zip"
    okzip.write_bytes(_zip([("l", b"a" * 4096, 0o120777)]))
    assert extract_into_store(store, okzip).links == {"l": "a" * 4096}
    store.release_holds()
    assert store.index.scalar("SELECT COUNT(*) FROM trees") == 0


def test_not_an_archive_and_truncated(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world" * 100)
    with pytest.raises(ArtifactError, match="not a tar"):
        extract_into_store(open_store(), junk)
    src = make_tree(tmp_path / "src")
    tree = rn.create_artifact(src=src)
    good = tmp_path / "good.tar.gz"
    rn.archive_artifact(tree, good)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="corrupt or unsupported archive"):
        extract_into_store(open_store(), cut)


def _corrupt_archives(tmp_path: Path) -> dict[str, Path]:
    """Archives whose decoders fail in every way they can: one per kind of error."""
    src = make_tree(tmp_path / "src")
    tree = rn.create_artifact(src=src)
    out: dict[str, Path] = {}
    for suffix in (".tar.gz", ".tar.bz2", ".tar.xz", ".tar.zst", ".zip"):
        good = tmp_path / f"good{suffix}"
        rn.archive_artifact(tree, good)
        data = good.read_bytes()
        cut = tmp_path / f"truncated{suffix}"
        cut.write_bytes(data[: len(data) // 2])
        out[f"truncated{suffix}"] = cut
        flipped = bytearray(data)
        for i in range(12, 76):  # garbage at the start of the compressed stream
            flipped[i] ^= 0xA5
        bad = tmp_path / f"flipped{suffix}"
        bad.write_bytes(bytes(flipped))
        out[f"flipped{suffix}"] = bad
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("f", b"x" * 1000)
    raw = bytearray(buf.getvalue())
    unsupported = tmp_path / "method99.zip"  # an unknown compression method -> NotImplementedError
    for off in (8, raw.rfind(b"PK\x01\x02") + 10):
        raw[off : off + 2] = (99).to_bytes(2, "little")
    unsupported.write_bytes(bytes(raw))
    out["unsupported.zip"] = unsupported
    raw = bytearray(buf.getvalue())
    encrypted = tmp_path / "encrypted.zip"  # the 'encrypted' flag -> RuntimeError
    for off in (6, raw.rfind(b"PK\x01\x02") + 8):
        raw[off] |= 0x1
    encrypted.write_bytes(bytes(raw))
    out["encrypted.zip"] = encrypted
    return out


def test_corrupt_or_unsupported_archives_are_one_clear_error(tmp_path: Path) -> None:
    store = open_store()
    archives = _corrupt_archives(tmp_path)
    holds = store.index.scalar("SELECT COUNT(*) FROM holds")  # create_artifact's hold on its tree
    for case, archive in archives.items():
        with pytest.raises(ArtifactError) as ei:
            extract_into_store(store, archive)
        msg = str(ei.value)
        assert msg.startswith(f"{archive}: "), (case, msg)
        assert "\n" not in msg and len(msg) < len(str(archive)) + 300, (case, msg)
        assert (
            type(ei.value) is ArtifactError
            and "corrupt or unsupported archive" in msg
            or type(ei.value) is UnsafeArchiveError
        ), (case, msg)  # garbage may also decode as a bad member
    assert store.index.scalar("SELECT COUNT(*) FROM trees") == 1  # only the tree the archives came from
    assert store.index.scalar("SELECT COUNT(*) FROM holds") == holds


@pytest.mark.parametrize("case", ["flipped.zip", "truncated.tar.gz", "unsupported.zip", "encrypted.zip"])
def test_cli_bind_of_a_corrupt_archive_exits_1_with_one_line(tmp_path: Path, case: str) -> None:
    import subprocess
    import sys

    archive = _corrupt_archives(tmp_path)[case]
    repo = Path(__file__).resolve().parent.parent
    r = subprocess.run(
        [sys.executable, "-m", "runicorn", "bind", "x", str(archive)],
        env=dict(os.environ, PYTHONPATH=str(repo)),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: {archive}: ") and "archive" in r.stderr
    assert not (tmp_path / "Runicorn.toml").exists()


def test_a_filesystem_error_is_not_called_a_corrupt_archive(tmp_path: Path) -> None:
    """A store that cannot write (an immutable staging dir) fails as such, not as a bad archive."""
    import subprocess

    src = tmp_path / "d"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "a.txt", arcname="a.txt")
    store = Store(tmp_path / "st")
    staging = store.writer_dir()
    subprocess.run(["chattr", "+i", str(staging)], check=True)
    try:
        with pytest.raises(OSError) as err:
            extract_into_store(store, archive)
        assert err.value.errno is not None and "corrupt" not in str(err.value)
    finally:
        subprocess.run(["chattr", "-i", str(staging)], check=True)
    assert extract_into_store(store, archive), "works once the filesystem does"


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_an_archive_refused_midway_publishes_none_of_its_members(tmp_path: Path, suffix: str) -> None:
    # Members go into one batch, published by one group commit after the last member
    # passed the checks: blobs of the members before the hostile one never reach blobs/.
    big = os.urandom(3 << 20)  # streamed to staging (above the in-memory size)
    small = [os.urandom(1000 + i) for i in range(50)]
    archive = tmp_path / f"late-evil{suffix}"
    if suffix == ".zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("big.bin", big)
            for i, data in enumerate(small):
                zf.writestr(f"s/{i}.bin", data)
            zf.writestr("../evil", b"x")
    else:
        with tarfile.open(archive, "w:gz") as tf:
            for name, data in [("big.bin", big), *((f"s/{i}.bin", d) for i, d in enumerate(small))]:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            ti = tarfile.TarInfo("s/0.bin")  # a duplicate, refused
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    with Store(tmp_path / "st") as store:
        with pytest.raises(UnsafeArchiveError):
            extract_into_store(store, archive)
        assert store.index.scalar("SELECT COUNT(*) FROM blobs") == 0
        assert not any(p.is_file() for p in store.blobs_dir.rglob("*"))
        assert store.index.scalar("SELECT COUNT(*) FROM holds") == 0
        assert store.verify(deep=True)["ok"]
        # the same members without the hostile one: all published at once, held for the tree
        good = tmp_path / f"good{suffix}"
        if suffix == ".zip":
            with zipfile.ZipFile(archive) as zin, zipfile.ZipFile(good, "w") as zout:
                for info in zin.infolist()[:-1]:
                    zout.writestr(info, zin.read(info))
        else:
            with tarfile.open(archive) as tin, tarfile.open(good, "w") as tout:
                for m in tin.getmembers()[:-1]:
                    tout.addfile(m, tin.extractfile(m))
        ex = extract_into_store(store, good)
        assert len(ex.entries) == 51
        assert store.blob_path(ex.entries["big.bin"].sha256).read_bytes() == big
        tree = store.put_tree(ex.entries)
        assert store.tree_entries(tree)["s/7.bin"].size == 1007
        assert store.verify(deep=True)["ok"]
