"""Artifact commands: bind, unbind, fetch, path, status (``export`` writes archives)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from runicorn.cli.options import existing_storage, storage_from
from runicorn.cli.output import echo_json, echo_table
from runicorn.cli.complete import complete_artifacts
from runicorn.errors import ArtifactError, RunicornError

_TOML_HELP = "Artifacts file (default: Runicorn.toml found upward from the working directory)."
_PLATFORM_HELP = (
    "Target platform instead of the host: a triplet (aarch64-linux-gnu, "
    "x86_64-linux-gnu-libgfortran5-cxx11) or os=linux,arch=aarch64,libc=glibc."
)


def _toml(toml: str | None, *, create: bool = False) -> str:
    from runicorn.artifacts.locate import find_toml, resolve_toml_path

    if toml is not None:
        return resolve_toml_path(toml, None)
    try:
        return find_toml(None)
    except ArtifactError:
        if create:
            return os.path.abspath("Runicorn.toml")
        raise


def _platform(text: str | None) -> dict[str, str] | None:
    from runicorn.artifacts.platform import parse_platform

    return parse_platform(text) if text else None


@click.command()
@click.argument("name")
@click.argument("source")
@click.option(
    "--toml", type=click.Path(dir_okay=False), help="File to write (default: ./Runicorn.toml or the one found upward)."
)
@click.option("--lazy", is_flag=True, help="Install on first use instead of on `runicorn fetch`.")
@click.option("--url", "urls", multiple=True, help="Download URL of the archive (repeatable, tried in order).")
@click.option(
    "--archive",
    "archive_out",
    type=click.Path(dir_okay=False),
    help="Write a reproducible archive of the tree here; --url entries refer to it.",
)
@click.option(
    "--platform", "platform_text", help="Bind a platform variant: a triplet (x86_64-linux-gnu) or os=linux,arch=x86_64."
)
@click.option("--force", is_flag=True, help="Replace an existing binding of NAME (for that platform).")
@click.option(
    "--push",
    "push_remote",
    metavar="REMOTE",
    help="Push the tree to this remote and record it as a download source (no archive needed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def bind(
    ctx: click.Context,
    name: str,
    source: str,
    toml: str | None,
    lazy: bool,
    urls: tuple[str, ...],
    archive_out: str | None,
    platform_text: str | None,
    force: bool,
    push_remote: str | None,
    as_json: bool,
) -> None:
    """Bind NAME to SOURCE: a directory, an archive, or a tree id in the store."""
    from runicorn.artifacts.create import archive_artifact, create_artifact
    from runicorn.artifacts.install import _ingest_source
    from runicorn.artifacts.materialize import materialize
    from runicorn.artifacts.toml_write import bind_artifact
    from runicorn.hashing import sha256_file
    from runicorn.store import open_store

    storage = storage_from(ctx)
    store = open_store(storage)
    src = Path(source)
    archive_src: Path | None = None
    if src.is_dir():
        tree = create_artifact(src=src, storage=storage)
    elif src.is_file():
        tree = _ingest_source(store, src, str(src.absolute()), None, None)
        materialize(store, tree)
        archive_src = src
    else:
        tree = store.resolve_tree(source, hold=True)  # gc must not take it before it is bound
    downloads: list[dict[str, Any]] = []
    if archive_out:
        sha = archive_artifact(tree, archive_out, store=store)
        size = Path(archive_out).stat().st_size
    elif archive_src is not None:
        sha, size = sha256_file(archive_src), archive_src.stat().st_size
    elif urls:
        raise ArtifactError("--url needs --archive OUT (or an archive as SOURCE) so its sha256 is known")
    for u in urls:
        downloads.append({"url": u, "sha256": sha, "size": size})
    if push_remote:
        from runicorn.remotes.push import publish_tree

        downloads.append(publish_tree(store, storage, push_remote, tree, name))
    path = _toml(toml, create=True) if toml is None else os.path.abspath(toml)
    bind_artifact(
        path,
        name,
        tree,
        download_info=downloads,
        lazy=lazy,
        force=force,
        platform=_platform(platform_text),
        storage=storage,
    )
    if as_json:
        echo_json(
            {
                "name": name,
                "tree": tree,
                "toml": path,
                "lazy": lazy,
                "downloads": downloads,
                "archive": os.path.abspath(archive_out) if archive_out else None,
            }
        )
    else:
        click.echo(f"{name} = {tree}  ({path})")


@click.command()
@click.argument("name", shell_complete=complete_artifacts)
@click.option("--toml", type=click.Path(dir_okay=False), help=_TOML_HELP)
@click.option("--platform", "platform_text", help="Remove only this platform variant (a triplet or os=...,arch=...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def unbind(ctx: click.Context, name: str, toml: str | None, platform_text: str | None, as_json: bool) -> None:
    """Remove the binding of NAME."""
    from runicorn.artifacts.toml_write import unbind_artifact

    path = _toml(toml)
    unbind_artifact(path, name, platform=_platform(platform_text), storage=storage_from(ctx))
    if as_json:
        echo_json({"unbound": name, "toml": path, "platform": platform_text})
    else:
        click.echo(f"unbound {name} ({path})")


@click.command()
@click.argument("names", nargs=-1, shell_complete=complete_artifacts)
@click.option("--toml", type=click.Path(dir_okay=False), help=_TOML_HELP)
@click.option("--include-lazy", is_flag=True, help="Also install lazy artifacts.")
@click.option("--platform", "platform_text", help=_PLATFORM_HELP)
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=4, show_default=True, help="Artifacts installed in parallel."
)
@click.option("--accept-new-host-key", is_flag=True, help="Trust (and remember) unknown SSH host keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def fetch(
    ctx: click.Context,
    names: tuple[str, ...],
    toml: str | None,
    include_lazy: bool,
    platform_text: str | None,
    jobs: int,
    accept_new_host_key: bool,
    as_json: bool,
) -> None:
    """Install the artifacts of a Runicorn.toml / Artifacts.toml (all non-lazy ones, or NAMES).

    On a terminal, each artifact has one progress line on stderr while it installs.
    Prints `NAME: DIRECTORY` per artifact; exits 1 when any of them could not be
    installed (each is named on stderr, with the file).
    """
    from concurrent.futures import ThreadPoolExecutor

    from runicorn.artifacts.install import ensure_artifact_installed
    from runicorn.artifacts.toml_read import load_toml, require_entry, select_entry
    from runicorn.display import ProgressLines, human_size

    if accept_new_host_key:
        os.environ["RUNICORN_SSH_ACCEPT_NEW_HOST_KEY"] = "1"
    path = _toml(toml)
    platform = _platform(platform_text)
    storage = storage_from(ctx)
    parsed = load_toml(path)
    if names:
        for n in names:
            require_entry(parsed, n, platform)
        todo = list(dict.fromkeys(names))
    else:
        # Every artifact for this platform, with download sources or not: one bound from a
        # directory is installed from the store, and one that cannot be is an error, not a skip.
        todo = [
            n
            for n in parsed.artifacts
            if (e := select_entry(parsed, n, platform)) is not None and (include_lazy or not e.get("lazy"))
        ]
        if not todo:
            from runicorn.artifacts.install import record_usage
            from runicorn.store import open_store

            record_usage(open_store(storage), path)

    block = ProgressLines()
    width = max((len(n) for n in todo), default=0)
    lines = {n: block.line(f"{n:<{width}}", f"{n:<{width}} waiting") for n in todo}

    def one(n: str) -> tuple[str, str | None, str | None]:
        line = lines[n]
        line.finish("checking")
        try:
            p = ensure_artifact_installed(n, path, platform=platform, progress=line, storage=storage)
        except RunicornError as exc:
            line.finish("failed")
            return n, None, str(exc)
        line.finish(f"installed {human_size(line.done)}" if line.done else "already installed")
        return n, str(p), None

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        results = list(pool.map(one, todo))  # printed after the progress block is complete
    block.close()
    failed = [(n, why) for n, _, why in results if why]
    for n, why in failed:
        click.echo(f"error: {n}: {why}", err=True)
    if as_json:
        echo_json({"toml": path, "artifacts": [{"name": n, "path": where, "error": err} for n, where, err in results]})
    else:
        for n, where, err in results:
            if not err:
                click.echo(f"{n}: {where}")
    if failed:
        ctx.exit(1)


@click.command("path")
@click.argument("name", shell_complete=complete_artifacts)
@click.option("--toml", type=click.Path(dir_okay=False), help=_TOML_HELP)
@click.option("--platform", "platform_text", help=_PLATFORM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def path_cmd(ctx: click.Context, name: str, toml: str | None, platform_text: str | None, as_json: bool) -> None:
    """Print the directory of artifact NAME (installing it first if it is lazy, with a
    progress bar on a terminal)."""
    from runicorn.artifacts.lookup import _artifact_at

    tpath = _toml(toml)
    found = _artifact_at(tpath, name, _platform(platform_text), storage_from(ctx))
    if as_json:
        echo_json({"name": name, "path": str(found), "toml": tpath})
    else:
        click.echo(str(found))


@click.command()
@click.option("--toml", type=click.Path(dir_okay=False), help=_TOML_HELP)
@click.option("--platform", "platform_text", help=_PLATFORM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, toml: str | None, platform_text: str | None, as_json: bool) -> None:
    """List the artifacts of a TOML: name, tree, lazy, installed, size."""
    from runicorn.artifacts.bindings import installed_tree
    from runicorn.artifacts.overrides import load_overrides
    from runicorn.artifacts.toml_read import entry_hash, load_toml, select_entry
    from runicorn.store import open_store

    path = _toml(toml)
    parsed = load_toml(path)
    platform = _platform(platform_text)
    store = open_store(existing_storage(ctx))
    ov = load_overrides(str(store.artifacts_dir))
    rows: list[dict[str, Any]] = []
    for name in parsed.artifacts:
        entry = select_entry(parsed, name, platform)
        if entry is None:
            rows.append(
                {
                    "name": name,
                    "tree": None,
                    "lazy": None,
                    "installed": False,
                    "size": None,
                    "note": "no variant for this platform",
                }
            )
            continue
        h = entry_hash(entry)
        override = ov.get(name) or ov.get(h)
        tree = entry.get("tree-sha256") or installed_tree(store, h)
        size = None
        if tree:
            info = store.tree_info(tree)
            size = info.total_size if info is not None else None
        installed = os.path.isdir(override) if override else installed_tree(store, h) is not None
        row = {"name": name, "tree": h, "lazy": bool(entry.get("lazy", False)), "installed": installed, "size": size}
        if override:
            row["override"] = override
        rows.append(row)
    if as_json:
        echo_json({"toml": path, "artifacts": rows})
        return
    from runicorn.display import human_size

    click.echo(path)
    echo_table(
        ["NAME", "TREE", "LAZY", "STATE", "SIZE"],
        [
            [
                r["name"],
                (r["tree"] or "-")[:12],
                "lazy" if r["lazy"] else "-",
                "installed" if r["installed"] else "missing",
                "-" if r["size"] is None else human_size(r["size"]),
            ]
            for r in rows
        ],
        right=(4,),
    )
