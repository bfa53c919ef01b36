"""Sharing file work with a few worker processes: a GIL each.

Threads (:mod:`runicorn.workers`) share a snapshot's reading or a restore's writing, but
at 100,000 small files the interpreter's own work per file (opening, hashing a small
buffer, creating a file, bookkeeping: tens of microseconds) holds the GIL most of the
time, so a second thread gains little.  A worker process has a GIL of its own: two of
them, each reading half of 100,000 files into the store, take about 0.6 times the time
of one process.

A worker is ``python -P -c <boot>`` (the current directory never on its path): on its
stdin it gets the parent's ``sys.path``, then the name of a serving function
(``module:function``, in this package) and that function's setup, then batches, one at
a time.  It answers on a pipe of its own (stray output of the interpreter or of site
hooks goes nowhere): ``("ready", None)`` once set up (else ``("unavailable", why)``; the
job then runs in threads of the parent), then for each batch, in order, ``("ok",
result)`` or ``("error", exception)``, after which it stops.  It runs in a process group
of its own and ignores Ctrl-C (the parent decides), is killed with its parent
(``PR_SET_PDEATHSIG``; elsewhere its input ending stops it at the next batch), and ends
after its batch when its input ends: when one worker fails or the caller is interrupted,
the others finish the batch they have, so no file is left half-written.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from runicorn.errors import RunicornError

# What a serving function gives: the handler of one batch, and what to do at the end.
Serving = tuple[Callable[[Any], Any], Callable[[], None]]


class WorkersUnavailable(Exception):
    """A worker could not be started or set up (no batch was given to any): the job runs
    in this process."""


# The worker's first lines: the parent's module path, before anything else is imported.
# Its input ending first (the parent interrupted at once) ends it quietly.
_BOOT = (
    "import pickle, sys\n"
    "try:\n"
    "    sys.path[:] = pickle.load(sys.stdin.buffer)\n"
    "except Exception:\n"
    "    sys.exit(1)\n"
    "from runicorn.worker_processes import main\n"
    "sys.exit(main())\n"
)
# How long a worker that was told to stop may take to finish its batch before it is killed.
STOP_SECONDS = 60.0


class WorkerProcess:
    """One worker process: :meth:`send` it a batch, then :meth:`receive` that batch's result."""

    def __init__(self, serve: str, setup: Any, pass_fds: Sequence[int] = ()) -> None:
        """Start a worker serving batches with ``serve`` (``module:function`` of this
        package, called with ``setup`` in the worker); ``pass_fds`` stay open in it.

        Raises:
            WorkersUnavailable: the interpreter could not be started.
        """
        if getattr(sys, "frozen", False) or not sys.executable:
            raise WorkersUnavailable("no Python interpreter to start (a frozen or embedded program)")
        answers, answer_end = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-c", _BOOT, str(os.getpid()), str(answer_end)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                pass_fds=(answer_end, *pass_fds),
                # A group of its own: the terminal's Ctrl-C goes to the parent alone (from
                # the worker's first instruction on), which stops the workers itself.
                process_group=0,
            )
        except OSError as exc:
            os.close(answers)
            raise WorkersUnavailable(f"{sys.executable}: {exc.strerror or exc}") from None
        finally:
            os.close(answer_end)
        self.answers = os.fdopen(answers, "rb")
        self._input_lock = threading.Lock()  # a stop from another thread never splits a batch
        self._put(list(sys.path))
        self._put((serve, setup))

    def _put(self, message: Any) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        with self._input_lock:
            try:
                pickle.dump(message, stdin, protocol=pickle.HIGHEST_PROTOCOL)
                stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # it died (or was told to stop): receive() says so

    def _get(self) -> tuple[str, Any]:
        try:
            kind, value = pickle.load(self.answers)
            return str(kind), value
        except Exception:
            self.proc.kill()  # whatever it is doing, nobody reads it any more
            code = self.proc.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
            return "gone", how

    def ready(self) -> None:
        """Wait until the worker is set up.

        Raises:
            WorkersUnavailable: it could not start or set up (the reason, when it said).
        """
        kind, value = self._get()
        if kind != "ready":
            raise WorkersUnavailable(f"a worker process could not start ({value})")

    def send(self, batch: Any) -> None:
        """Give the worker its next batch."""
        self._put(batch)

    def receive(self) -> Any:
        """The result of the oldest batch sent.

        Raises:
            the exception the batch raised in the worker;
            RunicornError: the worker stopped without answering (killed, crashed).
        """
        kind, value = self._get()
        if kind == "error":
            raise value
        if kind != "ok":
            raise RunicornError(
                f"a worker process stopped unexpectedly ({value}); nothing of its unfinished batch was kept, try again"
            )
        return value

    def stop(self) -> None:
        """Tell the worker to end after the batches it has (its input ends)."""
        with self._input_lock:
            if self.proc.stdin is not None:
                try:
                    self.proc.stdin.close()
                except (OSError, ValueError):
                    pass

    def finish(self) -> None:
        """Tell the worker there is nothing more, and reap it (killed if not gone within
        ``STOP_SECONDS``)."""
        self._put(None)
        self.stop()
        try:
            self.proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.answers.close()


Results = Iterator[tuple[Any, Any]]


def in_processes(
    serve: str,
    setup: Any,
    groups: Sequence[Iterable[Any]],
    payload_of: Callable[[Any], Any],
    work: Callable[[Results], None],
    *,
    in_threads: Callable[[], None],
    pass_fds: Sequence[int] = (),
) -> None:
    """Give each group's batches to a worker process of its own (``payload_of(batch)`` is
    what it is sent), and run ``work`` on each group's stream of ``(batch, result)`` in a
    thread of its own.  A worker gets its next batch while ``work`` takes in the last one.
    When workers cannot be started or set up, ``in_threads()`` does the job instead.

    Raises:
        the first exception ``work`` raised (after every worker has ended: the others are
        told to stop after the batch they have).
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
            following = next(ordered, None) if not failed else None
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
            if first:  # the others' work is wasted: they end after their batch
                for w in workers:
                    w.stop()

    try:
        try:
            for _ in groups:
                workers.append(WorkerProcess(serve, setup, pass_fds))
            for w in workers:
                w.ready()
        except WorkersUnavailable:
            for w in workers:
                w.finish()
            workers.clear()
            in_threads()
            return
        # Threads of its own rather than runicorn.workers.run_groups: an interrupt of the
        # caller (Ctrl-C) must reach the workers before the threads are waited for.
        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(workers))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except BaseException as exc:
            with lock:
                failed.insert(0, exc)
            for w in workers:
                w.stop()
            for t in threads:
                t.join()
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
    """A worker's life (started by :data:`_BOOT`, argv: parent pid, answer descriptor):
    set up, then answer each batch until told there is no more, or the parent is gone."""
    import importlib

    _die_with(int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the parent too: it decides
    stdin = sys.stdin.buffer
    with os.fdopen(int(sys.argv[2]), "wb") as out:
        try:
            serve, setup = pickle.load(stdin)
            module, _, function = str(serve).partition(":")
            if not module.startswith("runicorn."):
                raise RunicornError(f"{serve!r}: a worker serves functions of runicorn only")
            handle, close = getattr(importlib.import_module(module), function)(setup)
        except (EOFError, pickle.UnpicklingError):
            return 1  # the parent is gone
        except Exception as exc:
            _answer(out, "unavailable", f"{type(exc).__name__}: {exc}")
            return 1
        try:
            _answer(out, "ready", None)
            while True:
                try:
                    batch = pickle.load(stdin)
                except Exception:  # EOF, or cut short: the parent is gone or told it to stop
                    return 1
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
