"""Shared fixtures: every test gets its own storage root and never touches ~/.runicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "rn-home"
    monkeypatch.setenv("RUNICORN_DIR", str(root))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    yield root
    from runicorn.store.store import forget_open_stores

    forget_open_stores()


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from runicorn.store import Store

    s = Store(tmp_path / "store")
    yield s
    s.close()
