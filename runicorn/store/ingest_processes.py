"""Batch ingest in worker processes that write as this process's writer.

A large snapshot reads its files in a few worker processes (:mod:`runicorn.worker_processes`:
a GIL each).  Each opens the store itself and writes as the parent's writer
(:meth:`Store.join_writer`), which changes nothing of the write protocol
(``schema/README.md``, "Worker processes"):

* its batches live in the parent's writer folder (``b-<pid>-<n>``) and commit their rows
  and holds under the parent's writer name and lease, so the parent's lease release,
  and the recovery of its folder, cover them as its own;
* the parent's lock on that folder is passed down (the same open file, so the same
  ``flock``): no recoverer takes the folder for a dead writer's while a worker lives, even
  if the parent was killed;
* a worker whose parent is gone stops at its next batch; one that dies leaves its batch
  folder, with the journal naming what it wrote, to the recovery of the folder (the
  parent's close, or whoever finds the folder unlocked).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from runicorn.worker_processes import Results, Serving, in_processes

if TYPE_CHECKING:
    from runicorn.store.holds import Lease
    from runicorn.store.store import Store


def ingest_in_processes(
    store: Store,
    lease: Lease,
    groups: Sequence[Iterable[Any]],
    paths_of: Callable[[Any], list[str]],
    work: Callable[[Results], None],
    in_threads: Callable[[], None],
) -> None:
    """Ingest each group's batches (``paths_of`` gives a batch's paths) in a
    worker process of its own, held under ``lease``; ``work`` takes each group's stream
    of ``(batch, [(sha256, size), ...])`` in a thread of its own.  ``in_threads()`` does
    the job when workers cannot start.

    Raises: as :meth:`Store.ingest_files`, and as :func:`runicorn.worker_processes.in_processes`.
    """
    setup = {"root": str(store.root), "writer": str(store.writer_dir()), "lease": lease.id}
    lock = store.writer_lock_fd
    serve = "runicorn.store.ingest_processes:serve"
    in_processes(serve, setup, groups, paths_of, work, in_threads=in_threads, pass_fds=(lock,))


def serve(setup: dict[str, Any]) -> Serving:
    """In a worker: open the store as the parent's writer; each batch (a list of paths)
    is ingested as one, answered with ``[(sha256, size), ...]``."""
    from runicorn.store.holds import Lease
    from runicorn.store.store import Store

    store = Store(Path(setup["root"]))
    store.join_writer(Path(setup["writer"]))
    lease = Lease(setup["lease"])

    def handle(paths: list[str]) -> list[tuple[str, int]]:
        return [(i.sha256, i.size) for i in store.ingest_files(paths, lease=lease)]

    return handle, store.close
