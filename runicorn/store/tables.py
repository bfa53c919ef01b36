"""The index tables the store keeps for features, and the only code that reads or writes
them (``schema/index.sql``): the snapshot stat cache, the runs table and the
``Runicorn.toml`` usage log.  Features reach them through the store
(``store.stat_cache``, ``store.run_rows``, ``store.toml_usage``), never with SQL of their own.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runicorn.store.index import has_table

if TYPE_CHECKING:
    from runicorn.store.store import Store
    from runicorn.store.tree_format import LeafSpan

# The feature tables, by name: the DDL that creates each (``schema/feature-tables.sql``).
# A store creates those its registered extensions name (runicorn.store.extensions) when it
# is opened; the statements are idempotent and are the definitions of index version 4, so
# stores made before the tables left the core schema open unchanged.
TABLES: dict[str, str] = {
    "stat_cache_dirs": """\
-- Stat cache for snapshots, a row per workspace directory (schema/README.md, "Stat
-- cache"): a file whose (dev, ino, size, mtime_ns, ctime_ns) is unchanged since it was
-- hashed is not read again, unless it was recorded in the same timestamp tick as its
-- mtime ("racily clean").  ctime catches an edit whose mtime was put back (utime cannot
-- set ctime).  A directory whose files all match its row exactly (names and every lstat
-- field) and are all settled costs one comparison, not one per file.
CREATE TABLE IF NOT EXISTS stat_cache_dirs (
    dir         TEXT PRIMARY KEY,           -- absolute path, ending in "/"
    names       TEXT NOT NULL,              -- its regular files' names in path order, joined by "/"
    stats       BLOB NOT NULL,              -- per file: dev, ino, size, mtime_ns, ctime_ns, st_mode (int64 LE)
    digests     BLOB NOT NULL,              -- per file: the 32-byte SHA-256 of its content
    recorded    BLOB NOT NULL,              -- per file: wall clock (ns) when it was hashed (int64 LE)
    settled     INTEGER NOT NULL            -- 1: every file's mtime_ns < recorded - RACY_NS
) WITHOUT ROWID;
""",
    "stat_cache_leaves": """\
-- The leaf pages of the tree each workspace root's last snapshot stored (schema/pages.md),
-- so the next snapshot cuts again only the stretches of the tree where files changed.
-- A root's rows describe its stat_cache_dirs rows: every write of those rows drops the
-- rows of each root whose files it touches (the root, its parents, its subdirectories)
-- and writes its own root's only when no write came between its read of the cache and
-- its own (stat_cache_generation).
CREATE TABLE IF NOT EXISTS stat_cache_leaves (
    root        TEXT NOT NULL,              -- absolute path of the snapshot's root
    first       TEXT NOT NULL,              -- the leaf's first path (relative to root)
    length      INTEGER NOT NULL,           -- its entries
    last        TEXT NOT NULL,              -- its last path
    leaf        TEXT NOT NULL,              -- its page id
    closed      INTEGER NOT NULL,           -- 1: it ends at a cut, 0: at the end of the tree
    PRIMARY KEY (root, first)
) WITHOUT ROWID;
""",
    "stat_cache_seals": """\
-- Per workspace root: the state (dev, ino, mtime_ns, ctime_ns) of each blobs/<aa> folder
-- when its last snapshot began checking its blobs, for the folders then at least
-- RACY_NS old (docs/assets.md).  Every blob the root's stat_cache_dirs rows name was in place
-- after that moment, so while a folder keeps its state (no file added, removed or renamed
-- in it) the next snapshot does not stat those blobs again.  Dropped with the root's
-- stat_cache_leaves rows.
CREATE TABLE IF NOT EXISTS stat_cache_seals (
    root        TEXT PRIMARY KEY,           -- absolute path of the snapshot's root
    folders     TEXT NOT NULL               -- JSON: {"<aa>": [dev, ino, mtime_ns, ctime_ns]}
) WITHOUT ROWID;
""",
    "stat_cache_generation": """\
-- One row: how many times stat_cache_dirs has been written (see stat_cache_leaves).
CREATE TABLE IF NOT EXISTS stat_cache_generation (
    one         INTEGER PRIMARY KEY CHECK (one = 1),
    generation  INTEGER NOT NULL
);
""",
    "runs": """\
-- Experiment runs known to this store (rebuilt from run directories).
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    path        TEXT NOT NULL,              -- '<project>/<experiment>'
    run_dir     TEXT NOT NULL,              -- relative to the storage root
    status      TEXT NOT NULL,
    created_at  REAL NOT NULL
) WITHOUT ROWID;
""",
    "toml_usage": """\
-- Runicorn.toml / Artifacts.toml files seen binding or fetching (gc roots).  Version 4:
-- missing_since, when a gc first found the file missing (NULL while it exists); its
-- bindings are kept until it has been missing for the retention (docs/artifacts.md).
CREATE TABLE IF NOT EXISTS toml_usage (
    path          TEXT PRIMARY KEY,         -- absolute path of the TOML file
    last_seen     REAL NOT NULL,
    missing_since REAL                      -- unix seconds, or NULL
) WITHOUT ROWID;
""",
}


def feature_tables_sql() -> str:
    """The DDL of every feature table (published as ``schema/feature-tables.sql``)."""
    return "\n".join(TABLES.values())


def ensure_tables(store: Store, names: Iterable[str]) -> None:
    """Create the feature tables ``names`` that the store's index lacks (one read when
    none is missing).

    Raises:
        RunicornError: a name is not a feature table.
    """
    wanted = list(names)
    unknown = [n for n in wanted if n not in TABLES]
    if unknown:
        from runicorn.errors import RunicornError

        raise RunicornError(f"unknown feature table(s) {', '.join(unknown)} (known: {', '.join(TABLES)})")
    if not wanted or store.read_only:
        return
    have = {str(r[0]) for r in store.index.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [n for n in wanted if n not in have]
    if missing:
        with store.index.write() as c:
            for name in missing:
                c.execute(TABLES[name])


# A directory's stat cache row: (dir, names, stats, digests, recorded, settled).
DirRow = tuple[str, str, bytes, bytes, bytes, int]
# Directory rows read per query by StatCache.dirs_in_order.
_DIRS_PER_PAGE = 256
# The generation StatCache.dirs_in_order gives after an earlier release wrote the cache:
# no write is ever at it, so no leaf or seal recorded before is trusted.
_OLD_WRITER = -1
RunRow = tuple[str, str, str, str | None, float]


class StatCache:
    """The snapshot stat cache: per workspace directory, its regular files' names, lstat
    fields, SHA-256s and hashing times (``stat_cache_dirs``), so an unchanged file is not
    read again; and per workspace root, the leaves of the tree its last snapshot stored."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def dirs_in_order(self, lo: str, hi: str) -> tuple[Iterator[DirRow], int]:
        """The rows of the directories in ``[lo, hi)`` (one workspace) in path order (UTF-8
        byte order, the order of Python's ``str`` comparison), read a page at a time as the
        iterator is consumed, and the cache's generation before the first.

        A caller walks them beside its own sorted directories (a merge), so a snapshot
        never holds every row of a large workspace at once, and no transaction stays open
        while it walks.  Each row is a fact on its own; a write between pages moves the
        generation, so leaves recorded against it (:meth:`leaves`, :meth:`update`) are not
        trusted."""
        with self.store.index.read() as c:
            generation = _generation(c)
            if has_table(c, "stat_cache"):
                # A writer of the per-file table (an earlier release) ran since this
                # layout's last write: the leaves and seals it recorded describe its own
                # rows, so none is trusted (the next write drops its table).
                generation = _OLD_WRITER
        return self._pages(lo, hi), generation

    def _pages(self, lo: str, hi: str) -> Iterator[DirRow]:
        # Every column but settled is read as bytes: a damaged row (text that is not
        # UTF-8, a value of another type) is then a row that vouches for nothing, not an
        # error of every snapshot.
        start, op = lo.encode("utf-8", "surrogateescape"), ">="
        while True:
            with self.store.index.read() as c:
                page = c.execute(
                    "SELECT CAST(dir AS BLOB), CAST(names AS BLOB), CAST(stats AS BLOB), CAST(digests AS BLOB), "
                    "CAST(recorded AS BLOB), settled "
                    f"FROM stat_cache_dirs WHERE dir {op} CAST(? AS TEXT) AND dir < ? ORDER BY dir LIMIT ?",
                    (start, hi, _DIRS_PER_PAGE),
                ).fetchall()
            for directory, names, *rest in page:
                yield (directory.decode("utf-8", "surrogateescape"), names.decode("utf-8", "surrogateescape"), *rest)
            if len(page) < _DIRS_PER_PAGE:
                return
            start, op = page[-1][0], ">"

    def leaves(self, root: str, generation: int) -> dict[str, LeafSpan]:
        """The leaves recorded for ``root`` by first path; none unless the cache is still
        at ``generation`` (a write since may have changed what they describe)."""
        from runicorn.store.tree_format import LeafSpan

        with self.store.index.read() as c:
            if _generation(c) != generation:
                return {}
            return {
                str(r[0]): LeafSpan(str(r[0]), int(r[1]), str(r[2]), str(r[3]), bool(r[4]))
                for r in c.execute(
                    "SELECT first, length, last, leaf, closed FROM stat_cache_leaves WHERE root = ?",
                    (root.rstrip("/"),),
                )
            }

    def seal(self, root: str, generation: int) -> dict[str, tuple[int, ...]]:
        """The blob folder states recorded for ``root`` (``stat_cache_seals``); none unless
        the cache is still at ``generation``."""
        with self.store.index.read() as c:
            if _generation(c) != generation:
                return {}
            row = c.execute("SELECT folders FROM stat_cache_seals WHERE root = ?", (root.rstrip("/"),)).fetchone()
        if row is None:
            return {}
        try:
            folders = json.loads(row[0])
            return {str(k): tuple(int(x) for x in v) for k, v in folders.items()}
        except (ValueError, TypeError, AttributeError):
            return {}  # a damaged row trusts nothing: every blob is checked

    def reseal(self, root: str, generation: int, seal: Mapping[str, tuple[int, ...]]) -> None:
        """Record ``seal`` as ``root``'s blob folder states, unless the cache moved past
        ``generation`` (then its rows may name blobs this seal does not vouch for)."""
        with self.store.index.write() as c:
            if _generation(c) == generation:
                _write_seal(c, root.rstrip("/"), seal)

    def update(
        self,
        rows: Iterable[DirRow],
        stale: Sequence[str] = (),
        *,
        root: str,
        generation: int,
        leaves: tuple[Mapping[str, LeafSpan], Sequence[LeafSpan]] | None = None,
        seal: Mapping[str, tuple[int, ...]] | None = None,
    ) -> None:
        """Write ``rows`` (replacing a directory's row; any iterable, consumed once) and delete
        the rows of the ``stale`` directories (all below workspace ``root``, read at
        ``generation``), in one transaction.

        The recorded leaves and seal of every root whose files this touches go; ``leaves``
        (the ones :meth:`leaves` gave, and the new tree's) and ``seal`` become ``root``'s,
        unless another write came since ``generation``.
        """
        if not rows and not stale and leaves is None:
            return
        with self.store.index.write() as c:
            current = _generation(c)
            c.execute(
                "INSERT INTO stat_cache_generation (one, generation) VALUES (1, ?) "
                "ON CONFLICT (one) DO UPDATE SET generation = excluded.generation",
                (current + 1,),
            )
            # The per-file table of earlier releases: its rows are not carried over (a
            # cache: the files are read once again, and recorded here).
            c.execute("DROP TABLE IF EXISTS stat_cache")
            if stale:
                c.executemany(
                    "DELETE FROM stat_cache_dirs WHERE dir = CAST(? AS TEXT)",
                    [(d.encode("utf-8", "surrogateescape"),) for d in stale],
                )
            c.executemany("INSERT OR REPLACE INTO stat_cache_dirs VALUES (?, ?, ?, ?, ?, ?)", rows)
            keep = leaves is not None and current == generation
            base = root.rstrip("/")
            parents = _parents(base)
            for table in ("stat_cache_leaves", "stat_cache_seals"):
                c.execute(
                    f"DELETE FROM {table} WHERE (root > ? AND root < ?) "
                    "OR root IN (SELECT value FROM json_each(?))" + ("" if keep else " OR root = ?"),
                    (base + "/", base + "0", json.dumps(parents), *(() if keep else (base,))),
                )
            if keep:
                _write_seal(c, base, seal or {})  # rows written without a seal keep none
            if keep and leaves is not None:
                old, new = leaves
                wanted = {s.first: s for s in new}
                c.executemany(
                    "DELETE FROM stat_cache_leaves WHERE root = ? AND first = ?",
                    [(base, first) for first, span in old.items() if wanted.get(first) != span],
                )
                c.executemany(
                    "INSERT OR REPLACE INTO stat_cache_leaves (root, first, length, last, leaf, closed) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(base, *s[:4], int(s.closed)) for s in new if old.get(s.first) != s],
                )


def _write_seal(c: Any, root: str, seal: Mapping[str, tuple[int, ...]]) -> None:
    if seal:
        c.execute(
            "INSERT OR REPLACE INTO stat_cache_seals (root, folders) VALUES (?, ?)",
            (root, json.dumps(dict(sorted(seal.items())), separators=(",", ":"))),
        )
    else:
        c.execute("DELETE FROM stat_cache_seals WHERE root = ?", (root,))


def _generation(c: Any) -> int:
    row = c.execute("SELECT generation FROM stat_cache_generation WHERE one = 1").fetchone()
    return 0 if row is None else int(row[0])


def _parents(path: str) -> list[str]:
    """``/a/b/c`` -> ``["/a/b", "/a", "/"]``."""
    out: list[str] = []
    while True:
        parent = path.rsplit("/", 1)[0] or "/"
        if parent == path:
            return out
        out.append(parent)
        path = parent


class RunClaim:
    """What a run id is taken by, inside the write transaction that creates the run
    (:meth:`RunRows.claim`)."""

    def __init__(self, c: Any, run_id: str, ref_kind: str) -> None:
        self._c = c
        self.run_id = run_id
        row = c.execute("SELECT run_dir FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        #: the indexed run directory (relative to the storage root) of this id, or None
        self.indexed_dir: str | None = None if row is None else str(row[0])
        prefix = run_id + "/"
        ref = c.execute(
            "SELECT name FROM refs WHERE kind = ? AND substr(name, 1, ?) = ? ORDER BY name LIMIT 1",
            (ref_kind, len(prefix), prefix),
        ).fetchone()
        #: the first ref ``<ref_kind>/<run_id>/...`` that exists, or None
        self.ref_name: str | None = None if ref is None else str(ref[0])

    def record(self, path: str, run_dir: str, status: str, created_at: float) -> None:
        """Write the run's row (in the claim's transaction)."""
        self._c.execute(
            "INSERT INTO runs (run_id, path, run_dir, status, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id) DO UPDATE SET path = excluded.path, run_dir = excluded.run_dir, "
            "status = excluded.status, created_at = excluded.created_at",
            (self.run_id, path, run_dir, status, created_at),
        )


class RunRows:
    """The runs table: ``(run_id, path, run_dir, status, created_at)`` per run directory
    (``run_dir`` relative to the storage root); the run directories are the truth."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def run_dir(self, run_id: str) -> str | None:
        """The indexed directory of ``run_id`` (relative to the storage root), or None."""
        rel = self.store.index.scalar("SELECT run_dir FROM runs WHERE run_id = ?", (run_id,))
        return None if rel is None else str(rel)

    def all(self) -> list[RunRow]:
        """Every row, oldest first."""
        return [
            (str(r), str(p), str(d), s, float(t))
            for r, p, d, s, t in self.store.index.query(
                "SELECT run_id, path, run_dir, status, created_at FROM runs ORDER BY created_at, run_id"
            )
        ]

    def upsert(self, run_id: str, path: str, run_dir: str, status: str, created_at: float) -> None:
        """Write a run's row; an indexed run keeps its ``created_at``."""
        with self.store.index.write() as c:
            c.execute(
                "INSERT INTO runs (run_id, path, run_dir, status, created_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (run_id) DO UPDATE SET path = excluded.path, run_dir = excluded.run_dir, "
                "status = excluded.status",
                (run_id, path, run_dir, status, created_at),
            )

    def replace(self, rows: Iterable[RunRow], alive: Callable[[str], bool]) -> None:
        """In one transaction: drop the rows whose run directory ``alive(run_dir)`` denies,
        then write ``rows`` (replacing a run's row)."""
        with self.store.index.write() as c:
            stale = [
                (run_id,)
                for run_id, rel in c.execute("SELECT run_id, run_dir FROM runs").fetchall()
                if not alive(str(rel))
            ]
            c.executemany("DELETE FROM runs WHERE run_id = ?", stale)
            c.executemany(
                "INSERT OR REPLACE INTO runs (run_id, path, run_dir, status, created_at) VALUES (?, ?, ?, ?, ?)",
                list(rows),
            )

    def delete(self, run_id: str) -> None:
        """Drop run ``run_id``'s row."""
        with self.store.index.write() as c:
            c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    @contextlib.contextmanager
    def claim(self, run_id: str, ref_kind: str) -> Iterator[RunClaim]:
        """A write transaction for creating run ``run_id``: the claim says what already
        uses the id; the caller raises to refuse it, creates the run directory and then
        :meth:`RunClaim.record` s its row, all before the transaction commits."""
        with self.store.index.write() as c:
            yield RunClaim(c, run_id, ref_kind)


class TomlUsage:
    """The ``toml_usage`` table: the ``Runicorn.toml`` files seen binding or fetching
    (gc roots), by key (see ``runicorn.artifacts.install.usage_key``)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def all(self) -> list[tuple[str, float | None]]:
        """Every ``(key, missing_since)``."""
        return [(str(p), since) for p, since in self.store.index.query("SELECT path, missing_since FROM toml_usage")]

    def known(self, key: str) -> bool:
        """Whether ``key`` has a row."""
        return self.store.index.scalar("SELECT 1 FROM toml_usage WHERE path = ?", (key,)) is not None

    def seen(self, key: str, now: float) -> None:
        """Record that ``key`` was used at ``now`` (a row is created or its ``last_seen`` moves)."""
        with self.store.index.write() as c:
            c.execute(
                "INSERT INTO toml_usage (path, last_seen) VALUES (?, ?) "
                "ON CONFLICT (path) DO UPDATE SET last_seen = excluded.last_seen",
                (key, now),
            )

    def add(self, keys: Iterable[str], now: float) -> None:
        """Rows for ``keys`` that have none (an index rebuild from the usage log)."""
        with self.store.index.write() as c:
            c.executemany(
                "INSERT INTO toml_usage (path, last_seen) VALUES (?, ?) ON CONFLICT (path) DO NOTHING",
                [(k, now) for k in keys],
            )

    def mark(
        self, *, missing: Iterable[str] = (), back: Iterable[str] = (), gone: Iterable[str] = (), now: float
    ) -> None:
        """In one transaction: ``missing`` keys get ``missing_since`` (kept if set; a key
        without a row gets one), ``back`` keys lose it, ``gone`` keys lose their row."""
        with self.store.index.write() as c:
            c.executemany(
                "INSERT INTO toml_usage (path, last_seen, missing_since) VALUES (?, ?, ?) "
                "ON CONFLICT (path) DO UPDATE SET missing_since = "
                "COALESCE(toml_usage.missing_since, excluded.missing_since)",
                [(k, now, now) for k in missing],
            )
            c.executemany("UPDATE toml_usage SET missing_since = NULL WHERE path = ?", [(k,) for k in back])
            c.executemany("DELETE FROM toml_usage WHERE path = ?", [(k,) for k in gone])
