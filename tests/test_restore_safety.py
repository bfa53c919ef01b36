"""Restore and tree safety found by review: nesting, the store as a target, swap rollback, writable blobs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from runicorn.assets.restore import export_manifest_to_zip, restore_from_manifest
from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.store import Store
from runicorn.store.tree_format import build_manifest, compute_tree_id, manifest_bytes, normalize_entries


def _store_with_tree(tmp_path: Path) -> tuple[Store, str]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "b.txt").write_text("beta\n")
    store = Store(tmp_path / "st")
    tree = store.ingest_directory(src)
    store.pin(tree)
    return store, tree


def test_nested_entries_are_refused_everywhere(tmp_path: Path) -> None:
    store, _ = _store_with_tree(tmp_path)
    link = store.ingest_bytes(b"/home/someone/.ssh")
    key = store.ingest_bytes(b"ssh-ed25519 AAAA attacker")
    entries = {"a": (link.sha256, "120000", link.size), "a/authorized_keys": (key.sha256, "100644", key.size)}
    with pytest.raises(UnsafePathError, match="lies below 'a', which is a symlink"):
        store.put_tree(entries)
    # a hand-made manifest with the same shape is refused by restore and by export
    norm = {p: v for p, v in entries.items()}
    from runicorn.store.tree_format import TreeEntry

    raw = {p: TreeEntry(s, m, n) for p, (s, m, n) in norm.items()}
    manifest = build_manifest(compute_tree_id(raw), raw)
    hostile = tmp_path / "hostile.json"
    hostile.write_bytes(manifest_bytes(manifest))
    with pytest.raises(CorruptManifestError, match="hostile.json.*lies below"):
        restore_from_manifest(hostile, store.blobs_dir, tmp_path / "out")
    with pytest.raises(CorruptManifestError, match="hostile.json.*lies below"):
        export_manifest_to_zip(hostile, store.blobs_dir, tmp_path / "out.zip")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.zip").exists()
    with pytest.raises(UnsafePathError):
        normalize_entries({"x": ("0" * 64, "100644", 1), "x/y": ("0" * 64, "100644", 1)})
    store.close()


@pytest.mark.parametrize("where", ["root", "parent", "blobs", "inside-blobs"])
def test_restore_never_targets_the_store(tmp_path: Path, where: str) -> None:
    store, tree = _store_with_tree(tmp_path)
    target = {
        "root": store.root,
        "parent": store.root.parent,
        "blobs": store.blobs_dir,
        "inside-blobs": store.blobs_dir / "zz",
    }[where]
    with pytest.raises(UnsafePathError, match="refusing to restore onto or around the store"):
        restore_from_manifest(store.manifest_path(tree), store.blobs_dir, target, overwrite=True)
    assert store.verify(deep=True)["ok"]
    store.close()


def test_failed_rename_never_loses_the_original(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkout that fails half way (here: a rename into the target fails) loses nothing:
    what it replaced is in the restore-backup ref, the rest is untouched, staging is removed."""
    store, tree = _store_with_tree(tmp_path)
    target = tmp_path / "work"
    target.mkdir()
    (target / "mine.txt").write_text("precious\n")
    (target / "a.txt").write_text("my edit\n")
    (target / "b.txt").write_text("my other edit\n")
    real_rename = os.rename
    calls = {"n": 0}

    def rename(src, dst):  # type: ignore[no-untyped-def]
        if str(dst).startswith(str(target)):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(28, "No space left on device", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="No space"):
        restore_from_manifest(store.manifest_path(tree), store.blobs_dir, target, overwrite=True)
    monkeypatch.undo()
    assert (target / "mine.txt").read_text() == "precious\n"
    (backup,) = store.list_refs("restore-backup")
    restore_from_manifest(store.manifest_path(backup.tree), store.blobs_dir, target, overwrite=True)
    assert (target / "a.txt").read_text() == "my edit\n" and (target / "b.txt").read_text() == "my other edit\n"
    assert not [p for p in tmp_path.iterdir() if "rn-restore" in p.name], "staging removed"
    assert store.verify(deep=True)["ok"]
    store.close()


def test_writable_blob_is_reported_and_repair_makes_it_read_only(tmp_path: Path) -> None:
    store, tree = _store_with_tree(tmp_path)
    out = tmp_path / "restored"
    restore_from_manifest(store.manifest_path(tree), store.blobs_dir, out, link="hardlink")
    os.chmod(out / "a.txt", 0o644)  # what a user might do to a hard-linked file
    report = store.verify()
    assert [p["kind"] for p in report["problems"]] == ["writable_blob"]
    store.rebuild_index()
    assert store.verify(deep=True)["ok"]
    assert not os.stat(out / "a.txt").st_mode & 0o222
    store.close()
    json.dumps(report)
