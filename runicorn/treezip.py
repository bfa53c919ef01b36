"""A stored tree written as a zip (``snapshot --zip`` and restore's export)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runicorn.fsutil import StagedFile, narrowed_perm
from runicorn.store.tree_format import MODE_EXEC, MODE_LINK, TreeEntry

# Files up to this size are read whole and deflated once; larger ones are streamed.
_ZIP_WHOLE_BYTES = 1 << 20


def _looks_compressible(fd: int) -> bool:
    import zlib

    sample = os.pread(fd, 64 << 10, 0)
    if len(sample) < 512:
        return True
    return len(zlib.compress(sample, 1)) < 0.9 * len(sample)


def _add_whole(zf: Any, info: Any, data: bytes) -> None:
    """Add a zip member from bytes in memory: deflated once (level 1) when that saves at
    least 10%, else stored.

    ``ZipFile.writestr`` compresses while it writes, so deciding first would compress
    twice (and seek back to patch the header).  This writes the same local header, with
    the final sizes and CRC, and the bytes, and registers the member as ``ZipFile.open``
    does; the central directory is written by ``ZipFile.close`` as for any member.
    """
    import zipfile
    import zlib

    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    packed = packer.compress(data) + packer.flush()
    if len(packed) < 0.9 * len(data):
        info.compress_type, body = zipfile.ZIP_DEFLATED, packed
    else:
        info.compress_type, body = zipfile.ZIP_STORED, data
    info.file_size, info.compress_size, info.CRC = len(data), len(body), zlib.crc32(data)
    info.flag_bits = 0
    zf.fp.seek(zf.start_dir)
    info.header_offset = zf.fp.tell()
    zf._writecheck(info)
    zf._didModify = True
    zf.fp.write(info.FileHeader(False))
    zf.fp.write(body)
    zf.filelist.append(info)
    zf.NameToInfo[info.filename] = info
    zf.start_dir = zf.fp.tell()


def write_zip(
    blob_path: Callable[[str], Path],
    entries: dict[str, TreeEntry],
    out_zip: Path,
    mtimes: dict[str, float] | None = None,
) -> Path:
    """Write a zip of a tree from blobs (``blob_path(sha)`` locates one), atomically; return its path.

    Compressible files are deflated at level 1 (fast); already-compressed data is
    stored: a file up to ``_ZIP_WHOLE_BYTES`` is read once and deflated once, the
    result kept only if it saves 10%; a larger one is judged by its first 64 KiB and
    streamed.  Symlinks are stored as links (``unzip`` recreates them) and modes are kept.
    Every blob is checked while it is streamed (size, then hash: :mod:`runicorn.store.reader`).

    Raises:
        BlobNotFoundError / DamagedBlobError: a blob is missing, or its size or bytes
            differ from the tree (naming the blob and the file); no zip is written.
    """
    import shutil
    import zipfile

    from runicorn.store.reader import open_checked, read_checked
    from runicorn.store.tree_format import path_key

    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with StagedFile(out_zip.parent, mode=0o644, prefix="." + out_zip.name + ".") as staged:
        with zipfile.ZipFile(staged.file, "w", allowZip64=True) as zf:
            for rel in sorted(entries, key=path_key):
                e = entries[rel]
                stamp = time.localtime((mtimes or {}).get(rel, time.time()))
                info = zipfile.ZipInfo(rel, date_time=stamp[:6] if stamp[0] >= 1980 else (1980, 1, 1, 0, 0, 0))
                blob = blob_path(e.sha256)
                if e.mode == MODE_LINK:
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    zf.writestr(info, read_checked(blob, e.sha256, e.size, repr(rel)))
                    continue
                with open_checked(blob, e.sha256, e.size, repr(rel)) as src:
                    perm = narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o644, os.fstat(src.fileno()).st_mode)
                    info.external_attr = (stat.S_IFREG | perm) << 16
                    if e.size <= _ZIP_WHOLE_BYTES:
                        data = b""
                        while not src.verified:  # the read completing the blob checks its hash
                            data += src.read(e.size - len(data))
                        _add_whole(zf, info, data)
                        continue
                    if _looks_compressible(src.fileno()):
                        info.compress_type = zipfile.ZIP_DEFLATED
                        info._compresslevel = 1  # type: ignore[attr-defined]  # (a settable property on newer Pythons)
                    else:
                        info.compress_type = zipfile.ZIP_STORED
                    with zf.open(info, "w", force_zip64=e.size > (1 << 31)) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        return staged.commit(out_zip)


__all__ = ["write_zip"]
