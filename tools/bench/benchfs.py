"""The filesystem a benchmark runs on: what it is, and optionally a fresh one of its own.

Why it matters: ext4 without a journal has its inode allocator skip every inode freed
in the last minute (several minutes while that inode's table block is still dirty),
scanning past them again for each new inode.  After a bulk deletion, anywhere on that
filesystem and by anyone, creating files costs up to ~20x more system time for a while,
so a timed step that creates many files depends on what ran before it.  A journaled
ext4 (mkfs's default) does not do this.

* ``describe(path)`` returns the lines a report prints about the filesystem at ``path``
  (type, device, options, journal) plus a warning when it is ext4 without a journal.
* ``fresh_fs(parent, size)`` creates a sparse image file of ``size`` (``truncate -s``
  syntax, e.g. ``8G``) in ``parent``, formats it as ext4 with mkfs's defaults (so with a
  journal), loop-mounts it (root only) and yields the mount point; on the way out,
  error or Ctrl-C included, it unmounts it and removes the image.
* ``bench_dirs(prefix, parent, fresh_size)`` makes a benchmark's temporary directory and
  yields ``(work, tmp)``: where to measure (a fresh image mounted in ``tmp`` when
  ``fresh_size`` is given, else ``tmp`` itself) and the directory, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SBIN = "/usr/sbin:/sbin"


@dataclass
class FsInfo:
    fstype: str
    source: str
    mountpoint: str
    options: str
    device: str  # "major:minor"
    journal: bool | None  # None: not known or not applicable


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _journal(fstype: str, device: str) -> bool | None:
    if fstype == "ext2":
        return False
    if fstype not in ("ext3", "ext4"):
        return None
    try:
        name = os.path.basename(os.path.realpath(f"/sys/dev/block/{device}"))
    except OSError:
        return None
    task = Path(f"/sys/fs/ext4/{name}/journal_task")
    try:
        return task.read_text().strip() != "<none>"
    except OSError:
        pass
    jbd2 = Path("/proc/fs/jbd2")
    if jbd2.is_dir():
        return any(entry.name.startswith(name + "-") for entry in jbd2.iterdir())
    return None


def fs_info(path: Path) -> FsInfo | None:
    """The mount holding ``path`` (the last-mounted of the longest matching mount points)."""
    target = os.path.realpath(path)
    best: FsInfo | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        f = left.split()
        r = right.split()
        if len(f) < 6 or len(r) < 2:
            continue
        mnt = _unescape(f[4])
        if not (target == mnt or target.startswith(mnt.rstrip("/") + "/")):
            continue
        if best is not None and len(mnt) < len(best.mountpoint):
            continue
        opts = f[5].split(",") + (r[2].split(",") if len(r) > 2 else [])
        options = ",".join(dict.fromkeys(opts))  # mount and superblock options, each once
        best = FsInfo(fstype=r[0], source=_unescape(r[1]), mountpoint=mnt, options=options, device=f[2], journal=None)
    if best is not None:
        best.journal = _journal(best.fstype, best.device)
    return best


def describe(path: Path, fresh: bool = False) -> list[str]:
    """Report lines about the filesystem at ``path``; a warning line when figures can vary."""
    info = fs_info(path)
    if info is None:
        return [f"filesystem: unknown (no mount found for {path})"]
    journal = {True: "yes", False: "no", None: "n/a"}[info.journal]
    how = "fresh image, loop-mounted" if fresh else "existing"
    lines = [
        f"filesystem: {info.fstype} ({how}) on {info.source} at {info.mountpoint}, "
        f"journal: {journal}, options: {info.options}"
    ]
    if info.fstype in ("ext3", "ext4") and info.journal is False:
        lines.append(
            "warning: ext4 without a journal: its inode allocator skips inodes freed in the last "
            "minutes (by any process), so creating files after a bulk deletion is slower by an "
            "amount that depends on what ran before and figures can vary (--fresh-fs SIZE avoids this)"
        )
    return lines


def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=SBIN)
    if found is None:
        raise SystemExit(f"--fresh-fs: {name} not found")
    return found


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"--fresh-fs: {what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}{proc.stderr}".rstrip()
        )


def _unmount(mnt: Path) -> None:
    umount = _tool("umount")
    for _ in range(20):
        proc = subprocess.run([umount, str(mnt)], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        time.sleep(0.5)  # something still exiting may hold it busy for a moment
    proc = subprocess.run([umount, "--lazy", str(mnt)], capture_output=True, text=True)
    print(f"warning: {mnt} was busy; lazily unmounted ({proc.returncode}) {proc.stderr.strip()}", file=sys.stderr)


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally below, like Ctrl-C


@contextmanager
def fresh_fs(parent: Path, size: str, keep_image: bool = False, bytes_per_inode: int | None = None) -> Iterator[Path]:
    """Mount a newly made ext4 image of ``size`` under ``parent``; yield its mount point.

    ``bytes_per_inode`` (mkfs ``-i``): mkfs's default, one inode per 16 KiB, runs out
    before the space does with many small files (a 16G image holds 1M files)."""
    img = Path(parent) / "fresh-fs.img"
    mnt = Path(parent) / "fresh-fs"
    mnt.mkdir()
    mounted = False
    previous = signal.getsignal(signal.SIGTERM)
    try:
        _run([_tool("truncate"), "-s", size, str(img)], "creating the image")
        # Inode tables and journal initialised now, so no kernel thread writes them
        # in the background while figures are taken; no blocks reserved for root.
        inodes = ["-i", str(bytes_per_inode)] if bytes_per_inode else []
        _run(
            [
                _tool("mkfs.ext4"),
                "-q",
                "-F",
                "-m",
                "0",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                *inodes,
                str(img),
            ],
            "mkfs.ext4",
        )
        proc = subprocess.run([_tool("mount"), "-o", "loop", str(img), str(mnt)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(
                f"--fresh-fs: could not loop-mount {img} on {mnt} (this needs root): {proc.stderr.strip()}"
            )
        mounted = True
        signal.signal(signal.SIGTERM, _terminate)
        yield mnt
    finally:
        signal.signal(signal.SIGTERM, previous)
        if mounted:
            _unmount(mnt)
        if not keep_image:
            img.unlink(missing_ok=True)
        try:
            mnt.rmdir()
        except OSError:
            pass


def add_dir_options(ap: argparse.ArgumentParser, example_size: str) -> None:
    """The ``--tmp`` and ``--fresh-fs SIZE`` options whose values :func:`bench_dirs` takes."""
    ap.add_argument("--tmp", type=Path, default=None, help="where to work (default: a new temp dir)")
    ap.add_argument(
        "--fresh-fs",
        metavar="SIZE",
        default=None,
        help=f"measure on a new journaled ext4 image of SIZE (e.g. {example_size}), loop-mounted in the "
        "temp dir and removed at the end (needs root)",
    )


@contextmanager
def bench_dirs(
    prefix: str, parent: Path | None, fresh_size: str | None, *, keep: bool = False, bytes_per_inode: int = 4096
) -> Iterator[tuple[Path, Path]]:
    """A new temporary directory (``prefix``, in ``parent`` or the system's temp dir):
    yield ``(work, tmp)``, ``work`` being a fresh ext4 image of ``fresh_size`` mounted in
    ``tmp`` (:func:`fresh_fs`; one inode per ``bytes_per_inode``) or, without a size,
    ``tmp`` itself.  ``tmp`` is removed at the end unless ``keep`` (then it is printed,
    with the image file when there was one)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        if fresh_size:
            with fresh_fs(tmp, fresh_size, keep_image=keep, bytes_per_inode=bytes_per_inode) as work:
                yield work, tmp
        else:
            yield tmp, tmp
    finally:
        if keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
