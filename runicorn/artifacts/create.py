"""Making artifacts: ``tree_hash``, ``create_artifact`` and reproducible ``archive_artifact``."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Callable

from runicorn.errors import ArtifactError
from runicorn.fsutil import narrowed_perm
from runicorn.hashing import copy_and_hash, git_blob_sha1_bytes, git_blob_sha1_file, sha256_bytes, sha256_file
from runicorn.store import Store, TreeEntry, open_store, scan_directory
from runicorn.store.tree import MODE_EXEC, MODE_LINK, compute_tree_id

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
    files, links = scan_directory(root)
    if kind == "tree-sha256":
        entries: dict[str, TreeEntry] = {}
        for rel, full, mode in files:
            with open(full, "rb") as f:
                sha, size = copy_and_hash(f, None)
            entries[rel] = TreeEntry(sha, mode, size)
        for rel, target in links:
            entries[rel] = TreeEntry(sha256_bytes(target), MODE_LINK, len(target))
        return compute_tree_id(entries)
    from runicorn.artifacts.githash import git_tree_sha1

    git: dict[str, tuple[str, str]] = {rel: (mode, git_blob_sha1_file(full)) for rel, full, mode in files}
    for rel, target in links:
        git[rel] = (MODE_LINK, git_blob_sha1_bytes(target))
    return git_tree_sha1(git)


def create_artifact(fn: Callable[[Path], object] | None = None, *, src: str | os.PathLike[str] | None = None,
                    storage: str | os.PathLike[str] | None = None) -> str:
    """Capture a new artifact and install it; return its tree id.

    Either ``fn(path)`` populates a fresh staging directory, or ``src`` (a directory)
    is ingested.  The tree is materialised at ``artifacts/<tree>/``; bind it with
    :func:`bind_artifact` so ``gc`` keeps it.

    Raises:
        ArtifactError: neither or both of ``fn`` and ``src`` given, or ``src`` not a directory.
    """
    from runicorn.artifacts.install import materialize

    if (fn is None) == (src is None):
        raise ArtifactError("create_artifact needs exactly one of fn=... or src=...")
    store = open_store(storage)
    if src is not None:
        if not Path(src).is_dir():
            raise ArtifactError(f"{src}: not a directory")
        tree = store.ingest_directory(src)
    else:
        staging = store.writer_dir() / f"create-{secrets.token_hex(6)}"
        staging.mkdir()
        try:
            fn(staging)  # type: ignore[misc]
            tree = store.ingest_directory(staging, source="create_artifact")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    materialize(store, tree)
    return tree


def _archive_kind(out: Path) -> str:
    name = out.name.lower()
    for suffix, kind in ((".tar.gz", "gz"), (".tgz", "gz"), (".tar.bz2", "bz2"), (".tar.xz", "xz"),
                         (".tar.zst", "zst"), (".tar", "tar"), (".zip", "zip")):
        if name.endswith(suffix):
            return kind
    raise ArtifactError(f"{out}: archive name must end in .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz, "
                        ".tar.zst or .zip")


def archive_artifact(tree: str, out_path: str | os.PathLike[str], *,
                     storage: str | os.PathLike[str] | None = None, store: Store | None = None) -> str:
    """Write a reproducible archive of a stored tree; return the archive's sha256.

    Entries are sorted, parent directories are listed, mtime is 0, uid/gid 0 with empty
    owner names, modes normalised (0644 files, 0755 executables and directories; 0600 /
    0700 for files whose blob is private, never wider than their source), and
    compressors get fixed headers: the same tree always gives the same bytes.

    Raises:
        TreeNotFoundError: the tree is not in the store.
        ArtifactError: unsupported archive extension.
    """
    from runicorn.fsutil import StagedFile

    store = store or open_store(storage)
    tree = store.resolve_tree(tree)
    out = Path(out_path)
    kind = _archive_kind(out)
    entries = store.tree_entries(tree)
    paths = sorted(entries, key=lambda p: p.encode("utf-8", "surrogateescape"))
    dirs = sorted({"/".join(p.split("/")[:i]) for p in paths for i in range(1, p.count("/") + 1)})
    items = sorted([(d, None) for d in dirs] + [(p, entries[p]) for p in paths],
                   key=lambda it: it[0].encode("utf-8", "surrogateescape"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with StagedFile(out.parent, prefix=f".{out.name}.") as staged:
        if kind == "zip":
            _write_zip(store, staged.file, items)
        else:
            _write_tar(store, staged.file, items, kind)
        staged.commit(out)
    return sha256_file(out)


def _write_tar(store: Store, raw: object, items: list, kind: str) -> None:
    import tarfile

    closers = []
    if kind == "gz":
        import gzip

        fileobj = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)  # type: ignore[arg-type]
        closers.append(fileobj)
    elif kind == "bz2":
        import bz2

        fileobj = bz2.BZ2File(raw, "wb")  # type: ignore[arg-type,assignment]
        closers.append(fileobj)
    elif kind == "xz":
        import lzma

        fileobj = lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ)  # type: ignore[arg-type,assignment]
        closers.append(fileobj)
    elif kind == "zst":
        try:
            import zstandard
        except ImportError:
            raise ArtifactError("writing .tar.zst needs the 'zstandard' package") from None
        fileobj = zstandard.ZstdCompressor(level=10).stream_writer(raw, closefd=False)  # type: ignore[assignment]
        closers.append(fileobj)
    else:
        fileobj = raw  # type: ignore[assignment]
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[arg-type]
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
                ti.linkname = os.fsdecode(store.blob_path(e.sha256).read_bytes())
                tf.addfile(ti)
            else:
                ti.mode = narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o644,
                                        os.stat(store.blob_path(e.sha256)).st_mode)
                ti.size = e.size
                with store.open_blob(e.sha256) as f:
                    tf.addfile(ti, f)
    for c in closers:
        c.close()


def _write_zip(store: Store, raw: object, items: list) -> None:
    import zipfile

    with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_DEFLATED) as zf:  # type: ignore[arg-type]
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
                zf.writestr(zi, store.blob_path(e.sha256).read_bytes())
            else:
                perm = narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o644,
                                     os.stat(store.blob_path(e.sha256)).st_mode)
                zi.external_attr = (stat.S_IFREG | perm) << 16
                zi.compress_type = zipfile.ZIP_DEFLATED
                with store.open_blob(e.sha256) as src, zf.open(zi, "w") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
