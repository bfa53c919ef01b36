"""Options shared by the commands: the storage root (``--storage`` before or after the
subcommand, ``$RUNICORN_DIR``, the default) and durations (``30s``, ``15m``, ``2h``, ``7d``).

The ``runicorn`` group (:mod:`runicorn.cli`) records the storage choice in the root
context; commands read it back through :func:`storage_from` or :func:`existing_storage`.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


def _storage_after_subcommand(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``runicorn CMD --storage X`` means the same as ``runicorn --storage X CMD``."""
    if value is not None:
        root = ctx.find_root()
        root.obj = dict(root.obj or {}, storage=value, storage_source="--storage")


def with_storage_option(cmd: click.Command) -> click.Command:
    """``cmd`` taking ``--storage`` after the subcommand too, unless it has its own."""
    if not any(p.name == "storage" for p in cmd.params):
        cmd.params.append(
            click.Option(
                ["--storage"],
                type=click.Path(file_okay=False),
                expose_value=False,
                callback=_storage_after_subcommand,
                help="Storage root (same as `runicorn --storage`).",
            )
        )
    return cmd


def storage_from(ctx: click.Context) -> str | None:
    """The ``--storage`` (before or after the subcommand) or ``$RUNICORN_DIR``, if any."""
    root = ctx.find_root()
    return (root.obj or {}).get("storage")


def existing_storage(ctx: click.Context) -> Path:
    """The storage root for a command that only reads or removes: it must hold a store already.

    Only commands that add content create a store; the others must not leave an empty
    one behind a mistyped path.

    Raises:
        RunicornError: "no store at PATH", naming what chose PATH (``--storage``,
            ``RUNICORN_DIR`` or the default).
    """
    from runicorn.config import ENV_VAR, resolve_storage_root
    from runicorn.errors import RunicornError

    root = resolve_storage_root(storage_from(ctx))
    if not (root / "archive").is_dir():
        source = (ctx.find_root().obj or {}).get("storage_source")
        if source is None and os.environ.get(ENV_VAR):
            source = ENV_VAR
        why = (
            f"set by {source}" if source else "the default storage root; choose another with --storage or RUNICORN_DIR"
        )
        raise RunicornError(
            f"no store at {root} ({why}); commands that add content, such as `runicorn snapshot`, create one"
        )
    return root


def parse_duration(text: str) -> float:
    """Parse ``90``, ``30s``, ``15m``, ``2h``, ``7d`` into seconds (:func:`runicorn.config.parse_duration`).

    Raises:
        click.BadParameter: on anything else.
    """
    from runicorn.config import parse_duration as seconds

    try:
        return seconds(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a duration like 30s, 15m, 2h, 7d") from None
