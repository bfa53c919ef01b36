"""gc roots for artifacts: refs of kind ``binding`` derived from the TOML usage log.

Every ``Runicorn.toml`` / ``Artifacts.toml`` that binds or fetches is logged (index
table ``toml_usage`` plus ``artifacts/usage.log``).  Before each gc,
:func:`refresh_binding_refs` re-reads every logged file and makes the ``binding`` refs
match it: every variant (all platforms) of every artifact of an existing file whose tree
is in the store is a root.  A file that no longer parses, or cannot be read (no
permission, replaced by a directory), keeps its old refs (a typo must not cost a
dataset); the gc report lists it under ``warnings``.

A missing file (a checkout of another branch, a moved project) keeps its refs and its
usage-log entry for a retention (``runicorn.config.keep_missing_toml_seconds``, 30 days
unless configured; ``gc --keep-missing-toml``): the first gc that finds it missing
records when (``toml_usage.missing_since``) and warns; when the file is back, that mark
is cleared and its refs follow the file again; only a file missing for longer than the
retention loses its refs and its entry.

Dry runs: binding refs are derived data -- a pure function of the logged files -- so a
dry run refreshes them too; that is what makes its report exact, and it is harmless
because any later refresh recomputes the same refs from the same files.  A dry run
changes nothing else (the usage log, missing marks and installed directories are left
alone).
"""

from __future__ import annotations

import os
from typing import Any

from runicorn.errors import RunicornError, TomlFormatError

from runicorn.artifacts.installed import GC_TRASH_MARK

# The kind from the store, not from bindings.py: a gc with no logged Runicorn.toml never
# loads that module and its platform rules.
from runicorn.store.refkinds import BINDING as BINDING_KIND


def _wanted_for(store: Any, toml_path: str, problems: list[str] | None = None) -> dict[str, str] | None:
    """``{ref name: tree}`` a file binds (trees present in the store); None if it cannot be
    read or parsed (the reason is appended to ``problems``)."""
    from runicorn.artifacts.bindings import binding_ref_name, installed_tree
    from runicorn.artifacts.toml_read import entry_hash, load_toml

    why: str | None
    try:
        parsed = load_toml(toml_path)
    except TomlFormatError as exc:
        why = str(exc)
    except OSError as exc:
        why = f"{toml_path}: cannot be read ({exc.strerror or exc})"
    else:
        why = None
    if why is not None:
        if problems is not None:
            problems.append(f"kept the earlier bindings of {toml_path}: {why}")
        return None
    out: dict[str, str] = {}
    for name, variants in parsed.artifacts.items():
        for entry in variants:
            tree = entry.get("tree-sha256") or installed_tree(store, entry_hash(entry))
            if tree and store.has_tree(tree):
                out[binding_ref_name(toml_path, name, entry)] = tree
    return out


def _sync(store: Any, toml_path: str, wanted: dict[str, str], existing: dict[str, str]) -> None:
    for ref_name, tree in existing.items():
        if ref_name not in wanted:
            store.delete_ref(BINDING_KIND, ref_name)
    for ref_name, tree in wanted.items():
        if existing.get(ref_name) != tree:
            name = ref_name.rsplit("#", 2)[1]
            store.set_ref(BINDING_KIND, ref_name, tree, meta={"toml": toml_path, "artifact": name})


def _existing_by_file(store: Any) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for ref in store.list_refs(BINDING_KIND):
        toml_path = ref.meta.get("toml") or ref.name.rsplit("#", 2)[0]
        out.setdefault(toml_path, {})[ref.name] = ref.tree
    return out


def _gone(toml_path: str) -> bool:
    """True only when the file is certainly deleted; a stat refused for another reason
    (say, a directory on the way lost its search permission) is not a deletion."""
    try:
        os.stat(toml_path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def refresh_file(store: Any, toml_path: str) -> None:
    """Bring the binding refs of one file up to date (after a bind or unbind)."""
    wanted = {} if _gone(toml_path) else _wanted_for(store, toml_path)
    if wanted is None:
        return
    _sync(store, toml_path, wanted, _existing_by_file(store).get(toml_path, {}))


def refresh_binding_refs(
    store: Any, *, dry_run: bool = False, keep_missing_toml: float | None = None, **_: Any
) -> list[str]:
    """Make ``binding`` refs match every logged TOML (see the module docs for missing
    files and dry runs).  ``keep_missing_toml``: the retention in seconds (None: the
    configured one).

    Returns one warning per logged file that could not be read or parsed (its refs kept)
    and per missing file whose bindings are kept.

    Raises:
        RunicornError: the configured retention is not a duration.
    """
    import time

    from runicorn.config import keep_missing_toml_seconds

    keep = keep_missing_toml_seconds() if keep_missing_toml is None else keep_missing_toml
    now = time.time()
    from runicorn.artifacts.usage import usage_key, usage_path

    logged = {usage_path(str(p)): since for p, since in store.toml_usage.all()}
    existing = _existing_by_file(store)
    gone: list[str] = []
    newly_missing: list[str] = []
    back: list[str] = []
    problems: list[str] = []
    for toml_path in sorted(set(logged) | set(existing)):
        # One bad entry (a name no ref can carry, a file that cannot be parsed) is
        # reported and skipped, keeping its earlier refs: it never stops the gc.
        try:
            if _gone(toml_path):
                since = logged.get(toml_path)
                if since is None:
                    newly_missing.append(toml_path)
                    since = now
                if now - since >= keep:
                    _sync(store, toml_path, {}, existing.get(toml_path, {}))
                    gone.append(toml_path)
                elif existing.get(toml_path):
                    problems.append(
                        f"{toml_path} is missing (since {_clock(since)}); its "
                        f"{len(existing[toml_path])} binding(s) are kept until {_clock(since + keep)} "
                        "unless it comes back"
                    )
                continue
            if logged.get(toml_path) is not None:
                back.append(toml_path)
            wanted = _wanted_for(store, toml_path, problems)
            if wanted is not None:
                _sync(store, toml_path, wanted, existing.get(toml_path, {}))
        except RunicornError as exc:
            problems.append(f"kept the earlier bindings of {toml_path!r}: {exc}")
    if dry_run:
        return problems
    if gone or newly_missing or back:
        # A file with refs but no entry (an index rebuilt without its log line) gets one.
        store.toml_usage.mark(
            missing=[usage_key(p) for p in newly_missing if p not in gone],
            back=[usage_key(p) for p in back],
            gone=[usage_key(p) for p in gone],
            now=now,
        )
    _drop_collected_dirs(store)
    return problems


def _clock(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


STALE_SECONDS = 3600.0


def _drop_collected_dirs(store: Any) -> None:
    """Remove staging/trash left by installers that died (older than an hour, so never a
    live one).  Installed folders of collected trees go with the gc that collects them
    (:mod:`runicorn.artifacts.installed`)."""
    import time

    adir = store.artifacts_dir
    if not adir.is_dir():
        return
    cutoff = time.time() - STALE_SECONDS
    for d in adir.iterdir():
        name = d.name
        if name.startswith((".staging-", ".trash-", ".link-")) and GC_TRASH_MARK not in name:
            try:
                if os.lstat(d).st_mtime < cutoff:
                    if d.is_symlink() or not d.is_dir():
                        d.unlink()
                    else:
                        import shutil  # not at the top: it loads bz2 and lzma, ~5 ms of every gc

                        shutil.rmtree(d, ignore_errors=True)
            except FileNotFoundError:
                pass
            continue


def rebuild_usage(store: Any) -> None:
    """Re-derive the ``toml_usage`` table from ``artifacts/usage.log`` (index rebuild hook)."""
    import time

    from runicorn.artifacts.usage import parse_usage_line, usage_key

    log = store.artifacts_dir / "usage.log"
    try:
        lines = log.read_bytes().decode("utf-8", "surrogateescape").split("\n")
    except FileNotFoundError:
        return
    paths = [parse_usage_line(line) for line in lines]
    now = time.time()
    store.toml_usage.add([usage_key(p) for p in dict.fromkeys(paths) if p], now)
