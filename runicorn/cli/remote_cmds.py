"""``runicorn remote add|list|remove|gc|verify``, ``runicorn push`` and ``runicorn pull``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

from runicorn.cli.options import parse_duration, storage_from
from runicorn.cli.output import echo_json
from runicorn.cli.complete import complete_trees

_REMOTE_HELP = "Remote name (see `runicorn remote list`) or URL; default: the default remote."
_JOBS_HELP = "Concurrent transfers."


def _root(ctx: click.Context) -> Path:
    from runicorn.config import resolve_storage_root

    return Path(resolve_storage_root(storage_from(ctx)))


def _open(ctx: click.Context, name: str | None) -> tuple[Any, Any]:
    from runicorn.remotes.config import open_backend, resolve_remote

    remote = resolve_remote(_root(ctx), name)
    return remote, open_backend(remote)


def _progress(label: str) -> Any:
    from runicorn.display import progress_bar

    return progress_bar(label)


def _report_refs(report: dict[str, Any]) -> None:
    for row in report["refs"]:
        line = f"{row['status']:<9} {row['ref']}  {row['tree'][:12]}"
        if row.get("run"):
            line += f"  ({row['run']})"
        click.echo(line)
        if row.get("detail"):
            click.echo(f"  {row['detail']}", err=True)


def _run_on_remote(
    ctx: click.Context,
    remote_name: str | None,
    as_json: bool,
    run: Callable[[Any, Any, Any], dict[str, Any]],
    render: Callable[[dict[str, Any]], None],
    *,
    progress: str | None = None,
) -> None:
    """Open the remote, ``run(remote, backend, bar)`` (a byte progress bar when ``progress``
    names the verb), close it; print the report as JSON or through ``render``; exit 1
    when the report is not ``ok``."""
    remote_, backend = _open(ctx, remote_name)
    bar = _progress(f"{progress} {remote_.name}") if progress else None
    try:
        report = run(remote_, backend, bar)
    finally:
        if bar is not None:
            bar.close()
        backend.close()
    if as_json:
        echo_json(report)
    else:
        render(report)
    if not report.get("ok", True):
        ctx.exit(1)


def _transfer_summary(summary: str) -> Callable[[dict[str, Any]], None]:
    def render(report: dict[str, Any]) -> None:
        _report_refs(report)
        resumed = report.get("bytes_resumed")  # a push that continued interrupted uploads
        click.echo(
            summary.format(
                **report, resumed=f"; {resumed} bytes were already there from an interrupted push" if resumed else ""
            )
        )

    return render


@click.group("remote")
def remote() -> None:
    """Manage team remotes (S3 buckets, shared directories, SFTP servers)."""


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--default", "make_default", is_flag=True, help="Use this remote when --remote is not given.")
@click.option("--endpoint", help="S3 endpoint URL for non-AWS stores (SeaweedFS, MinIO, R2, Ceph).")
@click.option("--region", help="S3 region (default: $AWS_REGION or the AWS config).")
@click.option(
    "--project",
    "project",
    is_flag=True,
    help="Record it in ./runicorn-remotes.toml (committed with the project) instead of the store.",
)
@click.option("--force", is_flag=True, help="Replace an existing remote of this name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def add(
    ctx: click.Context,
    name: str,
    url: str,
    make_default: bool,
    endpoint: str | None,
    region: str | None,
    project: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Add remote NAME at URL: s3://BUCKET/PREFIX, file:///PATH (or a path), sftp://[USER@]HOST[:PORT]/PATH.

    The remote is probed first: it must refuse a second create-only write of one key.
    """
    from runicorn.remotes.config import (
        PROJECT_FILE,
        Remote,
        add_remote,
        canonical_url,
        open_backend,
        project_file,
        store_file,
    )
    from runicorn.remotes.maintenance import probe

    candidate = Remote(name, canonical_url(url), endpoint, region)
    backend = open_backend(candidate)
    try:
        probe(backend)
    finally:
        backend.close()
    path = (project_file() or Path.cwd() / PROJECT_FILE) if project else store_file(_root(ctx))
    r = add_remote(path, name, url, endpoint=endpoint, region=region, default=make_default, force=force)
    if as_json:
        echo_json({"name": r.name, "url": r.url, "endpoint": r.endpoint, "default": r.default, "file": str(path)})
    else:
        click.echo(f"added {r.name} = {r.url}{' (default)' if r.default else ''}  ({path})")


@remote.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """List remotes (this store's, then the project's runicorn-remotes.toml)."""
    from runicorn.remotes.config import list_remotes

    rows = list_remotes(_root(ctx))
    if as_json:
        echo_json(
            [
                {"name": r.name, "url": r.url, "endpoint": r.endpoint, "default": r.default, "file": r.source}
                for r in rows
            ]
        )
        return
    for r in rows:
        extra = f"  endpoint={r.endpoint}" if r.endpoint else ""
        click.echo(f"{r.name:<12} {r.url}{extra}{'  (default)' if r.default else ''}")


@remote.command("remove")
@click.argument("name")
@click.option("--project", "project", is_flag=True, help="Remove it from the project's runicorn-remotes.toml.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def remove(ctx: click.Context, name: str, project: bool, as_json: bool) -> None:
    """Forget remote NAME (nothing on the remote is deleted)."""
    from runicorn.remotes.config import project_file, remove_remote, resolve_remote, store_file
    from runicorn.remotes.errors import RemoteError
    from runicorn.store import open_store
    from runicorn.store.remote_cache import RemoteCache

    root = _root(ctx)
    r = resolve_remote(root, name)
    path = project_file() if project else store_file(root)
    if path is None or not remove_remote(path, name):
        raise RemoteError(
            f"remote {name!r} is not in {path or 'a project runicorn-remotes.toml'}"
            + ("" if project else f" (it is defined in {r.source}; use --project)")
        )
    RemoteCache(open_store(storage_from(ctx)), r.identity).forget()
    if as_json:
        echo_json({"removed": name, "url": r.url, "file": str(path)})
    else:
        click.echo(f"removed {name}")


@remote.command("gc")
@click.argument("name", required=False)
@click.option("--dry-run", is_flag=True, help="List exactly what a real run deletes; delete nothing.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Keep unreferenced objects younger than this (protects pushes in flight).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def gc_cmd(ctx: click.Context, name: str | None, dry_run: bool, grace: str, as_json: bool) -> None:
    """Delete what no ref on remote NAME reaches (under the remote's exclusive lock)."""
    from runicorn.remotes.maintenance import gc

    grace_s = parse_duration(grace)

    def render(report: dict[str, Any]) -> None:
        verb = "would delete" if dry_run else "deleted"
        click.echo(
            f"{verb} {report['trees_deleted']} manifest(s) and {report['blobs_deleted']} blob(s), "
            f"{report['bytes_freed']} bytes; kept {report['trees_kept']} tree(s) named by "
            f"{report['refs']} ref(s)"
            + (
                f"; {'would abort' if dry_run else 'aborted'} {report['uploads_aborted']} unfinished upload(s)"
                if report["uploads_aborted"]
                else ""
            )
        )
        if dry_run:
            for k in report["keys"] + report["uploads"]:
                click.echo(f"  {k}")

    _run_on_remote(ctx, name, as_json, lambda r, b, _: gc(b, grace_seconds=grace_s, dry_run=dry_run), render)


@remote.command("verify")
@click.argument("name", required=False)
@click.option("--deep", is_flag=True, help="Download and re-hash every blob.")
@click.option("-j", "--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help=_JOBS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify_cmd(ctx: click.Context, name: str | None, deep: bool, jobs: int, as_json: bool) -> None:
    """Check remote NAME: every ref's manifest and every manifest's blobs. Exits 1 on problems."""
    from runicorn.remotes.maintenance import verify

    def render(report: dict[str, Any]) -> None:
        for p in report["problems"]:
            click.echo(p)
        click.echo(
            f"checked {report['refs_checked']} refs, {report['trees_checked']} trees, "
            f"{report['blobs_checked']} blobs{' (deep)' if deep else ''}: {len(report['problems'])} problem(s)"
        )

    _run_on_remote(ctx, name, as_json, lambda r, b, _: verify(b, deep=deep, jobs=jobs), render)


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_trees)
@click.option("--remote", "remote_name", help=_REMOTE_HELP)
@click.option("--artifacts", is_flag=True, help="Push every tree bound as an artifact in this store.")
@click.option("--all", "everything", is_flag=True, help="Push every pin, run and bound artifact.")
@click.option("--force", is_flag=True, help="Overwrite remote refs that moved since this store saw them.")
@click.option("-j", "--jobs", default=32, show_default=True, type=click.IntRange(1, 64), help=_JOBS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def push(
    ctx: click.Context,
    targets: tuple[str, ...],
    remote_name: str | None,
    artifacts: bool,
    everything: bool,
    force: bool,
    jobs: int,
    as_json: bool,
) -> None:
    """Push TREE | PIN | RUN_ID ... to a remote: only what it lacks, leaves before roots.

    A remote ref someone else moved is reported as a conflict (exit 1) unless --force.
    """
    from runicorn.remotes.errors import RemoteError
    from runicorn.remotes.push import push as do_push
    from runicorn.remotes.push import resolve_specs
    from runicorn.store import open_store

    if not targets and not artifacts and not everything:
        raise RemoteError("nothing to push: give TREE, PIN or RUN_ID arguments, --artifacts or --all")
    from runicorn.remotes.config import resolve_remote

    resolve_remote(_root(ctx), remote_name)  # a missing remote is the first thing to say
    store = open_store(storage_from(ctx))
    specs = resolve_specs(store, targets, artifacts=artifacts, everything=everything)
    _run_on_remote(
        ctx,
        remote_name,
        as_json,
        lambda r, b, bar: do_push(store, r, b, specs, force=force, jobs=jobs, progress=bar),
        _transfer_summary(
            "sent {blobs_uploaded} blob(s) ({bytes_uploaded} bytes{resumed}) and "
            "{manifests_uploaded} manifest(s) to {remote}"
        ),
        progress="push",
    )


@click.command()
@click.argument("targets", nargs=-1, shell_complete=complete_trees)
@click.option("--remote", "remote_name", help=_REMOTE_HELP)
@click.option("--all", "everything", is_flag=True, help="Pull every ref on the remote.")
@click.option("--force", is_flag=True, help="Replace local refs (and run directories) that differ.")
@click.option("-j", "--jobs", default=8, show_default=True, type=click.IntRange(1, 64), help=_JOBS_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pull(
    ctx: click.Context,
    targets: tuple[str, ...],
    remote_name: str | None,
    everything: bool,
    force: bool,
    jobs: int,
    as_json: bool,
) -> None:
    """Pull TREE | PIN | RUN_ID ... from a remote; every blob is verified before it is stored."""
    from runicorn.remotes.errors import RemoteError
    from runicorn.remotes.pull import pull as do_pull
    from runicorn.store import open_store

    if not targets and not everything:
        raise RemoteError("nothing to pull: give TREE, PIN or RUN_ID arguments, or --all")
    store = open_store(storage_from(ctx))
    _run_on_remote(
        ctx,
        remote_name,
        as_json,
        lambda r, b, bar: do_pull(store, r, b, targets, everything=everything, force=force, jobs=jobs, progress=bar),
        _transfer_summary("received {blobs_downloaded} blob(s) ({bytes_downloaded} bytes) from {remote}"),
        progress="pull",
    )
