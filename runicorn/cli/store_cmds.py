"""``runicorn stats | verify | gc | pin | unpin | refs``: looking after the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from runicorn.cli.options import existing_storage, parse_duration
from runicorn.cli.output import echo_json, echo_table
from runicorn.cli.complete import complete_pins, complete_trees
from runicorn.display import human_size


def _store(ctx: click.Context):
    """The existing store: none of these commands creates one."""
    from runicorn.store import Store

    return Store.open(existing_storage(ctx))


def _clock(t: float) -> str:
    """A local time, with the date only when it is not today."""
    import time

    lt = time.localtime(t)
    same_day = time.localtime()[:3] == lt[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", lt)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Show blob, tree and ref counts and sizes (from the index)."""
    with _store(ctx) as store:
        data = store.stats()
    if as_json:
        echo_json(data)
        return
    click.echo(f"storage root:        {data['storage_root']}")
    click.echo(f"blobs:               {data['blob_count']} ({human_size(data['total_size_bytes'])})")
    click.echo(f"trees:               {data['tree_count']}")
    click.echo(f"refs:                {data['ref_count']}")
    click.echo(
        f"unreferenced blobs:  {data['unreferenced_blob_count']} ({human_size(data['unreferenced_blob_bytes'])})"
    )
    click.echo(f"unreferenced trees:  {data['unreferenced_tree_count']}")


@click.command()
@click.option("--deep", is_flag=True, help="Re-hash every blob.")
@click.option("--repair", is_flag=True, help="Rebuild the index from the files on disk, then verify again.")
@click.option(
    "--from",
    "sources",
    multiple=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="With --repair: store again lost, quarantined or (with --deep) corrupt blobs from files "
    "in DIR whose bytes hash to them (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def verify(ctx: click.Context, deep: bool, repair: bool, sources: tuple[Path, ...], as_json: bool) -> None:
    """Check that every indexed blob, manifest and ref is intact (fsck).

    With --repair --from DIR, blobs the trees need and the store lacks are taken from
    DIR (a workspace, a restored copy, a backup): every file there of a wanted size is
    hashed, and only bytes with the right SHA-256 enter the store.

    Exits 1 when problems remain.
    """
    from runicorn.errors import RunicornError

    if sources and not repair:
        raise RunicornError("--from heals blobs during a repair: use it with --repair")
    with _store(ctx) as store:
        before = store.verify(deep=deep)
        repaired = None
        after = before
        if repair and not before["ok"]:
            repaired = store.rebuild_index(deep=deep, heal_from=list(sources) if sources else None)
            after = store.verify(deep=deep)
    if as_json:
        echo_json({"before": before, "repair": repaired, "after": after} if repair else before)
    else:
        for line in before.get("recovered", []):
            click.echo(f"recovered: {line}")
        for p in before["problems"]:
            click.echo(f"{p['kind']}: {p['detail']}")
        click.echo(
            f"checked {before['blobs_checked']} blobs, {before['trees_checked']} trees, "
            f"{before['refs_checked']} refs{' (deep)' if deep else ''}: "
            f"{len(before['problems'])} problem(s)"
        )
        if repaired is not None:
            click.echo(
                f"repair: rebuilt index from {repaired['blobs']} blobs, {repaired['trees']} trees, "
                f"{repaired['refs']} refs; quarantined {len(repaired['quarantined'])} file(s)"
            )
            for note in repaired["notes"]:
                click.echo(f"repair: {note}")
            heal = repaired.get("heal")
            if heal is not None:
                click.echo(
                    f"repair: healed {len(heal['healed'])} of {heal['wanted']} missing blob(s) from "
                    f"{', '.join(map(str, sources))} (hashed {heal['files_hashed']} candidate file(s))"
                )
                if heal["still_missing"]:
                    click.echo(
                        f"repair: {len(heal['still_missing'])} blob(s) not found there, e.g. {heal['still_missing'][0]}"
                    )
            for p in after["problems"]:
                click.echo(f"still: {p['kind']}: {p['detail']}")
            click.echo(f"after repair: {len(after['problems'])} problem(s)")
    if not after["ok"]:
        ctx.exit(1)


@click.command()
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@click.option(
    "--grace",
    default="1h",
    show_default=True,
    help="Keep unreferenced content younger than this (e.g. 0, 30m, 2h, 7d).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("-v", "--verbose", is_flag=True, help="List every id.")
@click.option(
    "--keep-missing-toml",
    "keep_missing",
    metavar="DURATION",
    help="Keep the bindings of a recorded Runicorn.toml that is missing (another branch checked "
    "out, a moved project) for this long after gc first finds it missing "
    "[default: $RUNICORN_KEEP_MISSING_TOML, else 30d].",
)
@click.pass_context
def gc(ctx: click.Context, dry_run: bool, grace: str, as_json: bool, verbose: bool, keep_missing: str | None) -> None:
    """Delete trees no ref keeps and blobs no tree uses, and the installed artifact
    folders of the trees it deletes.

    Roots are refs: pins, runs' snapshots and archives, and artifacts bound in any
    Runicorn.toml recorded in the usage log that exists (or has been missing for less
    than --keep-missing-toml).
    """
    grace_s = parse_duration(grace)
    keep_s = None if keep_missing is None else parse_duration(keep_missing)
    with _store(ctx) as store:
        # The ids are listed only where they are printed: held for nothing, a million of
        # them would be most of the memory a gc of a million blobs needs.
        report = store.gc(
            grace_seconds=grace_s, dry_run=dry_run, keep_missing_toml=keep_s, list_blobs=as_json or verbose or dry_run
        )
    for w in report["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if as_json:
        echo_json(report)
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(
        f"{verb} {report['trees_deleted']} tree(s) and {report['blobs_deleted']} blob(s), "
        f"{human_size(report['bytes_freed'])}"
    )
    w = report["waiting"]
    if w["trees"] or w["blobs"]:
        when = (
            _clock(w["first_at"])
            if w["last_at"] - w["first_at"] < 60
            else f"{_clock(w['first_at'])} (all by {_clock(w['last_at'])})"
        )
        click.echo(
            f"kept by the grace period ({grace}): {w['trees']} tree(s) and {w['blobs']} blob(s), "
            f"{human_size(w['bytes'])}, unreferenced but used within it; collectable from {when} "
            f"(or now with --grace 0)"
        )
    if (verbose or dry_run) and (report["tree_ids"] or report["blob_ids"]):
        # One write: a dry run listing 100,000 blobs line by line spends seconds in echo.
        click.echo("\n".join([f"  tree {t}" for t in report["tree_ids"]] + [f"  blob {b}" for b in report["blob_ids"]]))


@click.command()
@click.argument("tree", shell_complete=complete_trees)
@click.option("--name", help="Pin name (default: the tree id).")
@click.option("--force", is_flag=True, help="Move an existing pin NAME that names another tree.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def pin(ctx: click.Context, tree: str, name: str | None, force: bool, as_json: bool) -> None:
    """Keep TREE (an id or unique prefix, or a pin name) alive across gc."""
    with _store(ctx) as store:
        existing = store.get_ref("pin", tree)
        target = existing.tree if existing is not None else store.resolve_tree(tree, hold=True)
        ref = store.pin(target, name, force=force)
    if as_json:
        echo_json(_ref_dict(ref))
    else:
        click.echo(f"pinned {ref.tree} as pin/{ref.name}")


@click.command()
@click.argument("name", shell_complete=complete_pins)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def unpin(ctx: click.Context, name: str, as_json: bool) -> None:
    """Remove a pin (by pin name, tree id or unique tree prefix)."""
    from runicorn.errors import RefError
    from runicorn.names import did_you_mean, unique_prefix

    with _store(ctx) as store:
        pins = store.list_refs("pin")
        ref = store.get_ref("pin", name)
        if ref is None:
            by_tree = {r.tree: r for r in pins}
            tree = unique_prefix(name.lower(), by_tree, what="tree") if len(name) >= 6 else None
            if tree is None:
                raise RefError(f"no pin named {name!r}{did_you_mean(name, [r.name for r in pins])}")
            ref = by_tree[tree]
        store.unpin(ref.name)
    if as_json:
        echo_json({"unpinned": ref.name, "tree": ref.tree})
    else:
        click.echo(f"unpinned {ref.name} (tree {ref.tree[:12]})")


def _ref_dict(r: Any) -> dict[str, Any]:
    return {"kind": r.kind, "name": r.name, "tree": r.tree, "created_at": r.created_at, "meta": r.meta}


@click.command()
@click.option("--kind", help="Only refs of this kind.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def refs(ctx: click.Context, kind: str | None, as_json: bool) -> None:
    """List refs (the roots gc keeps)."""
    with _store(ctx) as store:
        items = store.list_refs(kind)
    if as_json:
        echo_json([_ref_dict(r) for r in items])
        return
    echo_table(
        ["KIND", "TREE", "CREATED", "NAME"], [[r.kind, r.tree[:12], _clock(r.created_at), r.name] for r in items]
    )
