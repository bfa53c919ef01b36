"""Batch ingest: many files into the blob store with few system calls per file.

One batch (one call of :meth:`Store.ingest_files`) follows the store's write protocol
(``schema/README.md``) with less work per file:

1. Every file is read once.  A small file (up to ``SMALL_FILE_BYTES``) is read whole
   into memory and hashed; a large one is streamed through one reused buffer into a
   staging file while hashed, and the kernel is asked to start writing it back at once
   so the disk works while the next files are read.
2. Blobs the store already has (index row and file present) are held against gc
   instead of written (``Store.hold_blobs``, one query per ``PENDING_BYTES`` of small
   files).  The new small blobs are first named in ``b-<n>/journal``, then each is
   written straight to its final name ``blobs/<aa>/<sha>`` (mode 0444, created
   exclusively): the hash is known before the first byte is written, so no staging name
   and no rename are needed (measured at 100,000 files of 1-8 KiB: 27-31 us a file
   against 49-52 for a staged file renamed into place).  It has no index row yet, and
   nothing of the store relies on a blob file without a row unless its bytes hash to
   its name (:func:`runicorn.store.blobs.place_blob`).  A name already taken falls back
   to an intent in the batch directory, as a large blob, streamed to a staging file and
   renamed to its intent name ``b-<n>/blob-<sha>``, always is.
3. At commit, the journal names the intents too, and one ``syncfs`` makes the batch
   durable (bytes, the names written in place, the journal); then, in one ``BEGIN
   IMMEDIATE`` transaction, the blobs written in place are checked to be still there
   with their size, each intent is renamed into ``blobs/<aa>/`` without replacing an
   existing file (a second ``syncfs`` makes those renames durable), and the blobs are
   upserted and held for this writer (:func:`runicorn.store.blobs.commit_blobs`, the
   commit of every ingest).  After COMMIT the batch directory goes.  A crash before
   COMMIT leaves blob files the journal names: recovery re-hashes each, adopts the whole
   ones and sets the torn ones aside (:func:`recover_batch`); while the writer lives,
   they are its own (:func:`blobs_being_written`).  A batch of
   at most ``FEW_FILES`` new blobs fsyncs its files and folders in place of each
   ``syncfs``, which would also wait for every other process's unwritten data.

Each batch stages into its own directory, so threads ingesting at once never share a
staging name even when they meet the same content.
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from runicorn.errors import IntegrityError, RunicornError, StorageFullError
from runicorn.fsutil import (
    blob_perm,
    current_umask,
    few_to_sync,
    make_dir,
    read_sized,
    start_writeback,
    sync_written,
    syncfs_in_background,
    write_all,
)
from runicorn.hashing import changed_while_reading, is_sha256_hex, new_sha256, sha256_bytes

from runicorn.store.blobs import adopt_staged_blob, commit_blobs
from runicorn.store.layout import BlobInfo, quarantine, writer_alive
from runicorn.store.rows import insert_blob_rows

if TYPE_CHECKING:
    from runicorn.store.holds import Lease
    from runicorn.store.store import Store

SMALL_FILE_BYTES = 1 << 20  # read whole: one read, one hash call, one write
PENDING_BYTES = 8 << 20  # small blobs kept in memory before they are written
STREAM_CHUNK = 1 << 20
WRITEBACK_EVERY = 16 << 20  # large files: start writeback after this many new bytes
JOURNAL = "journal"  # in a batch directory: the blobs being moved into blobs/, one per line
_batch_numbers = itertools.count()
_PROCESS_TOKEN = os.urandom(4).hex()
_local = threading.local()


def _buffer() -> memoryview:
    # One streaming buffer per thread: allocating (and zeroing) 1 MiB per file
    # would cost more than hashing a small file.
    buf = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = memoryview(bytearray(STREAM_CHUNK))
    return buf


class BlobBatch:
    """Blobs staged for one group commit (see the module docstring).

    Not thread-safe: one batch per thread; the store is.
    """

    def __init__(self, store: "Store", lease: "Lease | None" = None) -> None:
        self.store = store
        # Every blob of the batch is held under one lease, the caller's or else the batch's
        # own: a caller giving up lets go of it (and so of no other operation's holds).
        self.lease = lease or store.holds.new_lease()
        # The caller's lease can hold the batch's new rows as one id range; a caller of a
        # batch with a lease of its own may let go of each blob by name instead.
        self._by_range = lease is not None
        # Worker processes stage in their parent's writer folder: the pid and a token of
        # this process keep their names apart (a later worker may reuse a pid).
        self.dir = store.writer_dir() / f"b-{os.getpid()}-{_PROCESS_TOKEN}-{next(_batch_numbers)}"
        self._dir_made = False
        self.sizes: dict[str, int] = {}  # every blob of the batch
        self.staged: set[str] = set()  # blobs written to the batch directory
        self.direct: dict[str, int] = {}  # blobs written at their final names: sha256 -> size
        self._made_prefix = False  # a blobs/<aa> folder made by this batch: blobs/ changed too
        self._journal_shared = False  # the journal's permission widened for a shared store
        self._pending: dict[str, bytes] = {}  # small blobs hashed, not yet written
        self._pending_bytes = 0
        self._umask = current_umask()  # files are created 0444: fchmod only if it takes bits away
        # Blobs whose sources were not all group/other readable: blob -> permission.
        self.perms: dict[str, int] = {}

    # ----------------------------------------------------------------- staging
    def _staging_dir(self) -> str:
        if not self._dir_made:
            try:
                # Searchable, not listable, by whom the store lets in (a group sharing it):
                # they read the journal by its name; nothing staged is readable by them
                # before it has its blob's permission (a staging file is created 0400).
                os.mkdir(self.dir, 0o700 | (self.store.dir_mode & 0o011))
            except OSError as exc:
                raise self.store.write_error(exc) from None
            self._dir_made = True
        return str(self.dir)

    def add_file(self, path: str, expected_sha256: str | None = None) -> tuple[str, int]:
        """Read, hash and stage one file; return ``(sha256, size)``.

        Raises:
            ChangedWhileReadingError: the file changed while being read.
            IntegrityError: ``expected_sha256`` given and different.
            RunicornError: not a regular file.
            StorageFullError: no space left while staging.
            OSError: the file cannot be opened or read.
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise RunicornError(f"{path}: not a regular file")
            size = before.st_size
            if size <= SMALL_FILE_BYTES:
                data = read_sized(fd, size)
                after = os.fstat(fd)
                if len(data) != size or after.st_size != size or after.st_mtime_ns != before.st_mtime_ns:
                    raise changed_while_reading(path, before, after)
                sha = sha256_bytes(data)
                if expected_sha256 is not None and sha != expected_sha256:
                    raise IntegrityError(f"{path}: sha256 is {sha}, expected {expected_sha256}")
                if sha not in self.sizes and sha not in self._pending:
                    self._pending[sha] = data
                    self._pending_bytes += size
            else:
                sha, size = self._stream(fd, path, before, expected_sha256)
        finally:
            os.close(fd)
        self._narrow(sha, blob_perm(before.st_mode))
        self.sizes[sha] = size
        if self._pending_bytes >= PENDING_BYTES:
            self._write_pending()
        return sha, size

    def add_data(self, data: bytes, expected_sha256: str, *, origin: str = "<data>") -> int:
        """Stage bytes whose sha256 is known in advance (a download); return the size.

        The bytes are hashed here, before anything is written, so content that does not
        match its name never enters the store.

        Raises:
            IntegrityError: the bytes hash to something else.
        """
        sha = sha256_bytes(data)
        if sha != expected_sha256:
            raise IntegrityError(f"{origin}: sha256 is {sha}, expected {expected_sha256}; refused")
        if sha not in self.sizes and sha not in self._pending:
            self._pending[sha] = data
            self._pending_bytes += len(data)
        self.sizes[sha] = len(data)
        if self._pending_bytes >= PENDING_BYTES:
            self._write_pending()
        return len(data)

    def add_chunks(self, chunks: Iterable[bytes], expected_sha256: str, *, origin: str = "<stream>") -> int:
        """Stage a large blob arriving in chunks (a download), hashed while written;
        return its size.  A mismatch removes the staged bytes.

        Raises:
            IntegrityError: the bytes hash to something else.
            StorageFullError: no space left while staging.
        """
        sha, total = self._stage_chunks(chunks, origin, expected_sha256, refused="; refused")
        self.sizes[sha] = total
        return total

    def add_stream(
        self, chunks: Iterable[bytes | memoryview], size: int, *, perm: int = 0o444, origin: str = "<stream>"
    ) -> tuple[str, int]:
        """Stage a blob whose bytes arrive in ``chunks`` and whose sha256 is not known in
        advance (an archive member); return ``(sha256, size)``.

        ``size`` is the size the source declares (the caller checks it against what
        arrived): up to ``SMALL_FILE_BYTES`` the bytes are kept in memory and written with
        the batch's other small blobs, like a small file; larger ones are streamed to
        staging while hashed.  ``perm``: the source's :func:`runicorn.fsutil.blob_perm`.

        Raises:
            StorageFullError: no space left while staging.
        """
        if size <= SMALL_FILE_BYTES:
            data = b"".join(chunks)
            sha = sha256_bytes(data)
            self._narrow(sha, perm)
            if sha not in self.sizes and sha not in self._pending:
                self._pending[sha] = data
                self._pending_bytes += len(data)
            total = len(data)
        else:
            sha, total = self._stage_chunks(chunks, origin, None, perm=perm)
            self._narrow(sha, perm)
        self.sizes[sha] = total
        if self._pending_bytes >= PENDING_BYTES:
            self._write_pending()
        return sha, total

    def _narrow(self, sha: str, perm: int) -> None:
        if perm != 0o444:  # a private source: the blob (new or stored) keeps its privacy
            self.perms[sha] = self.perms.get(sha, 0o444) & perm

    def _stream(self, fd: int, path: str, before: os.stat_result, expected_sha256: str | None) -> tuple[str, int]:
        buf = _buffer()

        def chunks() -> Iterator[memoryview]:
            while n := os.readv(fd, [buf]):
                yield buf[:n]  # written out before the next read refills the buffer

        def unchanged(total: int) -> None:
            after = os.fstat(fd)
            if total != after.st_size or after.st_size != before.st_size or after.st_mtime_ns != before.st_mtime_ns:
                raise changed_while_reading(path, before, after)

        return self._stage_chunks(chunks(), path, expected_sha256, check=unchanged, perm=blob_perm(before.st_mode))

    def _stage_chunks(
        self,
        chunks: Iterable[bytes | memoryview],
        origin: str,
        expected_sha256: str | None,
        *,
        check: Callable[[int], None] | None = None,
        perm: int = 0o444,
        refused: str = "",
    ) -> tuple[str, int]:
        """Write ``chunks`` to a staging file while hashing them (write-back started as it
        goes), run ``check(total)``, compare the hash, and rename the file to its intent
        name ``blob-<sha>``; return ``(sha256, size)``.  On any error nothing is left."""
        staging = self._staging_dir()
        part = f"{staging}/x-{next(_batch_numbers)}.part"
        out = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o400)
        h = new_sha256()
        total = unsynced = 0
        try:
            try:
                for chunk in chunks:
                    h.update(chunk)
                    write_all(out, chunk)
                    total += len(chunk)
                    unsynced += len(chunk)
                    if unsynced >= WRITEBACK_EVERY:
                        start_writeback(out)
                        unsynced = 0
                start_writeback(out)
            finally:
                os.close(out)
            if check is not None:
                check(total)
            sha = h.hexdigest()
            if expected_sha256 is not None and sha != expected_sha256:
                raise IntegrityError(f"{origin}: sha256 is {sha}, expected {expected_sha256}{refused}")
            os.chmod(part, perm)  # created 0400: private until it is known whole
            if sha in self.staged:
                os.unlink(part)
            else:
                os.rename(part, f"{staging}/blob-{sha}")
                self.staged.add(sha)
        except OSError as exc:
            _unlink_quietly(part)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._full(origin) from None
            raise
        except BaseException:
            _unlink_quietly(part)
            raise
        return sha, total

    def _full(self, origin: str) -> StorageFullError:
        return StorageFullError(f"{self.store.root}: no space left on device while storing {origin}")

    def _write_pending(self) -> None:
        """Write the small blobs hashed so far that the store lacks, each at its final name
        (:meth:`_write_in_place`), after the batch's journal names them.

        Blobs the store has (file present) are held against gc instead of written.
        """
        pending, self._pending, self._pending_bytes = self._pending, {}, 0
        if not pending:
            return
        missing = self.store.hold_blobs(pending, lease=self.lease)
        new = sorted(sha for sha in missing if sha not in self.staged and sha not in self.direct)
        if not new:
            return
        # Named before they exist: a batch killed from here on leaves nothing in blobs/
        # that the recovery of its directory cannot find (re-hash, adopt or set aside).
        self._journal(new)
        for sha in new:
            self._write_in_place(sha, pending[sha])
        if not few_to_sync(len(self.staged) + len(self.direct)):
            syncfs_in_background(self.store.tmp_dir)

    def _journal(self, shas: list[str]) -> None:
        """Append ``shas`` to the batch's journal, one per line (made durable with the
        batch, by :meth:`commit`)."""
        fd = os.open(f"{self._staging_dir()}/{JOURNAL}", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            if self.store.dir_mode & 0o044 and not self._journal_shared:
                # Readable by whom the store lets in: their gc, verify and repair must see
                # which files in blobs/ are this batch's (names only, as blobs/ shows them).
                os.fchmod(fd, 0o600 | (self.store.dir_mode & 0o044))
                self._journal_shared = True
            write_all(fd, "".join(f"{sha}\n" for sha in shas).encode())
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._full("the batch journal") from None
            raise
        finally:
            os.close(fd)

    def _write_in_place(self, sha: str, data: bytes) -> None:
        """Create ``blobs/<aa>/<sha>`` (mode 0444, or the private source's) with ``data``.

        The hash is known before the first byte is written, so the file needs no staging
        name and no rename: it has no index row until :meth:`commit`, and nothing of the
        store trusts a blob file without a row unless its bytes hash to its name
        (:func:`runicorn.store.blobs.place_blob`).  A name already taken (another writer's
        copy, a leftover) or a prefix folder that cannot be made falls back to an intent
        in the batch directory, placed under the index lock as a streamed blob is.
        """
        parent = f"{self.store.blobs_dir}/{sha[:2]}"
        try:
            try:
                out = self._create(f"{parent}/{sha}", sha)
            except FileNotFoundError:
                if make_dir(Path(parent), self.store.dir_mode):  # the first blob under this prefix
                    self._made_prefix = True
                out = self._create(f"{parent}/{sha}", sha)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._full(f"a blob of {len(data)} bytes") from None
            self._write_intent(sha, data)
            return
        self.direct[sha] = len(data)  # from here on, a failure leaves it to recovery (journal-listed)
        self._fill(out, sha, data)

    def _write_intent(self, sha: str, data: bytes) -> None:
        try:
            out = self._create(f"{self._staging_dir()}/blob-{sha}", sha)
        except FileExistsError:
            self.staged.add(sha)
            return
        self._fill(out, sha, data)
        self.staged.add(sha)

    def _create(self, path: str, sha: str) -> int:
        """Create the file of blob ``sha`` at ``path``, which must not exist, with the blob's
        permission (0444, or the private source's); return its descriptor."""
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.perms.get(sha, 0o444))

    def _fill(self, out: int, sha: str, data: bytes) -> None:
        """Write ``data`` to the blob file :meth:`_create` opened, and close it.

        Raises:
            StorageFullError: no space left.
        """
        perm = self.perms.get(sha, 0o444)
        try:
            write_all(out, data)
            if self._umask & perm:
                os.fchmod(out, perm)  # blobs are 0444 (0400 if private) whatever the umask
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise self._full(f"a blob of {len(data)} bytes") from None
            raise
        finally:
            os.close(out)

    # ----------------------------------------------------------------- commit
    def commit(self) -> None:
        """Publish the batch: one flush, renames, index rows and holds in one transaction.

        Raises:
            StorageFullError: no space left while writing.
            RunicornError: a blob written in place vanished before its row was written.
        """
        store = self.store
        if not self.sizes:
            return
        self._write_pending()
        staged = sorted(self.staged)
        direct = self.direct
        folders = (self.dir, self.dir.parent, store.tmp_dir)  # down to the journal
        files = [f"{self.dir}/blob-{sha}" for sha in staged]
        dirs: list[str | Path] = []
        if staged:
            # The journal names what is about to move into blobs/, so a crash between
            # a rename and COMMIT leaves nothing unindexed that recovery cannot find.
            self._journal(staged)
            files.append(f"{self.dir}/{JOURNAL}")
            dirs.extend(folders)
        if direct:
            blobs = store.blobs_dir
            files.extend(f"{blobs}/{sha[:2]}/{sha}" for sha in direct)
            dirs.extend(sorted({f"{blobs}/{sha[:2]}" for sha in direct}))
            if self._made_prefix:
                dirs.append(blobs)
        try:
            if files:
                # The bytes (and the names of the blobs written in place) are durable before
                # any row names them.
                try:
                    sync_written(store.tmp_dir, files, dirs)
                except FileNotFoundError as exc:  # a file fsynced one by one is gone
                    raise RunicornError(
                        f"{exc.filename}: the blob file vanished right after it was written; "
                        "nothing of the batch was indexed; store it again"
                    ) from None
            if staged or direct:
                commit_blobs(
                    store,
                    [(f"{self.dir}/blob-{sha}", sha, self.sizes[sha]) for sha in staged],
                    group=not few_to_sync(len(staged), len(folders)),
                    move=True,
                    perms=self.perms,
                    lease=self.lease,
                    placed=direct,
                    by_range=self._by_range,
                )
            else:
                store.narrow_blobs(self.perms)  # content the store had, from a private file
        except BaseException:
            # Some blobs may be in blobs/ already: leave the batch (journal included) to
            # the recovery this store runs when it closes, which adopts what moved.
            self._dir_made = False
            raise
        self.staged.clear()  # moved, or removed after COMMIT
        self.direct.clear()
        self.discard()

    def discard(self) -> None:
        """Remove the batch's staging directory (after COMMIT, or on error).  After an
        error, blobs written in place keep the journal naming them: the directory is left
        to the recovery this store runs when it closes (never unlinked here: another
        writer may have found and committed such a file meanwhile)."""
        self._pending.clear()
        self._pending_bytes = 0
        if self._dir_made:
            # The names are known: unlinking them beats a directory walk.
            for sha in self.staged:
                _unlink_quietly(f"{self.dir}/blob-{sha}")
            if self.direct:
                self._dir_made = False
            else:
                _unlink_quietly(f"{self.dir}/{JOURNAL}")
                try:
                    os.rmdir(self.dir)
                except OSError:  # something else left behind (a torn .part): remove it all
                    import shutil

                    shutil.rmtree(self.dir, ignore_errors=True)
                self._dir_made = False
        self.staged.clear()
        self.direct.clear()


def sync_adopted_blobs(store: "Store", files: list[Path]) -> None:
    """Make blob files that no row names yet, and no writer synced, durable with their
    folders (and ``blobs/``, for a folder made with them) before rows name them: what
    recovery and a repair adopt.

    Raises:
        OSError: a file or folder cannot be synced.
    """
    sync_written(store.blobs_dir, files=files, dirs={p.parent for p in files} | {store.blobs_dir})


def blobs_being_written(store: "Store", *, besides: Path | None = None) -> set[str]:
    """The blobs live writers' batches (this process's too) name in their journals: their
    files in ``blobs/`` may have no row yet (written in place, not committed), and belong
    to that writer until it commits them or dies (then recovery judges them).  Whoever
    else meets such a file leaves it alone: ``verify`` does not report it, a repair does
    not adopt or set it aside, gc does not collect its row.

    A batch names a blob before it creates its file, so a file listed before this is
    called is found in a journal if it is one of them.  ``besides``: a dead writer's
    directory being recovered (its lock, held by the recovery, makes it look live)."""
    own = store.current_writer
    names: set[str] = set()
    try:
        writers = [e for e in os.scandir(store.tmp_dir) if e.name.startswith("w-")]
    except (FileNotFoundError, NotADirectoryError):
        return names
    for entry in writers:
        d = Path(entry.path)
        if d == besides or (d != own and not writer_alive(d)):
            continue
        try:
            batches = [b.path for b in os.scandir(d) if b.name.startswith("b-")]
        except OSError:
            continue
        for batch in batches:  # searchable, not listable, by other users: opened by name
            try:
                with open(f"{batch}/{JOURNAL}", "rb") as f:
                    names.update(n for n in f.read().decode("ascii").split() if is_sha256_hex(n))
            except (OSError, UnicodeDecodeError):
                continue
    return names


def recover_batch(store: "Store", c: Any, batch_dir: Path) -> list[str]:
    """Finish or undo a dead writer's batch inside the recovery transaction ``c``.

    Blobs the journal names that reached ``blobs/`` but not the index are re-hashed and
    adopted; intents still in the batch directory are adopted like any other intent.
    """
    from runicorn.hashing import sha256_file

    actions: list[str] = []
    try:
        listed = (batch_dir / JOURNAL).read_text("ascii").split()
    except (FileNotFoundError, UnicodeDecodeError):
        listed = []
    now = time.time()
    adopted: dict[str, tuple[Path, int]] = {}
    for sha in listed:
        if not is_sha256_hex(sha) or sha in adopted:
            continue  # a torn journal line
        dest = store.blob_path(sha)
        if c.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (sha,)).fetchone() or not dest.exists():
            continue
        if sha256_file(dest) != sha:
            if sha in blobs_being_written(store, besides=batch_dir.parent):
                continue  # a live batch writes this blob in place again: its file, not the torn one
            quarantine(store, dest, "corrupt")
            actions.append(f"quarantined torn blob {sha[:12]}")
            continue
        st = dest.stat()
        os.chmod(dest, blob_perm(st.st_mode))  # read-only, never more readable
        adopted[sha] = (dest, st.st_size)
    if adopted:
        # The writer died before its commit's sync (or stopped on an error): its bytes
        # and names may still be in memory only.
        sync_adopted_blobs(store, [dest for dest, _ in adopted.values()])
        insert_blob_rows(c, [(sha, size, now, now) for sha, (_, size) in adopted.items()])
        actions.extend(f"adopted blob {sha[:12]}" for sha in adopted)
    for g in sorted(batch_dir.iterdir()):
        if g.name.startswith("blob-") and is_sha256_hex(g.name[5:]):
            actions.append(adopt_staged_blob(store, c, g, g.name[5:]))
    return actions


def ingest_paths(
    store: "Store", paths: Iterable[str | os.PathLike[str]], lease: "Lease | None" = None
) -> list["BlobInfo"]:
    """Store many files as one batch (see the module docstring), held under ``lease`` (else
    a lease of the batch's own); return their blobs in order.

    Raises: as :meth:`BlobBatch.add_file`; on error nothing of the batch is indexed.
    """
    batch = BlobBatch(store, lease)
    out: list[BlobInfo] = []
    try:
        for p in paths:
            sha, size = batch.add_file(os.fspath(p))
            out.append(BlobInfo(sha, size))
        batch.commit()
    except OSError as exc:
        batch.discard()
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, StorageFullError):
            raise StorageFullError(f"{store.root}: no space left on device ({exc})") from None
        raise
    except BaseException:
        batch.discard()
        raise
    return out


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
