"""The features' parts in the store (:class:`runicorn.store.extensions.StoreExtension`),
registered by ``runicorn/__init__.py`` so that every store is opened with them.

Kept light: each hook imports its feature's code when the store calls it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runicorn.store.extensions import StoreExtension, register

if TYPE_CHECKING:  # annotations only: ``import runicorn`` imports this module
    from collections.abc import Iterable
    from pathlib import Path

    from runicorn.filestat import FileStat


class RunsExtension(StoreExtension):
    """Experiment runs: the ``runs`` table, and the deletions a killed ``delete-run`` left."""

    name = "runs"
    tables = ("runs",)

    def refresh_roots(self, store: Any, *, dry_run: bool, keep_missing_toml: float | None) -> Iterable[str]:
        from runicorn.runs.delete import finish_interrupted_deletions

        return finish_interrupted_deletions(store, dry_run=dry_run)

    def rebuild(self, store: Any) -> Iterable[str]:
        from runicorn.runs.delete import finish_interrupted_deletions
        from runicorn.runs.index import rebuild_runs

        finish_interrupted_deletions(store)
        rebuild_runs(store)
        return ()

    def problems(self, store: Any, *, deep: bool) -> Iterable[dict[str, Any]]:
        from runicorn.runs.delete import interrupted_deletions

        return [
            {
                "kind": "interrupted_deletion",
                "detail": f"{trash} is left by a killed deletion of run {run_id}; "
                "`runicorn gc` (or verify --repair) finishes it",
                "path": str(trash),
            }
            for run_id, trash in interrupted_deletions(store)
        ]

    def keep_code_tree(
        self, store: Any, tree: str, *, run_id: str | None, near: Path | None, source: str
    ) -> str | None:
        if run_id is None and near is not None:
            from runicorn.runs.index import run_for_path

            run_id = run_for_path(store, near)
        if run_id is None:
            return None
        from runicorn.runs.refs import link_code_tree

        return link_code_tree(store, run_id, tree, source=source)

    def runs(self, store: Any) -> Iterable[dict[str, Any]]:
        from runicorn.runs.index import list_runs

        return list_runs(store)

    def run_details(self, store: Any, run_id: str) -> dict[str, Any] | None:
        from runicorn.runs.index import find_run_dir, read_meta, read_status

        run_dir = find_run_dir(store, run_id, rescan=not store.read_only)
        if run_dir is None:
            return None
        return {"run_dir": run_dir, "meta": read_meta(run_dir) or {}, "status": read_status(run_dir)}


class ArtifactsExtension(StoreExtension):
    """Artifacts: ``binding`` refs derived from ``Runicorn.toml`` files (the ``toml_usage``
    table lists them) and the installed folders of trees (``artifacts/<tree>/``)."""

    name = "artifacts"
    tables = ("toml_usage",)

    def refresh_roots(self, store: Any, *, dry_run: bool, keep_missing_toml: float | None) -> Iterable[str]:
        from runicorn.artifacts.gcroots import refresh_binding_refs

        return refresh_binding_refs(store, dry_run=dry_run, keep_missing_toml=keep_missing_toml) or ()

    def take_collected(self, store: Any, trees: list[str], *, dry_run: bool) -> list[tuple[Path, int | None]]:
        from runicorn.artifacts.installed import take_installed

        return take_installed(store, trees, dry_run=dry_run)

    def remove_collected(self, store: Any, taken: list[tuple[Path, int | None]]) -> Iterable[str]:
        from runicorn.artifacts.installed import remove_taken

        return remove_taken(taken)

    def rebuild(self, store: Any) -> Iterable[str]:
        from runicorn.artifacts.gcroots import rebuild_usage
        from runicorn.artifacts.installed import repair_installed

        rebuild_usage(store)
        return repair_installed(store)

    def problems(self, store: Any, *, deep: bool) -> Iterable[dict[str, Any]]:
        from runicorn.artifacts.installed import installed_problems

        return installed_problems(store, deep=deep)


class SnapshotsExtension(StoreExtension):
    """Workspace snapshots: the ``stat_cache`` tables (a cache; nothing to rebuild)."""

    name = "snapshots"
    tables = ("stat_cache_dirs", "stat_cache_leaves", "stat_cache_seals", "stat_cache_generation")

    def workspace_files(self, store: Any, root: Path) -> list[tuple[str, str, FileStat]] | None:
        import os

        from runicorn.filestat import FileStats
        from runicorn.snapshot.ignore import IgnoreRules, read_ignore_file
        from runicorn.snapshot.scan import files_of, iter_workspace_dirs, store_dirs

        rules = IgnoreRules(root, read_ignore_file(root, ".rnignore", create_default=False), None)
        compact = FileStats().of
        return [
            (rel, full, compact(st))
            for rel, full, st in files_of(
                iter_workspace_dirs(
                    root.resolve(),
                    rules,
                    skip_dirs=store_dirs(store),
                    skip_files=set(),
                    max_files=0,
                    max_total_bytes=0,
                    force=True,
                    run_root=str(store.root.resolve()) + os.sep,
                )
            )
        ]


def register_features() -> None:
    """Register every feature's extension with the store (in the order the store calls them)."""
    for extension in (RunsExtension(), ArtifactsExtension(), SnapshotsExtension()):
        register(extension)
