"""gc: plan, execute, unlink and journal (``schema/README.md``, "Write protocol" and
"Rebuild and gc never spread damage").

:func:`gc` plans inside one write transaction (after comparing files and index), drops the
doomed rows there, moves doomed manifests to the writer's trash and journals doomed blobs;
after COMMIT the blob files are unlinked in batches (:func:`unlink_collected`).  A gc killed
after its journal is finished by recovery (:func:`finish_gc`).
"""

from __future__ import annotations

import heapq
import json
import os
import re
import stat
import time
from array import array
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from runicorn.errors import StoreIndexError
from runicorn.fsutil import atomic_write_bytes
from runicorn.hashing import is_sha256_hex
from runicorn.store.extensions import registered
from runicorn.store.index import has_table
from runicorn.store.ingest import blobs_being_written
from runicorn.store.layout import DEFAULT_GC_GRACE_SECONDS, TreeInfo, move_if_exists
from runicorn.store.rows import PAGE_ROWS, delete_blob_rows, delete_links, drop_unnamed_lost_blobs
from runicorn.workers import run_groups, worker_count

if TYPE_CHECKING:
    from runicorn.store.store import Store

# Blobs per statement and per unlink transaction of gc: one set statement instead of a
# round trip per blob, while the write lock is let go between batches.
GC_BATCH = 10_000
# More than a scheduler tick (1-10 ms): file times lag the system clock by at most one.
_TIMESTAMP_LAG_NS = 12_000_000
_ALL_SHA256 = re.compile(r"(?:[0-9a-f]{64}\n)*")
# Features take part in every gc through their extensions (runicorn.store.extensions):
# refresh_roots before planning (refs they derive from their own files, e.g. artifact
# bindings of Runicorn.toml files), take_collected / remove_collected after COMMIT.

Planned = list[tuple[str, int]]


class PlannedBlobs(Sequence[tuple[str, int]]):
    """The blobs a gc plan collects, ``(sha256, size)`` in the order appended (the plan's:
    SHA-256), kept in columns: the names ``GC_BATCH`` to a string, the sizes in an array.

    About 72 bytes a blob, where a list of ``(str, int)`` tuples costs about 180: the
    difference is most of a gc's peak memory when it collects a million blobs.
    """

    __slots__ = ("_chunks", "_open", "_sizes")

    def __init__(self, rows: Iterable[tuple[str, int]] = ()) -> None:
        # A closed chunk is GC_BATCH names joined (each 64 characters), or, if a damaged
        # index row gave a name of another length, the names as a list.
        self._chunks: list[str | list[str]] = []
        self._open: list[str] = []
        self._sizes = array("q")
        for sha, size in rows:
            self.append(sha, size)

    def append(self, sha: str, size: int) -> None:
        self._open.append(sha)
        try:
            self._sizes.append(size)
        except (TypeError, OverflowError):  # a damaged row's size: it only reports, as 0
            self._sizes.append(0)
        if len(self._open) == GC_BATCH:
            fixed = all(type(name) is str and len(name) == 64 for name in self._open)
            self._chunks.append("".join(self._open) if fixed else self._open)
            self._open = []

    def batches(self) -> Iterator[list[str]]:
        """The names, ``GC_BATCH`` (the last batch: what is left) at a time."""
        for chunk in self._chunks:
            yield [chunk[i : i + 64] for i in range(0, len(chunk), 64)] if isinstance(chunk, str) else list(chunk)
        if self._open:
            yield list(self._open)

    def names(self) -> list[str]:
        """Every name, as one list."""
        return [sha for batch in self.batches() for sha in batch]

    def total_size(self) -> int:
        return sum(self._sizes)

    def __len__(self) -> int:
        return len(self._sizes)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        sizes = iter(self._sizes)
        for batch in self.batches():
            for sha in batch:
                yield sha, next(sizes)

    def __getitem__(self, index: int) -> tuple[str, int]:  # type: ignore[override]
        if not isinstance(index, int):
            raise TypeError("PlannedBlobs takes an integer index")
        index = range(len(self))[index]  # IndexError, and negative indexes, as a list
        chunk, at = divmod(index, GC_BATCH)
        names = self._chunks[chunk] if chunk < len(self._chunks) else self._open
        sha = names[at * 64 : at * 64 + 64] if isinstance(names, str) else names[at]
        return sha, self._sizes[index]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PlannedBlobs({list(self)!r})" if len(self) <= 10 else f"<PlannedBlobs of {len(self)}>"


@dataclass(frozen=True, slots=True)
class GcPlan:
    """What a gc limited to some trees would collect now (:meth:`Store.gc_plan`): ``infos``
    of those trees (as the index has them), the ``trees`` and ``blobs`` it would delete
    (``(id, size)``, sorted), all from one read snapshot."""

    infos: dict[str, TreeInfo]
    trees: Planned
    blobs: PlannedBlobs
    pages: Planned = ()  # type: ignore[assignment]


def gc_plan(
    store: Store,
    trees: Iterable[str],
    *,
    refs_gone: Iterable[tuple[str, str]] = (),
    grace_seconds: float = 0.0,
    collect: bool = True,
) -> GcPlan:
    """:meth:`Store.gc_plan`."""
    from runicorn.store.trees import tree_infos

    wanted = sorted(set(trees))
    gone = json.dumps(sorted({f"{k}\n{n}" for k, n in refs_gone}))
    with store.index.read() as c:
        infos = tree_infos(store, wanted, c)
        if not collect:
            return GcPlan(infos, [], PlannedBlobs())
        dead_trees, dead_pages, dead_blobs = plan_gc(c, time.time() - grace_seconds, json.dumps(wanted), gone)
    return GcPlan(infos, dead_trees, dead_blobs, dead_pages)


def gc(
    store: Store,
    *,
    grace_seconds: float = DEFAULT_GC_GRACE_SECONDS,
    dry_run: bool = False,
    trees: Iterable[str] | None = None,
    keep_missing_toml: float | None = None,
    list_blobs: bool = True,
) -> dict[str, Any]:
    """:meth:`Store.gc`.

    Raises:
        ReadOnlyStoreError: a real run on a read-only store.
        StoreIndexError: the index disagrees with the files (nothing was deleted).
    """
    warnings: list[str] = []
    if store.read_only:
        if not dry_run:
            store.require_writable()
        # The refreshers bring binding refs up to date by writing them: here the report
        # uses the refs as last recorded, and says so.
        warnings.append(
            f"{store.root} is read-only: planned from the refs as last recorded (Runicorn.toml files were not re-read)"
        )
    else:
        store.recover()
        for extension in registered():
            warnings.extend(extension.refresh_roots(store, dry_run=dry_run, keep_missing_toml=keep_missing_toml))
    from runicorn.store.verify import files_vs_index, kept_by_damaged_manifests

    now = time.time()
    cutoff = now - grace_seconds
    scope = json.dumps(sorted(set(trees))) if trees is not None else None
    # A write transaction even for a dry run (a read-only store has no writers): every
    # writer changes a file and its row in one, so inside it the ref files and manifests
    # on disk must match the index exactly.  If not (damage, a lost WAL), gc deletes nothing.
    tx = store.index.read if store.read_only else store.index.write
    journal: Path | None = None
    for attempt in (1, 2):
        with tx() as c:
            problems, notes = files_vs_index(store, c)
            if not problems:
                dead_trees, dead_pages, dead_blobs, young = _plan(c, cutoff, scope, young_until=now)
                kept, damaged = kept_by_damaged_manifests(store)
                notes.extend(damaged)
                if kept is None:
                    dead_blobs = PlannedBlobs()
                elif kept:
                    dead_blobs = PlannedBlobs(b for b in dead_blobs if b[0] not in kept)
                waiting = waiting_for_grace(c, now, grace_seconds, scope, dead_trees, dead_blobs, kept, young)
                if dry_run:
                    dead_blobs = _spare_being_written(store, dead_blobs)
                elif dead_trees or dead_blobs or dead_pages:
                    journal, dead_blobs = execute_gc(store, c, dead_trees, dead_blobs, dead_pages)
                break
        if attempt == 1 and not store.read_only:
            store.recover()  # a writer that died since the first recovery
    else:
        raise StoreIndexError(
            f"{store.archive}: gc stopped, nothing was deleted: the index disagrees with the "
            f"files ({'; '.join(problems)}); fix or remove damaged files, then run `runicorn verify --repair`"
        )
    warnings.extend(notes)
    freed = remove_collected(store, [t for t, _ in dead_trees], dead_blobs, dry_run, warnings, journal, dead_pages)
    return {
        "dry_run": dry_run,
        "grace_seconds": grace_seconds,
        "trees_deleted": len(dead_trees),
        "blobs_deleted": len(dead_blobs),
        "pages_deleted": len(dead_pages),
        "bytes_freed": freed,
        "tree_ids": [t for t, _ in dead_trees],
        "blob_ids": dead_blobs.names() if list_blobs else None,
        "waiting": waiting,
        "warnings": warnings,
    }


def remove_collected(
    store: Store,
    dead_trees: list[str],
    dead_blobs: PlannedBlobs,
    dry_run: bool,
    warnings: list[str],
    journal: Path | None = None,
    dead_pages: Planned = (),  # type: ignore[assignment]
) -> int:
    """After gc's COMMIT: remove the installed folders of the collected trees (and any an
    earlier gc left), the gc's trash and the blob files its ``journal`` lists; return
    the bytes that really frees.

    Blobs and installed files count (manifests do not: they describe, they are not
    data), each only when its last hard link goes, so a blob still linked from
    elsewhere (a hard-linked restore) frees nothing.  A dry run counts what a real run
    would remove, as it is now.
    """
    taken = [(extension, extension.take_collected(store, dead_trees, dry_run=dry_run)) for extension in registered()]
    dirs: list[str | Path] = [path for _, pairs in taken for path, _ in pairs]
    if dry_run:
        return bytes_freed_by_removing(_blob_files(store, dead_blobs) + dirs)
    writer = store.current_writer
    trash = writer / "trash" if writer is not None else None
    try:
        # Each step counts what it frees just before removing it: a blob also linked from
        # an installed folder counts once, when its last link goes (with the blobs).
        freed = bytes_freed_by_removing(dirs)
        for extension, pairs in taken:
            warnings.extend(extension.remove_collected(store, pairs))
        if journal is not None:
            freed += unlink_collected(store, journal, dead_blobs.batches(), [p for p, _ in dead_pages])
    finally:
        if trash is not None:
            import shutil  # not at the top: it loads bz2 and lzma, ~5 ms of every command

            shutil.rmtree(trash, ignore_errors=True)
    return freed


def _blob_files(store: Store, blobs: Iterable[tuple[str, int]]) -> list[str | Path]:
    """The files of ``blobs`` as plain strings: a Path object per blob costs more than
    its ``lstat`` when a run deletion frees 100,000 of them."""
    top = str(store.blobs_dir)
    return [f"{top}/{sha[:2]}/{sha}" for sha, _ in blobs]


def bytes_freed_by_removing(paths: list[str | Path]) -> int:
    """Bytes that removing every file at or below ``paths`` frees: a file's size counts
    only when all its hard links are among them (a blob also linked from an installed
    folder or a user's hard-linked restore frees nothing until its last link goes)."""
    inodes: dict[tuple[int, int], list[int]] = {}
    stack = [os.fspath(p) for p in paths]
    while stack:
        p = stack.pop()
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                with os.scandir(p) as it:
                    stack.extend(e.path for e in it)
            except OSError:
                pass
        elif stat.S_ISREG(st.st_mode):
            rec = inodes.setdefault((st.st_dev, st.st_ino), [0, st.st_nlink, st.st_size])
            rec[0] += 1
    return sum(size for seen, nlink, size in inodes.values() if seen >= nlink)


class Young(NamedTuple):
    """What a gc plan leaves only because it was touched within the grace period."""

    trees: list[str]
    blobs: list[tuple[str, int, float]]  # (sha256, size, touched_at) of blobs the dead trees leave


def waiting_for_grace(
    c: Any,
    now: float,
    grace_seconds: float,
    scope: str | None,
    dead_trees: Planned,
    dead_blobs: Iterable[tuple[str, int]],
    kept: set[str] | None,
    young: Young | None = None,
) -> dict[str, Any]:
    """What only the grace period keeps: unreferenced trees and blobs touched within it,
    and when they become collectable (``first_at``/``last_at``, Unix seconds, or None).
    ``kept``: blobs damaged manifests may still name (None: every blob), never counted.
    ``young``: what the plan of ``dead_trees`` left only for its age (``_plan``'s fourth
    part, up to ``now``); when it holds no tree, its blobs are all that waits, and no
    second plan is needed."""
    if grace_seconds <= 0:  # nothing is younger than no grace at all
        return {"trees": 0, "blobs": 0, "bytes": 0, "first_at": None, "last_at": None}
    if young is not None and not young.trees:
        # The same trees die with or without the grace period, so the same pages and
        # the same candidate blobs: those the grace keeps are the young ones.
        waiting = [(b, size, t) for b, size, t in young.blobs if kept is not None and b not in kept]
        times = [t for _, _, t in waiting]
        return {
            "trees": 0,
            "blobs": len(waiting),
            "bytes": sum(size for _, size, _ in waiting),
            "first_at": min(times) + grace_seconds if times else None,
            "last_at": max(times) + grace_seconds if times else None,
        }
    all_trees, _, all_blobs = plan_gc(c, now, scope)
    gone_t, gone_b = {t for t, _ in dead_trees}, {b for b, _ in dead_blobs}
    trees = [t for t, _ in all_trees if t not in gone_t]
    blobs = [] if kept is None else [(b, size) for b, size in all_blobs if b not in kept and b not in gone_b]
    first = last = None
    if trees or blobs:
        row = c.execute(
            "SELECT MIN(t), MAX(t) FROM (SELECT touched_at AS t FROM trees WHERE tree IN "
            "(SELECT value FROM json_each(?)) UNION ALL SELECT touched_at FROM blobs WHERE sha256 IN "
            "(SELECT value FROM json_each(?)))",
            (json.dumps(trees), json.dumps([b for b, _ in blobs])),
        ).fetchone()
        first, last = row[0] + grace_seconds, row[1] + grace_seconds
    return {
        "trees": len(trees),
        "blobs": len(blobs),
        "bytes": sum(size for _, size in blobs),
        "first_at": first,
        "last_at": last,
    }


def plan_gc(c: Any, cutoff: float, scope: str | None, gone: str | None = None) -> tuple[Planned, Planned, PlannedBlobs]:
    """The trees, pages and blobs a gc would collect now, ``(id, size)`` each, sorted:
    trees unreferenced, unheld, touched before ``cutoff``; the pages no remaining tree
    reaches once those go; blobs then unreferenced, unheld and touched before ``cutoff``.
    ``scope`` (a JSON list of tree ids) limits it to those trees and what only they
    name.  ``gone`` (a JSON list of ``kind LF name``; neither can hold a newline): refs
    counted as already deleted (a run deletion plans before it deletes the run's refs)."""
    trees, pages, blobs, _ = _plan(c, cutoff, scope, gone)
    return trees, pages, blobs


def _plan(
    c: Any, cutoff: float, scope: str | None, gone: str | None = None, *, young_until: float | None = None
) -> tuple[Planned, Planned, PlannedBlobs, Young]:
    """:func:`plan_gc`, and with ``young_until`` what it leaves only because it was touched
    in ``[cutoff, young_until)``: the trees, and the blobs as ``(sha256, size, touched_at)``
    (those the dead trees leave; sorted)."""
    # Selected when touched before ``until``; the young ones are set apart.
    until = cutoff if young_until is None else max(cutoff, young_until)
    unreferenced = "refcount = 0"
    params: list[Any] = []
    if gone is not None:
        unreferenced = (
            "refcount = (SELECT COUNT(*) FROM refs r WHERE r.tree = trees.tree AND "
            "r.kind || char(10) || r.name IN (SELECT value FROM json_each(?)))"
        )
        params.append(gone)
    # A tree still in the schema-4 format (pages NULL: its rows were damaged) is never
    # collected: its blobs are counted by rows this plan does not read.
    tree_sql = (
        f"SELECT tree, total_size, pages, touched_at FROM trees WHERE {unreferenced} AND touched_at < ? "
        "AND pages IS NOT NULL AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.sha256 = trees.tree)"
    )
    params.append(until)
    if scope is not None:
        tree_sql += " AND tree IN (SELECT value FROM json_each(?))"
        params.append(scope)
    selected = c.execute(tree_sql + " ORDER BY tree", params).fetchall()
    rows = [(t, size, top) for t, size, top, touched in selected if touched < cutoff]
    young_trees = [t for t, _, _, touched in selected if touched >= cutoff]
    dead_trees = [(t, size) for t, size, _ in rows]
    # Pages: what the dead trees (and pages dying with them) named, counted against
    # each page's refcount, level by level down to the leaves and their blobs.
    lost: dict[str, int] = {}
    for _, _, top in rows:
        for pid in set(json.loads(top)):  # as trees are counted: once per tree
            lost[pid] = lost.get(pid, 0) + 1
    frontier = set(lost)
    if scope is None:  # pages nothing names (left by an interrupted repair)
        frontier.update(r[0] for r in c.execute("SELECT page FROM pages WHERE refcount = 0"))
    dead_pages: dict[str, int] = {}
    dead_leaves: list[str] = []
    while frontier:
        ids = json.dumps(sorted(frontier))
        frontier = set()
        dying = [
            (pid, leaf, size)
            for pid, refcount, leaf, size in c.execute(
                "SELECT page, refcount, leaf, size FROM pages WHERE page IN (SELECT value FROM json_each(?))", (ids,)
            )
            if pid not in dead_pages and refcount <= lost.get(pid, 0)
        ]
        for pid, _, size in dying:
            dead_pages[pid] = size
        dead_leaves += [pid for pid, leaf, _ in dying if leaf]
        nodes = json.dumps([pid for pid, leaf, _ in dying if not leaf])
        for (child,) in c.execute(
            f"SELECT p.page FROM page_children l JOIN pages p ON p.id = l.child WHERE l.page IN {PAGE_ROWS}", (nodes,)
        ):
            lost[child] = lost.get(child, 0) + 1
            frontier.add(child)
    unheld = _unheld_by_ranges if has_table(c, "hold_ranges") else (lambda blob_id: "")
    # Blobs whose every reference is a link from a dying leaf: counted in one query (by
    # SQLite, not a Python loop over 100,000 links).  Rows go straight into the lists
    # returned (a dict of every candidate first would cost about 120 more bytes per blob
    # of a gc collecting a million).
    candidates = c.execute(
        "SELECT b.sha256, b.size, b.touched_at FROM (SELECT blob, SUM(n) AS lost FROM page_blobs "
        f"WHERE page IN {PAGE_ROWS} GROUP BY blob) f "
        "JOIN blobs b ON b.id = f.blob WHERE b.refcount <= f.lost AND b.touched_at < ?2 "
        # In SHA-256 order (links group by blob id): sorting 100,000 names here is
        # several times faster than sorting the rows in Python below.
        f"AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.sha256 = b.sha256){unheld('b.id')} ORDER BY b.sha256",
        (json.dumps(dead_leaves), until),
    )
    blobs = PlannedBlobs()
    young: list[tuple[str, int, float]] = []
    old = {r[0] for r in c.execute("SELECT DISTINCT blob FROM tree_entries")} if has_table(c, "tree_entries") else ()
    _split_by_age(candidates, cutoff, old, blobs, young)
    if scope is None:  # blobs no page names (their last leaf went in an earlier gc, or never had one)
        unnamed = c.execute(
            "SELECT sha256, size, touched_at FROM blobs WHERE refcount = 0 AND touched_at < ? "
            f"AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.sha256 = blobs.sha256){unheld('blobs.id')} ORDER BY sha256",
            (until,),
        )
        more = PlannedBlobs()
        young_more: list[tuple[str, int, float]] = []
        _split_by_age(unnamed, cutoff, old, more, young_more)
        # Both lists are in SHA-256 order: merged, and a blob both linked and counted 0
        # (a damaged count), which came twice, listed once.
        if more:
            blobs = PlannedBlobs(_once(heapq.merge(blobs, more))) if blobs else more
        if young_more:
            young = list(_once(heapq.merge(young, young_more))) if young else young_more
    return dead_trees, sorted(dead_pages.items()), blobs, Young(young_trees, young)


def _unheld_by_ranges(blob_id: str) -> str:
    """SQL: no hold range covers ``blob_id``: the range with the largest first id at or
    below it (ranges never overlap) ends before it.  (A read-only store of index version 9
    has no such table, and no live writer: nothing to ask.)"""
    return (
        " AND NOT EXISTS (SELECT 1 FROM (SELECT last FROM hold_ranges WHERE first <= "
        f"{blob_id} ORDER BY first DESC LIMIT 1) WHERE last >= {blob_id})"
    )


def _split_by_age(
    rows: Iterable[tuple[str, int, float]],
    cutoff: float,
    old: Collection[str],
    blobs: PlannedBlobs,
    young: list[tuple[str, int, float]],
) -> None:
    """Append the ``(sha256, size, touched_at)`` rows not in ``old`` to ``blobs`` (as
    ``(sha256, size)``, touched before ``cutoff``) or to ``young``."""
    for sha, size, touched in rows:
        if sha in old:
            continue
        if touched < cutoff:
            blobs.append(sha, size)
        else:
            young.append((sha, size, touched))


_Row = TypeVar("_Row", bound=tuple[Any, ...])


def _once(rows: Iterable[_Row]) -> Iterator[_Row]:
    """``rows`` (sorted by their first item, a SHA-256) with each SHA-256 once."""
    last = None
    for row in rows:
        if row[0] != last:
            last = row[0]
            yield row


def execute_gc(
    store: Store,
    c: Any,
    dead_trees: Planned,
    dead_blobs: PlannedBlobs,
    dead_pages: Planned = (),  # type: ignore[assignment]
) -> tuple[Path | None, PlannedBlobs]:
    """Inside gc's write transaction: drop the doomed rows in set statements (a tree's
    row lets go of its top pages, a page's links of what it names), move the manifests
    to the trash (few; recovery puts them back if the transaction rolls back) and
    journal the doomed blobs and pages, whose files stay until :func:`unlink_collected`
    after COMMIT.  Returns the journal (None: no blobs and no pages) and the blobs whose
    rows went: those of ``dead_blobs`` no live batch is writing in place (their rows stay;
    the journal may name them, and its unlinks spare what a row names)."""
    if dead_trees:
        trash = store.writer_dir() / "trash"
        trash.mkdir(exist_ok=True)
        for tree, _ in dead_trees:
            move_if_exists(store.manifest_path(tree), trash / f"tree-{tree}.json")
        ids = json.dumps([t for t, _ in dead_trees])
        c.execute("DELETE FROM trees WHERE tree IN (SELECT value FROM json_each(?))", (ids,))
    if not dead_blobs and not dead_pages:
        return None, dead_blobs
    pids = [p for p, _ in dead_pages]
    # Durable before the rows go, so a gc killed after its COMMIT is finished by recovery
    # (without it the files would stay as unindexed strays: space, never data, lost).
    journal = atomic_write_bytes(
        store.writer_dir() / f"gc-{os.urandom(6).hex()}.json", _journal_text(dead_blobs.batches(), pids)
    )
    _let_the_clock_pass(journal)
    # Read after the journal's time: a batch names a blob before it creates the file, so a
    # file it creates in place and did not name by now is newer than the journal (spared
    # by the unlinks); one it named is spared here.
    dead_blobs = _spare_being_written(store, dead_blobs)
    # Blob rows first: the links deleted after them then count down the blobs that
    # stay only, not 100,000 rows about to go.
    for batch in dead_blobs.batches():
        delete_blob_rows(c, json.dumps(batch))
    for i in range(0, len(pids), GC_BATCH):
        chunk = json.dumps(pids[i : i + GC_BATCH])
        delete_links(c, chunk)
        c.execute("DELETE FROM pages WHERE page IN (SELECT value FROM json_each(?))", (chunk,))
    if pids:
        drop_unnamed_lost_blobs(c)
    return journal, dead_blobs


def _spare_being_written(store: Store, blobs: PlannedBlobs) -> PlannedBlobs:
    """``blobs`` without those a live batch is writing in place (:func:`blobs_being_written`):
    its file may be that batch's, uncommitted (written again because the file was missing,
    or adopted from there by another writer), and stays the batch's until its COMMIT."""
    being_written = blobs_being_written(store)
    if not being_written or not blobs:
        return blobs
    return PlannedBlobs(b for b in blobs if b[0] not in being_written)


def _let_the_clock_pass(journal: Path) -> None:
    """Return once every file written from now on gets a later modification time than
    ``journal``: before the COMMIT that lets writers store the doomed blobs again, so
    the unlinks can tell a doomed file from a new one at the same name (a live batch
    writes blobs in place without a row; :func:`unlink_files`).  File times come from a
    clock that lags the system's by up to a scheduler tick.  (Modification, not change,
    time: removing an installed folder's hard link to a doomed blob changes the latter.)
    On a filesystem that keeps coarser times the wait covers one step of them."""
    stamp = os.stat(journal).st_mtime_ns
    until = stamp + timestamp_step_ns(stamp) + _TIMESTAMP_LAG_NS
    while (wait := until - time.time_ns()) > 0:
        time.sleep(wait / 1e9)


def timestamp_step_ns(stamp: int) -> int:
    """The step of a filesystem's file times, judged from one of them (``st_mtime_ns``):
    whole seconds (ext3, ext4 with small inodes, HFS+; taken as two, FAT's step),
    hundredths (exFAT) and so on show as that many trailing zeros; a time kept to the
    nanosecond has none (or a few, by chance: a wait of some nanoseconds more)."""
    step = 1
    while step < 1_000_000_000 and stamp % (step * 10) == 0:
        step *= 10
    return 2 * step if step == 1_000_000_000 else step


def _journal_text(blobs: Iterable[list[str]], pages: list[str]) -> Iterator[bytes]:
    """The gc journal ``{"blobs": [...], "pages": [...]}`` (``schema/README.md``), a batch
    of names at a time (``blobs``: batches of names): one text of a million names would
    be 67 MB, twice (str and bytes)."""
    page_batches = (pages[i : i + GC_BATCH] for i in range(0, len(pages), GC_BATCH))
    for key, batches in ((b'{"blobs": [', blobs), (b'], "pages": [', page_batches)):
        yield key
        for k, batch in enumerate(batches):
            yield (b", " if k else b"") + json.dumps(batch)[1:-1].encode("ascii")
    yield b"]}\n"


def unlink_collected(store: Store, journal: Path, blobs: Iterable[list[str]], pages: list[str] = ()) -> int:  # type: ignore[assignment]
    """Unlink the blob files (``blobs``: batches of names) and page files gc dropped from
    the index, then the journal; return the bytes the blobs' files freed (pages describe,
    they are not data)."""
    written = os.stat(journal).st_mtime_ns
    freed = _unlink_in_batches(store, blobs, written)
    _unlink_in_batches(store, (pages[i : i + GC_BATCH] for i in range(0, len(pages), GC_BATCH)), written)
    journal.unlink()
    return freed


def _unlink_in_batches(store: Store, batches: Iterable[list[str]], journal_written: int) -> int:
    """:func:`unlink_unindexed`, a batch per write transaction (other writers go on
    between batches); return the bytes freed."""
    freed = 0
    for batch in batches:
        with store.index.write() as c:
            freed += unlink_unindexed(store, c, batch, journal_written)[1]
    return freed


def unlink_unindexed(store: Store, c: Any, shas: list[str], journal_written: int) -> tuple[int, int]:
    """Unlink ``blobs/<aa>/<sha>`` for each of ``shas`` that no index row names (neither a
    blob nor a page: pages live among the blobs) and that was not written after the gc
    journal listing them (``journal_written``: its modification time, ns), inside
    write transaction ``c``; return how many went and the bytes that freed (a file's size
    when it was its last link).

    A row present means the object was stored again after gc's COMMIT (its writer found
    the old file in place and adopted it); a file written after the journal is not the
    one gc doomed (a live batch wrote the blob in place again after the doomed file was
    gone, and has not committed yet): either is kept.
    """
    # A journal is a file: never trust a name (one pattern match for the usual all-good list).
    if not all(isinstance(s, str) for s in shas) or not _ALL_SHA256.fullmatch("".join(s + "\n" for s in shas)):
        shas = [s for s in shas if is_sha256_hex(s)]
    shas = sorted(shas)
    ids = json.dumps(shas)
    present = {
        row[0]
        for row in c.execute(
            "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?)) "
            "UNION SELECT page FROM pages WHERE page IN (SELECT value FROM json_each(?))",
            (ids, ids),
        )
    }
    top = str(store.blobs_dir)
    return unlink_files([f"{top}/{sha[:2]}/{sha}" for sha in shas if sha not in present], journal_written)


def unlink_files(paths: list[str], unchanged_since: int) -> tuple[int, int]:
    """Unlink the files at ``paths`` (sorted) whose modification time (ns) is not after
    ``unchanged_since``, missing ones skipped; return how many went and the bytes that
    freed (a file's size when it was its last link).

    Several threads share the work, each its own run of the sorted paths (so its own
    prefix directories): an unlink is a system call that releases the GIL, and two
    threads on different directories do not wait for each other's directory lock.
    """
    if not paths:
        return 0, 0
    results: list[tuple[int, int]] = []

    def unlink_run(run: list[str]) -> None:
        gone = freed = 0
        for path in run:
            try:
                st = os.lstat(path)
                if st.st_mtime_ns > unchanged_since:
                    continue
                os.unlink(path)
            except FileNotFoundError:
                continue
            gone += 1
            if st.st_nlink == 1:
                freed += st.st_size
        results.append((gone, freed))

    step = -(-len(paths) // worker_count(len(paths), 0))  # ceiling: at most that many runs
    run_groups(unlink_run, [paths[i : i + step] for i in range(0, len(paths), step)])
    return sum(g for g, _ in results), sum(f for _, f in results)


def finish_gc(store: Store, c: Any, journal: Path) -> str:
    """Recovery of a gc killed after its journal was written: unlink the listed blobs
    that no row names (after its COMMIT: all of them; before it: none)."""
    try:
        written = os.stat(journal).st_mtime_ns
        record = json.loads(journal.read_text("utf-8"))
        shas, pages = record["blobs"], record.get("pages", [])
        if not isinstance(shas, list) or not isinstance(pages, list):
            raise TypeError("not a list")
    except (OSError, ValueError, KeyError, TypeError):
        return ""  # torn: written before the COMMIT it would have preceded, so nothing went
    gone, _ = unlink_unindexed(store, c, [str(s) for s in shas] + [str(p) for p in pages], written)
    journal.unlink(missing_ok=True)
    return f"finished an interrupted gc ({gone} blob file(s) removed)" if gone else ""
