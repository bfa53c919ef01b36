"""Reading stored blobs: the one checked reader every consumer of blob bytes uses.

A blob is named by the SHA-256 of its bytes, and a tree records its size.  Every reader
checks the size when it opens the file (one ``fstat``) and, because it sees every byte
anyway when it streams them, the hash when it reaches the recorded size.  Truncated,
grown or altered bytes raise :class:`DamagedBlobError` naming the blob file and what it
was read for -- before a caller that publishes atomically (restore, export, zip) can
publish anything, so no output built from damaged bytes ever looks complete.

Readers that do not stream the bytes (a hard link, a reflink, a kernel-side
``copy_file_range``, handing out the blob's path) check the size only: hashing would
cost a full read they otherwise avoid; ``runicorn verify --deep`` re-hashes everything.
"""

from __future__ import annotations

import io
import os
from typing import Any

from runicorn.errors import BlobNotFoundError, DamagedBlobError

_HINT = "run `runicorn verify --deep`"


def _for(what: str) -> str:
    return f"{what}: " if what else ""


def _missing(path: str, sha256: str, what: str) -> BlobNotFoundError:
    return BlobNotFoundError(f"{_for(what)}blob {sha256} is missing ({path}); {_HINT}")


def wrong_size(path: str | os.PathLike[str], sha256: str, size: int, expected: int, what: str = "") -> DamagedBlobError:
    """The error for a blob file of ``size`` bytes where ``expected`` are recorded."""
    how = "truncated" if size < expected else "grown"
    return DamagedBlobError(
        f"{_for(what)}blob {sha256} ({path}) is damaged ({how}): it has {size} bytes, "
        f"the tree records {expected}; {_HINT}",
        sha256=sha256,
        path=os.fspath(path),
        what=what,
    )


def wrong_hash(path: str | os.PathLike[str], sha256: str, actual: str, what: str = "") -> DamagedBlobError:
    """The error for a blob file whose bytes hash to ``actual`` instead of its name."""
    return DamagedBlobError(
        f"{_for(what)}blob {sha256} ({path}) is damaged: its bytes hash to {actual}; {_HINT}",
        sha256=sha256,
        path=os.fspath(path),
        what=what,
    )


def check_blob_file(path: str | os.PathLike[str], sha256: str, size: int | None, what: str = "") -> os.stat_result:
    """Stat a blob file and check its size (readers that hand out the path or link it).

    Raises:
        BlobNotFoundError: the file is missing.
        DamagedBlobError: its size differs from ``size``.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file stands at blobs/<aa>
        raise _missing(os.fspath(path), sha256, what) from None
    if size is not None and st.st_size != size:
        raise wrong_size(path, sha256, st.st_size, size, what)
    return st


def check_bytes(
    data: bytes | memoryview, path: str | os.PathLike[str], sha256: str, size: int | None, what: str = ""
) -> None:
    """Check bytes read whole from a blob file against its size and name.

    Raises:
        DamagedBlobError: they differ.
    """
    import hashlib

    if size is not None and len(data) != size:
        raise wrong_size(path, sha256, len(data), size, what)
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise wrong_hash(path, sha256, actual, what)


def read_checked(path: str | os.PathLike[str], sha256: str, size: int | None, what: str = "") -> bytes:
    """The bytes of a blob file, checked against ``size`` (if known) and ``sha256``.

    Raises:
        BlobNotFoundError: the file is missing.
        DamagedBlobError: the size or hash differs.
    """
    with open_checked(path, sha256, size, what) as f:
        return f.read()


def open_checked(path: str | os.PathLike[str], sha256: str, size: int | None, what: str = "") -> "BlobReader":
    """Open a blob file for streaming: size checked now, hash checked when the last byte
    is read (see :class:`BlobReader`).  ``size`` None: the file's own size is taken
    (a bare blob folder has no record of it; the hash still decides).

    Raises:
        BlobNotFoundError: the file is missing.
        DamagedBlobError: its size differs from ``size``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise _missing(os.fspath(path), sha256, what) from None
    try:
        actual = os.fstat(fd).st_size
        if size is not None and actual != size:
            raise wrong_size(path, sha256, actual, size, what)
        return BlobReader(fd, os.fspath(path), sha256, actual, what)
    except BaseException:
        os.close(fd)
        raise


class BlobReader(io.RawIOBase):
    """A read-only stream over one blob that hashes what it reads.

    When the bytes read reach the blob's size, their SHA-256 is compared with the
    blob's name; reading past the size, or the file ending before it, is damage too.
    A consumer that reads exactly ``size`` bytes (tarfile) or to EOF (``copyfileobj``)
    therefore gets :class:`DamagedBlobError` from the read that completes the blob,
    before it has used the result.  ``verified`` tells whether every byte was checked.
    """

    def __init__(self, fd: int, path: str, sha256: str, size: int, what: str) -> None:
        import hashlib

        super().__init__()
        self._fd = fd
        self.name = path
        self.sha256 = sha256
        self.size = size
        self.what = what
        self._hash: Any = hashlib.sha256()
        self._read = 0
        self.verified = False
        if size == 0:
            self._finish()

    def readable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def readinto(self, buffer: Any) -> int:
        n = os.readv(self._fd, [buffer])
        if n:
            self._read += n
            if self._read > self.size:
                raise wrong_size(self.name, self.sha256, self._read, self.size, self.what)
            self._hash.update(memoryview(buffer)[:n])
            if self._read == self.size:
                self._finish()
        elif self._read < self.size:
            raise wrong_size(self.name, self.sha256, self._read, self.size, self.what)
        return n

    def _finish(self) -> None:
        actual = self._hash.hexdigest()
        if actual != self.sha256:
            raise wrong_hash(self.name, self.sha256, actual, self.what)
        self.verified = True

    def close(self) -> None:
        if not self.closed:
            try:
                os.close(self._fd)
            finally:
                super().close()


__all__ = ["BlobReader", "check_blob_file", "check_bytes", "open_checked", "read_checked", "wrong_hash", "wrong_size"]
