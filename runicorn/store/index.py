"""The SQLite index (apsw, WAL): opening, schema versions, migrations, transactions."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw

from runicorn.errors import ReadOnlyStoreError, StoreBusyError, StoreIndexError

SCHEMA_VERSION = 10
BUSY_TIMEOUT_MS = 120_000
# Versions a read-only store (which cannot be migrated) is read in as they are: from 8 to
# 9 only an index and a trigger changed, so a version-8 index answers every read the same;
# 10 adds hold_ranges, which a read-only store (no live writer) would have empty, and the
# one reader of it (gc's plan) asks only where it exists.
READABLE_AS_IS = frozenset({8, 9, SCHEMA_VERSION})

# Migrations from version N to N+1, applied in order inside one transaction each.
# Version 0 -> 1 is the initial schema (index.sql); 1 -> 2 adds the remote tables; 2 -> 3
# adds ctime_ns to the stat cache (a cache: its rows are dropped, files are read once more); 3 -> 4
# adds toml_usage.missing_since (a missing Runicorn.toml keeps its bindings for a retention); 4 -> 5
# stores trees as pages (the trees themselves move in runicorn.store.migrate); 5 -> 6 drops
# the per-link triggers of blobs.refcount (runicorn.store.rows keeps it per batch); 6 -> 7
# names blobs in links by integer ids; 7 -> 8 keys holds by lease; 8 -> 9 drops the index of links
# by blob (keeping one of the links naming lost blobs); 9 -> 10 adds hold_ranges.  A new index gets the
# current schema at once.  The steps up to version 6 run the schema as it was at version 6 (index_v6.sql), whose
# statements are idempotent (IF NOT EXISTS / OR IGNORE), so a step that adds tables runs
# that whole file again.  The feature tables (stat_cache, runs, toml_usage) are
# not in index.sql: a store creates them, as of the current version, for the features that use
# them (runicorn.store.tables), after these migrations; a migration of a feature table therefore
# changes it only where it exists.
MIGRATIONS: dict[int, Callable[[apsw.Connection], None]] = {}


def schema_sql(name: str = "index.sql") -> str:
    """The text of ``index.sql`` (also published as ``schema/index.sql``), or of the
    frozen schema file ``name``."""
    from importlib import resources  # only when creating or migrating an index

    return resources.files("runicorn.store").joinpath(name).read_text("utf-8")


def _schema_v6(conn: apsw.Connection) -> None:
    conn.execute(schema_sql("index_v6.sql"))


MIGRATIONS[1] = _schema_v6  # adds remote_objects, remote_state, remote_refs


def _migrate_2_to_3(conn: apsw.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS stat_cache")
    _schema_v6(conn)


MIGRATIONS[2] = _migrate_2_to_3


def _migrate_3_to_4(conn: apsw.Connection) -> None:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(toml_usage)")}
    if columns and "missing_since" not in columns:  # no columns: no table yet (created as of now)
        conn.execute("ALTER TABLE toml_usage ADD COLUMN missing_since REAL")


MIGRATIONS[3] = _migrate_3_to_4


def _migrate_4_to_5(conn: apsw.Connection) -> None:
    # Trees as pages (schema/pages.md): the page tables, the trees' page columns and the
    # blob recount of the new triggers.  The old tree_entries rows (and their triggers)
    # stay until runicorn.store.migrate has moved every tree over.
    columns = {row[1] for row in conn.execute("PRAGMA table_info(trees)")}
    if "pages" not in columns:
        conn.execute("ALTER TABLE trees ADD COLUMN depth INTEGER")
        conn.execute("ALTER TABLE trees ADD COLUMN pages TEXT")
    conn.execute("DROP TRIGGER IF EXISTS blobs_ins")
    _schema_v6(conn)


MIGRATIONS[4] = _migrate_4_to_5


def _migrate_5_to_6(conn: apsw.Connection) -> None:
    # The counts stay as the triggers left them (right): from now on the statements that
    # insert and delete links keep them.
    conn.execute("DROP TRIGGER IF EXISTS page_blobs_ins")
    conn.execute("DROP TRIGGER IF EXISTS page_blobs_del")


MIGRATIONS[5] = _migrate_5_to_6


def _migrate_6_to_7(conn: apsw.Connection) -> None:
    # Links name pages and blobs by integer ids: blobs, pages and the link tables are copied
    # into new tables.
    if "id" in {row[1] for row in conn.execute("PRAGMA table_info(blobs)")}:
        # Already in this shape (a version set back by hand): the triggers as of now.
        for trigger in ("blobs_ins", "blobs_del", "blobs_found", "page_children_ins", "page_children_del"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.execute(schema_sql())
        return
    count = int(conn.execute("SELECT COUNT(*) FROM blobs").fetchall()[0][0] or 0)
    if count >= 100_000:  # about 10 s per 1,000,000 blobs: say why the open waits, once
        import sys

        print(
            f"runicorn: upgrading {conn.db_filename('main')} to index schema 7 ({count:,} blobs), once; "
            "interrupting is safe",
            file=sys.stderr,
        )
    # Legacy renaming leaves the text of other tables' triggers alone: the triggers of trees
    # (and a schema-4 store's tree_entries) name "pages" and "blobs", which are the new
    # tables once this is done.
    old = ("blobs", "pages", "page_blobs", "page_children")
    for statement in (
        "DROP TRIGGER IF EXISTS blobs_ins",
        "DROP TRIGGER IF EXISTS blobs_del",
        "DROP TRIGGER IF EXISTS page_children_ins",
        "DROP TRIGGER IF EXISTS page_children_del",
        "DROP INDEX IF EXISTS blobs_unreferenced",
        "DROP INDEX IF EXISTS pages_unreferenced",
        "DROP INDEX IF EXISTS page_blobs_blob",
        "PRAGMA legacy_alter_table = ON",
        *(f"ALTER TABLE {table} RENAME TO {table}_v6" for table in old),
    ):
        conn.execute(statement)
    try:
        conn.execute(schema_sql())
        # The copies keep the counts and totals as they were (verify checks them): no
        # trigger may count the copied links again.
        conn.execute("DROP TRIGGER page_children_ins")
        conn.execute(
            "INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) "
            "SELECT sha256, size, refcount, created_at, touched_at FROM blobs_v6"
        )
        conn.execute(
            "INSERT INTO pages (page, leaf, entries, size, refcount, created_at) "
            "SELECT page, leaf, entries, size, refcount, created_at FROM pages_v6"
        )
        # Blobs links name whose row a repair dropped (their file was lost).
        conn.execute(
            "INSERT INTO lost_blobs (sha256) SELECT DISTINCT l.blob FROM page_blobs_v6 l "
            "WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.sha256 = l.blob) ORDER BY l.blob"
        )
        # A link of a page without a row (only damage leaves one) has nothing to name it
        # by: it is not copied, and verify reports the counts it made.
        conn.execute(
            "INSERT INTO page_blobs (page, blob, n) SELECT p.id, COALESCE(b.id, -g.id), l.n FROM page_blobs_v6 l "
            "JOIN pages p ON p.page = l.page LEFT JOIN blobs b ON b.sha256 = l.blob "
            "LEFT JOIN lost_blobs g ON g.sha256 = l.blob"
        )
        conn.execute(
            "INSERT INTO page_children (page, child) SELECT p.id, c.id FROM page_children_v6 l "
            "JOIN pages p ON p.page = l.page JOIN pages c ON c.page = l.child"
        )
        for table in old:
            conn.execute(f"DROP TABLE {table}_v6")
        conn.execute(schema_sql())
    finally:
        conn.execute("PRAGMA legacy_alter_table = OFF")


MIGRATIONS[6] = _migrate_6_to_7


def _migrate_7_to_8(conn: apsw.Connection) -> None:
    # Holds by lease: the rows (live writers' holds) are copied as lease 0, which no
    # writer of this version gives out, so each stays until its writer lets go or dies.
    if "lease" in {row[1] for row in conn.execute("PRAGMA table_info(holds)")}:
        return
    conn.execute("DROP INDEX IF EXISTS holds_sha256")  # else it moves with the table, name and all
    conn.execute("ALTER TABLE holds RENAME TO holds_v7")
    conn.execute(schema_sql())
    conn.execute("INSERT INTO holds (writer, lease, sha256) SELECT writer, 0, sha256 FROM holds_v7")
    conn.execute("DROP TABLE holds_v7")


MIGRATIONS[7] = _migrate_7_to_8


def _migrate_8_to_9(conn: apsw.Connection) -> None:
    # No row changes: an index goes, a partial one and the trigger that uses it come.
    conn.execute("DROP INDEX IF EXISTS page_blobs_blob")
    conn.execute("DROP TRIGGER IF EXISTS blobs_found")
    conn.execute(schema_sql())


MIGRATIONS[8] = _migrate_8_to_9


def _migrate_9_to_10(conn: apsw.Connection) -> None:
    # A new table (empty: the holds of live writers stay rows of holds); no row changes.
    conn.execute(schema_sql())


MIGRATIONS[9] = _migrate_9_to_10


class Index:
    """One apsw connection to ``index.sqlite3`` with serialized write transactions.

    Raises:
        StoreIndexError: when the file is not a database, is corrupt, or has a schema
            version newer than this code understands.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.read_only = read_only
        if read_only:
            self.created = False
            self._open_read_only(path)
            return
        self.created = False
        try:
            self.conn = apsw.Connection(str(path))
            self.conn.set_busy_timeout(BUSY_TIMEOUT_MS)
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchall()[0][0]
            if str(mode).lower() != "wal":
                raise StoreIndexError(f"{path}: could not switch to WAL mode (got {mode})")
            self.conn.execute("PRAGMA synchronous=FULL")
            # A 10,000-file tree touches more pages than the 2 MB default holds; beyond
            # that SQLite spills and re-reads pages mid-transaction (3x slower inserts).
            self.conn.execute("PRAGMA cache_size=-32768")
            # Checkpoint after 64 MiB of log, not SQLite's 4 MiB: a snapshot's commits touch
            # pages all over the random-keyed index of blobs, and each early checkpoint
            # wrote them to the database again (a 100,000-file first snapshot: 71 MiB of
            # checkpoints instead of 35).  The log is cut back to that size after each.
            self.conn.execute("PRAGMA wal_autocheckpoint=16384")
            self.conn.execute(f"PRAGMA journal_size_limit={64 << 20}")
            # No schema yet: a new file, or one that lost everything (zero length, a copy
            # without its pages).  The store rebuilds such an index from its files when it
            # has any, instead of adopting it as an empty store.
            self.created = self.version == 0
            self._migrate()
        except apsw.Error as exc:
            raise StoreIndexError(f"{path}: index database is unusable ({exc.__class__.__name__}: {exc})") from None

    def _open_read_only(self, path: Path) -> None:
        """Open the index of a store this process cannot write (a read-only mount, another
        user's store): queries work, every write transaction is refused.

        A WAL database needs its ``-shm`` file; on a read-only filesystem where the last
        writer removed it, SQLite opens it only as immutable (nobody can write through
        this mount, so nothing changes under the reader).

        Raises:
            StoreIndexError: no index, unusable, or a schema this code would have to migrate.
        """
        from urllib.parse import quote

        uri = "file:" + quote(str(path))
        last: Exception | None = None
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                conn = apsw.Connection(uri + query, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
                conn.set_busy_timeout(BUSY_TIMEOUT_MS)
                self.conn = conn
                current = self.version  # reads the database: fails here when it cannot be opened
                break
            except apsw.Error as exc:
                last = exc
        else:
            raise StoreIndexError(
                f"{path}: index cannot be opened read-only ({last.__class__.__name__}: {last})"
            ) from None
        if current not in READABLE_AS_IS:
            raise StoreIndexError(
                f"{path}: schema version {current}, this runicorn needs {SCHEMA_VERSION}; "
                "the store is read-only, so it cannot be upgraded here"
            )

    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchall()[0][0] or 0)

    def _migrate(self) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise StoreIndexError(
                f"{self.path}: schema version {current} is newer than this runicorn ({SCHEMA_VERSION})"
            )
        while current < SCHEMA_VERSION:
            with self.write():
                # Re-read inside the write lock: another process may have migrated.
                current = self.version
                if current >= SCHEMA_VERSION:
                    break
                if current == 0:
                    self.conn.execute(schema_sql())
                    self.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                else:
                    MIGRATIONS[current](self.conn)
                    self.conn.execute(f"PRAGMA user_version={current + 1}")
            current = self.version

    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """A ``BEGIN IMMEDIATE`` transaction: one writer at a time across processes.

        Raises:
            ReadOnlyStoreError: the index was opened read-only.
        """
        if self.read_only:
            raise ReadOnlyStoreError(
                f"{self.path.parent.parent}: the store is read-only "
                "(read-only filesystem or no write permission); this command writes to it"
            )
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except apsw.BusyError:
                raise StoreBusyError(
                    f"{self.path.parent.parent}: another process kept the store's index locked for over "
                    f"{BUSY_TIMEOUT_MS // 1000} s (a long gc or verify --repair?); this step wrote nothing "
                    "to it: run the command again when that one ends"
                ) from None
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) may leave the transaction open;
                # every later write would then fail to begin.
                if not self.conn.getautocommit():
                    self.conn.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        """A read transaction: a consistent snapshot for several queries."""
        with self._lock:
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                self.conn.execute("COMMIT")

    def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    def has_table(self, name: str) -> bool:
        """True when the database has a table ``name``."""
        with self._lock:
            return has_table(self.conn, name)

    def scalar(self, sql: str, params: Any = ()) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        with self._lock:
            self.conn.close()


def has_table(c: Any, name: str) -> bool:
    """True when the database of connection ``c`` (in or out of a transaction) has a table ``name``."""
    return c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def quarantine_index(path: Path) -> Path:
    """Move a damaged index (and its WAL files) aside; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(path) + suffix)
        if src.exists():
            src.rename(Path(str(dest) + suffix))
    return dest
