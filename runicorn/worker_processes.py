"""Sharing file work with a few worker processes: a GIL each.

Threads (:mod:`runicorn.workers`) share a snapshot's reading or a restore's writing, but
at 100,000 small files the interpreter's own work per file (opening, hashing a small
buffer, creating a file, bookkeeping: tens of microseconds) holds the GIL most of the
time, so a second thread gains little.  A worker process has a GIL of its own: two of
them, each reading half of 100,000 files into the store, take about 0.6 times the time
of one process.

A worker is ``python -m runicorn.worker_processes <parent pid>``.  On its stdin it gets
the name of a serving function (``module:function``, in this package) and that
function's setup, then batches, one at a time; it answers each on its stdout, in order:
``("ok", result)`` or ``("error", exception)``, after which it stops.  It is killed with
its parent (``PR_SET_PDEATHSIG``); where that is not to be had, its input ending stops it
at the next batch.  One batch is in flight per worker: neither side holds more
than one batch, and neither can block on a full pipe while the other does.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from runicorn.errors import RunicornError
from runicorn.workers import run_groups

PROCESSES_VAR = "RUNICORN_WORKER_PROCESSES"
# Below this many files a worker's start (an interpreter and its imports, about 0.1 s)
# costs more than the second GIL gains.
PROCESSES_FROM_FILES = 8192

# What a serving function gives: the handler of one batch, and what to do at the end.
Serving = tuple[Callable[[Any], Any], Callable[[], None]]


def processes_for(files: int) -> int:
    """How many worker processes should share work on ``files`` files (0: threads of this
    process do it): ``$RUNICORN_WORKER_PROCESSES`` when set (0 turns them off), else one
    per core (at most 4) for ``PROCESSES_FROM_FILES`` files or more on a machine with several.

    Raises:
        RunicornError: ``$RUNICORN_WORKER_PROCESSES`` is not a whole number from 0 to 64.
    """
    raw = os.environ.get(PROCESSES_VAR, "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            n = -1
        if not 0 <= n <= 64:
            raise RunicornError(f"${PROCESSES_VAR} is {raw!r}: give a whole number of processes from 0 to 64")
        return max(0, min(n, files))
    cores = os.cpu_count() or 1
    if files < PROCESSES_FROM_FILES or cores < 2:
        return 0
    return min(4, cores)


class WorkerProcess:
    """One worker process: :meth:`send` it a batch, then :meth:`receive` that batch's result."""

    def __init__(self, serve: str, setup: Any, pass_fds: Sequence[int] = ()) -> None:
        """Start a worker serving batches with ``serve`` (``module:function`` of this
        package, called with ``setup`` in the worker); ``pass_fds`` stay open in it.

        Raises:
            OSError: the interpreter could not be started.
        """
        package_parent = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runicorn.worker_processes", str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=tuple(pass_fds),
            env=env,
        )
        self._put((serve, setup))

    def _put(self, message: Any) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            pickle.dump(message, stdin, protocol=pickle.HIGHEST_PROTOCOL)
            stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # it died (or was stopped): receive() says so

    def send(self, batch: Any) -> None:
        """Give the worker its next batch."""
        self._put(batch)

    def receive(self) -> Any:
        """The result of the oldest batch sent.

        Raises:
            the exception the batch raised in the worker;
            RunicornError: the worker stopped without answering (killed, crashed).
        """
        out = self.proc.stdout
        assert out is not None
        try:
            kind, value = pickle.load(out)
        except (EOFError, pickle.UnpicklingError, OSError, ValueError):
            code = self.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            raise RunicornError(
                f"a worker process stopped unexpectedly ({how}); nothing of its unfinished batch was kept, try again"
            ) from None
        if kind == "error":
            raise value
        return value

    def finish(self) -> None:
        """Tell the worker there is nothing more, and reap it (killed if not gone within a
        few seconds)."""
        self._put(None)
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
        """Stop the worker now (another one failed: its work is wasted)."""
        if self.proc.poll() is None:
            self.proc.kill()


Results = Iterator[tuple[Any, Any]]


def in_processes(
    serve: str,
    setup: Any,
    groups: Sequence[Iterable[Any]],
    payload_of: Callable[[Any], Any],
    work: Callable[[Results], None],
    pass_fds: Sequence[int] = (),
) -> None:
    """Give each group's batches to a worker process of its own (``payload_of(batch)`` is
    what it is sent), and run ``work`` on each group's stream of ``(batch, result)`` in a
    thread of its own.  A worker gets its next batch while ``work`` takes in the last one.

    Raises:
        the first exception ``work`` raised (after every worker has stopped: the others
        are killed when one fails).
        OSError: a worker could not be started.
    """
    workers: list[WorkerProcess] = []
    failed: list[BaseException] = []
    lock = threading.Lock()

    def fed(worker: WorkerProcess, batches: Iterable[Any]) -> Results:
        ordered = iter(batches)
        batch = next(ordered, None)
        if batch is not None:
            worker.send(payload_of(batch))
        while batch is not None:
            result = worker.receive()
            following = next(ordered, None)
            if following is not None:
                worker.send(payload_of(following))
            yield batch, result
            batch = following

    def run(k: int) -> None:
        try:
            work(fed(workers[k], groups[k]))
        except BaseException as exc:
            with lock:
                first = not failed
                failed.append(exc)
            if first:  # the others' work is wasted: stop them now
                for w in workers:
                    w.kill()

    try:
        for _ in groups:
            workers.append(WorkerProcess(serve, setup, pass_fds))
        run_groups(run, range(len(workers)))
    finally:
        for w in workers:
            w.finish()
    if failed:
        raise failed[0]


def _answer(out: IO[bytes], kind: str, value: Any) -> None:
    data = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
    if kind == "error":
        try:
            pickle.loads(data)  # an exception that does not come back whole: its message
        except Exception:
            data = pickle.dumps(("error", RunicornError(str(value))), protocol=pickle.HIGHEST_PROTOCOL)
    out.write(data)
    out.flush()


def _die_with(parent: int) -> None:
    """Be killed when ``parent`` dies (Linux: ``PR_SET_PDEATHSIG``), as a thread of it
    would be: what a worker leaves is then recovered at once, like its parent's, by the
    next command.  Elsewhere the input ending stops the worker at its next batch."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # died before the prctl took effect
        os._exit(1)


def main() -> int:
    """A worker's life: read what to serve, then answer each batch until told there is
    no more, or until the parent is gone."""
    import importlib

    _die_with(int(sys.argv[1]))
    stdin, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        serve, setup = pickle.load(stdin)
    except EOFError:
        return 1
    module, _, function = str(serve).partition(":")
    if not module.startswith("runicorn."):
        raise RunicornError(f"{serve!r}: a worker serves functions of runicorn only")
    handle, close = getattr(importlib.import_module(module), function)(setup)
    try:
        while True:
            try:
                batch = pickle.load(stdin)
            except EOFError:
                return 1  # the parent is gone: nobody waits for the rest
            if batch is None:
                return 0
            try:
                result = handle(batch)
            except BaseException as exc:
                _answer(out, "error", exc)
                return 1
            _answer(out, "ok", result)
    except BrokenPipeError:
        return 1  # the parent is gone
    finally:
        close()


if __name__ == "__main__":
    sys.exit(main())
