"""Building a tree's pages from its sorted lines, taking over the leaves of an earlier
tree where nothing changed, gives exactly the pages built from scratch."""

from __future__ import annotations

import random

import pytest

from runicorn.store.tree_format import (
    LEAF_MAX,
    MODE_EXEC,
    MODE_FILE,
    TreeEntry,
    build_pages,
    build_pages_from_lines,
    normalize_entries,
)
from runicorn.store.tree_lines import TreeLines


def _sha(rng: random.Random) -> str:
    return "%064x" % rng.getrandbits(256)


def _tree(rng: random.Random, n: int) -> dict[str, TreeEntry]:
    out: dict[str, TreeEntry] = {}
    for i in range(n):
        path = f"d{rng.randrange(40)}/sub{rng.randrange(5)}/f{i}-{rng.randrange(10**6)}.bin"
        out[path] = TreeEntry(_sha(rng), rng.choice([MODE_FILE, MODE_EXEC]), rng.randrange(10**6))
    return out


def _lines(entries: dict[str, TreeEntry]) -> TreeLines:
    lines = TreeLines()
    for p, e in entries.items():
        lines.add(p, e.mode, e.sha256, e.size)
    lines.sort()  # in tree-id order, as the snapshot does
    return lines


def _same(a, b) -> None:  # type: ignore[no-untyped-def]
    assert a.depth == b.depth and a.top == b.top and a.leaves == b.leaves
    assert list(a.pages) == list(b.pages)
    assert {p: a.pages[p] for p in a.pages} == dict(b.pages)


@pytest.mark.parametrize("n", [0, 1, 31, 500, 5000])
def test_lines_give_the_pages_of_the_entries(n: int) -> None:
    entries = normalize_entries(_tree(random.Random(n), n))
    lines = _lines(entries)
    pages, spans = build_pages_from_lines(lines)
    _same(pages, build_pages(entries))
    assert sum(s.length for s in spans) == n
    assert [s.leaf for s in spans] == [p for p in pages.pages if p in pages.leaves]


@pytest.mark.parametrize("seed", range(30))
def test_taking_over_unchanged_leaves_gives_the_pages_built_from_scratch(seed: int) -> None:
    rng = random.Random(seed)
    old = _tree(rng, rng.choice([40, 300, 3000]))
    old_lines = _lines(old)
    _, spans = build_pages_from_lines(old_lines)
    known = {s.first: s for s in spans}
    new = dict(old)
    touched: set[str] = set()
    for _ in range(rng.randrange(1, 12)):
        op = rng.random()
        paths = sorted(new)
        if op < 0.35 and paths:  # change a file
            p = rng.choice(paths)
            new[p] = TreeEntry(_sha(rng), new[p].mode, rng.randrange(100))
            touched.add(p)
        elif op < 0.6 and paths:  # delete one (possibly a leaf's last path)
            p = rng.choice(paths if rng.random() < 0.5 else [s.last for s in spans if s.last in new] or paths)
            del new[p]
        elif op < 0.8:  # add one
            p = f"d{rng.randrange(40)}/new{rng.randrange(10**6)}"
            new[p] = TreeEntry(_sha(rng), MODE_FILE, 7)
            touched.add(p)
        else:  # add one right after a leaf's first path (shifts the leaf)
            s = rng.choice(spans)
            p = s.first + "0"
            new[p] = TreeEntry(_sha(rng), MODE_FILE, 9)
            touched.add(p)
    entries = normalize_entries(new)
    lines = _lines(entries)
    changed = [i for i, path in enumerate(lines.paths) if path in touched]
    pages, new_spans = build_pages_from_lines(lines, known=known, changed=changed)
    _same(pages, build_pages(entries))
    reused = sum(1 for s in new_spans if s in spans)
    assert reused >= len(new_spans) - 3 * (len(touched) + 12) - 2


def test_a_leaf_taken_over_is_rebuilt_when_its_bytes_are_asked_for() -> None:
    entries = normalize_entries(_tree(random.Random(7), 2000))
    lines = _lines(entries)
    _, spans = build_pages_from_lines(lines)
    pages, again = build_pages_from_lines(lines, known={s.first: s for s in spans})
    assert again == spans  # every leaf taken over, none built
    scratch = build_pages(entries)
    for leaf in pages.leaves:
        assert pages.pages[leaf] == scratch.pages[leaf]


def test_a_leaf_that_ended_the_tree_is_not_taken_over_when_lines_follow_it() -> None:
    entries = {f"a{i:04d}": TreeEntry("%064x" % i, MODE_FILE, i) for i in range(60)}
    lines = _lines(normalize_entries(entries))
    _, spans = build_pages_from_lines(lines)
    assert not spans[-1].closed
    more = dict(entries, **{f"b{i:04d}": TreeEntry("%064x" % (i + 100), MODE_FILE, i) for i in range(50)})
    norm = normalize_entries(more)
    lines2 = _lines(norm)
    changed = [i for i, path in enumerate(lines2.paths) if path.startswith("b")]
    pages, _ = build_pages_from_lines(lines2, known={s.first: s for s in spans}, changed=changed)
    _same(pages, build_pages(norm))


def test_a_leaf_cut_at_the_maximum_is_taken_over() -> None:
    # Paths chosen so that none is a cut: leaves end at LEAF_MAX entries.
    import zlib

    names = [f"p{i:06d}" for i in range(20000)]
    names = [p for p in names if zlib.crc32(p.encode()) % 32][: LEAF_MAX * 2 + 10]
    entries = normalize_entries({p: TreeEntry("%064x" % i, MODE_FILE, 1) for i, p in enumerate(names)})
    lines = _lines(entries)
    pages0, spans = build_pages_from_lines(lines)
    assert [s.length for s in spans] == [LEAF_MAX, LEAF_MAX, 10] and spans[0].closed
    pages, again = build_pages_from_lines(lines, known={s.first: s for s in spans}, changed=[len(lines) - 1])
    _same(pages, build_pages(entries))
    assert again[:2] == spans[:2]


def test_the_links_the_builder_knows_are_what_the_pages_bytes_say() -> None:
    from runicorn.store.tree_format import page_links

    entries = normalize_entries(_tree(random.Random(11), 6000))
    lines = _lines(entries)
    pages, _ = build_pages_from_lines(lines)
    assert pages.depth >= 1 and set(pages.known_links) == set(pages.pages)
    for pid in pages.pages:
        assert pages.links(pid) == page_links(pages.pages[pid], pid in pages.leaves, pid)


def test_the_shapes_the_builder_knows_are_the_pages_and_leaves_are_not_kept() -> None:
    """Leaves cut from lines are built again when asked for (not kept: about 90 bytes per
    file of a first snapshot); their entry counts and sizes, which the index rows need,
    are known without building them."""
    entries = normalize_entries(_tree(random.Random(12), 6000))
    lines = _lines(entries)
    pages, _ = build_pages_from_lines(lines)
    assert set(pages.known_shapes) == set(pages.leaves)
    for pid in pages.pages:
        data = pages.pages[pid]
        assert pages.shape(pid) == (data.count(b"\n") - 1, len(data))
    leaf = next(iter(pages.leaves))
    assert pages.pages[leaf] is not pages.pages[leaf]  # built each time, never held


def test_a_leaf_whose_lines_changed_after_the_cut_is_refused_not_stored_under_its_id() -> None:
    entries = normalize_entries(_tree(random.Random(13), 300))
    lines = _lines(entries)
    pages, _ = build_pages_from_lines(lines)
    first = next(iter(pages.pages))
    lines.set_blob(0, "f" * 64, 1)
    with pytest.raises(RuntimeError, match="changed after it was cut"):
        pages.pages[first]


def test_indices_are_shared_in_arrays_with_every_index_once_and_the_work_balanced() -> None:
    from runicorn.workers import PER_FILE_COST, share_indices

    rng = random.Random(5)
    sizes = [rng.choice([10, 200, 4000, 3 << 20, 50 << 20]) for _ in range(5000)]
    groups = share_indices(range(len(sizes)), 2, sizes.__getitem__)
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
    loads = [sum(sizes[i] + PER_FILE_COST for i in g) for g in groups]
    assert max(loads) - min(loads) <= (50 << 20) + PER_FILE_COST
    assert all(type(g).__name__ == "array" for g in groups)
    assert share_indices(range(7, 9), 1, sizes.__getitem__) == [range(7, 9)]
    assert share_indices(range(0), 4, sizes.__getitem__) == []


def test_files_to_write_are_shared_as_runs_in_order_with_large_ones_spread() -> None:
    from runicorn.workers import PER_FILE_COST, share_files

    def cost(group: list[tuple[str, int]]) -> int:
        return sum(size + PER_FILE_COST for _, size in group)

    sizes = {f"d{i // 10:02d}/f{i:03d}": 100 + i for i in range(300)}
    sizes |= {"big1": 90 << 20, "big2": 60 << 20, "big3": 40 << 20}
    items = sorted(sizes.items())
    small = [it for it in items if it[1] <= PER_FILE_COST]
    for n in (2, 3, 4):
        groups = share_files(items, n, lambda it: it[1])
        assert sorted(it for g in groups for it in g) == items
        # The small ones: one run of the caller's order per worker, the runs in order.
        runs = [[it for it in g if it[1] <= PER_FILE_COST] for g in groups]
        assert all(run == small[small.index(run[0]) : small.index(run[0]) + len(run)] for run in runs if run)
        assert sorted((it for run in runs for it in run), key=small.index) == small
        loads = [cost(g) for g in groups]
        assert max(loads) - min(loads) <= (90 << 20) + 2 * PER_FILE_COST, n
    # Small files alone: contiguous halves of about equal cost.
    halves = share_files(small, 2, lambda it: it[1])
    assert halves[0] + halves[1] == small and abs(len(halves[0]) - len(halves[1])) <= 2
    assert share_files(items[:3], 1, lambda it: it[1]) == [items[:3]]
    assert share_files([], 2, lambda it: it[1]) == []
    assert share_files(small[:1], 4, lambda it: it[1]) == [small[:1]]


# ----------------------------------------------------------------- TreeLines
def _shuffled_lines(entries: dict[str, TreeEntry], seed: int) -> TreeLines:
    items = list(entries.items())
    random.Random(seed).shuffle(items)
    lines = TreeLines()
    for p, e in items:
        lines.add(p, e.mode, e.sha256, e.size)
    return lines


@pytest.mark.parametrize(
    "names",
    [
        ["a", "b/c", "a.txt", "a/b", "a0", "Z", "é", "日本/x", "a b"],
        ["x\udcff", "x\udc80y", "xé", "x/y", "x\U0001f600", "x"],  # not UTF-8: sorted by their bytes
    ],
)
def test_tree_lines_give_the_tree_id_and_entries_of_their_files(names: list[str]) -> None:
    from runicorn.store.tree_format import MODE_LINK, compute_tree_id, path_key

    rng = random.Random(3)
    entries = {
        n: TreeEntry(_sha(rng), rng.choice([MODE_FILE, MODE_EXEC, MODE_LINK]), 1 + i) for i, n in enumerate(names)
    }
    lines = _shuffled_lines(entries, 5)
    before = list(lines.paths)
    moved = lines.sort()
    assert moved is not None and [lines.paths[moved[i]] for i in range(len(before))] == before
    assert [path_key(p) for p in lines.paths] == sorted(path_key(p) for p in names)
    assert lines.sort() is None  # in order now
    assert lines.tree_id() == compute_tree_id(entries)
    assert lines.entries() == entries
    assert sorted(lines.blob_sizes()) == sorted((e.sha256, e.size) for e in entries.values())


def test_open_tree_lines_keep_their_place_until_their_blob_is_known() -> None:
    from runicorn.store.tree_format import compute_tree_id

    rng = random.Random(9)
    entries = {f"f{i:03d}": TreeEntry(_sha(rng), MODE_FILE, i) for i in range(50)}
    lines = TreeLines()
    opened = []
    for i, (p, e) in enumerate(entries.items()):
        if i % 3:
            lines.add(p, e.mode, e.sha256, e.size)
        else:
            opened.append(lines.add_open(p, MODE_EXEC, 999))
    assert lines.sort() is None
    assert len(list(lines.blob_sizes())) == 50 - len(opened)  # an open line names no blob yet
    assert len(list(lines.blob_sizes(skip_prefixes={"ff"}))) == 50 - len(opened)  # nor when folder 00 is looked at
    for i in opened:
        e = entries[lines.paths[i]]
        lines.set_mode(i, e.mode)
        lines.set_blob(i, e.sha256, e.size)
    assert lines.tree_id() == compute_tree_id(entries)
    assert lines.sha(opened[1]) == entries[lines.paths[opened[1]]].sha256


@pytest.mark.parametrize("skipped", [0, 1, 40, 200, 255, 256])
def test_tree_lines_give_the_blobs_outside_skipped_folders(skipped: int) -> None:
    """Whether few folders are left to look at (the lines are found by their digests'
    first bytes) or many (a pass over every line), the same blobs come, in line order."""
    rng = random.Random(skipped)
    lines = TreeLines()
    for i in range(3000):
        if i % 7 == 0:
            lines.add_open(f"f{i:05d}", MODE_FILE, i)  # digest all zeros: folder 00
        else:
            lines.add(f"f{i:05d}", MODE_FILE, _sha(rng), i)
    prefixes = [f"{b:02x}" for b in range(256)]
    rng.shuffle(prefixes)
    skip = frozenset(prefixes[:skipped])
    expected = [pair for pair in lines.blob_sizes() if pair[0][:2] not in skip]
    assert list(lines.blob_sizes(skip_prefixes=skip)) == expected
    assert skipped < 256 or expected == []
