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
