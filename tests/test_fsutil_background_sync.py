"""Background flushes (runicorn.fsutil): their write-back errors reach the writer's own
final sync, even when the flush is still running as that sync returns."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

import pytest

from runicorn import fsutil


def test_a_sync_waits_for_a_running_background_flush_and_raises_its_error(tmp_path: Path) -> None:
    assert fsutil._background_sync.acquire(blocking=False)  # a flush under way

    def fails_after_the_final_sync() -> None:
        time.sleep(0.3)  # the final syncfs below has returned by now
        fsutil._background_error = OSError(errno.EIO, "write-back error of the flush")
        fsutil._background_sync.release()

    flush = threading.Thread(target=fails_after_the_final_sync)
    flush.start()
    try:
        with pytest.raises(OSError, match="write-back error of the flush"):
            fsutil.syncfs(tmp_path)
    finally:
        flush.join()
    fsutil.syncfs(tmp_path)  # reported once


def test_a_flush_that_cannot_start_leaves_the_next_sync_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with pytest.raises(RuntimeError):
        fsutil.syncfs_in_background(tmp_path)
    monkeypatch.undo()
    fsutil.syncfs(tmp_path)  # would wait forever on a lock left taken
    assert fsutil._background_sync.acquire(blocking=False)
    fsutil._background_sync.release()
