"""Finding what a user meant: unique prefixes and "did you mean".

One resolver for every id given by prefix (run ids, tree ids) and one suggestion helper
for every unknown name (artifacts, pins, runs), so messages read the same everywhere.
"""

from __future__ import annotations

from typing import Iterable

from runicorn.errors import AmbiguousPrefixError

SHOWN = 5  # candidates named in an ambiguity message


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x' or 'y'?"`` for the close candidates (difflib), else ``""``."""
    import difflib

    pool = sorted(set(candidates))
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
    if not close:
        # A prefix of a longer name (``mni`` for ``mnist``) is close too, though difflib's
        # ratio for a short prefix is low.
        close = [c for c in pool if c.startswith(name)][:3] if len(name) >= 2 else []
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def ambiguous(prefix: str, what: str, matches: list[str]) -> str:
    """The message for a prefix several candidates share, naming some of them."""
    many = len(matches) > SHOWN
    shown = ", ".join(matches[:SHOWN]) + (", ..." if many else "")
    count = f"more than {SHOWN}" if many else str(len(matches))
    return f"{what} prefix {prefix!r} is ambiguous: it matches {count} {what}s ({shown}); give more characters"


def unique_prefix(
    prefix: str, candidates: Iterable[str], *, what: str, error: type[Exception] = AmbiguousPrefixError
) -> str | None:
    """The candidate equal to ``prefix``, else the only one starting with it, else None.

    Raises:
        error: several candidates start with ``prefix`` and none equals it; the message
            lists them.
    """
    matches = sorted({c for c in candidates if c.startswith(prefix)})
    if prefix in matches:
        return prefix
    if len(matches) > 1:
        raise error(ambiguous(prefix, what, matches))
    return matches[0] if matches else None


__all__ = ["did_you_mean", "unique_prefix", "ambiguous"]
