"""Safe extraction of artifact archives straight into the blob store.

Members are streamed from the archive into one :class:`~runicorn.store.ingest.BlobBatch`
(hashed while copied, published by one group commit once every member passed its checks)
and described as tree entries; no member is ever written at a path it names,
so nothing can land outside the store's staging area.  Every member is also checked:
its path through :func:`runicorn.relpath.validate_relpath`, tar members through
``tarfile.data_filter`` as well, and links against the virtual tree being built:

* absolute paths and ``..`` components are refused;
* a member below a symlink member ("writing through a symlink") is refused;
* a symlink whose target resolves (following the archive's own symlinks) outside the
  root is refused, as is an absolute target;
* a symlink target longer than :data:`MAX_LINK_TARGET` bytes is refused (a zip member
  holding a "target" is read no further than that);
* a hardlink must name an earlier regular member;
* devices, FIFOs and other special members are refused; duplicates are refused.

Formats: tar, tar.gz, tar.bz2, tar.xz, zip, and tar.zst when ``zstandard`` is importable.

Resources are bounded whatever the archive holds:

* memory: a compressed stream is decoded at most :data:`_BUF` bytes per read (a
  decompressor never expands a whole input buffer at once, so a few KB of bz2 standing
  for GiBs of zeros cost no more memory than any other input); an xz or zstd stream
  whose decoder needs more than :data:`DECODER_MEMLIMIT` bytes of window is refused;
* size: the bytes extracted (file contents and link targets) may not exceed a limit --
  the declared size of the tree when the caller knows it, else :func:`extract_limit`
  (``$RUNICORN_EXTRACT_MAX``, and never more than the free space of the store's
  filesystem).  Each member's declared size is checked *before* it is read, so a bomb is
  refused without writing its contents.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator

from runicorn.errors import ArtifactError, RunicornError, UnsafeArchiveError, UnsafePathError
from runicorn.fsutil import blob_perm
from runicorn.hashing import GitBlobHasher, git_blob_sha1_bytes
from runicorn.relpath import short_repr, validate_relpath
from runicorn.store import Store, TreeEntry
from runicorn.store.holds import Lease
from runicorn.store.ingest import BlobBatch
from runicorn.store.tree_format import MODE_EXEC, MODE_FILE, MODE_LINK

_BUF = 1 << 20  # largest piece decoded or copied at once
_IN = 1 << 20  # compressed bytes fed to a decoder at once (a piece of stored data: up to _BUF)
_AHEAD = 4  # decoded pieces of _BUF bytes a decoding thread may hold ready
MAX_LINK_TARGET = 4096  # bytes; PATH_MAX on Linux, so no real symlink target is longer


DECODER_MEMLIMIT = 128 << 20  # bytes: xz -9e needs 65 MiB, zstd --ultra -22 / --long 128 MiB
DEFAULT_EXTRACT_MAX = 256 << 30  # bytes, when the tree's size is not known
EXTRACT_MAX_VAR = "RUNICORN_EXTRACT_MAX"


def extract_limit(store: Store) -> tuple[int, str]:
    """The most bytes an archive of unknown tree size may expand to in ``store``, and how
    to name that limit in an error: ``$RUNICORN_EXTRACT_MAX`` (default 256 GiB), or the
    free space of the store's filesystem when that is less.

    Raises:
        ArtifactError: ``$RUNICORN_EXTRACT_MAX`` is not a non-negative number of bytes.
    """
    import shutil

    text = os.environ.get(EXTRACT_MAX_VAR, "").strip()
    cap = DEFAULT_EXTRACT_MAX
    if text:
        try:
            cap = int(text)
        except ValueError:
            cap = -1
        if cap < 0:
            raise ArtifactError(f"{EXTRACT_MAX_VAR}={text!r} is not a non-negative number of bytes")
    free = shutil.disk_usage(store.root).free
    if free < cap:
        return free, f"the {free} bytes free on {store.root}"
    how = f"{EXTRACT_MAX_VAR}={cap} bytes" if text else f"the default limit of {cap} bytes ({EXTRACT_MAX_VAR})"
    return cap, how


@dataclass
class Extracted:
    """What an archive holds: tree entries, and git blob ids when asked for."""

    entries: dict[str, TreeEntry] = field(default_factory=dict)
    git: dict[str, tuple[str, str]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)


def _git_tee(chunks: Iterable[bytes | memoryview], hasher: GitBlobHasher) -> Iterator[bytes | memoryview]:
    """``chunks``, each also fed to a git blob hasher on its way."""
    for chunk in chunks:
        hasher.update(chunk)
        yield chunk


def _chunks_of(f: IO[bytes]) -> Iterator[bytes]:
    """The bytes of a reader, at most :data:`_BUF` at a time."""
    while chunk := f.read(_BUF):
        yield chunk


def detect_format(path: Path) -> str:
    """``tar``, ``gz``, ``bz2``, ``xz``, ``zst`` or ``zip``, from the file's magic bytes.

    Raises:
        ArtifactError: not a recognised archive.
    """
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zst"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar" or head == b"\x00" * len(head) and head:
        return "tar"
    import tarfile

    if tarfile.is_tarfile(path):  # old v7 tar without the ustar magic
        return "tar"
    raise ArtifactError(f"{path}: not a tar, tar.gz, tar.bz2, tar.xz, tar.zst or zip archive")


class _Builder:
    """Collects members, enforcing the safety rules as each one arrives."""

    def __init__(self, batch: BlobBatch, origin: str, want_git: bool, limit: tuple[int, str]) -> None:
        self.batch = batch  # every blob goes into one batch: one group commit for the archive
        self.origin = origin
        self.want_git = want_git
        self.out = Extracted()
        self.limit, self.limit_why = limit
        self.total = 0  # bytes of contents and link targets so far

    def reserve(self, raw: str, size: int) -> None:
        """Count ``size`` more bytes, refusing (before they are read) past the limit."""
        if self.total + size > self.limit:
            raise UnsafeArchiveError(
                f"{self.origin}: refused: it expands to more than {self.limit} bytes ({self.limit_why}); "
                f"member {short_repr(raw)} declares {size} bytes ({self.total} extracted before it)"
            )
        self.total += size

    def _path(self, raw: str) -> str | None:
        name = raw
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/") if name not in ("/",) else name
        if name in ("", "."):
            return None
        try:
            return validate_relpath(name, what="archive member")
        except UnsafePathError as exc:
            raise UnsafeArchiveError(f"{self.origin}: refused member {short_repr(raw)}: {exc}") from None

    def _claim(self, path: str, raw: str, *, is_dir: bool = False) -> None:
        out = self.out
        parts = path.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in out.links:
                raise UnsafeArchiveError(
                    f"{self.origin}: refused member {raw!r}: it would be written through the symlink {parent!r}"
                )
            if parent in out.entries:
                raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: {parent!r} is a file")
        if path in out.entries or path in out.links:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: duplicate member")
        if not is_dir and path in out.dirs:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: {path!r} is a directory")
        for i in range(1, len(parts)):
            out.dirs.add("/".join(parts[:i]))

    def add_dir(self, raw: str) -> None:
        path = self._path(raw)
        if path is None:
            return
        if path in self.out.entries or path in self.out.links:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: duplicate member")
        self._claim(path, raw, is_dir=True)
        self.out.dirs.add(path)

    def add_file(self, raw: str, chunks: Iterable[bytes | memoryview], size: int, mode: int) -> None:
        """Stage one regular member whose bytes ``chunks`` gives (a generator, started only
        once its name and size passed the checks); ``mode`` is its permission bits as the archive
        records them (0644 when it records none): the blob is no more readable than that
        (:func:`runicorn.fsutil.blob_perm`), and owner-execute makes it ``100755``."""
        path = self._path(raw)
        if path is None:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: not a file name")
        self._claim(path, raw)
        self.reserve(raw, size)
        hasher = GitBlobHasher(size) if self.want_git else None
        data = chunks if hasher is None else _git_tee(chunks, hasher)
        sha, got = self.batch.add_stream(data, size, perm=blob_perm(mode), origin=f"{self.origin}: {raw}")
        if got != size:
            raise UnsafeArchiveError(f"{self.origin}: member {raw!r} is {got} bytes, header says {size}")
        kind = MODE_EXEC if mode & 0o100 else MODE_FILE
        self.out.entries[path] = TreeEntry(sha, kind, got)
        if hasher is not None:
            self.out.git[path] = (kind, hasher.hexdigest())

    def add_symlink(self, raw: str, target: str) -> None:
        path = self._path(raw)
        if path is None:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: not a link name")
        data = os.fsencode(target)
        if len(data) > MAX_LINK_TARGET:
            raise UnsafeArchiveError(
                f"{self.origin}: refused symlink {raw!r}: its target is longer than {MAX_LINK_TARGET} bytes"
            )
        if not target or target.startswith("/") or "\x00" in target:
            raise UnsafeArchiveError(f"{self.origin}: refused symlink {raw!r} -> {target!r}: absolute or empty target")
        self._claim(path, raw)
        self.reserve(raw, len(data))
        sha, size = self.batch.add_stream((data,), len(data))
        self.out.links[path] = target
        self.out.entries[path] = TreeEntry(sha, MODE_LINK, size)
        if self.want_git:
            self.out.git[path] = (MODE_LINK, git_blob_sha1_bytes(data))

    def add_hardlink(self, raw: str, target_raw: str) -> None:
        path = self._path(raw)
        target = self._path(target_raw) if target_raw else None
        if path is None or target is None or target not in self.out.entries or target in self.out.links:
            raise UnsafeArchiveError(
                f"{self.origin}: refused hardlink {raw!r} -> {target_raw!r}: "
                "its target is not an earlier regular member of the archive"
            )
        self._claim(path, raw)
        self.out.entries[path] = self.out.entries[target]
        if self.want_git:
            self.out.git[path] = self.out.git[target]

    def finish(self) -> Extracted:
        for path, target in self.out.links.items():
            self._check_link_stays_inside(path, target)
        return self.out

    def _check_link_stays_inside(self, path: str, target: str) -> None:
        """Resolve ``target`` through the archive's own symlinks; refuse if it leaves the root."""
        links = self.out.links
        pending = posixpath.dirname(path).split("/") if posixpath.dirname(path) else []
        todo = target.split("/")
        resolved: list[str] = pending
        hops = 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise UnsafeArchiveError(
                        f"{self.origin}: refused symlink {path!r} -> {target!r}: it points outside the artifact"
                    )
                resolved.pop()
                continue
            candidate = "/".join(resolved + [part])
            if candidate in links:
                hops += 1
                if hops > 40:
                    raise UnsafeArchiveError(f"{self.origin}: refused symlink {path!r}: too many levels of links")
                inner = links[candidate]
                todo = inner.split("/") + todo
                continue
            resolved.append(part)


def extract_into_store(
    store: Store,
    archive: Path,
    *,
    want_git: bool = False,
    origin: str | None = None,
    limit: tuple[int, str] | None = None,
    lease: Lease | None = None,
) -> Extracted:
    """Stream every member of ``archive`` into the store, held under ``lease`` (else a
    lease of its own); return the entries.

    ``limit``: the most bytes the archive may expand to and how to name that bound in
    the error (the declared tree's size when known); default :func:`extract_limit`.

    All members go into one :class:`~runicorn.store.ingest.BlobBatch`: small ones are
    written together, large ones streamed to staging with write-back started as they go,
    and one group commit (two ``syncfs``, one transaction) publishes them once every
    member passed the checks, where a commit per member would cost an fsync and a
    transaction each.  The blobs stay held for this process (the caller's tree names
    them next).  On error nothing of the archive is published, and blobs the store
    already had lose the hold taken for them, so nothing stays reachable.

    Raises:
        UnsafeArchiveError: a hostile member (see module docs), or more bytes than the limit.
        ArtifactError: not an archive / unsupported format or a corrupt archive.
    """
    origin = origin or str(archive)
    fmt = detect_format(archive)
    builder = _Builder(BlobBatch(store, lease), origin, want_git, limit or extract_limit(store))
    try:
        try:
            if fmt == "zip":
                _extract_zip(archive, builder)
            else:
                _extract_tar(store, archive, fmt, builder)
            out = builder.finish()
            builder.batch.commit()
            return out
        except RunicornError:
            raise
        except OSError as exc:
            if exc.errno is not None:
                raise  # the filesystem failed (permissions, I/O), not the archive's bytes
            raise ArtifactError(f"{origin}: corrupt or unsupported archive ({_short(exc)})") from None
        except _decoder_errors() as exc:
            raise ArtifactError(f"{origin}: corrupt or unsupported archive ({_short(exc)})") from None
    except BaseException:
        # nothing was published (a failed commit leaves its batch to recovery); the
        # holds taken on blobs the store had go (the batch's lease), and no other operation's
        builder.batch.discard()
        store.release_holds(builder.batch.lease)
        raise


def _short(exc: BaseException) -> str:
    why = str(exc) or type(exc).__name__
    # zipfile quotes whole headers; keep the message one readable line
    return why[:200] + "..." if len(why) > 200 else why


def _decoder_errors() -> tuple[type[BaseException], ...]:
    """What tarfile, zipfile and the decompressors raise on bad input.

    Besides their own error types: ``EOFError`` (truncated), ``zlib.error``, ``lzma.LZMAError``, ``NotImplementedError`` (an unsupported zip
    compression method), ``RuntimeError`` (an encrypted zip member), ``UnicodeDecodeError``
    (a zip name flagged UTF-8 that is not) and
    ``zstandard.ZstdError`` when ``zstandard`` is loaded.
    """
    import lzma
    import tarfile
    import zipfile
    import zlib

    errors: list[type[BaseException]] = [
        tarfile.TarError,
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        zlib.error,
        lzma.LZMAError,
        NotImplementedError,
        RuntimeError,
        UnicodeDecodeError,
    ]
    zstd = sys.modules.get("zstandard")
    if zstd is not None and hasattr(zstd, "ZstdError"):
        errors.append(zstd.ZstdError)
    return tuple(errors)


class _Decoded(io.RawIOBase):
    """What a bz2 / lzma decompressor makes of ``raw``, at most the asked length per read.

    ``decompress(data, max_length)`` keeps the input it has not expanded yet, so memory
    stays bounded however well the data compresses.  Concatenated streams are read on
    (as ``bzip2 -d`` and ``xz -d`` do); data after the last stream that is not another
    stream is ignored, as the stdlib's ``BZ2File`` / ``LZMAFile`` do.
    """

    def __init__(self, raw: IO[bytes], make: Any, trailing_error: type[BaseException]) -> None:
        self._raw, self._make, self._trailing = raw, make, trailing_error
        self._d = make()
        self._done = False

    def readable(self) -> bool:
        return True

    def piece(self, n: int) -> bytes:
        """Up to ``n`` decoded bytes (b"" only at the end), as the decompressor returned
        them: no copy."""
        while not self._done and n:
            d = self._d
            if d.eof:
                rest = d.unused_data or self._raw.read(_IN)
                if not rest:
                    self._done = True
                    break
                self._d = d = self._make()
                try:
                    data = d.decompress(rest, n)
                except self._trailing:
                    self._done = True  # trailing garbage after the last stream
                    break
            elif d.needs_input:
                chunk = self._raw.read(_IN)
                if not chunk:
                    raise EOFError("compressed data ends before the end-of-stream marker")
                data = d.decompress(chunk, n)
            else:
                data = d.decompress(b"", n)
            if data:
                return data
        return b""

    def readinto(self, b: Any) -> int:
        data = self.piece(len(b))
        b[: len(data)] = data
        return len(data)


def _decoded_pieces(raw: IO[bytes], fmt: str, origin: str) -> Callable[[int], bytes]:
    """``read(n)`` of the decompressed bytes of ``raw`` (``fmt`` from :func:`detect_format`):
    up to ``n`` bytes per call, b"" at the end.  Each piece is handed on as the decoder
    made it (no buffering layer copying it once more)."""
    if fmt == "tar":
        return raw.read
    if fmt == "gz":
        import gzip

        # GzipFile decodes with a bounded max_length per read (and checks CRC and length)
        return gzip.GzipFile(fileobj=raw, mode="rb").read
    if fmt == "bz2":
        import bz2

        return _Decoded(raw, bz2.BZ2Decompressor, OSError).piece
    if fmt == "xz":
        import lzma

        def make() -> Any:
            return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=DECODER_MEMLIMIT)

        return _Decoded(raw, make, lzma.LZMAError).piece
    try:
        import zstandard
    except ImportError:
        raise ArtifactError(
            f"{origin}: a tar.zst archive needs the 'zstandard' package (pip install runicorn[zstd])"
        ) from None
    dctx = zstandard.ZstdDecompressor(max_window_size=DECODER_MEMLIMIT)
    reader = dctx.stream_reader(raw, read_size=_IN, read_across_frames=True, closefd=False)
    return reader.read


class _Forward:
    """A decoded stream that tarfile may ``seek`` forward in, decoded ahead by a thread.

    With it tarfile reads in its random-access mode (``"r:"``), whose member reads go
    straight to this stream; its stream mode (``"r|"``) copies every byte through its own
    buffer twice more.  A backward seek (tarfile never needs one reading in order) is an
    error.  With ``ahead``, a thread decodes up to :data:`_AHEAD` pieces of at most
    :data:`_BUF` bytes in advance (the decompressors release the GIL), so decoding
    overlaps hashing and writing as it does for ``tar`` and its decompressor process;
    memory stays bounded by the queue.
    """

    def __init__(self, read: Callable[[int], bytes], *, ahead: bool) -> None:
        import queue
        import threading

        self._read = read
        self._pos = 0
        self._buf = b""
        self._off = 0
        self._eof = False
        self._q: Any = None
        if ahead:
            self._q = queue.Queue(maxsize=_AHEAD)
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._fill, name="runicorn-decode", daemon=True)
            self._thread.start()

    def _fill(self) -> None:
        import queue

        while True:
            try:
                item: bytes | BaseException = self._read(_BUF)
            except BaseException as exc:  # handed to the reader, raised there
                item = exc
            while not self._stop.is_set():
                try:
                    self._q.put(item, timeout=0.2)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set() or not isinstance(item, bytes) or not item:
                return

    def _ready(self) -> int:
        """Bytes of the current piece not yet consumed, fetching the next piece when none
        are left; 0 only at the end of the stream."""
        left = len(self._buf) - self._off
        if left or self._eof:
            return left
        if self._q is None:
            piece = self._read(_BUF)
        else:
            item = self._q.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            piece = item
        self._buf, self._off = piece, 0
        if not piece:
            self._eof = True
        return len(piece)

    def close(self) -> None:
        if self._q is not None:
            import queue

            self._stop.set()
            try:
                while True:
                    self._q.get_nowait()
            except queue.Empty:
                pass
            self._thread.join()

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        parts: list[bytes] = []
        want = n if n >= 0 else 1 << 62
        while want > 0 and (k := min(want, self._ready())):
            if self._off == 0 and k == len(self._buf):
                parts.append(self._buf)  # a whole piece: no copy
            else:
                parts.append(self._buf[self._off : self._off + k])
            self._off += k
            want -= k
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self._pos += len(data)
        return data

    def chunks(self, size: int) -> Iterator[memoryview]:
        """The next ``size`` bytes, as views of the decoded pieces (no copy); each view is
        valid until the next one is asked for.

        Raises:
            EOFError: the stream ends first (a truncated archive).
        """
        while size:
            k = min(size, self._ready())
            if not k:
                raise EOFError("the archive ends inside a member")
            view = memoryview(self._buf)[self._off : self._off + k]
            self._off += k
            self._pos += k
            size -= k
            yield view

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self._pos:
            raise OSError("the archive stream can only be read forward")
        while self._pos < pos and (k := min(pos - self._pos, self._ready())):
            self._off += k  # skipped without copying
            self._pos += k
        return self._pos


def _member_chunks(tf: Any, stream: _Forward, m: Any) -> Iterator[bytes | memoryview]:
    """The data of tar member ``m``: for a plain member, the decoded pieces themselves
    (tarfile's reader would copy every byte once more); through tarfile for a sparse one."""
    if m.issparse():
        yield from _chunks_of(tf.extractfile(m))
    else:
        stream.seek(m.offset_data)
        yield from stream.chunks(m.size)


def _zip_chunks(zf: Any, info: Any) -> Iterator[bytes]:
    """The data of zip member ``info``, decoded at most :data:`_BUF` bytes at a time."""
    with _open_zip_member(zf, info) as f:
        yield from _chunks_of(f)


def _extract_tar(store: Store, archive: Path, fmt: str, b: _Builder) -> None:
    import tarfile

    check_root = str(store.writer_dir() / "tar-filter-root")
    os.makedirs(check_root, exist_ok=True)
    with open(archive, "rb") as raw:
        fileobj = _Forward(_decoded_pieces(raw, fmt, b.origin), ahead=fmt != "tar")
        # "r:": tarfile reads a plain stream (in order); the decoding, bounded, is ours
        with contextlib.closing(fileobj), tarfile.open(fileobj=fileobj, mode="r:") as tf:  # type: ignore[call-overload]
            while True:
                m = tf.next()
                if m is None:
                    break
                tf.members.clear()  # a stream needs no member list: keep memory flat for any count
                try:
                    tarfile.data_filter(m, check_root)
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(f"{b.origin}: refused member {m.name!r}: {exc}") from None
                if m.isreg():
                    # nothing is read before add_file has checked the size
                    b.add_file(m.name, _member_chunks(tf, fileobj, m), m.size, m.mode)
                elif m.isdir():
                    b.add_dir(m.name)
                elif m.issym():
                    b.add_symlink(m.name, m.linkname)
                elif m.islnk():
                    b.add_hardlink(m.name, m.linkname)
                else:
                    kind = "device" if (m.ischr() or m.isblk()) else "FIFO" if m.isfifo() else "special member"
                    raise UnsafeArchiveError(f"{b.origin}: refused member {m.name!r}: {kind}")


def _zip_link_target(zf: Any, info: Any, b: _Builder) -> str:
    """The target of a zip symlink member, read no further than :data:`MAX_LINK_TARGET` + 1 bytes."""
    too_long = UnsafeArchiveError(
        f"{b.origin}: refused symlink {info.filename!r}: its target is longer than {MAX_LINK_TARGET} bytes"
    )
    if info.file_size > MAX_LINK_TARGET:
        raise too_long
    with _open_zip_member(zf, info) as f:
        data = f.read(MAX_LINK_TARGET + 1)
    if len(data) > MAX_LINK_TARGET:
        raise too_long
    return data.decode("utf-8", "surrogateescape")


class _Checked(io.RawIOBase):
    """A zip member decoded by :class:`_Decoded`: no more than its declared size, CRC checked."""

    def __init__(self, src: io.RawIOBase, size: int, crc: int, name: str) -> None:
        self._src, self._left, self._crc, self._want, self._name = src, size, 0, crc, name

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        import zipfile
        import zlib

        n = self._src.readinto(b) or 0
        if n > self._left:
            raise zipfile.BadZipFile(f"member {self._name!r} holds more than its declared size")
        if n:
            self._left -= n
            self._crc = zlib.crc32(memoryview(b)[:n], self._crc)
        elif self._left:
            raise EOFError(f"member {self._name!r} ends before its declared size")
        elif self._crc != self._want:
            raise zipfile.BadZipFile(f"bad CRC-32 for member {self._name!r}")
        return n


def _open_zip_member(zf: Any, info: Any) -> IO[bytes]:
    """Open a zip member for reading, decoding at most :data:`_BUF` bytes at a time.

    zipfile bounds what a deflated member expands to per read, but expands a bzip2 or
    LZMA member's whole input buffer at once; those are read raw and decoded here.
    """
    import copy
    import zipfile

    if info.compress_type not in (zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        return zf.open(info)
    raw_info = copy.copy(info)
    raw_info.compress_type = zipfile.ZIP_STORED
    raw_info.file_size = info.compress_size
    del raw_info.CRC  # the CRC is of the decoded bytes: _Checked verifies it
    raw = zf.open(raw_info)
    if info.compress_type == zipfile.ZIP_BZIP2:
        import bz2

        decoded = _Decoded(raw, bz2.BZ2Decompressor, OSError)
    else:
        import lzma
        import struct

        # APPNOTE 5.8.8: 2 bytes version, 2 bytes properties size, then the LZMA1 properties
        head = raw.read(4)
        if len(head) < 4:
            raise EOFError(f"member {info.filename!r} ends inside its LZMA header")
        props = raw.read(struct.unpack("<H", head[2:])[0])
        if len(props) >= 5 and struct.unpack("<I", props[1:5])[0] > DECODER_MEMLIMIT:
            raise lzma.LZMAError(
                f"member {info.filename!r} needs a decoder window larger than {DECODER_MEMLIMIT} bytes"
            )
        filters = [lzma._decode_filter_properties(lzma.FILTER_LZMA1, props)]  # type: ignore[attr-defined]

        def make() -> Any:
            return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=filters)

        decoded = _Decoded(raw, make, lzma.LZMAError)
    return io.BufferedReader(_Checked(decoded, info.file_size, info.CRC, info.filename), _BUF)


def _extract_zip(archive: Path, b: _Builder) -> None:
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            unix = info.external_attr >> 16
            ftype = stat.S_IFMT(unix) if unix else 0
            if info.is_dir() or ftype == stat.S_IFDIR:
                b.add_dir(info.filename)
            elif ftype == stat.S_IFLNK:
                b.add_symlink(info.filename, _zip_link_target(zf, info, b))
            elif ftype in (0, stat.S_IFREG):
                # the declared size is checked before a byte is read; zipfile (and
                # _Checked) never return more than it
                # no unix mode recorded (a zip made on Windows, say): an ordinary 0644 file
                b.add_file(info.filename, _zip_chunks(zf, info), info.file_size, unix & 0o7777 if unix else 0o644)
            else:
                raise UnsafeArchiveError(f"{b.origin}: refused member {info.filename!r}: device, FIFO or special file")
