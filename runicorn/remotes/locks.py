"""Lock objects on a remote: pushes share, a remote gc excludes.

``locks/shared-<token>.json`` (one per push) and ``locks/exclusive.json`` (a gc) hold
``{host, pid, time, kind, token}`` and are rewritten every ``stale/4`` seconds while held.
A lock is stale when its time is older than :func:`stale_seconds` (default 120 s,
``$RUNICORN_REMOTE_LOCK_STALE``), or at once when it names a process of this host that
is gone.  The protocol is the classic one for two flags: a pusher creates its shared
lock, then looks for an exclusive one (and backs off, deleting its own, if there is a
live one); a gc creates the exclusive lock create-only, then waits until no live shared
lock remains.  Either way one of two racing parties sees the other.

A stale lock is broken only while it is still the object that was judged stale: it is
replaced by compare-and-swap on the etag read with it (S3 ``If-Match``; file and sftp: under
the key's mutex), so of two processes breaking the same stale lock one wins and the other
sees a live lock.  A gc takes the exclusive lock over that way; anyone else writes a
``breaking`` record and then deletes it.

``locks/epoch-<time_ns>-<hex>`` is written by each remote gc before it deletes anything: a pusher
notes the newest epoch under its lock, and the local cache of what the remote holds is
dropped when it changed.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

from runicorn.remotes.backend import _dead_here
from runicorn.remotes.errors import RemoteBusyError, RemoteConflictError
from runicorn.remotes.layout import LOCKS, MAX_RECORD_BYTES, dumps

EXCLUSIVE = f"{LOCKS}exclusive.json"
SHARED_PREFIX = f"{LOCKS}shared-"
EPOCH_PREFIX = f"{LOCKS}epoch-"


def stale_seconds() -> float:
    return float(os.environ.get("RUNICORN_REMOTE_LOCK_STALE", "120"))


def wait_seconds() -> float:
    return float(os.environ.get("RUNICORN_REMOTE_LOCK_WAIT", "300"))


def is_stale(record: dict[str, Any] | None, now: float | None = None) -> bool:
    """True for a lock record whose holder is gone or that was not refreshed in time."""
    if not record:
        return True
    now = time.time() if now is None else now
    try:
        if now - float(record["time"]) > stale_seconds():
            return True
        if _dead_here(record):
            return True
    except (KeyError, TypeError, ValueError):
        return True
    return False


def read_lock(backend: Any, key: str) -> tuple[dict[str, Any] | None, str] | None:
    """``(record, etag)`` of a lock object (record None when unreadable), None when absent."""
    got = backend.get(key, MAX_RECORD_BYTES)
    if got is None:
        return None
    try:
        rec = json.loads(got[0]) if len(got[0]) <= MAX_RECORD_BYTES else None
    except ValueError:
        rec = None
    return (rec if isinstance(rec, dict) else None), got[1]


def _record(kind: str, token: str) -> bytes:
    return dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), "kind": kind, "token": token})


def take_over(backend: Any, key: str, etag: str, record: bytes) -> bool:
    """Replace the lock object at ``key`` with ``record`` only if its etag is still ``etag``
    (the stale lock that was read); False when it changed meanwhile."""
    try:
        backend.put_cas(key, record, etag)
    except RemoteConflictError:
        return False
    return True


def break_stale(backend: Any, key: str, etag: str) -> bool:
    """Delete a stale lock object only if it is still the one read (``etag``): take it over
    with a ``breaking`` record, then delete that.  False when it changed meanwhile."""
    if not take_over(backend, key, etag, _record("breaking", os.urandom(6).hex())):
        return False
    backend.delete(key)  # our own record now: nobody judges a live one stale
    return True


def describe(rec: dict[str, Any] | None) -> str:
    if not rec:
        return "an unreadable lock"
    age = time.time() - float(rec.get("time", 0) or 0)
    return f"{rec.get('kind', '?')} lock of pid {rec.get('pid')} on {rec.get('host')} ({age:.0f}s ago)"


class RemoteLock:
    """A held lock object, refreshed by a daemon thread until :meth:`release`."""

    def __init__(self, backend: Any, kind: str) -> None:
        self.backend = backend
        self.kind = kind
        self.token = f"{os.getpid()}-{os.urandom(6).hex()}"
        self.key = EXCLUSIVE if kind == "exclusive" else f"{SHARED_PREFIX}{self.token}.json"
        self.epoch = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self) -> bytes:
        return _record(self.kind, self.token)

    def _refresh(self) -> None:
        interval = max(0.2, stale_seconds() / 4)
        while not self._stop.wait(interval):
            try:
                self.backend.put_replace(self.key, self.record())
            except Exception:  # noqa: BLE001 - the next refresh tries again
                pass

    def _start_refresh(self) -> None:
        self._thread = threading.Thread(target=self._refresh, name="runicorn-remote-lock", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.backend.delete(self.key)

    def __enter__(self) -> "RemoteLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def current_epoch(infos: list[Any]) -> str:
    epochs = sorted(i.key for i in infos if i.key.startswith(EPOCH_PREFIX))
    return epochs[-1][len(EPOCH_PREFIX) :] if epochs else "0"


def acquire_shared(backend: Any) -> RemoteLock:
    """Take a shared (push) lock; waits while a live remote gc holds the exclusive one.

    Raises:
        RemoteBusyError: a gc held the remote for longer than ``$RUNICORN_REMOTE_LOCK_WAIT``.
    """
    lock = RemoteLock(backend, "shared")
    deadline = time.monotonic() + wait_seconds()
    while True:
        backend.put_create(lock.key, lock.record())
        infos = list(backend.list(LOCKS))
        if not any(i.key == EXCLUSIVE for i in infos):
            lock.epoch = current_epoch(infos)
            lock._start_refresh()
            return lock
        backend.delete(lock.key)  # back off: the gc waits for shared locks to go
        got = read_lock(backend, EXCLUSIVE)
        rec = got[0] if got else None
        if got is not None and is_stale(rec) and break_stale(backend, EXCLUSIVE, got[1]):
            continue
        if time.monotonic() > deadline:
            raise RemoteBusyError(f"{backend.url}: busy with a remote gc ({describe(rec)}); try again later")
        time.sleep(0.1)


def acquire_exclusive(backend: Any) -> RemoteLock:
    """Take the exclusive (gc) lock, then wait until no live push holds a shared one.

    Raises:
        RemoteBusyError: another gc holds it, or pushes kept the remote busy too long.
    """
    lock = RemoteLock(backend, "exclusive")
    deadline = time.monotonic() + wait_seconds()
    while not backend.put_create(EXCLUSIVE, lock.record()):
        got = read_lock(backend, EXCLUSIVE)
        if got is None:
            continue  # released meanwhile
        rec, etag = got
        if is_stale(rec):
            if take_over(backend, EXCLUSIVE, etag, lock.record()):
                break  # it is ours now; a racing breaker's compare-and-swap fails
            continue
        if rec.get("kind") != "breaking":  # type: ignore[union-attr]
            raise RemoteBusyError(f"{backend.url}: another remote gc is running ({describe(rec)})")
        if time.monotonic() > deadline:  # a pusher is removing a stale lock: a moment
            raise RemoteBusyError(f"{backend.url}: the exclusive lock stays busy ({describe(rec)})")
        time.sleep(0.05)
    lock._start_refresh()
    deadline = time.monotonic() + wait_seconds()
    try:
        while True:
            live = []
            for info in backend.list(SHARED_PREFIX):
                got = read_lock(backend, info.key)
                if got is None:
                    continue  # released meanwhile
                rec, etag = got
                if not is_stale(rec):
                    live.append(rec)
                elif not break_stale(backend, info.key, etag):  # a killed pusher's lock, unless refreshed
                    live.append(rec)
            if not live:
                lock.epoch = current_epoch(list(backend.list(EPOCH_PREFIX)))
                return lock
            if time.monotonic() > deadline:
                raise RemoteBusyError(f"{backend.url}: pushes still running ({describe(live[0])})")
            time.sleep(0.1)
    except BaseException:
        lock.release()
        raise


def new_epoch(backend: Any, old: str) -> str:
    """Mark that a gc is about to delete objects; returns the new epoch (older markers are removed)."""
    epoch = f"{time.time_ns():020d}-{os.urandom(4).hex()}"
    backend.put_create(f"{EPOCH_PREFIX}{epoch}", dumps({"time": time.time()}))
    for info in backend.list(EPOCH_PREFIX):
        if info.key != f"{EPOCH_PREFIX}{epoch}":
            backend.delete(info.key)
    return epoch
