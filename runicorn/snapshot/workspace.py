"""Workspace snapshots: capture a directory into the store (and optionally a zip).

A snapshot walks the workspace with ``os.scandir``, drops what the ignore rules
exclude, reuses hashes from the stat cache for files that did not change, ingests
the rest in one batch (one group sync) and records the result as a tree.  The zip,
when asked for, is written from the stored blobs, so it always holds exactly the
tree that was recorded even if the workspace changes meanwhile.

Ignore rules (exact gitignore semantics through ``pathspec.GitIgnoreSpec``):

* ``.rnignore`` at the workspace root, then ``extra_excludes``, form the Runicorn
  rules; where they match a path (including ``!`` negations) they decide.
* Otherwise ``.gitignore`` files decide, the deepest one that matches first, each
  applied to paths relative to its own directory, as git does.
* An excluded directory is not entered, so (as in git) nothing below it can be
  re-included by a negation.
* The storage root and the output zip are never captured.
* Pathspec's answers are cached per rule set in ``archive/ignore-cache.json``, so an
  unchanged workspace is re-scanned without importing pathspec (see IgnoreRules).

Stat cache ("racily clean" rule): a file's cached hash is reused only when its
(dev, inode, size, mtime_ns, mode) match the cache row *and* its mtime is at least
``RACY_NS`` older than the moment its hash was taken.  A file written in the same
timestamp tick as the hash (or within the coarsest common mtime granularity, FAT's
2 s) could change again without its mtime moving, so such an entry is re-read; the
re-read refreshes ``recorded_ns`` so the next snapshot can trust it.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runicorn.errors import (
    ChangedWhileReadingError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
    UnsafePathError,
    option,
)
from runicorn.fsutil import StagedFile, atomic_write_text, narrowed_perm
from runicorn.gitinfo import git_provenance
from runicorn.hashing import sha256_bytes
from runicorn.relpath import MAX_DEPTH, check_names
from runicorn.store.tree import MODE_EXEC, MODE_FILE, MODE_LINK, TreeEntry, mode_of, tree_id_of
from runicorn.workers import run_groups, share, worker_count

RACY_NS = 2_000_000_000
DEFAULT_MAX_TOTAL_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_FILES = 200_000
# One batch = one group commit (two syncfs calls).  Few, large batches let the disk
# write back large files while small ones are read; the store bounds its memory itself.
_INGEST_BATCH_FILES = 16384
_INGEST_BATCH_BYTES = 2 << 30

Progress = Callable[[int, int], None]

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
# Ignore cache: what pathspec said about a rule set, so an unchanged one needs no pathspec.
# The version changes whenever the way a pre-filter is built from the patterns does.
IGNORE_CACHE = "ignore-cache.json"  # in the store's archive/
_CACHE_FORMAT = "runicorn.ignore-cache"
_CACHE_VERSION = 1
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

    def __init__(self, lines: list[str], prefilter: Any, verdicts: dict[str, bool | None],
                 spec: Any = None) -> None:
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

    def __init__(self, root: Path, rn_lines: list[str], extra: Iterable[str] | None,
                 cache: Path | None = None) -> None:
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
        if (not isinstance(data, dict) or data.get("format") != _CACHE_FORMAT
                or data.get("version") != _CACHE_VERSION or not isinstance(data.get("specs"), dict)):
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
        text = json.dumps({"format": _CACHE_FORMAT, "version": _CACHE_VERSION, "specs": specs},
                          ensure_ascii=True, separators=(",", ":"))
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
            import hashlib
            import json

            # JSON keeps the key unambiguous whatever the lines hold (NULs, newlines, surrogates).
            key = hashlib.sha256(json.dumps([self._identity, lines]).encode("ascii")).hexdigest()
            known = self._cache.get(key)
            if (isinstance(known, dict) and isinstance(known.get("re"), (str, type(None)))
                    and isinstance(known.get("verdicts"), dict)):
                self._used.add(key)
                if known.get("empty") is True:
                    return None
                try:
                    prefilter = re.compile(known["re"]).match if known["re"] is not None else None
                except re.error:
                    prefilter = None
                return _Rules(lines, prefilter, known["verdicts"])
        spec = self._gitignore_spec(lines)
        parts = [re.sub(r"[(][?]P<[^>]+>", "(?:", p.regex.pattern)
                 for p in spec.patterns if getattr(p, "regex", None) is not None]
        source: str | None = None
        if parts:
            anywhere = [p[len(_ANY_DIR):] for p in parts if p.startswith(_ANY_DIR)]
            alternatives = [p for p in parts if not p.startswith(_ANY_DIR)]
            if anywhere:
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
                verdict = self._verdict(compiled, key[len(prefix):])
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
        specs += [(prefix[len(base):], rules) for base, rules in self.git if prefix.startswith(base)]
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


def _limit_error(root: Path, what: str, value: int, limit: int) -> ValueError:
    limits = option("limits")
    return ValueError(
        f"snapshot of {root} would hold {what} {value:,} > limit {limit:,}; exclude large or "
        f"generated files in {root / '.rnignore'} or with {option('extra_excludes')}, "
        + (f"raise the limit ({limits}), " if limits else "")
        + f"or pass {option('force_snapshot')}")


def scan_workspace(root: Path, rules: IgnoreRules, *, skip_dirs: set[tuple[int, int]],
                   skip_files: set[str], max_files: int, max_total_bytes: int,
                   force: bool, run_root: str | None = None,
                   counts: dict[str, int] | None = None) -> list[tuple[str, str, os.stat_result]]:
    """List ``(relpath, abspath, lstat)`` for every captured regular file and symlink.

    Directories in ``skip_dirs`` (by device and inode) are left out, and so is every
    run directory (``.../runs/<id>/meta.json``) below ``run_root`` (the storage root):
    when the storage root is the workspace, its runs are store content, not code.
    ``counts["excluded"]`` (when given) grows by each file or directory the ignore rules
    leave out.

    Raises:
        ValueError: a limit is exceeded (unless ``force``), as soon as it is.
        RunicornError: a name contains a newline or a directory cannot be read.
    """
    out: list[tuple[str, str, os.stat_result]] = []
    total = 0
    IFMT, IFDIR, IFREG, IFLNK = 0o170000, stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK  # S_IS* without calls
    skip_names = {os.path.basename(p) for p in skip_files}  # a cheap test before building full paths
    # Depth-first with an explicit stack of (absolute dir, relative prefix); a None
    # frame pops the .gitignore spec its directory pushed, after the whole subtree.
    stack: list[tuple[str, str] | None] = [(str(root), "")]
    while stack:
        frame = stack.pop()
        if frame is None:
            rules.git.pop()
            continue
        directory, prefix = frame
        if rules.enter(prefix, directory):
            stack.append(None)
        base = directory if directory.endswith(os.sep) else directory + os.sep
        # Listing through a directory descriptor makes each entry's lstat resolve one
        # name instead of the whole path again.
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                with os.scandir(fd) as it:
                    found = list(it)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise RunicornError(f"{directory}: cannot list directory ({exc.strerror})") from None
        try:
            listing = [(e.name, e.stat(follow_symlinks=False)) for e in found]
        except OSError as exc:  # name the file by its full path, as a path-based lstat would
            raise type(exc)(exc.errno, exc.strerror, base + str(exc.filename)) from None
        finally:
            os.close(fd)
        listing.sort()
        joined = "/".join(name for name, _ in listing)
        if "\n" in joined or "\r" in joined:
            bad = next(name for name, _ in listing if "\n" in name or "\r" in name)
            raise RunicornError(f"{base + bad}: file names with a newline cannot be snapshotted")
        # Keys: names with a trailing "/" for directories, as the ignore rules want them.
        kept: list[tuple[str, os.stat_result]] = []
        for name, st in listing:
            kind = st.st_mode & IFMT
            if kind == IFREG or kind == IFLNK:
                if name not in skip_names or base + name not in skip_files:
                    kept.append((name, st))
            elif kind == IFDIR:
                if (st.st_dev, st.st_ino) not in skip_dirs:
                    kept.append((name + "/", st))
        dropped = rules.excluded(prefix, [key for key, _ in kept])
        if counts is not None:
            counts["excluded"] += len(dropped)
        if not joined.isascii() or prefix.count("/") >= MAX_DEPTH:
            # Checked before anything is read: a refused name or depth stores nothing.
            try:
                check_names(prefix, "/".join(k.rstrip("/") for k, _ in kept if k not in dropped), what="file")
            except UnsafePathError as exc:
                raise UnsafePathError(f"{root}: {exc}; nothing was stored") from None
        subdirs: list[tuple[str, str]] = []
        for key, st in kept:
            if key in dropped:
                continue
            if key[-1] == "/":
                full = base + key[:-1]
                if (run_root is not None and directory.endswith(f"{os.sep}runs")
                        and full.startswith(run_root)
                        and os.path.isfile(os.path.join(full, "meta.json"))):
                    continue
                subdirs.append((full, prefix + key))
                continue
            out.append((prefix + key, base + key, st))
            total += st.st_size
            if not force:
                if len(out) > max_files:
                    raise _limit_error(root, "files", len(out), max_files)
                if total > max_total_bytes:
                    raise _limit_error(root, "bytes", total, max_total_bytes)
        stack.extend(reversed(subdirs))
    return out


def _cache_bounds(root: Path) -> tuple[str, str]:
    base = str(root).rstrip("/") + "/"
    return base, base[:-1] + "0"  # '0' sorts right after '/'


def capture_tree(store: Any, root: Path, files: list[tuple[str, str, os.stat_result]], *,
                 source: str, progress: Progress | None = None,
                 want_entries: bool = True,
                 keeper: tuple[str, str | None] | None = None) -> tuple[str, dict[str, TreeEntry] | None, int, int]:
    """Put the scanned files into the store as a tree, using and updating the stat cache.

    Returns ``(tree, entries, files_read, total_bytes)``; ``entries`` is None when
    ``want_entries`` is False and the tree was already stored (nothing was read).
    ``keeper`` is the ref (kind, name; None for the tree id) the caller will keep the
    tree alive with: when it already names the stored tree, nothing is written.

    Raises:
        RunicornError: a file vanished or changed while being read (naming it).
    """
    started_ns = time.time_ns()
    lo, hi = _cache_bounds(root)
    cached = {row[0]: row for row in store.index.query(
        "SELECT path, dev, ino, size, mtime_ns, ctime_ns, mode, sha256, recorded_ns FROM stat_cache "
        "WHERE path >= ? AND path < ?", (lo, hi))}
    trusted: dict[str, tuple[str, str, os.stat_result, str]] = {}
    to_read: list[tuple[str, str, os.stat_result, str]] = []
    links: dict[str, bytes] = {}
    hits = 0  # files with a cache row: when all rows are hit, none is stale
    trusted_bytes = 0
    lines: list[tuple[str, str, str]] = []  # (path, mode, sha256) of trusted files, for the tree id
    get, S_ISLNK = cached.get, stat.S_ISLNK
    for rel, full, st in files:
        st_mode = st.st_mode
        if S_ISLNK(st_mode):
            try:
                links[rel] = os.fsencode(os.readlink(full))
            except FileNotFoundError:
                raise RunicornError(f"{full}: vanished during the snapshot of {root}; try again") from None
            hits += full in cached
            continue
        mode = MODE_EXEC if st_mode & 0o100 else MODE_FILE  # as mode_of, without the call
        row = get(full)
        if row is None:
            to_read.append((rel, full, st, mode))
            continue
        hits += 1
        # row: path, dev, ino, size, mtime_ns, ctime_ns, mode, sha256, recorded_ns
        if (row[1] == st.st_dev and row[2] == st.st_ino and row[3] == st.st_size
                and row[4] == st.st_mtime_ns and row[5] == st.st_ctime_ns and row[6] == mode
                and st.st_mtime_ns < row[8] - RACY_NS):
            trusted[full] = (rel, full, st, row[7])
            trusted_bytes += row[3]
            lines.append((rel, mode, row[7]))
        else:
            to_read.append((rel, full, st, mode))
    found = _existing_tree(store, trusted, links, want_entries, keeper, lines, trusted_bytes) if not to_read else None
    updates: list[tuple[Any, ...]] = []
    entries: dict[str, TreeEntry] | None
    if found is None:
        tree, entries, updates = _ingest(store, root, files, trusted, to_read, links, started_ns, progress)
        total = sum(e.size for e in entries.values())
    else:
        tree, entries, total = found
    stale: list[tuple[str]] = []
    if hits < len(cached):
        seen = {full for _, full, _ in files}
        stale = [(p,) for p in cached if p not in seen]
    if updates or stale:
        with store.index.write() as c:
            if stale:
                c.executemany("DELETE FROM stat_cache WHERE path = ?", stale)
            c.executemany(
                "INSERT INTO stat_cache (path, dev, ino, size, mtime_ns, ctime_ns, mode, sha256, recorded_ns) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (path) DO UPDATE SET dev = excluded.dev, "
                "ino = excluded.ino, size = excluded.size, mtime_ns = excluded.mtime_ns, "
                "ctime_ns = excluded.ctime_ns, mode = excluded.mode, sha256 = excluded.sha256, recorded_ns = excluded.recorded_ns",
                updates)
    return tree, entries, len(to_read), total


def _existing_tree(store: Any, trusted: dict[str, tuple[str, str, os.stat_result, str]],
                   links: dict[str, bytes], want_entries: bool,
                   keeper: tuple[str, str | None] | None, lines: list[tuple[str, str, str]],
                   trusted_bytes: int) -> tuple[str, dict[str, TreeEntry] | None, int] | None:
    """Fast path when the stat cache vouches for every file: (tree, entries, total bytes) if stored.

    ``lines`` (the trusted files' ``(path, mode, sha256)``, consumed) and ``trusted_bytes``
    (their total size) come from the caller's pass over the stat cache.

    ``entries`` is None unless ``want_entries``.  The tree's existence is checked and
    its ``touched_at`` bumped in one write transaction, so a concurrent gc either ran
    before (and the tree is gone: slow path) or must wait the grace period; its blobs
    are protected by the tree itself.  When the ref that will keep the tree alive
    (``keeper``: kind and name, with the tree id in place of ``None`` as name) already
    names it, no gc can take it, so a read suffices and nothing is written.

    A stored tree is returned only when it is restorable: every blob file is there with
    the size the tree records (one ``stat`` per blob).  A lost, quarantined or resized
    blob sends the snapshot down the slow path, which re-reads exactly those files from
    the workspace (``Store.hold_blobs`` finds them) and so stores their bytes again.
    """
    # Paths come from our own directory walk (already checked), so no re-validation here.
    link_shas = {rel: sha256_bytes(t) for rel, t in links.items()}
    lines += [(rel, MODE_LINK, sha) for rel, sha in link_shas.items()]
    tree = tree_id_of(lines)
    if not os.path.exists(store.manifest_path(tree)):
        return None
    if not _blob_files_intact(store, trusted, links, link_shas):
        return None
    if keeper is None or not _kept_by(store, tree, keeper):
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
                return None
            c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (time.time(), tree))
    total = trusted_bytes + sum(len(t) for t in links.values())
    if not want_entries:
        return tree, None, total
    entries = {rel: TreeEntry(sha, mode_of(st.st_mode), st.st_size) for rel, _, st, sha in trusted.values()}
    entries.update({rel: TreeEntry(link_shas[rel], MODE_LINK, len(t)) for rel, t in links.items()})
    return tree, entries, total


def _blob_files_intact(store: Any, trusted: dict[str, tuple[str, str, os.stat_result, str]],
                       links: dict[str, bytes], link_shas: dict[str, str]) -> bool:
    """Whether every blob of the trusted files and links is in ``blobs/`` with its size.

    One ``stat`` per distinct blob: the unchanged re-snapshot stays a metadata pass, and
    the blob files are in the same page cache as the index.  (Their bytes are checked by
    ``runicorn verify --deep`` and by every reader, :mod:`runicorn.store.reader`.)
    """
    blobs = f"{store.blobs_dir}/"
    sizes: dict[str, int] = {sha: st.st_size for _, _, st, sha in trusted.values()}
    sizes.update({link_shas[rel]: len(t) for rel, t in links.items()})
    stat_ = os.stat
    try:
        for sha, size in sizes.items():
            if stat_(f"{blobs}{sha[:2]}/{sha}").st_size != size:
                return False
    except OSError:  # missing (or a file where blobs/<aa> belongs)
        return False
    return True


def _kept_by(store: Any, tree: str, keeper: tuple[str, str | None]) -> bool:
    """Whether the tree is stored and the ref ``keeper`` names it, in one read snapshot."""
    kind, name = keeper
    with store.index.read() as c:
        return (c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is not None
                and c.execute("SELECT 1 FROM refs WHERE kind = ? AND name = ? AND tree = ?",
                              (kind, name or tree, tree)).fetchone() is not None)


def _ingest(store: Any, root: Path, files: list[tuple[str, str, os.stat_result]],
            trusted: dict[str, tuple[str, str, os.stat_result, str]],
            to_read: list[tuple[str, str, os.stat_result, str]], links: dict[str, bytes],
            started_ns: int, progress: Progress | None) -> tuple[str, dict[str, TreeEntry], list[tuple[Any, ...]]]:
    """Slow path: hold cached blobs, read changed files, store links, record the tree."""
    entries: dict[str, TreeEntry] = {}
    if trusted:
        missing = store.hold_blobs({t[3] for t in trusted.values()})
        for full, (rel, _, st, sha) in list(trusted.items()):
            if sha in missing:
                del trusted[full]
                to_read.append((rel, full, st, mode_of(st.st_mode)))
    for rel, _, st, sha in trusted.values():
        entries[rel] = TreeEntry(sha, mode_of(st.st_mode), st.st_size)
    updates: list[tuple[Any, ...]] = []
    # Progress in bytes: cached files count as done, symlinks are not counted.
    done = sum(t[2].st_size for t in trusted.values())
    total = done + sum(it[2].st_size for it in to_read)
    if progress:
        progress(done, total)
    lock = threading.Lock()

    def work(group: list[tuple[str, str, os.stat_result, str]]) -> None:
        nonlocal done
        for batch in _batches(group):
            try:
                infos = store.ingest_files([full for _, full, _, _ in batch])
            except FileNotFoundError as exc:
                raise RunicornError(f"{exc.filename}: vanished during the snapshot of {root}; "
                                    f"nothing was recorded, try again") from None
            except ChangedWhileReadingError as exc:
                raise RunicornError(f"{exc}; nothing was recorded, try again") from None
            except (StorageFullError, StoreWriteError):
                raise  # the store's side, not the source's: its own message says so
            except OSError as exc:
                raise RunicornError(f"{exc.filename or root}: cannot be read ({exc.strerror}); "
                                    f"exclude it in .rnignore or fix its permissions") from None
            with lock:
                for (rel, full, st, mode), info in zip(batch, infos):
                    entries[rel] = TreeEntry(info.sha256, mode, info.size)
                    updates.append((full, st.st_dev, st.st_ino, info.size, st.st_mtime_ns,
                                    st.st_ctime_ns, mode, info.sha256, started_ns))
                done += sum(info.size for info in infos)
                if progress:
                    progress(done, total)

    groups = share(to_read, worker_count(len(to_read), sum(it[2].st_size for it in to_read)),
                   lambda it: it[2].st_size)
    run_groups(work, groups)
    for rel, target in links.items():
        info = store.ingest_bytes(target)
        entries[rel] = TreeEntry(info.sha256, MODE_LINK, info.size)
    tree = store.put_tree(entries, source=str(root))
    return tree, entries, updates


def _batches(items: list[tuple[str, str, os.stat_result, str]]) -> Iterable[list[tuple[str, str, os.stat_result, str]]]:
    # Batches bound the work lost on an error and give progress; each costs one group sync.
    batch: list[tuple[str, str, os.stat_result, str]] = []
    size = 0
    for item in items:
        batch.append(item)
        size += item[2].st_size
        if len(batch) >= _INGEST_BATCH_FILES or size >= _INGEST_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


# Files up to this size are read whole and deflated once; larger ones are streamed.
_ZIP_WHOLE_BYTES = 1 << 20


def _looks_compressible(fd: int) -> bool:
    import zlib

    sample = os.pread(fd, 64 << 10, 0)
    if len(sample) < 512:
        return True
    return len(zlib.compress(sample, 1)) < 0.9 * len(sample)


def _add_whole(zf: Any, info: Any, data: bytes) -> None:
    """Add a zip member from bytes in memory: deflated once (level 1) when that saves at
    least 10%, else stored.

    ``ZipFile.writestr`` compresses while it writes, so deciding first would compress
    twice (and seek back to patch the header).  This writes the same local header, with
    the final sizes and CRC, and the bytes, and registers the member as ``ZipFile.open``
    does; the central directory is written by ``ZipFile.close`` as for any member.
    """
    import zipfile
    import zlib

    packer = zlib.compressobj(1, zlib.DEFLATED, -15)
    packed = packer.compress(data) + packer.flush()
    if len(packed) < 0.9 * len(data):
        info.compress_type, body = zipfile.ZIP_DEFLATED, packed
    else:
        info.compress_type, body = zipfile.ZIP_STORED, data
    info.file_size, info.compress_size, info.CRC = len(data), len(body), zlib.crc32(data)
    info.flag_bits = 0
    zf.fp.seek(zf.start_dir)
    info.header_offset = zf.fp.tell()
    zf._writecheck(info)
    zf._didModify = True
    zf.fp.write(info.FileHeader(False))
    zf.fp.write(body)
    zf.filelist.append(info)
    zf.NameToInfo[info.filename] = info
    zf.start_dir = zf.fp.tell()


def write_zip(blob_path: Callable[[str], Path], entries: dict[str, TreeEntry], out_zip: Path,
              mtimes: dict[str, float] | None = None) -> Path:
    """Write a zip of a tree from blobs (``blob_path(sha)`` locates one), atomically; return its path.

    Compressible files are deflated at level 1 (fast); already-compressed data is
    stored: a file up to ``_ZIP_WHOLE_BYTES`` is read once and deflated once, the
    result kept only if it saves 10%; a larger one is judged by its first 64 KiB and
    streamed.  Symlinks are stored as links (``unzip`` recreates them) and modes are kept.
    Every blob is checked while it is streamed (size, then hash: :mod:`runicorn.store.reader`).

    Raises:
        BlobNotFoundError / DamagedBlobError: a blob is missing, or its size or bytes
            differ from the tree (naming the blob and the file); no zip is written.
    """
    import shutil
    import zipfile

    from runicorn.store.reader import open_checked, read_checked
    from runicorn.store.tree import path_key

    out_zip = Path(out_zip)
    out_zip.parent.mkdir(parents=True, exist_ok=True)
    with StagedFile(out_zip.parent, mode=0o644, prefix="." + out_zip.name + ".") as staged:
        with zipfile.ZipFile(staged.file, "w", allowZip64=True) as zf:
            for rel in sorted(entries, key=path_key):
                e = entries[rel]
                stamp = time.localtime((mtimes or {}).get(rel, time.time()))
                info = zipfile.ZipInfo(rel, date_time=stamp[:6] if stamp[0] >= 1980 else (1980, 1, 1, 0, 0, 0))
                blob = blob_path(e.sha256)
                if e.mode == MODE_LINK:
                    info.external_attr = (stat.S_IFLNK | 0o777) << 16
                    zf.writestr(info, read_checked(blob, e.sha256, e.size, repr(rel)))
                    continue
                with open_checked(blob, e.sha256, e.size, repr(rel)) as src:
                    perm = narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o644, os.fstat(src.fileno()).st_mode)
                    info.external_attr = (stat.S_IFREG | perm) << 16
                    if e.size <= _ZIP_WHOLE_BYTES:
                        data = b""
                        while not src.verified:  # the read completing the blob checks its hash
                            data += src.read(e.size - len(data))
                        _add_whole(zf, info, data)
                        continue
                    if _looks_compressible(src.fileno()):
                        info.compress_type = zipfile.ZIP_DEFLATED
                        info._compresslevel = 1  # type: ignore[attr-defined]  # (a settable property on newer Pythons)
                    else:
                        info.compress_type = zipfile.ZIP_STORED
                    with zf.open(info, "w", force_zip64=e.size > (1 << 31)) as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        return staged.commit(out_zip)


def store_dirs(store: Any) -> set[tuple[int, int]]:
    """(device, inode) of the store's own folders: a scan never enters them, wherever the
    workspace sits relative to the storage root."""
    found: set[tuple[int, int]] = set()
    for d in (store.root, store.archive, store.artifacts_dir):
        try:
            st = os.stat(d)
        except OSError:
            continue
        found.add((st.st_dev, st.st_ino))
    return found


def snapshot_workspace(root: Path, out_zip: Path | None, *, ignore_file: str = ".rnignore",
                       extra_excludes: list[str] | None = None,
                       max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
                       max_files: int = DEFAULT_MAX_FILES, force_snapshot: bool = False,
                       storage: str | os.PathLike[str] | None = None,
                       progress: Progress | None = None, run_id: str | None = None,
                       name: str | None = None, message: str | None = None,
                       force_pin: bool = False) -> dict[str, Any]:
    """Capture a workspace into the store as a tree, and write ``out_zip`` if given.

    Returns the seed's keys ``workspace_root``, ``archive_path``, ``format``,
    ``file_count``, ``total_bytes`` plus ``tree``, ``manifest_path``, ``files_read``
    (files hashed this time; the rest came from the stat cache), ``ref``, ``name``,
    ``message``, ``git`` (commit, branch, dirty of the workspace's git checkout, or
    None), ``excluded_count`` (files and directories the ignore rules left out; an
    excluded directory counts once, its contents are never listed) and
    ``created_rnignore`` (a default ``.rnignore`` was written this time).

    ``name`` pins the tree as ``pin/<name>`` (instead of a pin named after the tree),
    with ``message`` and ``git`` in the pin's meta; a name that already pins another
    tree is moved only with ``force_pin``.

    The tree is kept alive by a ref: ``run/<run_id>/code`` for ``run_id`` or when
    ``out_zip`` lies in a run directory, else a pin named after the tree
    (``runicorn unpin <tree>`` drops it).  ``storage`` picks the store and
    ``progress(done, total)`` is called with bytes as files are hashed.

    Raises:
        ValueError: more than ``max_files`` files or ``max_total_bytes`` bytes would
            be captured and ``force_snapshot`` is False.
        RefError: ``name`` pins another tree and ``force_pin`` is False, or is not a valid
            ref name (checked before anything is read).
        RunicornError: ``root`` is not a directory, an ignore file is unreadable, or
            a file changed or vanished while read (nothing is recorded then).
    """
    from runicorn.store import open_store

    root = Path(root).expanduser()
    if not root.is_dir():
        raise RunicornError(f"{root}: workspace root is not a directory")
    root = root.resolve()
    store = open_store(storage)
    if name is not None:
        store._check_ref("pin", name)
    out_abs = Path(out_zip).expanduser().absolute() if out_zip is not None else None
    had_ignore_file = (root / ignore_file).exists()
    rules = IgnoreRules(root, read_ignore_file(root, ignore_file), extra_excludes,
                        cache=store.archive / IGNORE_CACHE)
    created_rnignore = not had_ignore_file and (root / ignore_file).is_file()
    skip_dirs = store_dirs(store)
    skip_files = {str(out_abs)} if out_abs is not None else set()
    if out_abs is not None and out_abs.parent.exists():
        skip_files.add(str(out_abs.parent.resolve() / out_abs.name))
    counts = {"excluded": 0}
    files = scan_workspace(root, rules, skip_dirs=skip_dirs, skip_files=skip_files,
                           max_files=max_files, max_total_bytes=max_total_bytes, force=force_snapshot,
                           run_root=str(store.root.resolve()) + os.sep, counts=counts)
    rules.save()
    git = git_provenance(root)
    # A plain snapshot is kept by the pin named after its tree (see _keep_alive).
    keeper = ("pin", None) if out_abs is None and run_id is None and name is None else None
    tree, entries, files_read, total_bytes = capture_tree(
        store, root, files, source=str(root), progress=progress, want_entries=out_abs is not None,
        keeper=keeper)
    if name is not None:
        meta = {"source": str(root), "message": message, "git": git}
        store.set_ref("pin", name, tree, meta={k: v for k, v in meta.items() if v is not None},
                      move=force_pin, force_option="force_pin")
        ref = f"pin/{name}"
        if run_id is not None or out_abs is not None:
            _keep_alive(store, tree, out_abs, root, run_id)
    else:
        ref = _keep_alive(store, tree, out_abs, root, run_id)
    archive_path = None
    if out_abs is not None:
        assert entries is not None  # asked for
        mtimes = {rel: st.st_mtime for rel, _, st in files}
        write_zip(store.blob_path, entries, out_abs, mtimes)
        archive_path = str(out_abs)
    return {
        "workspace_root": str(root),
        "archive_path": archive_path,
        "format": "zip" if out_abs is not None else "tree",
        "file_count": len(files),  # one entry per captured file
        "total_bytes": total_bytes,
        "tree": tree,
        "manifest_path": str(store.manifest_path(tree)),
        "files_read": files_read,
        "ref": ref,
        "name": name,
        "message": message,
        "git": git,
        "excluded_count": counts["excluded"],
        "created_rnignore": created_rnignore,
    }


def _keep_alive(store: Any, tree: str, out_zip: Path | None, root: Path, run_id: str | None) -> str:
    """Reference the new tree so gc keeps it; return the ref as ``kind/name``."""
    if run_id is None and out_zip is not None:
        from runicorn.runs.index import run_for_path

        run_id = run_for_path(store, out_zip)
    if run_id is not None:
        from runicorn.runs.run import link_code_tree

        return link_code_tree(store, run_id, tree, source=str(root))
    if store.get_ref("pin", tree) is None:
        store.pin(tree)
    return f"pin/{tree}"


__all__ = ["snapshot_workspace", "DEFAULT_RNIGNORE", "IgnoreRules", "RACY_NS"]
