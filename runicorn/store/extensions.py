"""How features plug into the store: one :class:`StoreExtension` per feature, registered
with :func:`register` (``schema/README.md``, "Features in the index").

A feature that keeps rows in the index, keeps trees alive by refs it derives from its
own files, or keeps state outside ``archive/`` for trees, gives the store an object with:

* ``tables``: names of the feature tables it uses (:data:`runicorn.store.tables.TABLES`);
  every opening of a writable store creates those that are missing.
* ``refresh_roots(store, dry_run=, keep_missing_toml=)``: at the start of every gc, bring
  the refs it derives up to date; returns warnings for the gc report.
* ``take_collected(store, trees, dry_run=)``: once a gc has committed (a dry run: planned),
  take what lives outside the archive for the collected ``trees``; returns ``(path, lock
  fd or None)`` pairs, whose bytes the gc counts; then (not for a dry run)
  ``remove_collected(store, taken)`` removes them and lets go of the locks, returning
  warnings.
* ``rebuild(store)``: after an index rebuild, re-derive its tables from its own files;
  returns notes for the repair report.
* ``problems(store, deep=)``: what ``verify`` should report about its state.
* ``runs(store)``, ``run_details(store, run_id)``: the runs it knows and one run's folder,
  metadata and status, for ``ls`` and ``show`` (:mod:`runicorn.store.inspect`).
* ``workspace_files(store, root)``: the files a snapshot of ``root`` would capture now, for
  ``diff`` against a workspace; None when the feature does not capture workspaces.
* ``keep_code_tree(store, tree, run_id=, near=, source=)``: keep a new snapshot's tree as a
  run's code (run ``run_id``, or the run whose folder holds the path ``near``); returns the
  ref (``kind/name``), or None when no run of this feature is meant.

The store imports no feature: ``runicorn/__init__.py`` registers the features' extensions
(``runicorn.extensions``), and Python runs it before any ``runicorn.*`` module, so every
store is opened with them in place.  This module imports nothing of the store's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: importing this module stays cheap
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from runicorn.filestat import FileStat
    from runicorn.store.store import Store


class StoreExtension:
    """A feature's part in the store; every hook does nothing unless overridden."""

    #: a short name (unique among the registered extensions)
    name: str = ""
    #: the feature tables it uses (keys of :data:`runicorn.store.tables.TABLES`)
    tables: tuple[str, ...] = ()

    def refresh_roots(self, store: Store, *, dry_run: bool, keep_missing_toml: float | None) -> Iterable[str]:
        """Bring the refs this feature derives up to date (start of every gc); return warnings."""
        return ()

    def take_collected(self, store: Store, trees: list[str], *, dry_run: bool) -> list[tuple[Path, int | None]]:
        """Take what lives outside the archive for the collected ``trees``."""
        return []

    def remove_collected(self, store: Store, taken: list[tuple[Path, int | None]]) -> Iterable[str]:
        """Remove what :meth:`take_collected` took and let go of its locks; return warnings."""
        return ()

    def rebuild(self, store: Store) -> Iterable[str]:
        """Re-derive this feature's tables from its own files (after an index rebuild); return notes."""
        return ()

    def problems(self, store: Store, *, deep: bool) -> Iterable[dict[str, Any]]:
        """What ``verify`` reports about this feature's state (problem dicts)."""
        return ()

    def runs(self, store: Store) -> Iterable[dict[str, Any]]:
        """Runs this feature knows: dicts with ``run_id``, ``path``, ``status``, ``created_at``."""
        return ()

    def run_details(self, store: Store, run_id: str) -> dict[str, Any] | None:
        """``run_dir`` (a Path or None), ``meta`` (dict) and ``status`` of one run, or None."""
        return None

    def workspace_files(self, store: Store, root: Path) -> list[tuple[str, str, FileStat]] | None:
        """``(relpath, path, lstat)`` of what a snapshot of ``root`` would capture now, or None."""
        return None

    def keep_code_tree(
        self, store: Store, tree: str, *, run_id: str | None, near: Path | None, source: str
    ) -> str | None:
        """Keep ``tree`` as the code of run ``run_id`` (or of the run whose folder holds
        ``near``); return the ref as ``kind/name``, or None when no run is meant."""
        return None


_registered: list[StoreExtension] = []


def register(extension: StoreExtension) -> None:
    """Add ``extension`` (one with the same name is replaced, keeping its place)."""
    for i, known in enumerate(_registered):
        if known.name == extension.name:
            _registered[i] = extension
            return
    _registered.append(extension)


def registered() -> Sequence[StoreExtension]:
    """The registered extensions, in registration order (the order the store calls them)."""
    return tuple(_registered)


def tables() -> list[str]:
    """The feature tables the registered extensions use, each once."""
    return list(dict.fromkeys(t for ext in _registered for t in ext.tables))
