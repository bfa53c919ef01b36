"""What people read: byte sizes and progress lines on a terminal.

One formatter for sizes (:func:`human_size`) and one progress mechanism
(:class:`ProgressLines`): each job owns one line of a block on stderr that is redrawn in
place (cursor up, clear line), so ``fetch -j 4`` shows four lines, a single download
one, and nothing is drawn when stderr is not a terminal.  A finished block stays on
screen as its final lines; no blank line is left behind.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import IO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: float) -> str:
    """``1288490189`` -> ``"1.2 GiB"`` (binary units; bytes without a decimal)."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for unit in _UNITS:
        if n < 1024 or unit == _UNITS[-1]:
            return f"{sign}{n:.0f} {unit}" if unit == "B" else f"{sign}{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def bar_text(label: str, done: int, total: int | None) -> str:
    """``label [#####     ]  50% 1.0 MiB/2.0 MiB``; without a total, the bytes so far."""
    if total:
        frac = min(max(done / total, 0.0), 1.0)
        return f"{label} [{'#' * int(frac * 20):<20}] {frac * 100:3.0f}% {human_size(done)}/{human_size(total)}"
    return f"{label} {human_size(done)}"


class ProgressLines:
    """A block of progress lines on a terminal (stderr by default), one per job.

    ``line(label)`` adds a line and returns it; calling the line with ``(done, total)``
    bytes redraws it as a bar (at most every ``interval`` seconds, always at the end);
    ``line.finish(text)`` leaves ``text`` as its final state.  Thread safe.  When the
    stream is not a terminal nothing is written at all.  ``delay``: draw nothing until
    the block has existed this long (quick work then prints no bar).
    """

    def __init__(
        self, stream: IO[str] | None = None, *, enabled: bool | None = None, interval: float = 0.1, delay: float = 0.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.interval = interval
        self.start = time.monotonic()
        self.delay = delay
        self.lock = threading.Lock()
        self.texts: list[str] = []
        self.drawn = 0  # lines of the block on screen, the cursor just below them
        self.last = 0.0

    def line(self, label: str, text: str | None = None) -> ProgressLine:
        with self.lock:
            self.texts.append(text if text is not None else f"{label} ...")
            ln = ProgressLine(self, len(self.texts) - 1, label)
        self._draw(force=False)
        return ln

    def _set(self, index: int, text: str, *, force: bool) -> None:
        with self.lock:
            self.texts[index] = text
        self._draw(force=force)

    def _draw(self, *, force: bool) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self.lock:
            if now - self.start < self.delay or (not force and now - self.last < self.interval and self.drawn):
                return
            self.last = now
            width = _columns(self.stream)
            out = [f"\x1b[{self.drawn}A"] if self.drawn else []
            # A line as wide as the terminal would wrap and break the cursor arithmetic.
            out += ["\r\x1b[2K" + t[: width - 1] + "\n" for t in self.texts]
            self.drawn = len(self.texts)
            try:
                self.stream.write("".join(out))
                self.stream.flush()
            except (OSError, ValueError):
                self.enabled = False  # the terminal went away: the work goes on

    def close(self) -> None:
        """Draw the final state (when anything is to be shown) and stop: later updates draw
        nothing, so text printed after ``close`` is never overwritten.  Idempotent."""
        if self.enabled and (self.drawn or (self.texts and time.monotonic() - self.start >= self.delay)):
            self._draw(force=True)
        self.enabled = False


class ProgressLine:
    """One line of a :class:`ProgressLines` block; a ``progress(done, total)`` callback."""

    def __init__(self, block: ProgressLines, index: int, label: str) -> None:
        self.block = block
        self.index = index
        self.label = label
        self.done = 0
        self.total: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.done, self.total = done, total
        self.block._set(self.index, bar_text(self.label, done, total), force=bool(total) and done >= (total or 0))

    def finish(self, text: str) -> None:
        self.block._set(self.index, f"{self.label} {text}", force=True)

    def close(self) -> None:
        """Close the block (for a one-line bar from :func:`progress_bar`)."""
        self.block.close()


def progress_bar(label: str, *, delay: float = 0.0) -> ProgressLine:
    """A one-line block on stderr (nothing when it is not a terminal); ``close()`` it when done."""
    return ProgressLines(delay=delay).line(label)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _columns(stream: IO[str]) -> int:
    import os

    try:
        cols = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        cols = 0
    return max(cols, 20) if cols else 80  # 0: a terminal that does not know its size


__all__ = ["human_size", "bar_text", "ProgressLines", "ProgressLine", "progress_bar"]
