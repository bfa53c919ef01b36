"""Pausing Python's cyclic garbage collector around passes that build many objects.

Such a pass (listing a workspace, parsing a tree's pages) allocates one or more objects
per file and keeps them: the collector, triggered by allocation counts, would run
hundreds of times at 100,000 files, some of those runs over every live object, and free
nothing (the objects hold no reference cycles).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def cycle_gc_paused() -> Iterator[Callable[[], None]]:
    """Pause the cyclic garbage collector for a per-file pass that builds only acyclic
    objects.  Yields a function that resumes it early (for work that makes garbage of its
    own); either way it is resumed on exit, unless it was off to begin with."""
    was = gc.isenabled()

    def resume() -> None:
        if was:
            gc.enable()

    gc.disable()
    try:
        yield resume
    finally:
        resume()


__all__ = ["cycle_gc_paused"]
