"""Errors of remote operations (all :class:`runicorn.errors.RunicornError`, one line each)."""

from __future__ import annotations

from runicorn.errors import RunicornError


class RemoteError(RunicornError):
    """A remote cannot be used: unknown name, bad URL, unreachable, wrong layout."""


class RemoteConflictError(RemoteError):
    """A remote object changed under us (a ref moved, a lock is held)."""


class RemoteBusyError(RemoteError):
    """The remote is locked by another process (a remote gc, or pushes during a gc)."""
