"""The SQLite index (apsw, WAL): opening, schema versions, migrations, transactions."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw

from runicorn.errors import StoreIndexError, ReadOnlyStoreError

SCHEMA_VERSION = 6
BUSY_TIMEOUT_MS = 120_000

# Migrations from version N to N+1, applied in order inside one transaction each.
# Version 0 -> 1 is the initial schema (index.sql); 1 -> 2 adds the remote tables; 2 -> 3
# adds ctime_ns to the stat cache (a cache: its rows are dropped, files are read once more); 3 -> 4
# adds toml_usage.missing_since (a missing Runicorn.toml keeps its bindings for a retention); 4 -> 5
# stores trees as pages (the trees themselves move in runicorn.store.migrate); 5 -> 6 drops
# the per-link triggers of blobs.refcount (runicorn.store.rows keeps it per batch).  Every
# statement of index.sql is idempotent (IF NOT EXISTS / OR IGNORE), so a migration that
# adds tables runs the whole file again.  The feature tables (stat_cache, runs, toml_usage) are
# not in index.sql: a store creates them, as of the current version, for the features that use
# them (runicorn.store.tables), after these migrations; a migration of a feature table therefore
# changes it only where it exists.
MIGRATIONS: dict[int, Callable[[apsw.Connection], None]] = {}


def schema_sql() -> str:
    """The text of ``index.sql`` (also published as ``schema/index.sql``)."""
    from importlib import resources  # only when creating or migrating an index

    return resources.files("runicorn.store").joinpath("index.sql").read_text("utf-8")


def _migrate_0_to_1(conn: apsw.Connection) -> None:
    conn.execute(schema_sql())


MIGRATIONS[0] = _migrate_0_to_1
MIGRATIONS[1] = _migrate_0_to_1  # adds remote_objects, remote_state, remote_refs


def _migrate_2_to_3(conn: apsw.Connection) -> None:
    conn.execute("DROP TABLE IF EXISTS stat_cache")
    conn.execute(schema_sql())


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
    conn.execute(schema_sql())


MIGRATIONS[4] = _migrate_4_to_5


def _migrate_5_to_6(conn: apsw.Connection) -> None:
    # The counts stay as the triggers left them (right): from now on the statements that
    # insert and delete links keep them.
    conn.execute("DROP TRIGGER IF EXISTS page_blobs_ins")
    conn.execute("DROP TRIGGER IF EXISTS page_blobs_del")


MIGRATIONS[5] = _migrate_5_to_6


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
        if current != SCHEMA_VERSION:
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
            self.conn.execute("BEGIN IMMEDIATE")
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
