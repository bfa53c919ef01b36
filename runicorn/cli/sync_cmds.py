"""``runicorn generate-manifest`` (server side) and ``runicorn sync`` (client side)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from runicorn.display import human_size
from runicorn.errors import RunicornError


@click.command("generate-manifest")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Experiment root to scan.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Manifest path (default: <root>/.runicorn/<type>_manifest.json).",
)
@click.option("--active", "mode", flag_value="active", help="Only runs active recently.")
@click.option("--full", "mode", flag_value="full", default=True, help="All runs (default).")
@click.option(
    "--active-window",
    type=click.IntRange(min=1),
    default=3600,
    show_default=True,
    help="Seconds a run counts as active after its last write.",
)
@click.option("--no-incremental", is_flag=True, help="Re-read every run instead of reusing the scan cache.")
@click.option("--verbose", is_flag=True, help="Debug logging; list every skipped run and file.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def generate_manifest(
    root: Path, output: Path | None, mode: str, active_window: int, no_incremental: bool, verbose: bool, as_json: bool
) -> None:
    """Write a sync manifest describing every run under ROOT (exit 0 ok, 1 error, 130 Ctrl+C)."""
    from runicorn.sync.manifest import ManifestType
    from runicorn.sync.server.generator import ManifestGenerator

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    gen = ManifestGenerator(remote_root=root, active_window_seconds=active_window, incremental=not no_incremental)
    try:
        manifest, path = gen.generate(ManifestType(mode), output_path=output)
    except OSError as exc:
        raise RunicornError(f"cannot write manifest: {exc}") from None
    if as_json:
        from runicorn.cli.output import echo_json

        echo_json(
            {
                "type": manifest.manifest_type.value,
                "path": str(path),
                "compressed": f"{path}.gz",
                "revision": manifest.revision,
                "snapshot_id": manifest.snapshot_id,
                "experiments": manifest.total_experiments,
                "files": manifest.total_files,
                "total_bytes": manifest.total_bytes,
                "skipped_runs": [{"run": r, "why": w} for r, w in gen.skipped_runs],
                "skipped_files": [{"file": f, "why": w} for f, w in gen.skipped_files],
            }
        )
        return
    bar = "=" * 60
    click.echo(
        "\n".join(
            [
                bar,
                "Manifest Generation Complete",
                bar,
                f"Type:          {manifest.manifest_type.value}",
                f"Output:        {path}",
                f"Compressed:    {path}.gz",
                f"Revision:      {manifest.revision}",
                f"Snapshot ID:   {manifest.snapshot_id}",
                f"Experiments:   {manifest.total_experiments}",
                f"Files:         {manifest.total_files}",
                f"Total Size:    {human_size(manifest.total_bytes)}",
                f"Skipped:       {len(gen.skipped_runs)} runs, {len(gen.skipped_files)} files"
                " (names or metadata the manifest format cannot represent)",
                bar,
            ]
        )
    )
    if verbose:
        for real, why in gen.skipped_runs:
            click.echo(f"skipped run  {real!r}: {why}")
        for real, why in gen.skipped_files:
            click.echo(f"skipped file {real!r}: {why}")


class _Progress:
    """A one-line progress display on a TTY; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, done: int, total: int, current: str) -> None:
        if self.enabled:
            pct = 100.0 * done / total if total else 100.0
            tail = current[-50:]
            sys.stderr.write(f"\r[{done}/{total}] {pct:5.1f}% {tail:<50}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()


@click.command("sync")
@click.argument("target")
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Local directory (default: the storage root).",
)
@click.option(
    "--identity",
    "-i",
    type=click.Path(dir_okay=False),
    default=None,
    help="Private key file (default: ~/.ssh/config, then the usual keys).",
)
@click.option(
    "--workers", type=click.IntRange(1, 16), default=4, show_default=True, help="Parallel SFTP channels for downloads."
)
@click.option(
    "--jitter",
    type=click.FloatRange(0, 300),
    default=0.0,
    show_default=True,
    help="Wait up to this many random seconds first (spreads many clients).",
)
@click.option(
    "--accept-new-host-key",
    is_flag=True,
    help="Trust and remember an unknown host key (a changed key is always refused).",
)
@click.option("--legacy", is_flag=True, help="Skip the manifest and walk the remote runs.")
@click.option("--json", "as_json", is_flag=True, help="Print statistics as JSON.")
@click.pass_context
def sync(
    ctx: click.Context,
    target: str,
    cache: Path | None,
    identity: str | None,
    workers: int,
    jitter: float,
    accept_new_host_key: bool,
    legacy: bool,
    as_json: bool,
) -> None:
    """Sync runs from TARGET = [USER@]HOST[:PORT]:REMOTE_ROOT into the local store."""
    from runicorn.cli.options import storage_from
    from runicorn.cli.output import echo_json
    from runicorn.sync.client.local_cache import LocalCacheManager
    from runicorn.sync.client.service import RunSyncService
    from runicorn.ssh import connect, parse_target

    tgt = parse_target(target)
    manager = LocalCacheManager(root_dir=cache if cache is not None else storage_from(ctx))
    import paramiko

    client = connect(tgt.host, tgt.port, tgt.user, identity=identity, accept_new_host_key=accept_new_host_key)
    try:
        sftp = client.open_sftp()
        service = RunSyncService(
            client, sftp, tgt.path, manager, use_manifest_sync=not legacy, manifest_sync_jitter=jitter
        )
        service.max_workers = workers
        stats: dict[str, Any] = service.run(_Progress(sys.stderr.isatty() and not as_json))
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise RunicornError(f"sync from {tgt.host}:{tgt.path} failed: {exc}") from None
    finally:
        client.close()
    stats["cache"] = str(manager.root_dir)
    if as_json:
        echo_json(stats)
    else:
        if stats.get("skipped"):
            click.echo(f"Up to date: {stats['reason']}")
        click.echo(
            f"Method: {stats['method']}  revision: {stats['manifest_revision']}\n"
            f"Files synced: {stats['files_synced']} (full {stats['full_count']}, "
            f"incremental {stats['incremental_count']}, failed {stats['failed_count']}, "
            f"deleted {stats['files_deleted']})\n"
            f"Downloaded: {human_size(stats['bytes_downloaded'])} in {stats['sftp_requests']} "
            f"SFTP operations, {stats['duration']:.2f}s\n"
            f"Cache: {stats['cache']}"
        )
    conflicts = stats.get("conflicts") or []
    if conflicts and not as_json:
        # Local runs and files sync did not write are never replaced or deleted: say so.
        for line in conflicts[:10]:
            click.echo(f"left alone: {line}", err=True)
        if len(conflicts) > 10:
            click.echo(f"left alone: ... and {len(conflicts) - 10} more (see --json)", err=True)
    if stats["failed_count"]:
        raise RunicornError(f"{stats['failed_count']} file(s) failed to sync; run again to retry")
