"""Every reader of a blob checks its size, and its hash where it streams the bytes: a
truncated or altered blob gives a clear error naming the blob and the file, publishes
nothing that looks complete, and makes the CLI exit 1 (issue 9 item 13; BRIEF 9.4)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from runicorn.assets.blob_store import read_blob
from runicorn.assets.restore import export_manifest_to_zip, get_file_from_manifest, restore_from_manifest
from runicorn.snapshot.workspace import snapshot_workspace
from runicorn.errors import IntegrityError
from runicorn.store import Store
from tests.assets_helpers import write

BIG = 2 << 20  # above the restore's small-file size: streamed, not read whole


def cli(root: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(root), *args], capture_output=True, text=True, timeout=300
    )
    if check is not None:
        assert proc.returncode == check, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def stored(tmp_path: Path) -> tuple[Path, Path, str]:
    """A store holding one tree of a small file, a large one and a symlink."""
    ws = tmp_path / "ws"
    write(ws / "small.txt", b"small file\n" * 90)  # 990 bytes
    write(ws / "big.bin", os.urandom(BIG))
    write(ws / ".rnignore", b"")
    os.symlink("small.txt", ws / "link")
    root = tmp_path / "st"
    with Store(root) as s:
        tree = s.ingest_directory(ws)
        s.pin(tree)
    return root, ws, tree


def blob(root: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return root / "archive" / "blobs" / sha[:2] / sha


def damage(path: Path, how: str) -> None:
    os.chmod(path, 0o644)
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # altered: same size, one byte flipped
        path.write_bytes(data[:-5] + bytes([data[-5] ^ 0x20]) + data[-4:])
    os.chmod(path, 0o444)


def victim_blob(root: Path, ws: Path, victim: str) -> Path:
    data = os.fsencode(os.readlink(ws / victim)) if victim == "link" else (ws / victim).read_bytes()
    return blob(root, data)


def manifest_of(root: Path, tree: str) -> Path:
    return root / "archive" / "manifests" / tree[:2] / f"{tree}.json"


def listing(tmp_path: Path) -> list[str]:
    """What the test made in ``tmp_path`` (the fixtures' HOME left out)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name != "home")


def names_it(message: str, path: Path, what: str) -> None:
    assert path.name in message and repr(what) in message, message
    assert "\n" not in message.strip()


# ---------------------------------------------------------------- export_manifest_to_zip (seed API)
@pytest.mark.parametrize("victim", ["small.txt", "big.bin", "link"])
@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_export_manifest_to_zip_checks_size_and_hash(tmp_path: Path, victim: str, how: str) -> None:
    root, ws, tree = stored(tmp_path)
    bad = victim_blob(root, ws, victim)
    damage(bad, how)
    out = tmp_path / "code.zip"
    out.write_bytes(b"an older zip the user keeps")
    with pytest.raises(IntegrityError) as err:
        export_manifest_to_zip(manifest_of(root, tree), root / "archive" / "blobs", out)
    names_it(str(err.value), bad, victim)
    assert f"{out} was not written" in str(err.value)
    assert out.read_bytes() == b"an older zip the user keeps"  # nothing published, nothing replaced
    assert listing(tmp_path) == ["code.zip", "st", "ws"]  # no staging left


def test_export_manifest_to_zip_of_an_intact_tree_is_unchanged(tmp_path: Path) -> None:
    root, ws, tree = stored(tmp_path)
    out = tmp_path / "code.zip"
    assert export_manifest_to_zip(manifest_of(root, tree), root / "archive" / "blobs", out)["success"]
    with zipfile.ZipFile(out) as zf:
        assert zf.read("big.bin") == (ws / "big.bin").read_bytes()
        assert zf.read("link") == b"small.txt"


# ---------------------------------------------------------------- runicorn export (every format)
@pytest.mark.parametrize("ext", ["zip", "tar", "tar.gz"])
@pytest.mark.parametrize("victim", ["small.txt", "big.bin", "link"])
def test_cli_export_refuses_an_altered_blob(tmp_path: Path, ext: str, victim: str) -> None:
    root, ws, tree = stored(tmp_path)
    bad = victim_blob(root, ws, victim)
    damage(bad, "altered")  # the size is right: only the hash tells
    out = tmp_path / f"code.{ext}"
    proc = cli(root, "export", tree, str(out), check=1)
    names_it(proc.stderr, bad, victim)
    assert f"{out} was not written" in proc.stderr and proc.stdout == ""
    assert not out.exists() and listing(tmp_path) == ["st", "ws"]


def test_cli_export_of_an_intact_tree_still_works(tmp_path: Path) -> None:
    root, ws, tree = stored(tmp_path)
    out = tmp_path / "code.tar.gz"
    cli(root, "export", tree, str(out))
    with tarfile.open(out) as tf:
        member = tf.extractfile("big.bin")
        assert member is not None and member.read() == (ws / "big.bin").read_bytes()


# ---------------------------------------------------------------- snapshot --zip (written from the blobs)
def test_snapshot_zip_refuses_an_altered_blob(tmp_path: Path) -> None:
    root, ws, tree = stored(tmp_path)
    assert snapshot_workspace(ws, None, storage=root)["tree"] == tree
    damage(blob(root, (ws / "small.txt").read_bytes()), "altered")
    out = tmp_path / "code.zip"
    with pytest.raises(IntegrityError, match="'small.txt'"):
        snapshot_workspace(ws, out, storage=root)
    assert not out.exists()


# ---------------------------------------------------------------- get_file_from_manifest
@pytest.mark.parametrize("victim", ["small.txt", "big.bin"])
def test_get_file_from_manifest_checks_the_size(tmp_path: Path, victim: str) -> None:
    root, ws, tree = stored(tmp_path)
    bad = victim_blob(root, ws, victim)
    blobs = root / "archive" / "blobs"
    assert get_file_from_manifest(manifest_of(root, tree), blobs, victim) == bad
    damage(bad, "truncated")
    with pytest.raises(IntegrityError) as err:
        get_file_from_manifest(manifest_of(root, tree), blobs, victim)
    names_it(str(err.value), bad, victim)
    assert "truncated" in str(err.value)


# ---------------------------------------------------------------- read_blob (seed) and Store readers
@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_seed_read_blob_checks_size_and_hash(tmp_path: Path, how: str) -> None:
    root, ws, _ = stored(tmp_path)
    data = (ws / "big.bin").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert read_blob(sha, root / "archive" / "blobs") == data
    damage(blob(root, data), how)
    with pytest.raises(IntegrityError, match=sha):
        read_blob(sha, root / "archive" / "blobs")


def test_seed_read_blob_checks_the_hash_in_a_bare_blob_folder(tmp_path: Path) -> None:
    from runicorn.assets.blob_store import store_blob

    src = write(tmp_path / "model.pth", b"weights" * 1000)
    folder = tmp_path / "bare"
    sha = store_blob(src, folder)
    damage(folder / sha[:2] / sha, "altered")
    with pytest.raises(IntegrityError, match="hash to"):
        read_blob(sha, folder)


@pytest.mark.parametrize("how", ["truncated", "altered"])
def test_store_open_blob_and_read_blob_check_size_and_hash(tmp_path: Path, how: str) -> None:
    root, ws, _ = stored(tmp_path)
    data = (ws / "big.bin").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with Store(root) as s:
        assert s.read_blob(sha) == data
        with s.open_blob(sha) as f:
            assert f.read() == data
        damage(s.blob_path(sha), how)
        with pytest.raises(IntegrityError, match=sha):
            s.read_blob(sha, what="'big.bin'")
        with pytest.raises(IntegrityError, match=sha):
            with s.open_blob(sha) as f:
                while f.read(1 << 16):
                    pass


# ---------------------------------------------------------------- restore (copy, hardlink)
@pytest.mark.parametrize("victim", ["small.txt", "link"])
def test_restore_copy_refuses_an_altered_blob(tmp_path: Path, victim: str) -> None:
    root, ws, tree = stored(tmp_path)
    bad = victim_blob(root, ws, victim)
    damage(bad, "altered")
    target = tmp_path / "out"
    proc = cli(root, "restore", tree, str(target), check=1)
    names_it(proc.stderr, bad, victim)
    assert f"nothing was restored to {target}" in proc.stderr
    assert listing(tmp_path) == ["st", "ws"]  # no target, no staging


def test_restore_checkout_refuses_an_altered_blob_and_leaves_the_target(tmp_path: Path) -> None:
    root, ws, tree = stored(tmp_path)
    damage(blob(root, (ws / "small.txt").read_bytes()), "altered")
    target = tmp_path / "out"
    write(target / "small.txt", b"the user's own edit\n")
    write(target / "notes.md", b"untracked\n")
    with pytest.raises(IntegrityError, match="'small.txt'"):
        restore_from_manifest(manifest_of(root, tree), root / "archive" / "blobs", target, overwrite=True)
    assert (target / "small.txt").read_bytes() == b"the user's own edit\n"
    assert sorted(p.name for p in target.iterdir()) == ["notes.md", "small.txt"]


@pytest.mark.parametrize("victim", ["small.txt", "big.bin"])
def test_restore_hardlink_checks_the_size(tmp_path: Path, victim: str) -> None:
    root, ws, tree = stored(tmp_path)
    bad = victim_blob(root, ws, victim)
    damage(bad, "truncated")
    target = tmp_path / "out"
    proc = cli(root, "restore", tree, str(target), "--link", "hardlink", check=1)
    names_it(proc.stderr, bad, victim)
    assert not target.exists()


# ---------------------------------------------------------------- installing an artifact from the store
@pytest.mark.parametrize(
    "victim,how", [("run.sh", "truncated"), ("run.sh", "altered"), ("link", "altered"), ("data.txt", "truncated")]
)
def test_installing_an_artifact_checks_its_blobs(tmp_path: Path, victim: str, how: str) -> None:
    """Copies (executables, other filesystems) and link targets are checked by size and
    hash, hard links by size; a damaged blob fails the install and publishes no folder."""
    from runicorn.artifacts.install import remove_artifact

    root = tmp_path / "st"
    project = tmp_path / "proj"
    write(project / "model" / "data.txt", b"weights\n" * 200)
    write(project / "model" / "run.sh", b"#!/bin/sh\necho hi\n" * 20)
    os.chmod(project / "model" / "run.sh", 0o755)
    os.symlink("data.txt", project / "model" / "link")

    def rn(*args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "runicorn", "--storage", str(root), *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check is not None:
            assert proc.returncode == check, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    rn("bind", "model", "model")
    installed = Path(rn("path", "model").stdout.strip())
    tree = installed.name
    assert remove_artifact(tree, storage=root)
    ws = project / "model"
    damage(victim_blob(root, ws, victim), how)

    failed = rn("fetch", "model", check=1)
    assert "damaged" in failed.stderr and victim in failed.stderr, failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert not installed.exists()
