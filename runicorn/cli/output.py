"""How commands print data: aligned tables with a header line, and ``--json`` output.

One way to do each (docs/cli.md, "For contributors"): every listing goes through
:func:`echo_table`, every ``--json`` through :func:`echo_json`.
"""

from __future__ import annotations

from typing import Any, Sequence

import click


def echo_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> None:
    """Print a table with a header line; columns as wide as their widest cell, ``right``
    aligns those columns (numbers, sizes) right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()

    click.echo(line(headers))
    for r in rows:
        click.echo(line(r))


def echo_json(data: Any) -> None:
    """Print data as indented JSON on stdout."""
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
