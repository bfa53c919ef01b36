"""The store: one storage root's blobs, trees (manifests), refs, gc and crash recovery.

Formats and the write protocol every write follows (so a crash at any instant is
recoverable) are documented in ``schema/README.md`` and the documents it lists.
:class:`Store` is the public interface; its work is done by one module per concern,
each taking the store:

* :mod:`runicorn.store.layout`   names, records and paths of the storage layout
* :mod:`runicorn.store.blobs`    blob staging, placing and committing
* :mod:`runicorn.store.ingest`   batches of blobs
* :mod:`runicorn.store.trees`    putting, reading and resolving trees
* :mod:`runicorn.store.refs`     refs
* :mod:`runicorn.store.holds`    holds of this process's writer
* :mod:`runicorn.store.rows`     the one writer of the objects' index rows
* :mod:`runicorn.store.gc`       gc: plan, execute, unlink, journal
* :mod:`runicorn.store.recovery` writer directories, intents, trash, deletion notes
* :mod:`runicorn.store.walk`     walking a directory as a tree sees it
* :mod:`runicorn.store.verify`   fsck and rebuilding the index
* :mod:`runicorn.store.cache`    the per-process open stores (:func:`open_store`)
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from runicorn.config import new_store_dir_mode, resolve_storage_root
from runicorn.errors import (
    BlobNotFoundError,
    StoreIndexError,
    ReadOnlyStoreError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
)
from runicorn.fsutil import make_dir
from runicorn.store import blobs as _blobs
from runicorn.store import gc as _gc
from runicorn.store import refs as _refs
from runicorn.store import trees as _trees
from runicorn.store.extensions import tables as extension_tables
from runicorn.store.holds import Held, Holds, Lease
from runicorn.store.index import Index, quarantine_index
from runicorn.store.layout import (
    blob_files_off,
    blob_folder_states,
    blobs_linked_out,
    note_links_tracked,
    DEFAULT_GC_GRACE_SECONDS,
    WORKERS_MARK,
    BlobInfo,
    Ref,
    TreeInfo,
    check_ref,
    quarantine,
    ref_filename,
)
from runicorn.store.recovery import drop_run_refs, recover, recover_writer
from runicorn.store.tables import ensure_tables
from runicorn.store.trees import tree_infos
from runicorn.store.tree_format import TreeEntry, TreePages

if TYPE_CHECKING:
    from runicorn.store.gc import GcPlan
    from runicorn.store.tables import RunRows, StatCache, TomlUsage

__all__ = ["DEFAULT_GC_GRACE_SECONDS", "BlobInfo", "Ref", "Store", "TreeInfo", "ref_filename"]


class Store:
    """A storage root: ``archive/`` (blobs, manifests, refs, index) plus artifacts and runs.

    Open with :meth:`Store.open` (or :func:`runicorn.store.open_store` for a per-process
    shared instance).  Safe for several threads and several processes at once.

    Raises (on open):
        StoreIndexError: the index has a schema newer than this code.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.archive = self.root / "archive"
        self.blobs_dir = self.archive / "blobs"
        self.manifests_dir = self.archive / "manifests"
        # Pages live among the blobs (both are named by the SHA-256 of their bytes), so a
        # manifest and its blob folder are enough to restore a tree (schema/pages.md).
        self.pages_dir = self.blobs_dir
        self.refs_dir = self.archive / "refs"
        self.tmp_dir = self.archive / "tmp"
        self.quarantine_dir = self.archive / "quarantine"
        self.index_path = self.archive / "index.sqlite3"
        self.artifacts_dir = self.root / "artifacts"
        self._writer: Path | None = None
        self._writer_fd: int | None = None
        self._writer_pid = 0
        self._writer_lock = threading.Lock()
        self._page_loader: Callable[[str], bytes] | None = None  # made by the first load_page
        self.holds = Holds(self)
        # A store this process cannot write (read-only mount, someone else's store) still
        # serves every command that only reads; writes are refused with ReadOnlyStoreError.
        self.read_only = os.path.isdir(self.archive) and not os.access(self.archive, os.W_OK)
        self.dir_mode = self._make_dirs()
        self.index = self._open_index()
        if self.dir_mode & 0o020 and not self.read_only:
            self._share_index_files()
        # The tables of the registered features (runicorn.store.extensions), before
        # recovery or a rebuild fills them.
        ensure_tables(self, extension_tables())
        self.recovered: list[str] = self.recover()
        if self.index.created and self._has_content():
            self.rebuild_index()
        elif not self.read_only and self.index.has_table("tree_entries"):  # schema-4 trees left
            from runicorn.store.migrate import migrate_trees

            self.recovered.extend(migrate_trees(self))

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, storage: str | os.PathLike[str] | None = None) -> Store:
        """Open (creating if needed) the store at ``storage`` / ``$RUNICORN_DIR`` / ``~/.runicorn``."""
        return cls(resolve_storage_root(storage))

    def _make_dirs(self) -> int:
        """Create the store's directories (private to the owner by default); return their mode.

        A new store takes ``$RUNICORN_DIR_MODE`` (0700 when unset); later directories copy
        the mode of ``archive/``, so a store's setting stays with the store.  A storage root
        that already exists keeps its mode (it may be a directory of the user's).
        """
        try:
            try:
                mode = stat.S_IMODE(os.stat(self.archive).st_mode)
                if self.read_only:
                    return mode
            except FileNotFoundError:
                mode = new_store_dir_mode()
                self.root.parent.mkdir(parents=True, exist_ok=True)
                make_dir(self.root, mode)
                make_dir(self.archive, mode)
                note_links_tracked(self.archive)  # a new store: every link out is marked from now
            for d in (self.blobs_dir, self.manifests_dir, self.refs_dir, self.tmp_dir):
                make_dir(d, mode)
        except OSError as exc:
            if isinstance(exc, RunicornError):
                raise
            from runicorn.config import storage_root_origin

            raise StoreWriteError(
                f"cannot create the store at {self.root} ({storage_root_origin(self.root)}): "
                f"{exc.strerror or exc} ({exc.filename})",
                exc.errno,
                exc.filename,
            ) from None
        return mode

    def _open_index(self) -> Index:
        if self.read_only:
            return Index(self.index_path, read_only=True)
        try:
            return Index(self.index_path)
        except StoreIndexError as exc:
            if "newer than this runicorn" in str(exc):
                raise
            # A damaged index is moved aside and rebuilt from the files, never trusted.
            quarantine_index(self.index_path)
            index = Index(self.index_path)
            index.created = True
            return index

    def _share_index_files(self) -> None:
        """In a store whose folders the group may write (``RUNICORN_DIR_MODE=2770``), let
        the group write the index too: SQLite creates it (and its ``-wal`` and ``-shm``)
        0644, which would leave every other member's writes failing."""
        for path in (self.index_path, Path(f"{self.index_path}-wal"), Path(f"{self.index_path}-shm")):
            try:
                st = os.stat(path)
                if st.st_uid == os.geteuid() and st.st_mode & 0o060 != 0o060:
                    os.chmod(path, stat.S_IMODE(st.st_mode) | 0o060)
            except FileNotFoundError:
                continue

    def _has_content(self) -> bool:
        for d in (self.blobs_dir, self.manifests_dir, self.refs_dir):
            if d.is_dir() and any(d.iterdir()):
                return True
        return False

    def close(self) -> None:
        """Release holds, remove this process's staging directory, close the index."""
        with self._writer_lock:
            # A joined writer (join_writer: no lock of its own) leaves the folder to its owner.
            if self._writer is not None and self._writer_pid == os.getpid() and self._writer_fd is not None:
                try:
                    # Intents left by a write that failed midway are replayed like a dead
                    # writer's, so closing never strands a linked but unindexed object.
                    recover_writer(self, self._writer)
                except Exception:
                    pass  # kept: the next opener finds the directory unlocked and recovers it
                else:
                    import shutil  # not at the top: it loads bz2 and lzma, ~5 ms of every command

                    shutil.rmtree(self._writer, ignore_errors=True)
            if self._writer is not None:
                if self._writer_fd is not None:
                    os.close(self._writer_fd)
                self._writer = None
                self._writer_fd = None
        self.index.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ paths
    def blob_path(self, sha256: str) -> Path:
        """Where a blob's bytes live (whether or not it exists)."""
        return self.blobs_dir / sha256[:2] / sha256

    def manifest_path(self, tree: str) -> Path:
        """Where a tree's manifest lives (whether or not it exists)."""
        return self.manifests_dir / tree[:2] / f"{tree}.json"

    def page_path(self, page: str) -> Path:
        """Where a tree page lives (``schema/pages.md``; whether or not it exists)."""
        return self.pages_dir / page[:2] / page

    def load_page(self, page: str) -> bytes:
        """The bytes of a stored page (the caller checks them against ``page``).

        Raises:
            CorruptManifestError: no such page file (named, with the repair to run).
        """
        loader = self._page_loader
        if loader is None:
            from runicorn.store.trees import page_loader

            loader = self._page_loader = page_loader(self.pages_dir)
        return loader(page)

    def ref_path(self, kind: str, name: str) -> Path:
        """Where ref ``kind/name``'s file lives (whether or not it exists)."""
        return self.refs_dir / kind / ref_filename(name)

    def require_writable(self) -> None:
        """Raise ReadOnlyStoreError (naming the store) when this process cannot write it."""
        if self.read_only:
            raise ReadOnlyStoreError(
                f"{self.root}: the store is read-only (read-only filesystem or no "
                "write permission); this command writes to it"
            )

    def writer_dir(self) -> Path:
        """This process's staging directory, created (and locked) on first use.

        Raises:
            ReadOnlyStoreError: the store is read-only.
        """
        self.require_writable()
        with self._writer_lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                return self._writer
            import fcntl

            token = f"{os.getpid()}-{os.urandom(6).hex()}"
            # Created under a name recovery ignores, locked, then renamed into view, so
            # no recoverer can mistake a writer that is still starting for a dead one.
            nascent = self.tmp_dir / f"n-{token}"
            try:
                nascent.mkdir(parents=True)
                fd = os.open(nascent / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise self.write_error(exc) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            live = self.tmp_dir / f"w-{token}"
            os.rename(nascent, live)
            self._writer, self._writer_fd, self._writer_pid = live, fd, os.getpid()
            return live

    def write_error(self, exc: OSError, where: str | os.PathLike[str] | None = None) -> OSError:
        """The one message for a write into the store's own folders that the filesystem
        refused, so it is never mistaken for an unreadable source file.

        ENOSPC/EDQUOT give :class:`StorageFullError`; a file standing where the store keeps a
        folder (``blobs/<aa>`` replaced by a file) points at ``verify --repair``; anything
        else (permissions, a read-only mount) names the folder and the cause.
        """
        where = where or exc.filename or self.archive
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFullError(f"{self.root}: no space left on device while writing {where}")
        if exc.errno == errno.ENOTDIR:
            msg = (
                f"{where}: the store at {self.root} is damaged (a file stands where a folder belongs); "
                f"run `runicorn verify --repair`"
            )
        else:
            msg = (
                f"{where}: cannot write to the store at {self.root} ({exc.strerror or exc}); "
                f"check the permissions of {self.archive}"
            )
        return StoreWriteError(msg, exc.errno, str(where))

    @property
    def writer_lock_fd(self) -> int:
        """The descriptor holding this process's writer lock (a worker process gets it, so
        the folder stays locked while the worker lives: ``runicorn.store.ingest_processes``).

        Raises:
            ReadOnlyStoreError: the store is read-only.
        """
        writer = self.writer_dir()
        assert self._writer_fd is not None, "a joined writer has no lock of its own"
        # Marked: once this process is gone, its lock may stay held a moment by dying
        # workers, and recovery waits for them (runicorn.store.layout.workers_dying).
        os.close(os.open(writer / WORKERS_MARK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        return self._writer_fd

    def join_writer(self, writer: Path) -> None:
        """Write as the writer whose folder is ``writer`` (a worker process of that writer,
        holding its lock through an inherited descriptor): batches stage there and holds
        carry its name; closing leaves the folder to its owner."""
        with self._writer_lock:
            self._writer, self._writer_fd, self._writer_pid = writer, None, os.getpid()

    @property
    def current_writer(self) -> Path | None:
        """This process's staging directory if it has made one (None: it has written nothing)."""
        return self._writer

    def quarantine(self, path: Path, why: str) -> Path:
        """Move ``path`` into ``archive/quarantine/`` under a name saying ``why``; return where."""
        return quarantine(self, path, why)

    # ------------------------------------------------------------------ blobs
    def has_blob(self, sha256: str) -> bool:
        """True if the index knows the blob."""
        return self.index.scalar("SELECT 1 FROM blobs WHERE sha256 = ?", (sha256,)) is not None

    def blob_size(self, sha256: str) -> int:
        """Size of a stored blob.

        Raises:
            BlobNotFoundError: unknown blob.
        """
        size = self.index.scalar("SELECT size FROM blobs WHERE sha256 = ?", (sha256,))
        if size is None:
            raise BlobNotFoundError(f"blob {sha256} is not in the store at {self.root}")
        return int(size)

    def open_blob(self, sha256: str, *, what: str = "") -> IO[bytes]:
        """Open a stored blob for reading, checked: its size against the index now, its
        hash when the last byte is read (:class:`runicorn.store.reader.BlobReader`).

        ``what`` (e.g. the file of a tree) is named in errors.

        Raises:
            BlobNotFoundError: unknown blob or file missing.
            DamagedBlobError: the file's size differs from the index's, or (when read
                to the end) its bytes do not hash to its name.
        """
        from runicorn.store.reader import open_checked

        return open_checked(self.blob_path(sha256), sha256, self.blob_size(sha256), what)  # type: ignore[return-value]

    def read_blob(self, sha256: str, *, what: str = "") -> bytes:
        """The bytes of a stored blob, checked against the index's size and the blob's name.

        Raises:
            BlobNotFoundError: unknown blob or file missing.
            DamagedBlobError: the size or hash differs.
        """
        from runicorn.store.reader import read_checked

        return read_checked(self.blob_path(sha256), sha256, self.blob_size(sha256), what)

    def ingest_file(self, path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> BlobInfo:
        """Store one file (read once: hashed while copied); return its blob.

        The blob is readable by group / others only if the file was, and a stored blob
        of the same bytes loses those bits when this file lacks them (never widened).

        Raises:
            ChangedWhileReadingError: the file changed while being read.
            IntegrityError: ``expected_sha256`` given and different.
            RunicornError: not a regular file.
        """
        return _blobs.ingest_file(self, Path(path), expected_sha256=expected_sha256)

    def ingest_files(self, paths: Iterable[str | os.PathLike[str]], *, lease: Lease | None = None) -> list[BlobInfo]:
        """Store many files as one batch: one group sync instead of one fsync per file,
        and no write at all for content the store already has (``runicorn.store.ingest``).
        Their blobs are held under ``lease`` (:meth:`new_lease`), else a lease of the batch's own.

        Raises: as :meth:`ingest_file`, plus StorageFullError; on error nothing of the
        batch is indexed.
        """
        from runicorn.store.ingest import ingest_paths

        return ingest_paths(self, paths, lease)

    def ingest_bytes(self, data: bytes, *, lease: Lease | None = None) -> BlobInfo:
        """Store a byte string, held under ``lease`` (else a lease of its own); return its blob."""
        return _blobs.ingest_bytes(self, data, lease)

    def ingest_stream(self, src: IO[bytes], *, expected_sha256: str | None = None, perm: int = 0o444) -> BlobInfo:
        """Store everything readable from a binary stream.

        ``perm``: the blob's permission, as :func:`runicorn.fsutil.blob_perm` gives for the
        stream's source (an archive member's mode, say); an existing blob is narrowed to it.

        Raises:
            IntegrityError: ``expected_sha256`` given and different.
        """
        return _blobs.ingest_stream(self, src, expected_sha256=expected_sha256, perm=perm)

    def narrow_blobs(self, perms: Mapping[str, int]) -> None:
        """Take away the read bits a blob's newest source did not have (``perms``: blob ->
        :func:`runicorn.fsutil.blob_perm` of that source); never adds any.  A missing
        blob is skipped (its writer places it with the right mode)."""
        _blobs.narrow_blobs(self, perms)

    def hold_blobs(self, shas: Iterable[str], *, lease: Lease | None = None) -> set[str]:
        """Protect already-stored blobs from gc until a tree uses them (under ``lease``, else
        a lease of their own); return the missing ones.

        Used when content is known by hash (for example from a stat cache) without
        being re-read: the caller must ingest every blob this returns.
        """
        return _blobs.hold_blobs(self, shas, lease)

    def blob_files_off(self, blobs: Iterable[tuple[str, int]], *, first: bool = False) -> list[str]:
        """The blobs of ``blobs`` (``(sha256, size)`` pairs) whose file is missing or has
        another size, in hash order (at most one with ``first``): one ``stat`` each, no
        index read."""
        return blob_files_off(self.blobs_dir, blobs, first=first)

    def blob_folder_states(self) -> dict[str, tuple[int, int, int, int]]:
        """``(dev, ino, mtime_ns, ctime_ns)`` of each ``blobs/<aa>`` folder by prefix: while
        a folder keeps its state, no blob file in it came or went.  Empty once a blob was
        ever hard-linked out of the store (its size can then change in place)."""
        if blobs_linked_out(self.blobs_dir):
            return {}
        return blob_folder_states(self.blobs_dir)

    def new_lease(self) -> Lease:
        """A lease for one operation's holds: what it ingests or holds under it stays safe
        from gc until :meth:`release_holds` (or a tree stored with ``held=`` it) lets go of
        all of it at once."""
        return self.holds.new_lease()

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        """A new lease (:meth:`new_lease`) for one operation that stores a tree: on success
        the tree stored with ``held=`` it has let go of its holds; if the operation fails,
        they go here, so what it stored is gc's again (should even that fail, they go with
        this writer, and the operation's own error is the one raised)."""
        lease = self.holds.new_lease()
        try:
            yield lease
        except BaseException:
            with contextlib.suppress(Exception):
                self.holds.release_holds(lease)
            raise

    def release_holds(self, held: Held | None = None) -> None:
        """Let go of every hold of lease ``held``, or of one hold on each id of ``held`` that
        the caller's operation took (every hold of this process when None).  Another
        operation's hold on the same blob or tree stays until it lets go too, and blobs a
        batch stored under a lease (:meth:`ingest_files` with ``lease=``) stay held until
        that lease goes."""
        self.holds.release_holds(held)

    # ------------------------------------------------------------------ trees
    def has_tree(self, tree: str) -> bool:
        """True if the index knows the tree."""
        return _trees.has_tree(self, tree)

    def put_tree(
        self,
        entries: Mapping[str, Any],
        *,
        source: str | None = None,
        ref: tuple[str, str] | None = None,
        ref_meta: Mapping[str, Any] | None = None,
        walked: bool = False,
        held: Held | None = None,
    ) -> str:
        """Record a tree from ``relpath -> (sha256, mode, size)``; return its tree id.

        Every blob must already be stored.  Writes the pages the store lacks and the
        manifest atomically, and indexes them in one transaction (``schema/pages.md``).
        The new tree is held against gc by this process until a ref names it;
        ``ref=(kind, name)`` sets that ref at once.  ``walked``: the entries are
        :class:`TreeEntry` values from this package's own directory walk, whose names are
        checked as they are read, so they are not validated again.  ``held``: the holds
        the tree takes over and so lets go of, the lease its blobs were stored or held
        under (:meth:`new_lease`), or one hold on each id; by default one hold on each
        entry's blob.

        Raises:
            UnsafePathError / ValueError: a bad path, hash, mode or size.
            BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
        """
        return _trees.put_tree(self, entries, source=source, ref=ref, ref_meta=ref_meta, walked=walked, held=held)

    def put_tree_pages(
        self,
        tree: str,
        pages: TreePages,
        *,
        file_count: int,
        total_size: int,
        source: str | None = None,
        held: Held = (),
    ) -> None:
        """Record tree ``tree`` whose pages were built by the caller
        (:func:`runicorn.store.tree_format.build_pages_from_lines`, from the tree's
        validated lines: the caller vouches that they give ``tree``), with its file count
        and total size.  Held as :meth:`put_tree` holds; the holds of ``held`` (the lease
        under which this writer ingested its blobs, or one hold on each blob id) go.

        Raises:
            BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
        """
        summary = _trees.TreeSummary(file_count, total_size)
        _trees.store_tree(self, tree, lambda: pages, summary, source=source, held=held)

    def tree_info(self, tree: str) -> TreeInfo | None:
        """What the index knows of ``tree`` (size, file count, the refs naming it, whether a
        live writer holds it), or None when it is not stored."""
        return tree_infos(self, [tree]).get(tree)

    def touch_tree(self, tree: str) -> bool:
        """Mark ``tree`` as just used (gc's grace period starts again), in a write
        transaction that also finds it: False when it is not stored (a gc took it)."""
        return _trees.touch_tree(self, tree)

    def tree_kept_by(self, tree: str, kind: str, name: str) -> bool:
        """Whether ``tree`` is stored and ref ``kind/name`` names it (one read snapshot)."""
        return _trees.kept_by(self, tree, kind, name)

    def get_manifest(self, tree: str) -> dict[str, Any]:
        """Load and validate a tree's manifest.

        Raises:
            TreeNotFoundError: no such manifest.
            CorruptManifestError: the file is damaged.
        """
        return _trees.get_manifest(self, tree)

    def tree_page_sizes(self, tree: str) -> dict[str, int]:
        """The pages of a stored tree (``schema/pages.md``) and their sizes, from the index
        (empty for an unknown tree): what must be in ``blobs/`` for the tree to be readable."""
        return _trees.page_sizes(self, tree)

    def portable_manifest(self, tree: str) -> bytes:
        """The version-1 manifest of a stored tree (every file listed, no pages): what a
        remote holds (``schema/remote.md``).

        Raises:
            TreeNotFoundError: no such manifest.
            CorruptManifestError: it or one of its pages is damaged.
        """
        return _trees.portable_manifest(self, tree)

    def tree_entries(self, tree: str) -> dict[str, TreeEntry]:
        """A tree's entries from the index.

        Raises:
            TreeNotFoundError: unknown tree.
        """
        return _trees.tree_entries(self, tree)

    def resolve_tree(self, prefix: str, *, hold: bool = False) -> str:
        """Expand a unique tree-id prefix (at least 6 hex digits).

        ``hold``: also hold the tree against gc for this operation, in the transaction
        that finds it, so a ref set next (which ends the hold) cannot find it collected.

        Raises:
            TreeNotFoundError: no tree matches.
            AmbiguousPrefixError: several do (the message lists some).
        """
        return _trees.resolve_tree(self, prefix, hold=hold)

    def ingest_directory(self, root: str | os.PathLike[str], *, source: str | None = None, include: Any = None) -> str:
        """Capture a directory (regular files and symlinks, never followed) as a tree.

        ``include(relpath, is_dir) -> bool`` may prune paths.  Returns the tree id.

        Raises:
            ChangedWhileReadingError: a file changed while read.
            RunicornError: ``root`` is not a directory.
        """
        return _trees.ingest_directory(self, Path(root), source=source, include=include)

    # ------------------------------------------------------------------ refs
    @staticmethod
    def check_ref(kind: str, name: str) -> None:
        """Refuse a ref kind or name the layout cannot hold.

        Raises:
            RefError: bad kind or name.
        """
        check_ref(kind, name)

    def set_ref(
        self,
        kind: str,
        name: str,
        tree: str,
        *,
        meta: Mapping[str, Any] | None = None,
        move: bool = True,
        force_option: str = "force",
    ) -> Ref:
        """Point ref ``kind/name`` at ``tree`` (creating or moving it); return it.

        ``move=False`` refuses to move an existing ref to another tree (checked in the
        transaction that writes it, so two writers cannot both think the name was free);
        the refusal names the option (a key of ``runicorn.errors.OPTIONS``) that allows it.

        Raises:
            RefError: bad kind or name, or the ref names another tree and ``move`` is False.
            TreeNotFoundError: the tree is not in the store.
        """
        return _refs.set_ref(self, kind, name, tree, meta=meta, move=move, force_option=force_option)

    def delete_ref(self, kind: str, name: str) -> bool:
        """Remove ref ``kind/name``; return False if it did not exist.

        The tree becomes collectable by gc once no other ref names it.
        """
        return _refs.delete_ref(self, kind, name)

    def get_ref(self, kind: str, name: str) -> Ref | None:
        """The ref ``kind/name``, or None."""
        return _refs.get_ref(self, kind, name)

    def list_refs(self, kind: str | None = None, *, tree: str | None = None) -> list[Ref]:
        """All refs, optionally of one kind and/or naming one tree."""
        return _refs.list_refs(self, kind, tree=tree)

    def pin(
        self, tree: str, name: str | None = None, *, force: bool = False, meta: Mapping[str, Any] | None = None
    ) -> Ref:
        """Keep ``tree`` alive under ref ``pin/<name or tree>``; ``meta`` is stored with it.

        Pinning a name again to the same tree updates it; moving a name to another tree
        needs ``force`` (the other tree stays only if something else keeps it).

        Raises:
            TreeNotFoundError: unknown tree.
            RefError: the name already pins another tree and ``force`` is False.
        """
        return self.set_ref("pin", name or tree, tree, meta=meta, move=force)

    def unpin(self, name: str) -> bool:
        """Remove the pin ``name`` (a pin name or the tree id it was pinned under)."""
        return self.delete_ref("pin", name)

    def drop_run(self, run_id: str) -> None:
        """Delete run ``run_id``'s refs (files and rows) and its row, in one transaction."""
        with self.index.write() as c:
            drop_run_refs(self, c, run_id)

    # ------------------------------------------------------------------ feature tables
    @property
    def stat_cache(self) -> StatCache:
        """The snapshot stat cache (:class:`runicorn.store.tables.StatCache`)."""
        from runicorn.store.tables import StatCache

        return StatCache(self)

    @property
    def run_rows(self) -> RunRows:
        """The runs table (:class:`runicorn.store.tables.RunRows`)."""
        from runicorn.store.tables import RunRows

        return RunRows(self)

    @property
    def toml_usage(self) -> TomlUsage:
        """The ``Runicorn.toml`` usage table (:class:`runicorn.store.tables.TomlUsage`)."""
        from runicorn.store.tables import TomlUsage

        return TomlUsage(self)

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """Counts and sizes from the index (O(1) in the number of blobs)."""
        with self.index.read() as c:
            totals = dict(c.execute("SELECT name, value FROM totals").fetchall())
            unref_blobs = c.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs WHERE refcount = 0").fetchone()
            trees = c.execute("SELECT COUNT(*) FROM trees").fetchone()[0]
            unref_trees = c.execute("SELECT COUNT(*) FROM trees WHERE refcount = 0").fetchone()[0]
            refs = c.execute("SELECT COUNT(*) FROM refs").fetchone()[0]
        return {
            "storage_root": str(self.root),
            "blob_count": int(totals.get("blob_count", 0)),
            "total_size_bytes": int(totals.get("blob_bytes", 0)),
            "tree_count": int(trees),
            "ref_count": int(refs),
            "unreferenced_blob_count": int(unref_blobs[0]),
            "unreferenced_blob_bytes": int(unref_blobs[1]),
            "unreferenced_tree_count": int(unref_trees),
        }

    # ------------------------------------------------------------------ inspect
    def ls(self, spec: str | None = None) -> Any:
        """Without ``spec``: snapshots, pins, runs and artifacts, newest first (a list of
        dicts); with ``TREE[:PATH]``: that tree's files (see :mod:`runicorn.store.inspect`).

        Raises:
            TreeNotFoundError: ``spec`` names no tree, pin or run, or no path in it.
        """
        from runicorn.store import inspect

        return inspect.ls(self) if spec is None else inspect.ls_tree(self, spec)

    def show(self, spec: str) -> dict[str, Any]:
        """What a tree, pin, ref or run id is, where it came from and what references it.

        Raises:
            TreeNotFoundError: nothing matches ``spec``.
        """
        from runicorn.store.inspect import show

        return show(self, spec)

    def diff(self, a: str | os.PathLike[str], b: str | os.PathLike[str], *, all_files: bool = False) -> dict[str, Any]:
        """Paths added, deleted, modified and mode-changed from ``a`` to ``b`` (trees by any
        name, or directories: as a snapshot would capture them, or every file with ``all_files``).

        Raises:
            TreeNotFoundError: a side names no tree and no directory.
        """
        from runicorn.store.inspect import diff

        return diff(self, a, b, all_files=all_files)

    def du(self) -> dict[str, Any]:
        """Stored bytes per run, pin and artifact, unique vs shared; they add up to
        ``stats()['total_size_bytes']`` with the shared and unreferenced bytes."""
        from runicorn.store.inspect import du

        return du(self)

    # ------------------------------------------------------------------ gc
    def gc(
        self,
        *,
        grace_seconds: float = DEFAULT_GC_GRACE_SECONDS,
        dry_run: bool = False,
        trees: Iterable[str] | None = None,
        keep_missing_toml: float | None = None,
        list_blobs: bool = True,
    ) -> dict[str, Any]:
        """Delete trees no ref names and blobs no tree names, older than the grace period.

        ``trees`` limits collection to those trees and the blobs only they used (how a
        run deletion frees exactly its own content).  Blobs held by a live writer are
        never taken.  A dry run reports exactly what a real run would delete.  ``waiting``
        reports what only the grace period keeps (counts, bytes, and when it becomes
        collectable: ``first_at`` .. ``last_at``).  ``keep_missing_toml``: seconds a missing
        Runicorn.toml keeps its bindings (None: ``runicorn.config.keep_missing_toml_seconds``).
        ``list_blobs``: report every collected blob's id in ``blob_ids`` (False: ``blob_ids``
        is None, and a gc of a million blobs does not hold a million names to return).

        Raises:
            ReadOnlyStoreError: a real run on a read-only store.
            StoreIndexError: the index disagrees with the files (nothing was deleted).
        """
        return _gc.gc(
            self,
            grace_seconds=grace_seconds,
            dry_run=dry_run,
            trees=trees,
            keep_missing_toml=keep_missing_toml,
            list_blobs=list_blobs,
        )

    def gc_plan(
        self,
        trees: Iterable[str],
        *,
        refs_gone: Iterable[tuple[str, str]] = (),
        grace_seconds: float = 0.0,
        collect: bool = True,
    ) -> GcPlan:
        """What ``gc(trees=trees, grace_seconds=...)`` would collect now if the refs
        ``refs_gone`` (``(kind, name)``) were deleted first, with the index's
        :class:`TreeInfo` of each of ``trees``, from one read snapshot and gc's own
        planning query (how a run deletion plans, and reports a dry run).  Without
        ``collect``, only the infos (the plan's lists stay empty): a real run deletion
        leaves the planning to the gc it runs."""
        return _gc.gc_plan(self, trees, refs_gone=refs_gone, grace_seconds=grace_seconds, collect=collect)

    # ------------------------------------------------------------------ recovery
    def recover(self) -> list[str]:
        """Replay or discard what dead writers left in ``archive/tmp``; return what was done.

        A read-only store is left as it is (its next writable opening recovers it).
        """
        return recover(self)

    # ------------------------------------------------------------------ verify / repair
    def verify(self, *, deep: bool = False) -> dict[str, Any]:
        """Check the store against its index (fsck); change nothing.

        Reports missing, resized or (``deep``) corrupt blobs, unindexed and stray
        files, missing or damaged manifests, trees naming missing blobs, refcounts that
        differ from a recount, refs that differ from their files, and leftover temp files.
        """
        from runicorn.store.verify import verify_store

        return verify_store(self, deep=deep)

    def rebuild_index(
        self, *, deep: bool = False, heal_from: Iterable[str | os.PathLike[str]] | None = None
    ) -> dict[str, Any]:
        """Rebuild the whole index from the files (``verify --repair``); return what changed.

        Blob files whose content does not match their name (``deep``), unparsable
        manifests and stray files are moved to ``archive/quarantine/``.  ``heal_from``
        (directories; ``verify --repair --from DIR``): then store again every blob a
        tree names that is missing, from files there whose bytes hash to it
        (:meth:`heal_blobs`; its report is ``result["heal"]``).
        """
        from runicorn.store.verify import rebuild_index

        result = rebuild_index(self, deep=deep)
        if heal_from is not None:
            result["heal"] = self.heal_blobs(heal_from)
        return result

    def heal_blobs(self, sources: Iterable[str | os.PathLike[str]]) -> dict[str, Any]:
        """Store again, from directories holding the right bytes, the blobs trees name that
        the store cannot serve (lost, quarantined, or of the wrong size); return a report.

        Every regular file below ``sources`` whose size is that of a wanted blob is
        hashed (symlinks are not followed; the store's own folders are skipped); only
        bytes whose SHA-256 is a wanted blob's enter the store, through the ordinary
        atomic ingest (which checks the hash again as it copies).  Corrupt blobs of the
        right size are found by :meth:`rebuild_index` with ``deep`` (which quarantines
        them), so ``rebuild_index(deep=True, heal_from=[...])`` heals those too.

        Returns ``wanted`` (count), ``healed`` (blob ids), ``sources`` (blob -> file it
        came from), ``still_missing``, ``files_hashed``, ``bytes_hashed``.

        Raises:
            RunicornError: a source is not a directory.
            ReadOnlyStoreError: the store is read-only.
        """
        from runicorn.store.verify import heal_blobs

        self.require_writable()
        return heal_blobs(self, list(sources))
