"""Batch ingest in helper processes that write as this process's writer.

Threads share a snapshot's reading (:mod:`runicorn.workers`), but at 100,000 small files
the interpreter's own work per file (about 60 us: opening, hashing small buffers,
creating the blob file, bookkeeping) holds the GIL most of the time, so a second thread
gains little.  A helper process has a GIL of its own: two of them, each ingesting half
of the files, read 100,000 files in about 0.6 times the time of one process.

A helper is ``python -m runicorn.store.ingest_processes``.  It gets the job (store,
writer folder, lease, batches of paths) on its stdin and answers each batch on its
stdout, in order: ``("ok", [(sha256, size), ...])`` or ``("error", exception)``, after
which it stops.  It opens the store itself and writes as the parent's writer
(:meth:`Store.join_writer`), which changes nothing of the write protocol
(``schema/README.md``):

* its batches live in the parent's writer folder (``b-<pid>-<n>``) and commit their rows
  and holds under the parent's writer name and lease, so the parent's lease release,
  and the recovery of its folder, cover them as its own;
* the parent's lock on that folder is passed down (the same open file, so the same
  ``flock``): no recoverer takes the folder for a dead writer's while a helper lives, even
  if the parent was killed;
* a helper whose parent is gone stops before its next batch; one that dies leaves its
  batch folder, with the journal naming what it wrote, to the recovery of the folder
  (the parent's close, or whoever finds the folder unlocked).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from runicorn.errors import RunicornError
from runicorn.workers import run_groups

if TYPE_CHECKING:
    from runicorn.store.holds import Lease
    from runicorn.store.store import Store

PROCESSES_VAR = "RUNICORN_INGEST_PROCESSES"
# Below this many files a helper's start (an interpreter, the store opened: about 0.1 s)
# costs more than the second GIL gains.
PROCESSES_FROM_FILES = 8192


def processes_for(files: int) -> int:
    """How many helper processes should ingest ``files`` files (0: do it in this process):
    ``$RUNICORN_INGEST_PROCESSES`` when set (0 turns helpers off), else one per core (at
    most 4) for jobs of at least ``PROCESSES_FROM_FILES`` files on a machine with several.

    Raises:
        RunicornError: ``$RUNICORN_INGEST_PROCESSES`` is not a whole number from 0 to 64.
    """
    raw = os.environ.get(PROCESSES_VAR, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not 0 <= n <= 64:
            raise RunicornError(f"${PROCESSES_VAR} is {raw!r}: give a whole number of processes from 0 to 64")
        return min(n, files) if n > 1 else n
    cores = os.cpu_count() or 1
    if files < PROCESSES_FROM_FILES or cores < 2:
        return 0
    return min(4, cores)


class Helper:
    """One helper process: :meth:`send` it a batch of paths, then :meth:`receive` that
    batch's blobs; one batch at a time, so neither side holds more than one batch's paths
    and neither can block on a full pipe while the other does."""

    def __init__(self, store: Store, lease: Lease) -> None:
        """Start a helper writing into ``store`` as this process's writer, under ``lease``.

        Raises:
            OSError: the interpreter could not be started.
        """
        writer = store.writer_dir()
        lock_fd = store.writer_lock_fd
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runicorn.store.ingest_processes"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=(lock_fd,),
            env=env,
        )
        self._put({"root": str(store.root), "writer": str(writer), "lease": lease.id})

    def _put(self, message: Any) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            pickle.dump(message, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it died (or was stopped): receive() says so

    def send(self, paths: list[str]) -> None:
        """Give the helper its next batch."""
        self._put(paths)

    def receive(self) -> list[tuple[str, int]]:
        """The ``(sha256, size)`` of each file of the oldest batch sent, in order.

        Raises:
            the exception the helper's batch raised (as :meth:`Store.ingest_files` would);
            RunicornError: the helper stopped without answering (killed, crashed).
        """
        out = self.proc.stdout
        assert out is not None
        try:
            kind, value = pickle.load(out)
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):
            code = self.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise RunicornError(
                f"a helper process reading files into the store stopped unexpectedly ({how}); "
                "nothing of its unfinished batch was recorded, try again"
            ) from None
        if kind == "error":
            raise value
        return value  # type: ignore[no-any-return]

    def finish(self) -> None:
        """Tell the helper there is nothing more, and reap it."""
        self._put(None)
        self.stop()

    def stop(self) -> None:
        """Close the helper's input (it ends after its batch) and reap it; one not gone
        within a few seconds is killed (a batch it was writing is left to the recovery of
        the writer folder)."""
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        """Stop the helper now (another one failed: its work is wasted)."""
        if self.proc.poll() is None:
            self.proc.kill()


Ingested = Iterator[tuple[list[int], list[tuple[str, int]]]]


def in_helpers(
    store: Store,
    lease: Lease,
    groups: Sequence[Iterable[list[int]]],
    paths_of: Callable[[list[int]], list[str]],
    work: Callable[[Ingested], None],
) -> None:
    """Ingest each group's batches (of indices; ``paths_of`` gives a batch's paths) in a
    helper process of its own, and run ``work`` on each group's stream of ``(batch,
    [(sha256, size), ...])`` in a thread of its own.  A helper gets its next batch while
    ``work`` takes in the last one.

    Raises:
        the first exception ``work`` raised (after every helper has stopped: the others
        are killed when one fails).
        OSError: a helper could not be started.
    """
    helpers: list[Helper] = []
    failed: list[BaseException] = []
    lock = threading.Lock()

    def fed(helper: Helper, batches: Iterable[list[int]]) -> Ingested:
        ordered = iter(batches)
        batch = next(ordered, None)
        if batch is not None:
            helper.send(paths_of(batch))
        while batch is not None:
            infos = helper.receive()
            following = next(ordered, None)
            if following is not None:
                helper.send(paths_of(following))
            yield batch, infos
            batch = following

    def run(k: int) -> None:
        try:
            work(fed(helpers[k], groups[k]))
        except BaseException as exc:
            with lock:
                first = not failed
                failed.append(exc)
            if first:  # the others' work is wasted: stop them now
                for h in helpers:
                    h.kill()

    try:
        for _ in groups:
            helpers.append(Helper(store, lease))
        run_groups(run, range(len(helpers)))
    finally:
        for h in helpers:
            h.finish()
    if failed:
        raise failed[0]


def _send(out: IO[bytes], message: tuple[str, Any]) -> None:
    try:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # an exception that does not pickle: its message, as a RunicornError
        data = pickle.dumps(("error", RunicornError(str(message[1]))), protocol=pickle.HIGHEST_PROTOCOL)
    out.write(data)
    out.flush()


def main() -> int:
    """A helper's life: read the job, then ingest each batch sent, answering each, until
    told there is no more (or the parent is gone)."""
    from runicorn.store.holds import Lease
    from runicorn.store.ingest import ingest_paths
    from runicorn.store.store import Store

    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        job = pickle.load(stdin)
    except EOFError:
        return 1
    store = Store(Path(job["root"]))
    try:
        store.join_writer(Path(job["writer"]))
        lease = Lease(job["lease"])
        while True:
            try:
                batch = pickle.load(stdin)
            except EOFError:
                return 1  # the parent is gone: nobody waits for the rest
            if batch is None:
                return 0
            try:
                infos = ingest_paths(store, batch, lease)
            except BaseException as exc:
                _send(out, ("error", exc))
                return 1
            _send(out, ("ok", [(i.sha256, i.size) for i in infos]))
    except BrokenPipeError:
        return 1  # the parent is gone: what the batch committed is its writer's, recovered with it
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
