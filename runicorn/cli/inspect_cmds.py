"""``runicorn ls | show | diff | du``: seeing what the store holds (read only)."""

from __future__ import annotations

import time
from typing import Any, Sequence

import click

from runicorn.cli.options import existing_storage
from runicorn.cli.output import echo_json, echo_table
from runicorn.cli.complete import complete_trees
from runicorn.display import human_size as _human


def _store(ctx: click.Context) -> Any:
    """The existing store: these commands never create one."""
    from runicorn.store import Store

    return Store.open(existing_storage(ctx))


def _date(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "-"


_table = echo_table


@click.command("ls")
@click.argument("spec", required=False, metavar="[TREE[:PATH]]", shell_complete=complete_trees)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def ls(ctx: click.Context, spec: str | None, as_json: bool) -> None:
    """List snapshots, pins, runs and artifacts, newest first; or the files of a tree.

    Without TREE: date, type, name, source, file count and size of everything the store
    keeps.  With TREE[:PATH] (a tree id or unique prefix, a pin, a run id or a ref
    kind/name): its files as `git ls-tree -r -l` prints them (mode, sha256, size, path),
    only below PATH when given.
    """
    with _store(ctx) as store:
        data = store.ls(spec)
    if as_json:
        echo_json(data)
        return
    if spec is not None:
        width = max((len(str(e["size"])) for e in data["entries"]), default=1)
        for e in data["entries"]:
            click.echo(f"{e['mode']} blob {e['sha256']} {e['size']:>{width}}\t{e['path']}")
        return
    if not data:
        click.echo("the store keeps nothing yet (`runicorn snapshot .` captures a directory)", err=True)
        return
    rows = [
        [_date(i["date"]), i["type"], _short(i), str(i["file_count"]), _human(i["size"]), i["source"] or "-"]
        for i in data
    ]
    _table(["DATE", "TYPE", "NAME", "FILES", "SIZE", "SOURCE"], rows, right=(3, 4))


def _short(item: dict[str, Any]) -> str:
    """A name to show: snapshots pinned under their tree id show 12 digits of it."""
    name = str(item["name"])
    return name[:12] if item["type"] == "snapshot" and len(name) == 64 else name


@click.command("show")
@click.argument("spec", metavar="TREE|PIN|RUN_ID", shell_complete=complete_trees)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx: click.Context, spec: str, as_json: bool) -> None:
    """Show what TREE, PIN or RUN_ID (or an artifact name) is, where it came from and what
    references it.

    For a run: its directory, status, code snapshot, archives and inputs, and the kept
    versions of its rolling outputs.  Ids may be unique prefixes.
    """
    with _store(ctx) as store:
        data = store.show(spec)
    if as_json:
        echo_json(data)
        return
    if data["type"] == "run":
        _print_run(data)
        return
    head = f"{data['type']} {data['name']}" if data["type"] != "tree" else "tree"
    click.echo(f"{head}" + (f" -> tree {data['tree']}" if data["type"] != "tree" else f" {data['tree']}"))
    click.echo(f"files:    {data['file_count']} ({_human(data['size'])})")
    click.echo(f"stored:   {_date(data['created_at'])}")
    click.echo(f"source:   {data['source'] or '-'}")
    if not data["referenced_by"]:
        click.echo("referenced by: nothing (gc collects it once the grace period has passed)")
        return
    click.echo("referenced by:")
    for r in data["referenced_by"]:
        click.echo(f"  {r['ref']}  ({_date(r['created_at'])})")


def _print_run(data: dict[str, Any]) -> None:
    meta = data["meta"]
    click.echo(f"run {data['run_id']}")
    click.echo(f"path:     {meta.get('path', '-')}")
    click.echo(f"status:   {data['status']}")
    click.echo(f"created:  {_date(data['created_at'])}")
    click.echo(f"dir:      {data['run_dir'] or '- (deleted)'}")
    if meta.get("git"):
        click.echo(f"git:      {meta['git']}")
    click.echo(f"size:     {_human(data['size'])} in its trees")
    if data["trees"]:
        click.echo("trees:")
        rows = [[t["role"], t["tree"][:12], str(t["file_count"]), _human(t["size"]), t["ref"]] for t in data["trees"]]
        _indent_table(["ROLE", "TREE", "FILES", "SIZE", "REF"], rows, right=(2, 3))
    if data["inputs"]:
        click.echo("inputs:")
        for i in data["inputs"]:
            click.echo(f"  {i.get('name')}  {str(i.get('tree'))[:12]}")
    if data["outputs"]:
        click.echo("rolling outputs:")
        rows = []
        for name, versions in sorted(data["outputs"].items()):
            for v in versions:
                value = "-" if v["value"] is None else f"{v['metric']}={v['value']:g}"
                rows.append([name, str(v["version"]), v["tree"][:12], _human(v["size"]), value, _date(v["saved_at"])])
        _indent_table(["OUTPUT", "VERSION", "TREE", "SIZE", "METRIC", "SAVED"], rows, right=(1, 3))


def _indent_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    _table(["  " + headers[0], *headers[1:]], [["  " + r[0], *r[1:]] for r in rows], right)


_LABELS = {"added": "added", "deleted": "deleted", "modified": "modified", "mode_changed": "mode"}


@click.command("diff")
@click.argument("a", metavar="A", shell_complete=complete_trees)
@click.argument("b", metavar="B", shell_complete=complete_trees)
@click.option("--stat", "as_stat", is_flag=True, help="Sizes per path and a summary line.")
@click.option(
    "--all",
    "all_files",
    is_flag=True,
    help="Compare every file of a directory, not what a snapshot of it would capture.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def diff(ctx: click.Context, a: str, b: str, as_stat: bool, all_files: bool, as_json: bool) -> None:
    """Show paths added, modified, deleted or mode-changed from A to B.

    A and B are trees (id or unique prefix, pin, run id, ref kind/name) or directories.
    A directory with a .rnignore (a workspace you snapshot) counts as `runicorn snapshot`
    would capture it now; one without (or with --all) counts every file, as
    `runicorn restore` writes a tree.  Exits 0 whether or not they differ.
    """
    with _store(ctx) as store:
        data = store.diff(a, b, all_files=all_files)
    if as_json:
        echo_json(data)
        return
    rows: list[tuple[str, str, str]] = []
    for e in data["added"]:
        rows.append((e["path"], "added", f"+{_human(e['size'])}"))
    for e in data["deleted"]:
        rows.append((e["path"], "deleted", f"-{_human(e['size'])}"))
    for e in data["modified"]:
        extra = f", mode {e['old_mode']} -> {e['new_mode']}" if e["old_mode"] != e["new_mode"] else ""
        rows.append((e["path"], "modified", f"{_human(e['old_size'])} -> {_human(e['new_size'])}{extra}"))
    for e in data["mode_changed"]:
        rows.append((e["path"], "mode", f"{e['old_mode']} -> {e['new_mode']}"))
    rows.sort()
    s = data["stat"]
    if as_stat:
        width = max((len(p) for p, _, _ in rows), default=0)
        for path, kind, detail in rows:
            click.echo(f" {path:<{width}} | {kind:<8} {detail}")
    else:
        for path, kind, _ in rows:
            click.echo(f"{kind:<9} {path}")
    if as_stat or not rows:
        changed = s["added"] + s["deleted"] + s["modified"] + s["mode_changed"]
        click.echo(
            f"{changed} path(s) changed: {s['added']} added, {s['modified']} modified, "
            f"{s['deleted']} deleted, {s['mode_changed']} mode changed; "
            f"+{_human(s['bytes_added'])}, -{_human(s['bytes_removed'])}",
            err=not as_stat,
        )


@click.command("du")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def du(ctx: click.Context, as_json: bool) -> None:
    """Show stored bytes per run, pin, snapshot and artifact, unique vs shared.

    UNIQUE is what only that entry uses (what deleting it alone could free), SHARED what
    it shares with others.  The unique bytes of every entry, plus the bytes shared
    between entries and the unreferenced bytes, add up to the store's total (`stats`).
    """
    with _store(ctx) as store:
        data = store.du()
    if as_json:
        echo_json(data)
        return
    rows = [
        [o["type"], _short(o), str(o["trees"]), _human(o["size"]), _human(o["unique"]), _human(o["shared"])]
        for o in data["owners"]
    ]
    if rows:
        _table(["TYPE", "NAME", "TREES", "SIZE", "UNIQUE", "SHARED"], rows, right=(2, 3, 4, 5))
        click.echo("")
    unique = sum(o["unique"] for o in data["owners"])
    click.echo(f"unique to one entry:   {_human(unique)}")
    click.echo(f"shared by several:     {_human(data['shared_bytes'])} ({data['shared_blobs']} blob(s))")
    click.echo(
        f"unreferenced:          {_human(data['unreferenced_bytes'])} ({data['unreferenced_blobs']} "
        f"blob(s); `runicorn gc` frees them)"
    )
    click.echo(f"total stored:          {_human(data['total_bytes'])} in {data['blob_count']} blob(s)")
