"""The workspace scan: every regular file and symlink a snapshot captures.

The storage root and the output zip are never captured, nor run directories below the
storage root; what the ignore rules (:mod:`runicorn.snapshot.ignore`) exclude is not
listed, and an excluded directory is not entered.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError, UnsafePathError, option
from runicorn.relpath import MAX_DEPTH, check_names
from runicorn.snapshot.ignore import IgnoreRules


def _limit_error(root: Path, what: str, value: int, limit: int) -> ValueError:
    limits = option("limits")
    return ValueError(
        f"snapshot of {root} would hold {what} {value:,} > limit {limit:,}; exclude large or "
        f"generated files in {root / '.rnignore'} or with {option('extra_excludes')}, "
        + (f"raise the limit ({limits}), " if limits else "")
        + f"or pass {option('force_snapshot')}"
    )


class WalkedDir:
    """One directory of a walk (:func:`iter_workspace_dirs`): its relative path
    ``prefix`` ("" or ending in "/"), its absolute path ``base`` (ending in the
    separator), its captured ``files`` (regular files and symlinks, ``(name, lstat)``, in
    path order), whether any of them ``has_links``, and ``state``, the consumer's own
    (None until it sets it)."""

    __slots__ = ("prefix", "base", "files", "has_links", "state")

    def __init__(self, prefix: str, base: str, files: list[tuple[str, os.stat_result]], has_links: bool) -> None:
        self.prefix, self.base, self.files, self.has_links = prefix, base, files, has_links
        self.state: Any = None


def iter_workspace_dirs(
    root: Path,
    rules: IgnoreRules,
    *,
    skip_dirs: set[tuple[int, int]],
    skip_files: set[str],
    max_files: int,
    max_total_bytes: int,
    force: bool,
    run_root: str | None = None,
    counts: dict[str, int] | None = None,
) -> Iterator[tuple[WalkedDir, int, int]]:
    """Walk every captured regular file and symlink below ``root`` in path order (``str``
    order of the paths: UTF-8 byte order, the tree id's and the stat cache's), a
    directory's run of files at a time, so a caller can merge them with other sorted data
    without a list of all.  ``(directory, start, end)`` names ``directory.files[start:end]``,
    the next files.  Each directory comes first as ``(directory, 0, 0)``, as the walk
    enters it (directories are entered in path order, each before what it holds); its
    files then come in runs, a run ending where a subdirectory's files come between.
    :func:`files_of` gives the same walk a file at a time.

    Directories in ``skip_dirs`` (by device and inode) are left out, and so is every
    run directory (``.../runs/<id>/meta.json``) below ``run_root`` (the storage root):
    when the storage root is the workspace, its runs are store content, not code.
    ``counts["excluded"]`` (when given) grows by each file or directory the ignore rules
    leave out.

    Raises:
        ValueError: a limit is exceeded (unless ``force``), as soon as it is.
        RunicornError: a name contains a newline or a directory cannot be read.
    """
    walk = _Walk(root, rules, skip_dirs, skip_files, run_root, counts)
    found = total = 0
    # Depth-first: a frame is one directory's remaining segments (runs of its files, and
    # its subdirectories' keys, a name plus "/", so "a.txt" comes before "a/b" and "a0"
    # after it), and whether leaving it pops the .gitignore spec it pushed.
    frame = walk.enter(str(root), "")
    yield frame[0], 0, 0
    stack = [frame]
    while stack:
        directory, segments, pushed_spec = stack[-1]
        for segment in segments:  # resumes where this directory was left
            if isinstance(segment, str):
                frame = walk.enter(directory.base + segment[:-1], directory.prefix + segment)
                yield frame[0], 0, 0
                stack.append(frame)
                break
            start, end = segment
            run = directory.files[start:end]
            size = sum(st.st_size for _, st in run)
            if not force and (found + len(run) > max_files or total + size > max_total_bytes):
                _over_limit(root, run, found, total, max_files, max_total_bytes)
            found += len(run)
            total += size
            yield directory, start, end
        else:
            stack.pop()
            if pushed_spec:
                rules.git.pop()


def _over_limit(
    root: Path, run: list[tuple[str, os.stat_result]], found: int, total: int, max_files: int, max_total_bytes: int
) -> None:
    """Raise the limit error for the first file of ``run`` (after ``found`` files of
    ``total`` bytes) that exceeds a limit."""
    for _, st in run:
        found += 1
        total += st.st_size
        if found > max_files:
            raise _limit_error(root, "files", found, max_files)
        if total > max_total_bytes:
            raise _limit_error(root, "bytes", total, max_total_bytes)


def files_of(walk: Iterable[tuple[WalkedDir, int, int]]) -> Iterator[tuple[str, str, os.stat_result]]:
    """The files of a walk (:func:`iter_workspace_dirs`) one at a time, as ``(relpath,
    abspath, lstat)``, in path order.  A caller that keeps many lstats makes them compact
    (:class:`runicorn.filestat.FileStats`: an ``os.stat_result`` costs about 640 bytes);
    one that only compares them does not pay for that."""
    for directory, start, end in walk:
        prefix, base = directory.prefix, directory.base
        for name, st in directory.files[start:end]:
            yield prefix + name, base + name, st


_Frame = tuple[WalkedDir, Iterator["tuple[int, int] | str"], bool]


class _Walk:
    """What every directory of one workspace walk is listed and filtered with."""

    def __init__(
        self,
        root: Path,
        rules: IgnoreRules,
        skip_dirs: set[tuple[int, int]],
        skip_files: set[str],
        run_root: str | None,
        counts: dict[str, int] | None,
    ) -> None:
        self.root, self.rules, self.skip_dirs, self.skip_files = root, rules, skip_dirs, skip_files
        self.skip_names = {os.path.basename(p) for p in skip_files}  # a cheap test before building full paths
        self.run_root, self.counts = run_root, counts

    def enter(self, directory: str, prefix: str) -> _Frame:
        """The frame of ``directory`` (relative path ``prefix``, "" or ending in "/"):
        its .gitignore pushed, its captured entries listed."""
        base = directory if directory.endswith(os.sep) else directory + os.sep
        listing, joined = self._listing(directory, base)
        # Only a directory listing a .gitignore has one to load: no failing open per directory.
        pushed = "/.gitignore/" in f"/{joined}/" and bool(self.rules.enter(prefix, directory))
        try:
            entries, has_links = self._captured(listing, joined, directory, base, prefix)
        except BaseException:
            if pushed:
                self.rules.git.pop()
            raise
        # The files in runs between the subdirectories' keys.
        files: list[tuple[str, os.stat_result]] = []
        segments: list[tuple[int, int] | str] = []
        run_from = 0
        for key, st in entries:
            if key[-1] == "/":
                if len(files) > run_from:
                    segments.append((run_from, len(files)))
                    run_from = len(files)
                segments.append(key)
            else:
                files.append((key, st))
        if len(files) > run_from:
            segments.append((run_from, len(files)))
        return WalkedDir(prefix, base, files, has_links), iter(segments), pushed

    def _listing(self, directory: str, base: str) -> tuple[list[tuple[str, os.stat_result]], str]:
        """One directory's entries as ``(name, lstat)``, and their names joined by "/".

        Raises:
            RunicornError: the directory cannot be listed.
            OSError: an entry cannot be ``lstat``ed (naming it by its full path).
        """
        # Listing through a directory descriptor makes each entry's lstat resolve one
        # name instead of the whole path again.
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with os.scandir(fd) as it:
                    found = list(it)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise RunicornError(f"{directory}: cannot list directory ({exc.strerror})") from None
        try:
            listing = [(e.name, e.stat(follow_symlinks=False)) for e in found]
        except OSError as exc:  # name the file by its full path, as a path-based lstat would
            raise type(exc)(exc.errno, exc.strerror, base + str(exc.filename)) from None
        finally:
            os.close(fd)
        return listing, "/".join(name for name, _ in listing)

    def _captured(
        self, listing: list[tuple[str, os.stat_result]], joined: str, directory: str, base: str, prefix: str
    ) -> tuple[list[tuple[str, os.stat_result]], bool]:
        """The captured entries of one directory's ``listing`` as ``(key, lstat)``, sorted
        by key (a name, with "/" after a subdirectory's), and whether a symlink may be
        among them."""
        IFMT, IFDIR, IFREG, IFLNK = 0o170000, stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK  # S_IS* without calls
        if "\n" in joined or "\r" in joined:
            bad = next(name for name, _ in listing if "\n" in name or "\r" in name)
            raise RunicornError(f"{base + bad}: file names with a newline cannot be snapshotted")
        # Keys: names with a trailing "/" for directories, as the ignore rules want them.
        kept: list[tuple[str, os.stat_result]] = []
        skip_names, skip_files, skip_dirs = self.skip_names, self.skip_files, self.skip_dirs
        has_links = False
        for name, st in listing:
            kind = st.st_mode & IFMT
            if kind == IFREG or kind == IFLNK:
                if name not in skip_names or base + name not in skip_files:
                    kept.append((name, st))
                    if kind == IFLNK:
                        has_links = True  # (perhaps excluded below: then only a pass for nothing)
            elif kind == IFDIR:
                if (st.st_dev, st.st_ino) not in skip_dirs:
                    kept.append((name + "/", st))
        dropped = self.rules.excluded(prefix, [key for key, _ in kept])
        if self.counts is not None:
            self.counts["excluded"] += len(dropped)
        if not joined.isascii() or prefix.count("/") >= MAX_DEPTH:
            # Checked before anything is read: a refused name or depth stores nothing.
            try:
                check_names(prefix, "/".join(k.rstrip("/") for k, _ in kept if k not in dropped), what="file")
            except UnsafePathError as exc:
                raise UnsafePathError(f"{self.root}: {exc}; nothing was stored") from None
        run_root = self.run_root
        in_runs = run_root is not None and directory.endswith(f"{os.sep}runs") and base.startswith(run_root)
        out = [
            (key, st)
            for key, st in kept
            if key not in dropped and not (in_runs and key[-1] == "/" and os.path.isfile(base + key + "meta.json"))
        ]
        out.sort()
        return out, has_links


def store_dirs(store: Any) -> set[tuple[int, int]]:
    """(device, inode) of the store's own folders: a scan never enters them, wherever the
    workspace sits relative to the storage root."""
    found: set[tuple[int, int]] = set()
    for d in (store.root, store.archive, store.artifacts_dir):
        try:
            st = os.stat(d)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


__all__ = ["WalkedDir", "files_of", "iter_workspace_dirs", "store_dirs"]
