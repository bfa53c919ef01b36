"""Sharing file work among a few threads: how many, who does what, and running them;
and whether worker processes (:mod:`runicorn.worker_processes`) should do it instead.

Snapshots and restores read, hash and copy many files; those system calls and the
hashing release the GIL, so two to four threads use the cores the way several
``sha256sum`` or ``cp`` processes would.
"""

from __future__ import annotations

import os
from array import array
from itertools import chain
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from runicorn.errors import RunicornError

T = TypeVar("T")

# What one file costs beyond its bytes (open, create, rename, an index row), in bytes of
# copying: about 100 us per small file against about 1 GB/s for data.
PER_FILE_COST = 64 << 10


PROCESSES_VAR = "RUNICORN_WORKER_PROCESSES"
# Below this many files a worker process's start (an interpreter and its imports, about
# 0.1 s) costs more than the second GIL gains.
PROCESSES_FROM_FILES = 8192


def processes_for(files: int) -> int:
    """How many worker processes (:mod:`runicorn.worker_processes`) should share work on
    ``files`` files (0: threads of this process do it): ``$RUNICORN_WORKER_PROCESSES``
    when set (0 turns them off), else one per core (at most 4) for
    ``PROCESSES_FROM_FILES`` files or more on a machine with several.

    Raises:
        RunicornError: ``$RUNICORN_WORKER_PROCESSES`` is not a whole number from 0 to 64.
    """
    chosen = _processes_chosen()
    if chosen is not None:
        return min(chosen, files)
    cores = os.cpu_count() or 1
    if files < PROCESSES_FROM_FILES or cores < 2:
        return 0
    return min(4, cores)


def _processes_chosen() -> int | None:
    """``$RUNICORN_WORKER_PROCESSES``, when set."""
    raw = os.environ.get(PROCESSES_VAR, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if not 0 <= n <= 64:
        raise RunicornError(f"${PROCESSES_VAR} is {raw!r}: give a whole number of processes from 0 to 64")
    return n


def worker_count(files: int, total_bytes: int) -> int:
    """Threads worth starting for ``files`` files of ``total_bytes`` bytes (1 for small jobs)."""
    if files < 1024 and total_bytes < (32 << 20):
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def share(items: Sequence[T], n: int, size_of: Callable[[T], int]) -> list[list[T]]:
    """Split ``items`` among ``n`` workers with about equal work (bytes plus a per-file
    cost), largest first to the least loaded; empty groups are dropped."""
    if n <= 1:
        return [list(items)] if items else []
    groups: list[list[T]] = [[] for _ in range(n)]
    loads = [0] * n
    _to_least_loaded(sorted(items, key=size_of, reverse=True), groups, loads, size_of)
    return [g for g in groups if g]


def _to_least_loaded(items: Iterable[Any], groups: list[Any], loads: list[int], size_of: Callable[[Any], int]) -> None:
    """Give each of ``items``, in turn, to the group whose load (bytes plus the per-file
    cost, in ``loads``) is the least so far."""
    for item in items:
        k = loads.index(min(loads))
        groups[k].append(item)
        loads[k] += size_of(item) + PER_FILE_COST


def share_files(items: Sequence[T], n: int, size_of: Callable[[T], int]) -> list[list[T]]:
    """:func:`share` for writing local files: those of more than ``PER_FILE_COST`` bytes are
    spread, largest first, to the least loaded worker; the smaller ones, in the caller's
    order (path order), are cut into one run per worker that evens out the loads.  Each
    worker then creates its files in folders of its own, one after another: interleaved,
    two threads create in the same folders at once and wait for each other's folder lock
    and the GIL (a restore of 100,000 files of 1-8 KiB, warm cache: 10.2 s in two runs
    as in one thread, 14-19 s interleaved), while two runs still read two blobs at once
    where the cache is cold (18.3 s, one thread 22.5 s).  Empty groups are dropped."""
    if n <= 1:
        return [list(items)] if items else []
    groups: list[list[T]] = [[] for _ in range(n)]
    loads = [0] * n
    big = sorted((it for it in items if size_of(it) > PER_FILE_COST), key=size_of, reverse=True)
    _to_least_loaded(big, groups, loads, size_of)
    small = [it for it in items if size_of(it) <= PER_FILE_COST]
    goal = (sum(loads) + sum(size_of(it) + PER_FILE_COST for it in small)) / n
    at = 0
    for place, k in enumerate(sorted(range(n), key=loads.__getitem__)):
        while at < len(small) and (loads[k] < goal or place == n - 1):
            groups[k].append(small[at])
            loads[k] += size_of(small[at]) + PER_FILE_COST
            at += 1
    return [g for g in groups if g]


def share_indices(items: range, n: int, size_of: Callable[[int], int]) -> list[Sequence[int]]:
    """:func:`share` for indices, each group an array: 8 bytes an index where a list keeps
    an int object (about 40 bytes per file of a 1,000,000-file snapshot, for as long as it
    reads).  Indices of more than ``PER_FILE_COST`` bytes go first, largest first; the
    others, whose costs are about equal, follow in order (neighbours in a folder stay
    together), each to the least loaded worker."""
    if n <= 1:
        return [items] if items else []
    groups = [array("q") for _ in range(n)]
    loads = [0] * n
    big = sorted((i for i in items if size_of(i) > PER_FILE_COST), key=size_of, reverse=True)
    _to_least_loaded(chain(big, (i for i in items if size_of(i) <= PER_FILE_COST)), groups, loads, size_of)
    return [g for g in groups if g]


def batches(items: Iterable[T], size_of: Callable[[T], int], files: int, most_bytes: int) -> Iterator[list[T]]:
    """``items`` in order, cut into batches of at most ``files`` items, each closed once
    its sizes reach ``most_bytes``."""
    batch: list[T] = []
    size = 0
    for item in items:
        batch.append(item)
        size += size_of(item)
        if len(batch) >= files or size >= most_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def run_groups(work: Callable[[T], None], groups: Sequence[T]) -> None:
    """Run ``work`` on every group, in threads when there are several.

    Raises: the first exception a group raised (after every thread has stopped).
    """
    if len(groups) <= 1:
        for g in groups:
            work(g)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        for future in [pool.submit(work, g) for g in groups]:
            future.result()


def run_queue(work: Callable[[Iterator[T]], None], items: Sequence[T], n: int, size_of: Callable[[T], int]) -> None:
    """Run ``n`` workers that each take items, largest first, from one shared queue until it
    is empty: for network transfers, whose cost per item (a round trip, the store's latency)
    is unknown up front, so no worker idles while another still has a backlog (as a static
    :func:`share` would leave it).

    Raises: the first exception a worker raised (after every thread has stopped).
    """
    import threading

    ordered = iter(sorted(items, key=size_of, reverse=True))
    lock = threading.Lock()
    done = object()

    def take() -> Iterator[T]:
        while True:
            with lock:
                item = next(ordered, done)
            if item is done:
                return
            yield item  # type: ignore[misc]

    if n <= 1 or len(items) <= 1:
        work(take())
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=n) as pool:
        for future in [pool.submit(work, take()) for _ in range(n)]:
            future.result()
