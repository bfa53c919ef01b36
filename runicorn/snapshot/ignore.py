"""Snapshot ignore rules: which workspace paths a snapshot leaves out, and their cache.

Exact gitignore semantics through ``pathspec.GitIgnoreSpec``:

* ``.rnignore`` at the workspace root, then ``extra_excludes``, form the Runicorn
  rules; where they match a path (including ``!`` negations) they decide.
* Otherwise ``.gitignore`` files decide, the deepest one that matches first, each
  applied to paths relative to its own directory, as git does.
* An excluded directory is not entered, so (as in git) nothing below it can be
  re-included by a negation.
* Pathspec's answers are cached per rule set in ``archive/ignore-cache.json``, so an
  unchanged workspace is re-scanned without importing pathspec (see IgnoreRules).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError
from runicorn.fsutil import atomic_write_text

DEFAULT_RNIGNORE = """\
# .rnignore - which files Runicorn leaves out of workspace snapshots.
# Same syntax and rules as .gitignore (a .gitignore is honoured too).

# Version control
.git/
.hg/
.svn/

# Python
__pycache__/
*.pyc
*.pyo
.pytest_cache/
.mypy_cache/
.ipynb_checkpoints/

# Virtual environments
venv/
.venv/
env/
node_modules/

# Data and models (usually too large)
data/
datasets/
*.pth
*.ckpt
*.h5

# IDE
.idea/
.vscode/
*.swp

# Secrets: keys, credentials, environment files (delete a line to capture such files)
.env
.env.*
*.pem
*.key
*.p12
*.pfx
id_rsa*
id_dsa*
id_ecdsa*
id_ed25519*
.ssh/
.netrc
.pgpass
.aws/credentials
.git-credentials

# Build artifacts
dist/
build/
*.egg-info/

# Logs and outputs
logs/
outputs/
*.log
"""


# The prefix pathspec gives every unanchored pattern's regex ("match in any directory").
_ANY_DIR = "^(?:.+/)?"
_ANY_NAME = "[^/]*"


def _in_name(regex: str) -> bool:
    """Whether ``regex`` starts with a greedy "any name part" (not "[^/]*?" or the like)."""
    return regex.startswith(_ANY_NAME) and regex[len(_ANY_NAME) : len(_ANY_NAME) + 1] not in ("?", "+", "{")


# Ignore cache: what pathspec said about a rule set, so an unchanged one needs no pathspec.
# The version changes whenever the way a pre-filter is built from the patterns does.
IGNORE_CACHE = "ignore-cache.json"  # in the store's archive/
_CACHE_FORMAT = "runicorn.ignore-cache"
_CACHE_VERSION = 3
_CACHE_MAX_SPECS = 64
_CACHE_MAX_VERDICTS = 4096
_MISSING = object()


def _pathspec_identity() -> str:
    """Which pathspec (and Python) would answer, found without importing pathspec.

    Raises nothing: an unknown identity is "" (the cache is then not used).
    """
    import importlib.util
    import sys

    try:
        spec = importlib.util.find_spec("pathspec")
        if spec is None or spec.origin is None:
            return ""
        origin = spec.origin
        version_file = os.path.join(os.path.dirname(origin), "_version.py")
        with open(version_file, "rb") as f:
            version = f.read().decode("utf-8", "replace")
        st = os.stat(origin)
    except (OSError, ImportError, ValueError):
        return ""
    return f"{sys.version_info[:2]}\0{origin}\0{st.st_size}\0{st.st_mtime_ns}\0{version}"


class _Rules:
    """One compiled ignore file: pre-filter, memoized verdicts and (on demand) its GitIgnoreSpec."""

    __slots__ = ("lines", "prefilter", "verdicts", "spec")

    def __init__(self, lines: list[str], prefilter: Any, verdicts: dict[str, bool | None], spec: Any = None) -> None:
        self.lines = lines
        self.prefilter = prefilter  # re.Pattern.match, or None: every path goes to the spec
        self.verdicts = verdicts
        self.spec = spec


class IgnoreRules:
    """The ignore decision for paths below one workspace root.

    Every verdict is pathspec's (``GitIgnoreSpec.check_file``).  With ``cache`` (a
    JSON file), the pre-filter source and the verdicts pathspec gave are remembered
    per rule set (keyed by the rules' text and pathspec's identity), so a later scan
    of the same rules imports and asks pathspec only about paths it has not seen.

    Raises (on construction or when a nested ``.gitignore`` is read):
        RunicornError: an ignore file cannot be read or decoded, naming it.
    """

    def __init__(self, root: Path, rn_lines: list[str], extra: Iterable[str] | None, cache: Path | None = None) -> None:
        self.root = root
        self._cache_path = cache
        self._identity = _pathspec_identity() if cache is not None else ""
        self._cache: dict[str, Any] = self._load_cache() if self._identity else {}
        self._used: set[str] = set()
        self._dirty = False
        lines = list(rn_lines) + [str(p) for p in (extra or [])]
        self.rn = self._compile(lines)
        # (relative directory prefix with trailing slash, rules), shallowest first
        self.git: list[tuple[str, _Rules]] = []

    def _load_cache(self) -> dict[str, Any]:
        import json

        assert self._cache_path is not None
        try:
            with open(self._cache_path, "rb") as f:
                data = json.loads(f.read())
        except (OSError, ValueError):
            return {}  # missing or damaged: it is only a cache
        if (
            not isinstance(data, dict)
            or data.get("format") != _CACHE_FORMAT
            or data.get("version") != _CACHE_VERSION
            or not isinstance(data.get("specs"), dict)
        ):
            return {}
        return data["specs"]

    def save(self) -> None:
        """Write the cache back if this scan taught it something (errors are ignored)."""
        import json

        if not self._dirty or self._cache_path is None:
            return
        # Rule sets used now go last, the oldest beyond the bound are dropped.
        specs = {k: v for k, v in self._cache.items() if k not in self._used}
        specs.update({k: self._cache[k] for k in self._used if k in self._cache})
        specs = dict(list(specs.items())[-_CACHE_MAX_SPECS:])
        # ASCII escapes keep names that are not UTF-8 (lone surrogates) writable.
        text = json.dumps(
            {"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "specs": specs},
            ensure_ascii=True,
            separators=(",", ":"),
        )
        try:
            atomic_write_text(self._cache_path, text)
        except OSError:
            pass
        self._dirty = False

    def _compile(self, lines: list[str]) -> _Rules | None:
        """The rules of one ignore file (None when it has no patterns).

        The pre-filter is one regex, the alternation of every pattern's regex: when it
        does not match, no pattern does, so the spec's verdict is "no opinion"; when
        it matches, the spec itself decides.  Most paths match nothing, and one search
        is far cheaper than one per pattern.  Alternatives sharing pathspec's
        "any directory" prefix are factored under one copy of it, which is the same
        language but spares the regex engine one backtracking scan per pattern.
        """
        import re

        key = ""
        prefilter: Callable[..., Any] | None
        if self._identity:
            import json

            from runicorn.hashing import sha256_bytes

            # JSON keeps the key unambiguous whatever the lines hold (NULs, newlines, surrogates).
            key = sha256_bytes(json.dumps([self._identity, lines]).encode("ascii"))
            known = self._cache.get(key)
            if (
                isinstance(known, dict)
                and isinstance(known.get("re"), (str, type(None)))
                and isinstance(known.get("verdicts"), dict)
            ):
                self._used.add(key)
                if known.get("empty") is True:
                    return None
                try:
                    prefilter = re.compile(known["re"]).match if known["re"] is not None else None
                except re.error:
                    prefilter = None
                return _Rules(lines, prefilter, known["verdicts"])
        spec = self._gitignore_spec(lines)
        parts = [
            re.sub(r"[(][?]P<[^>]+>", "(?:", p.regex.pattern)
            for p in spec.patterns
            if getattr(p, "regex", None) is not None
        ]
        # pathspec searches with its regexes and the pre-filter matches at the start: one
        # not anchored there ("*/" gives "/") is searched for from any point of the path.
        parts = [p if p.startswith("^") else f"^(?s:.*?)(?:{p})" for p in parts]
        source: str | None = None
        if parts:
            anywhere = [p[len(_ANY_DIR) :] for p in parts if p.startswith(_ANY_DIR)]
            alternatives = [p for p in parts if not p.startswith(_ANY_DIR)]
            if anywhere:
                # Likewise the "any name part" prefix: "[^/]*(?:A|B)" is "[^/]*A|[^/]*B",
                # with one backtracking scan of the name instead of one per pattern.
                in_name = [p[len(_ANY_NAME) :] for p in anywhere if _in_name(p)]
                anywhere = [p for p in anywhere if not _in_name(p)]
                if in_name:
                    anywhere.append(_ANY_NAME + "(?:" + "|".join(f"(?:{p})" for p in in_name) + ")")
                alternatives.append(_ANY_DIR + "(?:" + "|".join(f"(?:{p})" for p in anywhere) + ")")
            source = "|".join(f"(?:{p})" for p in alternatives)
            try:
                prefilter = re.compile(source).match
            except re.error:  # unexpected pattern syntax: no pre-filter, always ask the spec
                source, prefilter = None, None
        if key:
            self._cache[key] = {"re": source, "verdicts": {}, "empty": not parts}
            self._used.add(key)
            self._dirty = True
        if not parts:
            return None
        return _Rules(lines, prefilter, self._cache[key]["verdicts"] if key else {}, spec)

    @staticmethod
    def _gitignore_spec(lines: list[str]) -> Any:
        import pathspec  # only when a verdict is not cached: keeps start-up light

        return pathspec.GitIgnoreSpec.from_lines(lines)

    def _verdict(self, rules: _Rules, key: str) -> bool | None:
        if rules.prefilter is not None and rules.prefilter(key) is None:
            return None
        verdict = rules.verdicts.get(key, _MISSING)
        if not (verdict is None or verdict is True or verdict is False):  # unknown (or not a verdict)
            if rules.spec is None:
                rules.spec = self._gitignore_spec(rules.lines)
            verdict = rules.spec.check_file(key).include
            if self._identity and len(rules.verdicts) < _CACHE_MAX_VERDICTS:
                rules.verdicts[key] = verdict
                self._dirty = True
        return verdict

    def enter(self, rel_dir: str, directory: str) -> int:
        """Load ``directory/.gitignore`` if present; return how many specs to pop on leaving."""
        path = os.path.join(directory, ".gitignore")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8")
        except FileNotFoundError:
            return 0
        except IsADirectoryError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raise RunicornError(f"{path}: cannot read ignore file ({exc})") from None
        compiled = self._compile(text.splitlines())
        if compiled is None:
            return 0
        self.git.append((rel_dir, compiled))
        return 1

    def included(self, rel: str, is_dir: bool) -> bool:
        """True if ``rel`` (POSIX, relative to the root) is captured."""
        key = rel + "/" if is_dir else rel
        if self.rn is not None:
            verdict = self._verdict(self.rn, key)
            if verdict is not None:
                return not verdict
        for prefix, compiled in reversed(self.git):
            if key.startswith(prefix):
                verdict = self._verdict(compiled, key[len(prefix) :])
                if verdict is not None:
                    return not verdict
        return True

    def excluded(self, prefix: str, names: list[str]) -> set[str]:
        """Which of one directory's entry ``names`` the rules leave out.

        ``prefix`` is the directory's path relative to the root with a trailing ``/``
        (empty for the root); a subdirectory's name carries a trailing ``/`` too.  The
        answers are those of :meth:`included`, for a whole listing at once: only names
        some pre-filter matches are put to the specs, the others no rule is about.
        """
        suspects: set[str] = set()
        specs = [(prefix, self.rn)] if self.rn is not None else []
        specs += [(prefix[len(base) :], rules) for base, rules in self.git if prefix.startswith(base)]
        for sub, rules in specs:
            prefilter = rules.prefilter
            if prefilter is None:
                suspects.update(names)
                break
            suspects.update(n for n in names if prefilter(sub + n) is not None)
        return {n for n in suspects if not self.included(prefix + n.rstrip("/"), n.endswith("/"))}


def read_ignore_file(root: Path, ignore_file: str, *, create_default: bool = True) -> list[str]:
    """The lines of the workspace's ignore file, creating the default one if missing.

    A default that cannot be written (read-only workspace) is used in memory.

    Raises:
        RunicornError: the file exists but cannot be read or is not UTF-8.
    """
    path = root / ignore_file
    try:
        return path.read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        if create_default:
            try:
                atomic_write_text(path, DEFAULT_RNIGNORE)
            except OSError:
                pass
        return DEFAULT_RNIGNORE.splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise RunicornError(f"{path}: cannot read ignore file ({exc})") from None


__all__ = ["DEFAULT_RNIGNORE", "IGNORE_CACHE", "IgnoreRules", "read_ignore_file"]
