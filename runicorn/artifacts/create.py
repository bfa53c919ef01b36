"""Making artifacts: ``tree_hash``, ``create_artifact`` and reproducible ``archive_artifact``."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from runicorn.errors import ArtifactError
from runicorn.fsutil import narrowed_perm
from runicorn.hashing import git_blob_sha1_bytes, git_blob_sha1_file, sha256_file
from runicorn.relpath import parent_dirs
from runicorn.store import Store, TreeEntry, open_store, scan_directory
from runicorn.store.tree_format import MODE_EXEC, MODE_LINK
from runicorn.store.walk import directory_tree_id

TREE_KINDS = ("tree-sha256", "git-tree-sha1")


def tree_hash(path: str | os.PathLike[str], kind: str = "tree-sha256") -> str:
    """Hash a directory without storing it.

    ``tree-sha256`` equals what :meth:`Store.ingest_directory` returns for it;
    ``git-tree-sha1`` equals ``git add -A && git write-tree`` of it.

    Raises:
        ArtifactError: not a directory, or an unknown ``kind``.
    """
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: not a directory")
    if kind not in TREE_KINDS:
        raise ArtifactError(f"unknown tree hash kind {kind!r}; use one of {', '.join(TREE_KINDS)}")
    if kind == "tree-sha256":
        return directory_tree_id(root)
    from runicorn.artifacts.githash import git_tree_sha1

    files, links = scan_directory(root)

    git: dict[str, tuple[str, str]] = {rel: (mode, git_blob_sha1_file(full)) for rel, full, mode in files}
    for rel, target in links:
        git[rel] = (MODE_LINK, git_blob_sha1_bytes(target))
    return git_tree_sha1(git)


def create_artifact(
    fn: Callable[[Path], object] | None = None,
    *,
    src: str | os.PathLike[str] | None = None,
    storage: str | os.PathLike[str] | None = None,
) -> str:
    """Capture a new artifact and install it; return its tree id.

    Either ``fn(path)`` populates a fresh staging directory, or ``src`` (a directory)
    is ingested.  The tree is materialised at ``artifacts/<tree>/``; bind it with
    :func:`bind_artifact` so ``gc`` keeps it.

    Raises:
        ArtifactError: neither or both of ``fn`` and ``src`` given, or ``src`` not a directory.
    """
    from runicorn.artifacts.materialize import materialize

    if (fn is None) == (src is None):
        raise ArtifactError("create_artifact needs exactly one of fn=... or src=...")
    store = open_store(storage)
    if src is not None:
        if not Path(src).is_dir():
            raise ArtifactError(f"{src}: not a directory")
        tree = store.ingest_directory(src)
    else:
        staging = store.writer_dir() / f"create-{os.urandom(6).hex()}"
        staging.mkdir()
        try:
            fn(staging)  # type: ignore[misc]
            tree = store.ingest_directory(staging, source="create_artifact")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    materialize(store, tree)
    return tree


# Archive formats by file-name ending (checked in this order); the one table ``export``,
# ``bind --archive`` and :func:`archive_artifact` choose from.
ARCHIVE_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".tar.gz", "gz"),
    (".tgz", "gz"),
    (".tar.bz2", "bz2"),
    (".tar.xz", "xz"),
    (".tar.zst", "zst"),
    (".tar", "tar"),
    (".zip", "zip"),
)


def archive_kind(out: str | os.PathLike[str]) -> str:
    """The archive format an output file name asks for: ``gz``, ``bz2``, ``xz``, ``zst``, ``tar``, ``zip``.

    Raises:
        ArtifactError: the name ends in none of the known extensions.
    """
    name = Path(out).name.lower()
    for suffix, kind in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return kind
    raise ArtifactError(
        f"{out}: archive name must end in .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, "
        ".tar.zst or .zip (the extension picks the format)"
    )


def archive_artifact(
    tree: str,
    out_path: str | os.PathLike[str],
    *,
    storage: str | os.PathLike[str] | None = None,
    store: Store | None = None,
) -> str:
    """Write a reproducible archive of a stored tree; return the archive's sha256.

    Entries are sorted, parent directories are listed, mtime is 0, uid/gid 0 with empty
    owner names, modes normalised (0644 files, 0755 executables and directories; 0600 /
    0700 for files whose blob is private, never wider than their source), and
    compressors get fixed headers: the same tree always gives the same bytes.

    Raises:
        TreeNotFoundError: the tree is not in the store.
        ArtifactError: unsupported archive extension.
        BlobNotFoundError / IntegrityError: a blob is missing or has the wrong size (naming it).
    """
    store = store or open_store(storage)
    archive_kind(out_path)  # refuse a bad name before any work
    tree = store.resolve_tree(tree)
    return write_archive(store.tree_entries(tree), store.blob_path, out_path)


def write_archive(
    entries: dict[str, TreeEntry], blob_path: Callable[[str], Path], out_path: str | os.PathLike[str]
) -> str:
    """Write the reproducible archive of a tree (``blob_path(sha)`` locates a blob),
    atomically, in the format the extension of ``out_path`` names; return its sha256.

    Raises:
        ArtifactError: unsupported archive extension (nothing is written).
        BlobNotFoundError / IntegrityError: a blob is missing or has the wrong size
            (naming the path in the tree and the blob file; nothing is written).
    """
    from runicorn.fsutil import StagedFile

    out = Path(out_path)
    kind = archive_kind(out)
    paths = sorted(entries, key=lambda p: p.encode("utf-8", "surrogateescape"))
    dirs = sorted(parent_dirs(paths))
    items = sorted(
        [(d, None) for d in dirs] + [(p, entries[p]) for p in paths],
        key=lambda it: it[0].encode("utf-8", "surrogateescape"),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with StagedFile(out.parent, prefix=f".{out.name}.") as staged:
        if kind == "zip":
            _write_zip(blob_path, staged.file, items)
        else:
            _write_tar(blob_path, staged.file, items, kind)
        staged.commit(out)
    return sha256_file(out)


def _open_blob(blob_path: Callable[[str], Path], rel: str, e: TreeEntry) -> BinaryIO:
    """Open the blob of ``rel``, checked: its size against the tree now, its hash as it is
    streamed into the archive (:mod:`runicorn.store.reader`).

    Raises:
        BlobNotFoundError: the blob file is missing.
        DamagedBlobError (an IntegrityError): its size or bytes differ, naming the file.
    """
    from runicorn.store.reader import open_checked

    return open_checked(blob_path(e.sha256), e.sha256, e.size, repr(rel))  # type: ignore[return-value]


def _read_link(blob_path: Callable[[str], Path], rel: str, e: TreeEntry) -> bytes:
    from runicorn.store.reader import read_checked

    return read_checked(blob_path(e.sha256), e.sha256, e.size, repr(rel))


def _write_tar(blob_path: Callable[[str], Path], raw: IO[bytes], items: list[tuple[str, Any]], kind: str) -> None:
    import tarfile

    closers: list[IO[bytes]] = []
    fileobj: IO[bytes]
    if kind == "gz":
        import gzip

        fileobj = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)  # type: ignore[assignment]
        closers.append(fileobj)
    elif kind == "bz2":
        import bz2

        fileobj = bz2.BZ2File(raw, "wb")
        closers.append(fileobj)
    elif kind == "xz":
        import lzma

        fileobj = lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ)
        closers.append(fileobj)
    elif kind == "zst":
        try:
            import zstandard
        except ImportError:
            raise ArtifactError("writing .tar.zst needs the 'zstandard' package") from None
        fileobj = zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=False)
        closers.append(fileobj)
    else:
        fileobj = raw
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for path, e in items:
            ti = tarfile.TarInfo(path)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            if e is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif e.mode == MODE_LINK:
                ti.type, ti.mode = tarfile.SYMTYPE, 0o777
                ti.linkname = os.fsdecode(_read_link(blob_path, path, e))
                tf.addfile(ti)
            else:
                ti.size = e.size
                with _open_blob(blob_path, path, e) as f:
                    ti.mode = narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o644, os.fstat(f.fileno()).st_mode)
                    tf.addfile(ti, f)
    for c in closers:
        c.close()


def _write_zip(blob_path: Callable[[str], Path], raw: IO[bytes], items: list[tuple[str, Any]]) -> None:
    import zipfile

    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, e in items:
            if e is None:
                zi = zipfile.ZipInfo(path + "/", date_time=(1980, 1, 1, 0, 0, 0))
                zi.external_attr = (stat.S_IFDIR | 0o755) << 16
                zf.writestr(zi, b"")
                continue
            zi = zipfile.ZipInfo(path, date_time=(1980, 1, 1, 0, 0, 0))
            zi.create_system = 3
            if e.mode == MODE_LINK:
                zi.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(zi, _read_link(blob_path, path, e))
            else:
                zi.compress_type = zipfile.ZIP_DEFLATED
                with _open_blob(blob_path, path, e) as src:
                    perm = narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o644, os.fstat(src.fileno()).st_mode)
                    zi.external_attr = (stat.S_IFREG | perm) << 16
                    with zf.open(zi, "w", force_zip64=e.size > (1 << 31)) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
