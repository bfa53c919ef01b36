"""A tree's lines in columns: what a snapshot holds per file while it captures a tree.

A line is one file of the tree: its path, mode and blob (SHA-256 and size).  Kept as a
``(path, mode, sha256)`` tuple with a ``sha256 -> size`` dict beside it, a line costs
about 290 bytes besides its path (the tuple, the hash as a 64-character string, the
dict entry); here it costs 32 bytes of digest, one byte of mode and eight of size, and
its path is kept packed with others (:class:`PathColumn`, about 5 bytes beside its
characters, where a string each would cost about 57 more).  Hash strings are made only
while a tree id or a page is computed from the lines.

A line may be *open*: its place in the tree is known (the walk found the file) but not
its blob yet (the file is still to be read); :meth:`TreeLines.set_blob` fills it in.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from itertools import accumulate, islice
from typing import Any, overload
from operator import lt

from runicorn.store.tree_format import (
    ID_CHUNK_LINES,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    TreeEntry,
    hash_tree_lines,
    path_key,
)

_MODES = (MODE_FILE, MODE_EXEC, MODE_LINK)
_MODE_CODES = {mode: code for code, mode in enumerate(_MODES)}
_DIGEST = 32
_OPEN = bytes(_DIGEST)  # the digest of a line whose blob is not known yet
_OPEN_HEX = _OPEN.hex()
_CHUNK = ID_CHUNK_LINES  # lines made into strings at once


class PathColumn(Sequence[str]):
    """A list of paths kept as strings of :data:`_CHUNK` paths joined by NUL (which no
    path holds), with each path's end in its string: about 5 bytes per path beside its
    characters, where a string each costs about 57 (its object and list slot).  Indexing
    and slicing give strings, made as they are asked for.

    Raises:
        ValueError: a path holds a NUL character.
    """

    __slots__ = ("_joined", "_ends", "_pending")

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self._joined: list[str] = []
        self._ends = array("I")  # each path's end in its joined string
        self._pending: list[str] = []  # the last paths, fewer than a string's worth
        for path in paths:
            self.append(path)

    def __len__(self) -> int:
        return len(self._joined) * _CHUNK + len(self._pending)

    def append(self, path: str) -> None:
        pending = self._pending
        pending.append(path)
        if len(pending) == _CHUNK:
            self._seal()

    def extend(self, paths: list[str]) -> None:
        pending = self._pending
        start = 0
        while start < len(paths):
            take = _CHUNK - len(pending)
            pending += paths[start : start + take]
            start += take
            if len(pending) == _CHUNK:
                self._seal()

    def _seal(self) -> None:
        """Join the pending paths, a string's worth."""
        pending = self._pending
        joined = "\0".join(pending)
        if joined.count("\0") != _CHUNK - 1:
            raise ValueError(f"a path holds a NUL character: {next(p for p in pending if chr(0) in p)!r}")
        self._ends.extend(accumulate(map((1).__add__, map(len, pending))))  # (at C speed)
        self._joined.append(joined)
        pending.clear()

    def all_utf8(self) -> bool:
        """Whether every path is UTF-8 as it stands (no lone surrogate from an undecodable
        name), asked of the joined strings whole."""
        try:
            for joined in (*self._joined, "".join(self._pending)):
                joined.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True

    def in_order(self) -> bool:
        """Whether every path is below the next (code-point order), each string's paths
        compared at C speed."""
        last = None
        for k in range(len(self._joined) + 1):
            paths = self._chunk(k)
            if not paths:
                continue
            if (last is not None and not last < paths[0]) or not all(map(lt, paths, islice(paths, 1, None))):
                return False
            last = paths[-1]
        return True

    def _chunk(self, k: int) -> list[str]:
        """The paths of string ``k`` (or of the pending ones after the last)."""
        return self._joined[k].split("\0") if k < len(self._joined) else self._pending

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step != 1:
                raise ValueError("a path column is sliced in order")
            out: list[str] = []
            for k in range(start // _CHUNK, -(-stop // _CHUNK)):
                low, high = max(start, k * _CHUNK), min(stop, (k + 1) * _CHUNK)
                if low >= high:
                    continue  # (an empty cut would split into one empty path)
                if k == len(self._joined):
                    out += self._pending[low - k * _CHUNK : high - k * _CHUNK]
                else:  # only the paths asked for are cut out and split
                    ends = self._ends
                    begin = ends[low - 1] if low % _CHUNK else 0
                    out += self._joined[k][begin : ends[high - 1] - 1].split("\0")
            return out
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("path index out of range")
        k, j = divmod(i, _CHUNK)
        if k == len(self._joined):
            return self._pending[j]
        end = self._ends[i] - 1
        return self._joined[k][self._ends[i - 1] if j else 0 : end]

    def __iter__(self) -> Iterator[str]:
        for k in range(len(self._joined) + 1):
            yield from self._chunk(k)

    def reader(self) -> Callable[[int], str]:
        """``column[i]`` for many nearby ``i`` in turn: the paths of one joined string at a
        time are split once (a path cut out for each costs ten times a list's indexing)."""
        held, paths = -1, []

        def at(i: int) -> str:
            nonlocal held, paths
            k = i // _CHUNK
            if k >= len(self._joined):  # the pending paths, as they are now
                return self._pending[i - k * _CHUNK]
            if held != k:
                held, paths = k, self._chunk(k)
            return paths[i - k * _CHUNK]

        return at


class TreeLines:
    """The lines of one tree, in the order they were added until :meth:`sort`."""

    __slots__ = ("paths", "_modes", "_digests", "_sizes", "_open")

    def __init__(self) -> None:
        self.paths = PathColumn()
        self._modes = bytearray()
        self._digests = bytearray()
        self._sizes = array("q")
        self._open = 0  # lines whose blob is not known yet

    def __len__(self) -> int:
        return len(self._sizes)

    def add(self, path: str, mode: str, sha: str, size: int) -> int:
        """Add the line of a file whose blob is known; return its index."""
        self.paths.append(path)
        self._modes.append(_MODE_CODES[mode])
        self._digests += bytes.fromhex(sha)
        self._sizes.append(size)
        return len(self._sizes) - 1

    def add_digest(self, path: str, mode: str, digest: bytes, size: int) -> int:
        """:meth:`add` with the blob's 32-byte digest; return the line's index."""
        self.paths.append(path)
        self._modes.append(_MODE_CODES[mode])
        self._digests += digest
        self._sizes.append(size)
        return len(self._sizes) - 1

    def extend_files(self, paths: list[str], executable: bytes, digests: bytes, sizes: Iterable[int]) -> None:
        """Add the lines of regular files whose blobs are known, in order: ``executable``
        holds a byte per file (1: executable), ``digests`` 32 bytes per file."""
        self.paths.extend(paths)
        self._modes += executable  # (the codes of MODE_FILE and MODE_EXEC are 0 and 1)
        self._digests += digests
        self._sizes.extend(sizes)

    def add_open(self, path: str, mode: str, size: int) -> int:
        """Add the line of a file to be read (its blob set later); return its index."""
        self.paths.append(path)
        self._modes.append(_MODE_CODES[mode])
        self._digests += _OPEN
        self._sizes.append(size)
        self._open += 1
        return len(self._sizes) - 1

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

    def digests_at(self, lines: Iterable[int]) -> bytes:
        """The 32-byte digests of ``lines`` (indices), joined in their order."""
        digests = self._digests
        return b"".join([digests[i * _DIGEST : (i + 1) * _DIGEST] for i in lines])

    def _shas(self, start: int, end: int) -> list[str]:
        # One hex string for the range, cut: a hex call per line costs twice as much.
        text = self._digests[start * _DIGEST : end * _DIGEST].hex()
        return [text[k : k + 2 * _DIGEST] for k in range(0, len(text), 2 * _DIGEST)]

    def _chunks(self, start: int, end: int | None) -> Iterator[tuple[int, int]]:
        end = len(self._sizes) if end is None else min(end, len(self._sizes))
        for a in range(start, end, _CHUNK):
            yield a, min(end, a + _CHUNK)

    def items(self, start: int = 0, end: int | None = None) -> Iterator[tuple[str, str, str, int]]:
        """``(path, mode, sha256, size)`` of lines ``start`` to ``end``."""
        for a, b in self._chunks(start, end):
            modes = [_MODES[m] for m in self._modes[a:b]]
            yield from zip(self.paths[a:b], modes, self._shas(a, b), self._sizes[a:b])

    def columns(self, lines: Sequence[int]) -> tuple[list[str], list[str], list[str], list[int]]:
        """The paths, modes, SHA-256s and sizes of ``lines`` (indices, in their order), a
        list each: a run of consecutive lines is cut out whole, others are taken one by one."""
        if not lines:
            return [], [], [], []
        first, last = lines[0], lines[-1]
        if last - first == len(lines) - 1 and all(map(lt, lines, islice(lines, 1, None))):  # consecutive
            end = last + 1
            return (
                self.paths[first:end],
                [_MODES[m] for m in self._modes[first:end]],
                self._shas(first, end),
                self._sizes[first:end].tolist(),
            )
        at, digests, modes, sizes = self.paths.reader(), self._digests, self._modes, self._sizes
        text = b"".join([digests[i * _DIGEST : (i + 1) * _DIGEST] for i in lines]).hex()
        return (
            [at(i) for i in lines],
            [_MODES[modes[i]] for i in lines],
            [text[k : k + 2 * _DIGEST] for k in range(0, len(text), 2 * _DIGEST)],
            [sizes[i] for i in lines],
        )

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
            if wanted.count(1) <= len(self._sizes) // 8:
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
        if paths.all_utf8():
            # Without lone surrogates (names that are not UTF-8), code-point order is
            # UTF-8 byte order: the paths themselves are the keys, compared as they come.
            if paths.in_order():
                return None
            strings = list(paths)  # (a string per path only while they are sorted)
            keys: list[Any] = strings
        else:
            strings = list(paths)
            keys = [path_key(p) for p in strings]
            if all(map(lt, keys, islice(keys, 1, None))):
                return None
        order = sorted(range(len(strings)), key=keys.__getitem__)
        self.paths = PathColumn(strings[i] for i in order)
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


__all__ = ["PathColumn", "TreeLines"]
