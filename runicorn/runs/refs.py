"""A run's refs (kind ``run``): naming them without two writers picking the same name.

Both :mod:`runicorn.runs.run` and the snapshot engine (a snapshot written into a run
directory is that run's code) use it; it imports neither, so they need not import each
other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from runicorn.store import refkinds

REF_KIND = refkinds.RUN


def link_code_tree(store: Any, run_id: str, tree: str, *, source: str) -> str:
    """Name ``tree`` as run ``run_id``'s code (``run/<run_id>/code``); return the ref."""
    name = f"{run_id}/code"
    with ref_naming(store):
        if store.get_ref(REF_KIND, name) is not None:
            # A second snapshot into the same run is kept too, under the next free number.
            n = 1
            while store.get_ref(REF_KIND, f"{name}/{n}") is not None:
                n += 1
            name = f"{name}/{n}"
        store.set_ref(REF_KIND, name, tree, meta={"run_id": run_id, "role": "code", "source": source})
    return f"{REF_KIND}/{name}"


@contextlib.contextmanager
def ref_naming(store: Any) -> Iterator[None]:
    """Serialise "pick a free run ref name, then set it" across threads and processes.

    ``set_ref`` cannot run inside an index transaction, so the pick and the set are made
    atomic by an ``flock`` on the store's refs directory (no extra file in the store).
    """
    import fcntl

    fd = os.open(store.refs_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


__all__ = ["REF_KIND", "link_code_tree", "ref_naming"]
