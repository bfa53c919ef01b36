"""Shell completion of the names a user types: artifact names, pins and run ids.

click's own completion (``_RUNICORN_COMPLETE=bash_source runicorn``, see
docs/cli.md) calls these while the user presses TAB, so they only read, never create a
store, and never fail: any problem completes nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import click

if TYPE_CHECKING:  # loaded when the user presses TAB, not by every command that offers completion
    from click.shell_completion import CompletionItem


def _root(ctx: click.Context) -> Any:
    """The storage root the command line names (--storage, $RUNICORN_DIR or the default)."""
    from runicorn.config import resolve_storage_root

    root_ctx = ctx.find_root()
    given = (root_ctx.params or {}).get("storage") or (root_ctx.obj or {}).get("storage")
    return resolve_storage_root(given)


def _quietly(fn: Callable[[click.Context, str], list[tuple[str, str]]]) -> Callable[..., list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            return [CompletionItem(v, help=h) for v, h in fn(ctx, incomplete) if v.startswith(incomplete)]
        except Exception:  # completion must never print a traceback into the user's shell
            return []

    complete.__name__ = fn.__name__
    complete.__doc__ = fn.__doc__
    return complete


def _with_store(ctx: click.Context, fn: Callable[[Any], list[tuple[str, str]]]) -> list[tuple[str, str]]:
    from runicorn.store import Store

    root = _root(ctx)
    if not (root / "archive").is_dir():
        return []  # no store: nothing to complete, and none is created
    with Store.open(root) as store:
        return fn(store)


def _pins(store: Any) -> list[tuple[str, str]]:
    return [(r.name, f"pin -> {r.tree[:12]}") for r in store.list_refs("pin") if r.name != r.tree]


def _runs(store: Any) -> list[tuple[str, str]]:
    from runicorn.store.inspect import run_ids

    return [(r, "run") for r in run_ids(store)]


@_quietly
def complete_pins(ctx: click.Context, incomplete: str) -> list[tuple[str, str]]:
    """Pin names."""
    return _with_store(ctx, _pins)


@_quietly
def complete_runs(ctx: click.Context, incomplete: str) -> list[tuple[str, str]]:
    """Run ids."""
    return _with_store(ctx, _runs)


@_quietly
def complete_trees(ctx: click.Context, incomplete: str) -> list[tuple[str, str]]:
    """Pins and run ids (the names of trees a user remembers; tree ids are typed or pasted)."""
    return _with_store(ctx, lambda s: _pins(s) + _runs(s))


@_quietly
def complete_artifacts(ctx: click.Context, incomplete: str) -> list[tuple[str, str]]:
    """Artifact names of the Runicorn.toml the command would use (--toml, else found upward)."""
    from runicorn.artifacts.locate import find_toml, resolve_toml_path
    from runicorn.artifacts.toml_read import load_toml

    toml = ctx.params.get("toml")
    path = resolve_toml_path(toml, None) if toml else find_toml(None)
    return [(n, os.path.basename(path)) for n in load_toml(path).artifacts]


__all__ = ["complete_pins", "complete_runs", "complete_trees", "complete_artifacts"]
