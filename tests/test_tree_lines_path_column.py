"""The paths of a tree's lines are kept packed (runicorn.store.tree_lines.PathColumn):
indexing, slicing and iterating give back exactly the strings appended, whatever their
characters, across the joined strings' boundaries; a NUL in a path is refused."""

from __future__ import annotations

import random
from typing import Any

import pytest

from runicorn.store.tree_lines import _CHUNK, PathColumn, TreeLines


def _paths(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    names = ["a", "dir/é.txt", "\udcff-not-utf8", "", "日本/語.bin", "x" * 300, "sub/\n/new line"]
    return [f"{rng.choice(names)}{i}" for i in range(n)]


@pytest.mark.parametrize("n", [0, 1, _CHUNK - 1, _CHUNK, _CHUNK + 1, 3 * _CHUNK + 17])
def test_a_path_column_gives_back_what_was_appended(n: int) -> None:
    paths = _paths(n, n)
    column = PathColumn(paths)
    assert len(column) == n and list(column) == paths
    rng = random.Random(n)
    for i in [0, n - 1, _CHUNK - 1, _CHUNK, *(rng.randrange(n) for _ in range(50))] if n else []:
        if i < n:
            assert column[i] == paths[i] and column[i - n] == paths[i - n]
    for _ in range(30):
        a, b = sorted(rng.randrange(n + 1) for _ in range(2))
        assert column[a:b] == paths[a:b]
    assert column[:] == paths and column[n:] == []
    with pytest.raises(IndexError):
        column[n]


def test_a_nul_in_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="NUL"):
        PathColumn(["ok"] * (_CHUNK - 1) + ["bad\0name"])


def test_lines_out_of_order_are_sorted_with_their_columns() -> None:
    lines = TreeLines()
    paths = _paths(2 * _CHUNK + 5, 7)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    for k, p in enumerate(shuffled):
        lines.add(p, "100644", f"{k:064x}", k)
    moved = lines.sort()
    assert moved is not None
    assert list(lines.paths) == sorted(paths, key=lambda p: p.encode("utf-8", "surrogateescape"))
    for old, new in enumerate(moved):
        assert lines.paths[new] == shuffled[old] and lines.size(new) == old and lines.sha(new) == f"{old:064x}"
    assert lines.sort() is None


def test_empty_slices_are_empty_and_a_reader_follows_appends() -> None:
    column = PathColumn(str(i) for i in range(_CHUNK + 10))
    assert column[3:3] == [] and column[5:2] == [] and column[_CHUNK + 2 : _CHUNK + 2] == []
    column = PathColumn(str(i) for i in range(_CHUNK - 2))
    at = column.reader()
    assert at(0) == "0" and at(_CHUNK - 3) == str(_CHUNK - 3)
    for name in "XYZ":  # the third seals the first joined string
        column.append(name)
    assert at(0) == "0" and at(_CHUNK - 1) == "Y" and at(_CHUNK) == "Z"


@pytest.mark.parametrize(
    "pick",
    [
        lambda n: [],
        lambda n: [5],
        lambda n: list(range(100, n - 7)),  # a run: cut out whole
        lambda n: [2, 4, 3, 5],  # a run's ends, out of order
        lambda n: random.Random(n).sample(range(n), n // 3),
        lambda n: list(range(n - 1, -1, -1)),
    ],
)
def test_the_columns_of_some_lines_are_those_lines(pick: Any) -> None:
    from runicorn.store.tree_format import MODE_EXEC, MODE_FILE, MODE_LINK

    lines = TreeLines()
    n = 3 * _CHUNK + 5
    for i, path in enumerate(_paths(n, 7)):
        lines.add(path, (MODE_FILE, MODE_EXEC, MODE_LINK)[i % 3], f"{i:064x}", i * 3)
    chosen = pick(n)
    assert lines.columns(chosen) == (
        [lines.paths[i] for i in chosen],
        [lines.mode(i) for i in chosen],
        [lines.sha(i) for i in chosen],
        [lines.size(i) for i in chosen],
    )
