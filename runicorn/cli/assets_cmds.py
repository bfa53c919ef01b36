"""``runicorn snapshot | restore | export | runs | delete-run``: workspace snapshots and runs."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from runicorn.cli.options import existing_storage, storage_from
from runicorn.cli.output import echo_json, echo_table
from runicorn.cli.complete import complete_runs, complete_trees
from runicorn.display import human_size


def _os_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report filesystem errors (permissions, full disk...) as one line, not a traceback."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from runicorn.errors import RunicornError

        try:
            return fn(*args, **kwargs)
        except (RunicornError, BrokenPipeError):
            raise  # (a closed output pipe ends the command quietly, in the group)
        except OSError as exc:
            where = exc.filename or ""
            raise RunicornError(f"{where}: {exc.strerror or exc}" if where else str(exc)) from None

    return wrapper


def _store(ctx: click.Context) -> Any:
    """The existing store (restore, export, runs only read it)."""
    from runicorn.store import open_store

    return open_store(existing_storage(ctx))


def _manifest_for(ctx: click.Context, what: str) -> tuple[Path, Path]:
    """``(manifest, blobs_dir)`` from a manifest file, or a tree id, unique prefix, pin or run
    id (its code snapshot) as ``runicorn show`` takes them.

    A manifest file is checked on its own, so a bad one is named even where no store
    exists (its blobs are then reported missing); a tree id needs the existing store.
    """
    p = Path(what)
    if p.is_file():
        from runicorn.config import resolve_storage_root

        return p, resolve_storage_root(storage_from(ctx)) / "archive" / "blobs"
    from runicorn.errors import AmbiguousPrefixError, TreeNotFoundError
    from runicorn.store.inspect import _tree_of

    store = _store(ctx)
    try:
        return store.manifest_path(_tree_of(store, what)[0]), store.blobs_dir
    except AmbiguousPrefixError:
        raise
    except TreeNotFoundError as exc:
        raise TreeNotFoundError(f"{what}: not a manifest file, and {exc}") from None


def _run_with_progress(label: str, fn: Callable[[Any], Any]) -> Any:
    """``fn(progress)`` with a byte progress bar on a terminal, drawn once work takes a second."""
    from runicorn.display import progress_bar

    bar = progress_bar(label, delay=1.0)
    try:
        return fn(bar)
    finally:
        bar.close()


@click.command()
@click.argument("root", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option(
    "--zip", "out_zip", type=click.Path(dir_okay=False, path_type=Path), help="Also write the snapshot as a zip file."
)
@click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="PATTERN",
    help="Extra gitignore-style pattern to leave out (repeatable).",
)
@click.option("--name", help="Pin the snapshot under this name (see `runicorn ls`, `runicorn show NAME`).")
@click.option("--message", "-m", help="A note stored with the named snapshot.")
@click.option(
    "--force", is_flag=True, help="Ignore the size and file-count limits, and move an existing --name to this snapshot."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def snapshot(
    ctx: click.Context,
    root: Path,
    out_zip: Path | None,
    excludes: tuple[str, ...],
    name: str | None,
    message: str | None,
    force: bool,
    as_json: bool,
) -> None:
    """Capture the workspace ROOT (default: .) into the store and print its tree id.

    Honours .rnignore (created with defaults when missing) and .gitignore files.
    The tree is pinned (as NAME with --name, else under its id); `runicorn unpin`
    lets gc collect it.  The git commit, branch and dirty flag of ROOT are recorded
    when it is a git checkout.
    """
    from runicorn.snapshot.workspace import snapshot_workspace
    from runicorn.errors import RunicornError

    if message is not None and name is None:
        raise RunicornError("--message is stored with a named snapshot: give --name too")
    try:
        result = _run_with_progress(
            "hashing",
            lambda p: snapshot_workspace(
                root,
                out_zip,
                extra_excludes=list(excludes),
                force_snapshot=force,
                storage=storage_from(ctx),
                progress=p,
                name=name,
                message=message,
                force_pin=force,
            ),
        )
    except ValueError as exc:
        from runicorn.errors import RunicornError

        raise RunicornError(str(exc)) from None
    if as_json:
        echo_json(result)
        return
    click.echo(result["tree"])
    extra = f", zip {result['archive_path']}" if result["archive_path"] else ""
    click.echo(
        f"{result['file_count']} files, {human_size(result['total_bytes'])}, "
        f"{result['files_read']} read{extra}; {result['excluded_count']} path(s) excluded by "
        f"the ignore rules; kept as {result['ref']}",
        err=True,
    )
    if result["created_rnignore"]:
        click.echo(
            f"created {Path(result['workspace_root']) / '.rnignore'} with default rules "
            f"(edit it to choose what snapshots leave out)",
            err=True,
        )
    git = result["git"]
    if git is not None:
        click.echo(
            f"git {git['commit'][:12]} on {git['branch'] or '(detached)'}"
            f"{' with uncommitted changes' if git['dirty'] else ''}",
            err=True,
        )


@click.command()
@click.argument("source", metavar="TREE|MANIFEST", shell_complete=complete_trees)
@click.argument("target", type=click.Path(path_type=Path))
@click.option(
    "--overwrite",
    is_flag=True,
    help="TARGET may hold files: replace the paths the tree names (others stay; .git is never "
    "touched). What is replaced is kept in the store first.",
)
@click.option(
    "--delete",
    is_flag=True,
    help="Like --overwrite, and also remove files the tree does not name (outside .git), "
    "after keeping them in the store.",
)
@click.option(
    "--link",
    "link",
    type=click.Choice(["copy", "hardlink", "reflink", "auto"]),
    default="copy",
    show_default=True,
    help="How files are materialised; hardlinked files are read-only and shared.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def restore(
    ctx: click.Context, source: str, target: Path, overwrite: bool, delete: bool, link: str, as_json: bool
) -> None:
    """Recreate a stored tree (by id, id prefix or manifest file) at TARGET.

    A missing or empty TARGET is created all or nothing.  Into a non-empty TARGET,
    --overwrite checks the tree out: only the paths it names change.  Files that are
    replaced (or, with --delete, removed) are first stored under a ref
    restore-backup/<time>-<id>, and the command that puts them back is printed.
    """
    from runicorn.restore.engine import restore_from_manifest
    from runicorn.errors import RunicornError

    from runicorn.display import progress_bar

    bar = progress_bar("restoring", delay=1.0)

    def announce(backup: dict[str, Any]) -> None:
        # Printed before anything in TARGET changes, so it is there even if we are killed;
        # the bar is finished first so that no redraw covers this line.
        bar.close()
        click.echo(
            f"kept {backup['files']} file(s) that will be replaced or removed as {backup['ref']}; "
            f"to get them back: {backup['command']}",
            err=True,
        )
        sys.stderr.flush()

    manifest, blobs_dir = _manifest_for(ctx, source)
    try:
        result = restore_from_manifest(
            manifest, blobs_dir, target, overwrite=overwrite, delete=delete, link=link, progress=bar, on_backup=announce
        )
    finally:
        bar.close()
    if as_json:
        echo_json(result)
    if not result["success"]:
        missing = result["missing_blobs"]
        raise RunicornError(f"{len(missing)} blob(s) missing (e.g. {missing[0]}); nothing was restored to {target}")
    if not as_json:
        extra = ""
        if result["replaced"] or result["unchanged"] or result["removed"]:
            extra = (
                f" ({result['created']} created, {result['replaced']} replaced, "
                f"{result['unchanged']} already identical, {result['removed']} removed)"
            )
        click.echo(f"restored {result['restored_count']} files to {result['target_dir']}{extra}")


@click.command()
@click.argument("source", metavar="TREE|MANIFEST", shell_complete=complete_trees)
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
    from runicorn.restore.source import read_manifest

    kind = archive_kind(out)  # an unknown extension is refused before anything is read
    kind = kind if kind in ("tar", "zip") else f"tar.{kind}"
    manifest, blobs_dir = _manifest_for(ctx, source)
    meta, entries = read_manifest(manifest, blobs_dir)

    def blob_path(sha: str) -> Path:
        return blobs_dir / sha[:2] / sha

    missing = sorted({e.sha256 for e in entries.values() if not blob_path(e.sha256).is_file()})
    if missing:
        raise RunicornError(
            f"{len(missing)} blob(s) missing from {blobs_dir} (e.g. {missing[0]}); {out} was not written"
        )
    from runicorn.errors import DamagedBlobError

    try:
        sha = write_archive(entries, blob_path, out)
    except DamagedBlobError as exc:
        raise RunicornError(f"{exc}; {out} was not written") from None
    result = {
        "tree": meta["tree"],
        "path": str(out.absolute()),
        "format": kind,
        "sha256": sha,
        "exported_count": len(entries),
        "total_bytes": sum(e.size for e in entries.values()),
    }
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
    echo_table(
        ["RUN", "STATUS", "CREATED", "PATH"],
        [
            [r["run_id"], r["status"], time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])), r["path"]]
            for r in rows
        ],
    )


@click.command("delete-run")
@click.argument("run_id", shell_complete=complete_runs)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted; change nothing.")
@click.option("--force", is_flag=True, help="Delete the run even if its process is still running.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@_os_errors
def delete_run(ctx: click.Context, run_id: str, dry_run: bool, force: bool, as_json: bool) -> None:
    """Delete run RUN_ID (an id or unique prefix) and every blob and tree only it used
    (shared content stays)."""
    from runicorn.runs.delete import delete_run_completely
    from runicorn.errors import RunicornError
    from runicorn.store.inspect import resolve_run_id

    root = existing_storage(ctx)
    run_id = resolve_run_id(_store(ctx), run_id)
    result = delete_run_completely(run_id, root, dry_run=dry_run, force=force, list_blobs=as_json)
    if as_json:
        echo_json(result)
    if not result["success"]:
        raise RunicornError("; ".join(result["errors"]))
    if not as_json:
        verb = "would delete" if dry_run else "deleted"
        click.echo(
            f"{verb} run {run_id}: {result['manifests_deleted']} trees, {result['blobs_deleted']} blobs, "
            f"{human_size(result['bytes_freed'])}, {result['outputs_deleted']} run files; "
            f"{len(result['kept_assets'])} shared asset(s) kept"
        )
