"""Exceptions raised by Runicorn.

Every error a user can cause derives from :class:`RunicornError`; the CLI prints
its message on one line and exits with status 1.  Messages name the file or
object involved and the cause.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

# How each surface spells an option when a message names it: the Python keyword argument,
# or the command-line flag (None: that surface has no such option).  The CLI switches to
# its spelling with :func:`cli_spelling`; library messages call :func:`option`.
OPTIONS: dict[str, tuple[str, str | None]] = {
    "force": ("force=True", "--force"),
    "force_snapshot": ("force_snapshot=True", "--force"),
    "force_pin": ("force_pin=True", "--force"),
    "overwrite": ("overwrite=True", "--overwrite"),
    "extra_excludes": ("extra_excludes=[...]", "--exclude PATTERN"),
    "toml": ("toml=PATH", "--toml PATH"),
    "limits": ("max_total_bytes= / max_files=", None),
}
_cli_spelling = False


def option(name: str) -> str | None:
    """``name`` (a key of :data:`OPTIONS`) as the calling surface spells it, or None."""
    python, cli = OPTIONS[name]
    return cli if _cli_spelling else python


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Messages raised inside name command-line flags instead of Python arguments."""
    global _cli_spelling
    before, _cli_spelling = _cli_spelling, True
    try:
        yield
    finally:
        _cli_spelling = before


class RunicornError(Exception):
    """Base class for all errors Runicorn raises on purpose."""


class UnsafePathError(RunicornError, ValueError):
    """A relative path is absolute, climbs with ``..``, or contains NUL/newline."""


class IntegrityError(RunicornError):
    """Content does not match the hash it is supposed to have."""


class DamagedBlobError(IntegrityError):
    """A stored blob's size or bytes disagree with its name or the tree recording it
    (truncated, grown or altered); ``sha256``, ``path`` and ``what`` (the file of the
    tree it was read for) name it."""

    def __init__(self, message: str, *, sha256: str, path: str, what: str) -> None:
        super().__init__(message)
        self.sha256 = sha256
        self.path = path
        self.what = what

    def __reduce__(self) -> Any:  # whole through a worker process's pipe
        return _damaged_blob, (str(self), self.sha256, self.path, self.what)


def _damaged_blob(message: str, sha256: str, path: str, what: str) -> DamagedBlobError:
    return DamagedBlobError(message, sha256=sha256, path=path, what=what)


class ChangedWhileReadingError(RunicornError):
    """A file changed (size or mtime) while it was being hashed or copied."""


class BlobNotFoundError(RunicornError, FileNotFoundError):
    """A blob id is not present in the store."""


class TreeNotFoundError(RunicornError, FileNotFoundError):
    """A tree id (or its manifest) is not present in the store."""


class AmbiguousPrefixError(TreeNotFoundError):
    """An id prefix (of a tree or a run) matches several; the message lists them."""


class CorruptManifestError(RunicornError, ValueError):
    """A manifest file is not valid JSON or does not follow the manifest format."""


class StoreIndexError(RunicornError):
    """The SQLite index is unusable (wrong schema version, corrupt file)."""


class RefError(RunicornError):
    """A ref name or kind is invalid, or a ref operation failed."""


class ReadOnlyStoreError(RunicornError):
    """A command needs to write to a store this process can only read (read-only mount,
    no write permission)."""


class StoreBusyError(RunicornError):
    """Another process kept the store's index locked for longer than a writer waits (a long
    gc or ``verify --repair``); the step that needed it was not done."""


class StorageFullError(RunicornError, OSError):
    """The filesystem holding the store ran out of space (or quota) during a write."""


class StoreWriteError(RunicornError, OSError):
    """The filesystem refused a write into the store's own folders (permissions, a read-only
    mount, a file where a folder belongs): never to be reported as an unreadable source.

    Keeps the ``errno`` and ``filename`` of the refused call; ``str()`` is the message alone.
    """

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.filename = filename

    def __reduce__(self) -> Any:  # whole through a worker process's pipe
        return StoreWriteError, (self.message, self.errno, self.filename)

    def __str__(self) -> str:
        return self.message


class ArtifactError(RunicornError):
    """An artifact operation failed (bad binding, unknown name, nothing matches)."""


class TomlFormatError(ArtifactError, ValueError):
    """A ``Runicorn.toml`` / ``Artifacts.toml`` is malformed; names the file, artifact and cause."""


class ArtifactNotInstalledError(ArtifactError, FileNotFoundError):
    """A non-lazy artifact is bound but not installed (run ``runicorn fetch``)."""


class DownloadError(ArtifactError):
    """Every source of an artifact failed; the message lists each source and why."""


class UnsafeArchiveError(ArtifactError):
    """An archive member would escape the extraction root or is a device, FIFO or bad link."""


class SSHConnectError(RunicornError):
    """An SSH connection could not be made because of the network (worth retrying)."""


class SSHRefusedError(SSHConnectError):
    """An SSH connection was refused for good: unknown or changed host key, failed auth."""
