"""Safe extraction of artifact archives straight into the blob store.

Members are streamed from the archive into :meth:`Store.ingest_stream` (hashed while
copied) and described as tree entries; no member is ever written at a path it names,
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
"""

from __future__ import annotations

import os
import posixpath
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from runicorn.errors import ArtifactError, RunicornError, UnsafeArchiveError, UnsafePathError
from runicorn.hashing import GitBlobHasher, git_blob_sha1_bytes
from runicorn.relpath import short_repr, validate_relpath
from runicorn.store import Store, TreeEntry
from runicorn.store.tree import MODE_EXEC, MODE_FILE, MODE_LINK

_BUF = 1 << 20
MAX_LINK_TARGET = 4096  # bytes; PATH_MAX on Linux, so no real symlink target is longer


@dataclass
class Extracted:
    """What an archive holds: tree entries, and git blob ids when asked for."""

    entries: dict[str, TreeEntry] = field(default_factory=dict)
    git: dict[str, tuple[str, str]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)


class _GitTee:
    """A reader that feeds a git blob hasher with what passes through ``readinto``."""

    def __init__(self, src: IO[bytes], size: int) -> None:
        self._src = src
        self.hasher = GitBlobHasher(size)

    def readinto(self, buf: Any) -> int:
        n = self._src.readinto(buf)  # type: ignore[attr-defined]
        if n:
            self.hasher.update(memoryview(buf)[:n])
        return n


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

    def __init__(self, origin: str, want_git: bool) -> None:
        self.origin = origin
        self.want_git = want_git
        self.out = Extracted()
        self.shas: set[str] = set()

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
                raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: it would be written "
                                         f"through the symlink {parent!r}")
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

    def add_file(self, store: Store, raw: str, src: IO[bytes], size: int, executable: bool) -> None:
        path = self._path(raw)
        if path is None:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: not a file name")
        self._claim(path, raw)
        tee = _GitTee(src, size) if self.want_git else None
        info = store.ingest_stream(tee if tee is not None else src)  # type: ignore[arg-type]
        self.shas.add(info.sha256)
        if info.size != size:
            raise UnsafeArchiveError(f"{self.origin}: member {raw!r} is {info.size} bytes, header says {size}")
        mode = MODE_EXEC if executable else MODE_FILE
        self.out.entries[path] = TreeEntry(info.sha256, mode, info.size)
        if tee is not None:
            self.out.git[path] = (mode, tee.hasher.hexdigest())

    def add_symlink(self, store: Store, raw: str, target: str) -> None:
        path = self._path(raw)
        if path is None:
            raise UnsafeArchiveError(f"{self.origin}: refused member {raw!r}: not a link name")
        data = os.fsencode(target)
        if len(data) > MAX_LINK_TARGET:
            raise UnsafeArchiveError(f"{self.origin}: refused symlink {raw!r}: its target is longer "
                                     f"than {MAX_LINK_TARGET} bytes")
        if not target or target.startswith("/") or "\x00" in target:
            raise UnsafeArchiveError(f"{self.origin}: refused symlink {raw!r} -> {target!r}: "
                                     "absolute or empty target")
        self._claim(path, raw)
        info = store.ingest_bytes(data)
        self.shas.add(info.sha256)
        self.out.links[path] = target
        self.out.entries[path] = TreeEntry(info.sha256, MODE_LINK, info.size)
        if self.want_git:
            self.out.git[path] = (MODE_LINK, git_blob_sha1_bytes(data))

    def add_hardlink(self, raw: str, target_raw: str) -> None:
        path = self._path(raw)
        target = self._path(target_raw) if target_raw else None
        if path is None or target is None or target not in self.out.entries or target in self.out.links:
            raise UnsafeArchiveError(f"{self.origin}: refused hardlink {raw!r} -> {target_raw!r}: "
                                     "its target is not an earlier regular member of the archive")
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
                    raise UnsafeArchiveError(f"{self.origin}: refused symlink {path!r} -> {target!r}: "
                                             "it points outside the artifact")
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


def extract_into_store(store: Store, archive: Path, *, want_git: bool = False,
                       origin: str | None = None) -> Extracted:
    """Stream every member of ``archive`` into the store; return the entries.

    On error the blobs ingested so far lose this process's gc hold, so nothing
    stays reachable.

    Raises:
        UnsafeArchiveError: a hostile member (see module docs).
        ArtifactError: not an archive / unsupported format or a corrupt archive.
    """
    origin = origin or str(archive)
    fmt = detect_format(archive)
    builder = _Builder(origin, want_git)
    try:
        try:
            if fmt == "zip":
                _extract_zip(store, archive, builder)
            else:
                _extract_tar(store, archive, fmt, builder)
            return builder.finish()
        except RunicornError:
            raise
        except OSError as exc:
            if exc.errno is not None:
                raise  # the filesystem failed (permissions, I/O), not the archive's bytes
            raise ArtifactError(f"{origin}: corrupt or unsupported archive ({_short(exc)})") from None
        except _decoder_errors() as exc:
            raise ArtifactError(f"{origin}: corrupt or unsupported archive ({_short(exc)})") from None
    except BaseException:
        if builder.shas:
            store.release_holds(builder.shas)
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

    errors: list[type[BaseException]] = [tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile,
                                         EOFError, zlib.error, lzma.LZMAError,
                                         NotImplementedError, RuntimeError, UnicodeDecodeError]
    zstd = sys.modules.get("zstandard")
    if zstd is not None and hasattr(zstd, "ZstdError"):
        errors.append(zstd.ZstdError)
    return tuple(errors)


def _extract_tar(store: Store, archive: Path, fmt: str, b: _Builder) -> None:
    import tarfile

    check_root = str(store.writer_dir() / "tar-filter-root")
    os.makedirs(check_root, exist_ok=True)
    with open(archive, "rb") as raw:
        if fmt == "zst":
            try:
                import zstandard
            except ImportError:
                raise ArtifactError(f"{b.origin}: a tar.zst archive needs the 'zstandard' package "
                                    "(pip install runicorn[zstd])") from None
            fileobj: Any = zstandard.ZstdDecompressor().stream_reader(raw, read_size=_BUF)
            mode = "r|"
        else:
            fileobj = raw
            mode = "r|" if fmt == "tar" else f"r|{fmt}"
        with tarfile.open(fileobj=fileobj, mode=mode, bufsize=_BUF) as tf:
            for m in tf:
                try:
                    tarfile.data_filter(m, check_root)
                except tarfile.FilterError as exc:
                    raise UnsafeArchiveError(f"{b.origin}: refused member {m.name!r}: {exc}") from None
                if m.isreg():
                    f = tf.extractfile(m)
                    assert f is not None
                    b.add_file(store, m.name, f, m.size, bool(m.mode & 0o100))
                elif m.isdir():
                    b.add_dir(m.name)
                elif m.issym():
                    b.add_symlink(store, m.name, m.linkname)
                elif m.islnk():
                    b.add_hardlink(m.name, m.linkname)
                else:
                    kind = "device" if (m.ischr() or m.isblk()) else "FIFO" if m.isfifo() else "special member"
                    raise UnsafeArchiveError(f"{b.origin}: refused member {m.name!r}: {kind}")


def _zip_link_target(zf: Any, info: Any, b: _Builder) -> str:
    """The target of a zip symlink member, read no further than :data:`MAX_LINK_TARGET` + 1 bytes."""
    too_long = UnsafeArchiveError(f"{b.origin}: refused symlink {info.filename!r}: its target is "
                                  f"longer than {MAX_LINK_TARGET} bytes")
    if info.file_size > MAX_LINK_TARGET:
        raise too_long
    with zf.open(info) as f:
        data = f.read(MAX_LINK_TARGET + 1)
    if len(data) > MAX_LINK_TARGET:
        raise too_long
    return data.decode("utf-8", "surrogateescape")


def _extract_zip(store: Store, archive: Path, b: _Builder) -> None:
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            unix = info.external_attr >> 16
            ftype = stat.S_IFMT(unix) if unix else 0
            if info.is_dir() or ftype == stat.S_IFDIR:
                b.add_dir(info.filename)
            elif ftype == stat.S_IFLNK:
                b.add_symlink(store, info.filename, _zip_link_target(zf, info, b))
            elif ftype in (0, stat.S_IFREG):
                with zf.open(info) as f:
                    b.add_file(store, info.filename, f, info.file_size, bool(unix & 0o100))
            else:
                raise UnsafeArchiveError(f"{b.origin}: refused member {info.filename!r}: "
                                         "device, FIFO or special file")
