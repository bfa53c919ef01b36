"""Restore, export and single-file lookup from manifests, including hostile ones."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

import runicorn
from runicorn.assets.restore import (
    export_manifest_to_zip,
    get_file_from_manifest,
    load_manifest,
    restore_from_manifest,
)
from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.restore.engine import TargetExistsError
from runicorn.store import open_store

from tests.assets_helpers import hostile_manifest, tree_files, write


@pytest.fixture
def snap(tmp_path: Path) -> dict:
    ws = tmp_path / "ws"
    write(ws / "train.py", "print('train')\n")
    write(ws / "bin" / "run.sh", "#!/bin/sh\n", mode=0o755)
    write(ws / "pkg" / "deep" / "m.py", "m = 1\n")
    write(ws / "empty.txt", "")
    os.symlink("../train.py", ws / "pkg" / "link.py")
    os.symlink("/etc/hostname", ws / "abs_link")
    r = runicorn.snapshot_workspace(ws, None)
    r["ws"] = ws
    return r


def _blobs() -> Path:
    return open_store().blobs_dir


@pytest.mark.parametrize("link", ["copy", "hardlink", "auto"])
def test_round_trip_modes_and_symlinks(snap: dict, tmp_path: Path, link: str) -> None:
    target = tmp_path / "restored"
    r = restore_from_manifest(Path(snap["manifest_path"]), _blobs(), target, link=link)
    assert r["success"] and r["restored_count"] == snap["file_count"] and r["missing_blobs"] == []
    want = tree_files(snap["ws"])
    if link == "hardlink":  # shared with the read-only blob
        want = {k: ("0o444", v) if m == "0o644" else (m, v) for k, (m, v) in want.items()}
    assert tree_files(target) == want
    assert os.readlink(target / "pkg" / "link.py") == "../train.py"
    assert [p.name for p in tmp_path.iterdir() if ".rn-restore-" in p.name] == []
    if link == "hardlink":
        assert r["methods"]["hardlink"] >= 1
        assert os.path.samefile(
            target / "train.py", get_file_from_manifest(Path(snap["manifest_path"]), _blobs(), "train.py")
        )
        assert not os.path.samefile(
            target / "bin" / "run.sh", get_file_from_manifest(Path(snap["manifest_path"]), _blobs(), "bin/run.sh")
        )  # executables are copied


def test_reflink_is_strict_auto_falls_back(snap: dict, tmp_path: Path) -> None:
    try:
        r = restore_from_manifest(Path(snap["manifest_path"]), _blobs(), tmp_path / "r1", link="reflink")
    except runicorn.RunicornError as exc:
        assert "cannot reflink" in str(exc)
        assert not (tmp_path / "r1").exists()
    else:
        assert r["methods"].get("reflink", 0) >= 1
    r = restore_from_manifest(Path(snap["manifest_path"]), _blobs(), tmp_path / "r2", link="auto")
    assert tree_files(tmp_path / "r2") == tree_files(snap["ws"])
    with pytest.raises(ValueError, match="link mode 'symlink'"):
        restore_from_manifest(Path(snap["manifest_path"]), _blobs(), tmp_path / "r3", link="symlink")


def test_existing_target_refused_then_replaced_with_overwrite(snap: dict, tmp_path: Path) -> None:
    target = tmp_path / "t"
    write(target / "old.txt", "keep me")
    with pytest.raises(TargetExistsError, match="not empty"):
        restore_from_manifest(Path(snap["manifest_path"]), _blobs(), target)
    assert (target / "old.txt").read_text() == "keep me"
    r = restore_from_manifest(Path(snap["manifest_path"]), _blobs(), target, overwrite=True)
    assert r["success"]
    assert tree_files(target) == dict(tree_files(snap["ws"]), **{"old.txt": tree_files(target)["old.txt"]})
    assert (target / "old.txt").read_text() == "keep me", "a checkout leaves other files alone"
    r = restore_from_manifest(Path(snap["manifest_path"]), _blobs(), target, delete=True)
    assert tree_files(target) == tree_files(snap["ws"]) and r["removed"] == 1
    assert not any(".rn-" in p.name for p in tmp_path.iterdir())  # no staging or old copy left
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore_from_manifest(Path(snap["manifest_path"]), _blobs(), empty)["success"]


def test_missing_blob_restores_nothing(snap: dict, tmp_path: Path) -> None:
    manifest = load_manifest(Path(snap["manifest_path"]))
    sha = manifest["files"]["pkg/deep/m.py"]["sha256"]
    blob = open_store().blob_path(sha)
    os.chmod(blob.parent, 0o755)
    blob.unlink()
    r = restore_from_manifest(Path(snap["manifest_path"]), _blobs(), tmp_path / "t")
    assert r["success"] is False and r["missing_blobs"] == [sha] and r["restored_count"] == 0
    assert not (tmp_path / "t").exists()
    assert not any(".rn-" in p.name for p in tmp_path.iterdir()), "the partial staging is removed"
    e = export_manifest_to_zip(Path(snap["manifest_path"]), _blobs(), tmp_path / "x.zip")
    assert e["success"] is False and e["missing_blobs"] == [sha]
    assert not (tmp_path / "x.zip").exists()


def test_export_and_single_file(snap: dict, tmp_path: Path) -> None:
    r = export_manifest_to_zip(
        manifest_path=Path(snap["manifest_path"]), blob_root=_blobs(), zip_path=tmp_path / "out" / "export.zip"
    )
    assert r["success"] and r["exported_count"] == snap["file_count"]
    with zipfile.ZipFile(r["zip_path"]) as zf:
        assert zf.read("pkg/deep/m.py") == b"m = 1\n"
    p = get_file_from_manifest(Path(snap["manifest_path"]), _blobs(), "train.py")
    assert p.read_bytes() == b"print('train')\n"
    with pytest.raises(FileNotFoundError, match="'nope.py' is not in manifest"):
        get_file_from_manifest(Path(snap["manifest_path"]), _blobs(), "nope.py")


def _outside_snapshot(tmp_path: Path) -> set[str]:
    return {str(p) for p in tmp_path.rglob("*") if "rn-home" not in p.parts}


@pytest.mark.parametrize("evil", ["../escape.txt", "a/../../escape.txt", "/tmp/escape.txt", "./x", "a//b"])
def test_hostile_paths_are_refused(tmp_path: Path, evil: str) -> None:
    info = open_store().ingest_bytes(b"pwned")
    m = hostile_manifest(
        tmp_path / "evil.json", {"ok.txt": (info.sha256, "100644", 5), evil: (info.sha256, "100644", 5)}
    )
    before = _outside_snapshot(tmp_path)
    with pytest.raises(CorruptManifestError, match=r"evil\.json: bad file entry"):
        restore_from_manifest(m, _blobs(), tmp_path / "target")
    with pytest.raises(CorruptManifestError):
        export_manifest_to_zip(m, _blobs(), tmp_path / "e.zip")
    assert _outside_snapshot(tmp_path) == before
    assert not Path("/tmp/escape.txt").exists() or evil != "/tmp/escape.txt"


def test_writing_through_a_symlink_is_refused(tmp_path: Path) -> None:
    store = open_store()
    outside = tmp_path / "outside"
    outside.mkdir()
    link = store.ingest_bytes(str(outside).encode())
    data = store.ingest_bytes(b"pwned")
    m = hostile_manifest(
        tmp_path / "evil.json", {"dir": (link.sha256, "120000", link.size), "dir/passwd": (data.sha256, "100644", 5)}
    )
    # refused by the manifest parser, like every other hostile path, naming the file
    with pytest.raises(CorruptManifestError, match=r"evil\.json.*'dir/passwd' lies below 'dir', which is a symlink"):
        restore_from_manifest(m, _blobs(), tmp_path / "target")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "target").exists()
    assert not any(".rn-restore-" in p.name for p in tmp_path.iterdir())


def test_target_that_is_a_symlink_is_refused(snap: dict, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "alias")
    with pytest.raises(UnsafePathError, match="is a symlink"):
        restore_from_manifest(Path(snap["manifest_path"]), _blobs(), tmp_path / "alias", overwrite=True)
    assert list(real.iterdir()) == []


def test_corrupt_and_missing_manifest_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CorruptManifestError, match=r"bad\.json: not valid JSON"):
        load_manifest(bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        restore_from_manifest(tmp_path / "nope.json", _blobs(), tmp_path / "t")
    assert not (tmp_path / "t").exists()
