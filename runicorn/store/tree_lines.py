"""A tree's lines in columns: what a snapshot holds per file while it captures a tree.

A line is one file of the tree: its path, mode and blob (SHA-256 and size).  Kept as a
``(path, mode, sha256)`` tuple with a ``sha256 -> size`` dict beside it, a line costs
about 290 bytes besides its path (the tuple, the hash as a 64-character string, the
dict entry); here it costs a list slot for the path, 32 bytes of digest, one byte of
mode and eight of size.  Hash strings are made only while a tree id or a page is
computed from the lines.

A line may be *open*: its place in the tree is known (the walk found the file) but not
its blob yet (the file is still to be read); :meth:`TreeLines.set_blob` fills it in.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Collection, Iterator
from itertools import islice
from typing import Any
from operator import lt

from runicorn.store.tree_format import (
    ID_CHUNK_LINES,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    TreeEntry,
    hash_tree_lines,
    path_key,
    paths_are_utf8,
)

_MODES = (MODE_FILE, MODE_EXEC, MODE_LINK)
_MODE_CODES = {mode: code for code, mode in enumerate(_MODES)}
_DIGEST = 32
_OPEN = bytes(_DIGEST)  # the digest of a line whose blob is not known yet
_OPEN_HEX = _OPEN.hex()
_CHUNK = ID_CHUNK_LINES  # lines made into strings at once


class TreeLines:
    """The lines of one tree, in the order they were added until :meth:`sort`."""

    __slots__ = ("paths", "_modes", "_digests", "_sizes", "_open")

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._modes = bytearray()
        self._digests = bytearray()
        self._sizes = array("q")
        self._open = 0  # lines whose blob is not known yet

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str, mode: str, sha: str, size: int) -> int:
        """Add the line of a file whose blob is known; return its index."""
        self.paths.append(path)
        self._modes.append(_MODE_CODES[mode])
        self._digests += bytes.fromhex(sha)
        self._sizes.append(size)
        return len(self.paths) - 1

    def add_open(self, path: str, mode: str, size: int) -> int:
        """Add the line of a file to be read (its blob set later); return its index."""
        self.paths.append(path)
        self._modes.append(_MODE_CODES[mode])
        self._digests += _OPEN
        self._sizes.append(size)
        self._open += 1
        return len(self.paths) - 1

    def set_blob(self, i: int, sha: str, size: int) -> None:
        """Fill in (or replace) the blob of line ``i``."""
        where = slice(i * _DIGEST, (i + 1) * _DIGEST)
        if self._digests[where] == _OPEN:
            self._open -= 1
        self._digests[where] = bytes.fromhex(sha)
        self._sizes[i] = size

    def set_size(self, i: int, size: int) -> None:
        """Replace the size of line ``i`` (until its blob is set)."""
        self._sizes[i] = size

    def set_mode(self, i: int, mode: str) -> None:
        """Replace the mode of line ``i`` (a file read again may have changed it)."""
        self._modes[i] = _MODE_CODES[mode]

    def mode(self, i: int) -> str:
        return _MODES[self._modes[i]]

    def sha(self, i: int) -> str:
        return self._digests[i * _DIGEST : (i + 1) * _DIGEST].hex()

    def size(self, i: int) -> int:
        return self._sizes[i]

    def _shas(self, start: int, end: int) -> list[str]:
        # One hex string for the range, cut: a hex call per line costs twice as much.
        text = self._digests[start * _DIGEST : end * _DIGEST].hex()
        return [text[k : k + 2 * _DIGEST] for k in range(0, len(text), 2 * _DIGEST)]

    def _chunks(self, start: int, end: int | None) -> Iterator[tuple[int, int]]:
        end = len(self.paths) if end is None else min(end, len(self.paths))
        for a in range(start, end, _CHUNK):
            yield a, min(end, a + _CHUNK)

    def items(self, start: int = 0, end: int | None = None) -> Iterator[tuple[str, str, str, int]]:
        """``(path, mode, sha256, size)`` of lines ``start`` to ``end``."""
        for a, b in self._chunks(start, end):
            modes = [_MODES[m] for m in self._modes[a:b]]
            yield from zip(self.paths[a:b], modes, self._shas(a, b), self._sizes[a:b])

    def blob_counts(self, start: int, end: int) -> dict[str, int]:
        """How many of lines ``start`` to ``end`` name each blob (the lines are not open)."""
        return Counter(self._shas(start, end))

    def blob_sizes(self, skip_prefixes: Collection[str] = ()) -> Iterator[tuple[str, int]]:
        """``(sha256, size)`` of every line but the open ones and those whose hash starts
        with one of ``skip_prefixes`` (two hex digits: a ``blobs/<aa>`` folder); a blob
        named by several lines comes as often."""
        if skip_prefixes:
            # The lines to give are found by their digests' first bytes, without a string
            # per line: when most folders are skipped, as after an unchanged snapshot,
            # this costs a few bytes operations instead of a pass over every line.
            table = bytes(0 if f"{b:02x}" in skip_prefixes else 1 for b in range(256))
            wanted = self._digests[::_DIGEST].translate(table)
            if wanted.count(1) <= len(self.paths) // 8:
                sizes, find = self._sizes, wanted.find
                i = find(1)
                while i >= 0:
                    sha = self.sha(i)
                    if sha != _OPEN_HEX:
                        yield sha, sizes[i]
                    i = find(1, i + 1)
                return
            yield from (pair for pair in self.blob_sizes() if pair[0][:2] not in skip_prefixes)
            return
        for a, b in self._chunks(0, None):
            pairs = zip(self._shas(a, b), self._sizes[a:b])
            yield from (pair for pair in pairs if pair[0] != _OPEN_HEX) if self._open else pairs

    def entries(self) -> dict[str, TreeEntry]:
        """The tree's entries by path."""
        return {path: TreeEntry(sha, mode, size) for path, mode, sha, size in self.items()}

    # ----------------------------------------------------------------- order
    def sort(self) -> list[int] | None:
        """Put the lines in tree-id order (by the paths' UTF-8 bytes).  None when they
        were in that order already (a walk adds them so, unless a name is not UTF-8);
        otherwise the new index of each old one."""
        paths = self.paths
        # Without lone surrogates (names that are not UTF-8), code-point order is UTF-8
        # byte order: the paths themselves are the keys.
        keys: list[Any] = paths if paths_are_utf8(paths) else [path_key(p) for p in paths]
        if all(map(lt, keys, islice(keys, 1, None))):  # (a slice would copy every slot)
            return None
        order = sorted(range(len(paths)), key=keys.__getitem__)
        self.paths = [paths[i] for i in order]
        self._modes = bytearray(self._modes[i] for i in order)
        digests = self._digests
        self._digests = bytearray().join(digests[i * _DIGEST : (i + 1) * _DIGEST] for i in order)
        self._sizes = array("q", (self._sizes[i] for i in order))
        moved = [0] * len(order)
        for new, old in enumerate(order):
            moved[old] = new
        return moved

    def tree_id(self) -> str:
        """The tree id (``schema/tree-id.md``) of lines in tree-id order (:meth:`sort`)."""
        return hash_tree_lines(
            zip(self.paths[a:b], [_MODES[m] for m in self._modes[a:b]], self._shas(a, b))
            for a, b in self._chunks(0, None)
        )


__all__ = ["TreeLines"]
