"""``publish_link``: the one way a complete staged file is put at its content-addressed
name -- never over an existing file, its folder made when missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from runicorn.fsutil import publish_link


def test_publish_link_places_once_makes_a_missing_folder_and_never_overwrites(tmp_path: Path) -> None:
    staged = tmp_path / "staged"
    staged.write_text("content")
    dest = tmp_path / "new" / "deeper" / "object"
    assert publish_link(staged, dest) is True
    assert dest.read_text() == "content" and staged.exists()  # linked: the staged copy stays
    other = tmp_path / "other"
    other.write_text("something else")
    assert publish_link(other, dest) is False and dest.read_text() == "content"
    staged.unlink()
    assert publish_link(staged, dest) is False  # gone from staging, already published
    with pytest.raises(FileNotFoundError):
        publish_link(staged, tmp_path / "elsewhere")  # gone, and never published
    assert not (tmp_path / "elsewhere").exists()


def test_sync_written_fsyncs_a_few_and_skips_a_folder_removed_meanwhile(tmp_path: Path, monkeypatch) -> None:
    """A few files and folders are fsynced one by one; a folder removed since (a sync's
    cache pruned by its user) has nothing left to keep and is skipped; a missing file is
    an error (its bytes were to be kept); many take one syncfs."""
    import runicorn.fsutil as fsutil

    calls: list[str] = []
    monkeypatch.setattr(fsutil, "syncfs", lambda path: calls.append(str(path)))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x")
    fsutil.sync_written(tmp_path, [tmp_path / "d" / "f"], [tmp_path / "d", tmp_path / "gone"])
    assert calls == []
    with pytest.raises(FileNotFoundError):
        fsutil.sync_written(tmp_path, [tmp_path / "missing"], [])
    fsutil.sync_written(tmp_path, [tmp_path / "d" / "f"] * (fsutil.FEW_FILES + 1))
    assert calls == [str(tmp_path)]
