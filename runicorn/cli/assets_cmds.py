"""``runicorn snapshot | restore | export | runs | delete-run``: workspace snapshots and runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from runicorn.cli import echo_json, existing_storage, storage_from


class _Progress:
    """A one-line progress display on a TTY, shown only once work has taken over a second."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or time.monotonic() - self.start < 1.0:
            return
        self.shown = True
        pct = 100 * done // total if total else 100
        bar = "#" * (pct // 4)
        click.echo(f"\r{self.label} [{bar:<25}] {done}/{total}", err=True, nl=False)

    def close(self) -> None:
        if self.shown:
            click.echo("", err=True)


def _os_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report filesystem errors (permissions, full disk...) as one line, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from runicorn.errors import RunicornError

        try:
            return fn(*args, **kwargs)
        except RunicornError:
            raise
        except OSError as exc:
            where = exc.filename or ""
            raise RunicornError(f"{where}: {exc.strerror or exc}" if where else str(exc)) from None

    return wrapper


def _store(ctx: click.Context) -> Any:
    """The existing store (restore, export, runs only read it)."""
    from runicorn.store import open_store

    return open_store(existing_storage(ctx))


def _manifest_for(ctx: click.Context, what: str) -> tuple[Path, Path]:
    """``(manifest, blobs_dir)`` from a manifest file, a tree id or a unique tree-id prefix.

    A manifest file is checked on its own, so a bad one is named even where no store
    exists (its blobs are then reported missing); a tree id needs the existing store.
    """
    p = Path(what)
    if p.is_file():
        from runicorn.config import resolve_storage_root

        return p, resolve_storage_root(storage_from(ctx)) / "archive" / "blobs"
    from runicorn.errors import TreeNotFoundError

    store = _store(ctx)
    try:
        return store.manifest_path(store.resolve_tree(what)), store.blobs_dir
    except TreeNotFoundError as exc:
        raise TreeNotFoundError(f"{what}: not a manifest file, and {exc}") from None


def _run_with_progress(label: str, fn: Callable[[Any], Any]) -> Any:
    progress = _Progress(label)
    try:
        return fn(progress)
    finally:
        progress.close()


@click.command()
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--zip", "out_zip", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the snapshot as a zip file.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Extra gitignore-style pattern to leave out (repeatable).")
@click.option("--force", is_flag=True, help="Ignore the size and file-count limits.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def snapshot(ctx: click.Context, root: Path, out_zip: Path | None, excludes: tuple[str, ...],
             force: bool, as_json: bool) -> None:
    """Capture the workspace ROOT (default: .) into the store and print its tree id.

    Honours .rnignore (created with defaults when missing) and .gitignore files.
    The tree is pinned; `runicorn unpin TREE` lets gc collect it.
    """
    from runicorn.assets.snapshot import snapshot_workspace

    try:
        result = _run_with_progress("hashing", lambda p: snapshot_workspace(
            root, out_zip, extra_excludes=list(excludes), force_snapshot=force,
            storage=storage_from(ctx), progress=p))
    except ValueError as exc:
        from runicorn.errors import RunicornError

        raise RunicornError(str(exc)) from None
    if as_json:
        echo_json(result)
        return
    click.echo(result["tree"])
    extra = f", zip {result['archive_path']}" if result["archive_path"] else ""
    click.echo(f"{result['file_count']} files, {result['total_bytes']} bytes, "
               f"{result['files_read']} read{extra}", err=True)


@click.command()
@click.argument("source", metavar="TREE|MANIFEST")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--overwrite", is_flag=True,
              help="TARGET may hold files: replace the paths the tree names (others stay; .git is never "
                   "touched). What is replaced is kept in the store first.")
@click.option("--delete", is_flag=True,
              help="Like --overwrite, and also remove files the tree does not name (outside .git), "
                   "after keeping them in the store.")
@click.option("--link", "link", type=click.Choice(["copy", "hardlink", "reflink", "auto"]), default="copy",
              show_default=True, help="How files are materialised; hardlinked files are read-only and shared.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def restore(ctx: click.Context, source: str, target: Path, overwrite: bool, delete: bool, link: str,
            as_json: bool) -> None:
    """Recreate a stored tree (by id, id prefix or manifest file) at TARGET.

    A missing or empty TARGET is created all or nothing.  Into a non-empty TARGET,
    --overwrite checks the tree out: only the paths it names change.  Files that are
    replaced (or, with --delete, removed) are first stored under a ref
    restore-backup/<time>-<id>, and the command that puts them back is printed.
    """
    from runicorn.assets.restore import restore_from_manifest
    from runicorn.errors import RunicornError

    def announce(backup: dict[str, Any]) -> None:
        # Printed before anything in TARGET changes, so it is there even if we are killed.
        click.echo(f"kept {backup['files']} file(s) that will be replaced or removed as {backup['ref']}; "
                   f"to get them back: {backup['command']}", err=True)
        sys.stderr.flush()

    manifest, blobs_dir = _manifest_for(ctx, source)
    result = _run_with_progress("restoring", lambda p: restore_from_manifest(
        manifest, blobs_dir, target, overwrite=overwrite, delete=delete, link=link, progress=p,
        on_backup=announce))
    if as_json:
        echo_json(result)
    if not result["success"]:
        missing = result["missing_blobs"]
        raise RunicornError(f"{len(missing)} blob(s) missing (e.g. {missing[0]}); nothing was restored "
                            f"to {target}")
    if not as_json:
        extra = ""
        if result["replaced"] or result["unchanged"] or result["removed"]:
            extra = (f" ({result['created']} created, {result['replaced']} replaced, "
                     f"{result['unchanged']} already identical, {result['removed']} removed)")
        click.echo(f"restored {result['restored_count']} files to {result['target_dir']}{extra}")


@click.command()
@click.argument("source", metavar="TREE|MANIFEST")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def export(ctx: click.Context, source: str, out: Path, as_json: bool) -> None:
    """Write a stored tree (by id, id prefix or manifest file) to the archive OUT.

    The extension of OUT picks the format: .zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz,
    .tar.zst.  The archive is reproducible (sorted, mtime 0, owner 0): the same tree
    always gives the same bytes, so its sha256 (printed) can go into a Runicorn.toml.
    """
    from runicorn.artifacts.create import archive_kind, write_archive
    from runicorn.errors import RunicornError
    from runicorn.store.tree import parse_manifest

    kind = archive_kind(out)  # an unknown extension is refused before anything is read
    kind = kind if kind in ("tar", "zip") else f"tar.{kind}"
    manifest, blobs_dir = _manifest_for(ctx, source)
    meta, entries = parse_manifest(manifest.read_bytes(), origin=manifest)

    def blob_path(sha: str) -> Path:
        return blobs_dir / sha[:2] / sha

    missing = sorted({e.sha256 for e in entries.values() if not blob_path(e.sha256).is_file()})
    if missing:
        raise RunicornError(f"{len(missing)} blob(s) missing from {blobs_dir} (e.g. {missing[0]}); "
                            f"{out} was not written")
    from runicorn.errors import DamagedBlobError

    try:
        sha = write_archive(entries, blob_path, out)
    except DamagedBlobError as exc:
        raise RunicornError(f"{exc}; {out} was not written") from None
    result = {"tree": meta["tree"], "path": str(out.absolute()), "format": kind, "sha256": sha,
              "exported_count": len(entries), "total_bytes": sum(e.size for e in entries.values())}
    if as_json:
        echo_json(result)
    else:
        click.echo(f"{sha}  {out}")
        click.echo(f"exported {len(entries)} files of tree {meta['tree'][:16]} as {kind}", err=True)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@_os_errors
def runs(ctx: click.Context, as_json: bool) -> None:
    """List the runs in the storage root."""
    from runicorn.runs.index import list_runs

    rows = list_runs(_store(ctx))
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))
        click.echo(f"{r['run_id']}  {r['status']:<10} {stamp}  {r['path']}")


@click.command("delete-run")
@click.argument("run_id")
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@click.option("--force", is_flag=True, help="Delete the run even if its process is still running.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def delete_run(ctx: click.Context, run_id: str, dry_run: bool, force: bool, as_json: bool) -> None:
    """Delete run RUN_ID and every blob and tree only it used (shared content stays)."""
    from runicorn.assets.cleanup import delete_run_completely
    from runicorn.errors import RunicornError

    result = delete_run_completely(run_id, existing_storage(ctx), dry_run=dry_run,
                                   force=force)
    if as_json:
        echo_json(result)
    if not result["success"]:
        raise RunicornError("; ".join(result["errors"]))
    if not as_json:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} run {run_id}: {result['manifests_deleted']} trees, {result['blobs_deleted']} blobs, "
                   f"{result['bytes_freed']} bytes, {result['outputs_deleted']} run files; "
                   f"{len(result['kept_assets'])} shared asset(s) kept")
