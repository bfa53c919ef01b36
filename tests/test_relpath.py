"""The folders of relative paths, as restore, checkout, archives and artifacts create them."""

from __future__ import annotations

from runicorn.relpath import parent_dirs


def test_parent_dirs_lists_every_folder_once() -> None:
    paths = ["a/b/c", "a/d", "top.txt", "a/b/e/f", "q/r", "naïve/ü"]
    assert parent_dirs(paths) == {"a", "a/b", "a/b/e", "q", "naïve"}
    assert parent_dirs(["x"]) == set() and parent_dirs([]) == set()
    assert parent_dirs(iter(["deep/er/still/file"])) == {"deep", "deep/er", "deep/er/still"}
