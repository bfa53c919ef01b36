"""The content-addressed store: blobs, trees (manifests), refs, gc and crash recovery.

Write protocol (every write, so a crash at any instant is recoverable):

* Each writing process owns ``archive/tmp/w-<id>/`` and holds an ``flock`` on its
  ``lock`` file while alive.  Staged data and *intents* live there.
* A blob is copied and hashed in one pass into ``<writer>/x.part``, fsynced (or
  group-synced), renamed to the intent ``<writer>/blob-<sha>``, then -- inside one
  ``BEGIN IMMEDIATE`` transaction -- hard-linked to ``blobs/<aa>/<sha>`` and upserted
  in the index; the intent is removed after COMMIT.
* Trees and refs follow the same shape (``tree-<id>.json``, ``ref-<n>.json`` intents).
* gc moves doomed manifests into ``<writer>/trash/`` inside its transaction and deletes
  them after COMMIT.  Doomed blobs are listed in a journal (``<writer>/gc-<n>.json``)
  before that COMMIT drops their rows; after it they are unlinked in place, in batches,
  each under the index's write lock and only if no row names the blob again (a writer
  stores a blob by linking it and inserting its row in one transaction).
* Opening a store finds writer directories whose lock is free (dead processes) and
  replays or discards their intents, so the index and the files agree again.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from runicorn._lazy import resolve
from runicorn.config import new_store_dir_mode, resolve_storage_root
from runicorn.errors import (
    BlobNotFoundError,
    CorruptManifestError,
    IndexError_,
    IntegrityError,
    ReadOnlyStoreError,
    RefError,
    RunicornError,
    StorageFullError,
    StoreWriteError,
    TreeNotFoundError,
    UnsafePathError,
    option,
)
from runicorn.fsutil import (
    StagedFile,
    abandoned,
    atomic_write_json,
    blob_perm,
    fsync_dir,
    make_dir,
    publish_link,
    remove_tree,
    rename_noreplace,
    syncfs,
)
from runicorn.hashing import check_unchanged, copy_and_hash, is_sha256_hex, sha256_file
from runicorn.relpath import check_names
from runicorn.store.index import Index, quarantine_index
from runicorn.store.tree import (
    MODE_LINK,
    TreeEntry,
    build_manifest,
    compute_tree_id,
    manifest_bytes,
    mode_of,
    normalize_entries,
    parse_manifest,
)

DEFAULT_GC_GRACE_SECONDS = 3600.0
# Blobs per statement and per unlink transaction of gc: one set statement instead of a
# round trip per blob, while the write lock is let go between batches.
GC_BATCH = 10_000

# "module:function" called as f(store, dry_run=..., keep_missing_toml=...) at the start of
# every gc, so features that own refs (artifact bindings of Runicorn.toml files) bring them
# up to date first.  A refresher may return warnings (strings) for the gc report.
GC_ROOT_REFRESHERS: list[str] = [
    "runicorn.runs.delete:finish_interrupted_deletions",
    "runicorn.artifacts.gcroots:refresh_binding_refs",
]
# "module:function" called as f(store, trees, dry_run=...) once a gc has committed (for a
# dry run: once it has planned): it takes what lives outside the archive for the trees the
# gc collects (installed artifact folders), returning ``(path, lock fd or None)`` pairs
# that the gc counts, removes and unlocks (see runicorn.artifacts.installed).
GC_COLLECTED_HOOK = "runicorn.artifacts.installed:take_installed"
_KIND_RE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_WRITER_STALE_SECONDS = 3600.0


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A stored blob: its SHA-256 and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Ref:
    """A named root that keeps a tree alive."""

    kind: str
    name: str
    tree: str
    created_at: float
    meta: dict[str, Any]


def ref_filename(name: str) -> str:
    """File name for a ref: percent-encoded name, or a digest when too long."""
    encoded = quote(name, safe="")
    if len(encoded) > 200:
        import hashlib

        encoded = "~" + hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()
    return encoded + ".json"


class Store:
    """A storage root: ``archive/`` (blobs, manifests, refs, index) plus artifacts and runs.

    Open with :meth:`Store.open` (or :func:`open_store` for a per-process shared instance).
    Safe for several threads and several processes at once.

    Raises (on open):
        IndexError_: the index has a schema newer than this code.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.archive = self.root / "archive"
        self.blobs_dir = self.archive / "blobs"
        self.manifests_dir = self.archive / "manifests"
        self.refs_dir = self.archive / "refs"
        self.tmp_dir = self.archive / "tmp"
        self.quarantine_dir = self.archive / "quarantine"
        self.index_path = self.archive / "index.sqlite3"
        self.artifacts_dir = self.root / "artifacts"
        self._writer: Path | None = None
        self._writer_fd: int | None = None
        self._writer_pid = 0
        self._writer_lock = threading.Lock()
        # How many unfinished operations of this process hold each blob or tree: the
        # index row (one per writer) goes only when the last of them lets go, so one
        # thread finishing never drops another's protection.
        self._held: Counter[str] = Counter()
        # A store this process cannot write (read-only mount, someone else's store) still
        # serves every command that only reads; writes are refused with ReadOnlyStoreError.
        self.read_only = os.path.isdir(self.archive) and not os.access(self.archive, os.W_OK)
        self.dir_mode = self._make_dirs()
        self.index = self._open_index()
        self.recovered: list[str] = self.recover()
        if self.index.created and self._has_content():
            self.rebuild_index()

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
            for d in (self.blobs_dir, self.manifests_dir, self.refs_dir, self.tmp_dir):
                make_dir(d, mode)
        except OSError as exc:
            if isinstance(exc, RunicornError):
                raise
            from runicorn.config import storage_root_origin

            raise StoreWriteError(f"cannot create the store at {self.root} ({storage_root_origin(self.root)}): "
                                  f"{exc.strerror or exc} ({exc.filename})", exc.errno, exc.filename) from None
        return mode

    def _open_index(self) -> Index:
        if self.read_only:
            return Index(self.index_path, read_only=True)
        try:
            return Index(self.index_path)
        except IndexError_ as exc:
            if "newer than this runicorn" in str(exc):
                raise
            # A damaged index is moved aside and rebuilt from the files, never trusted.
            quarantine_index(self.index_path)
            index = Index(self.index_path)
            index.created = True
            return index

    def _has_content(self) -> bool:
        for d in (self.blobs_dir, self.manifests_dir, self.refs_dir):
            if any(d.iterdir()):
                return True
        return False

    def close(self) -> None:
        """Release holds, remove this process's staging directory, close the index."""
        with self._writer_lock:
            if self._writer is not None and self._writer_pid == os.getpid():
                try:
                    # Intents left by a write that failed midway are replayed like a dead
                    # writer's, so closing never strands a linked but unindexed object.
                    self._recover_writer(self._writer)
                except Exception:
                    pass  # kept: the next opener finds the directory unlocked and recovers it
                else:
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

    def ref_path(self, kind: str, name: str) -> Path:
        return self.refs_dir / kind / ref_filename(name)

    def require_writable(self) -> None:
        """Raise ReadOnlyStoreError (naming the store) when this process cannot write it."""
        if self.read_only:
            raise ReadOnlyStoreError(f"{self.root}: the store is read-only (read-only filesystem or no "
                                     "write permission); this command writes to it")

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

            token = f"{os.getpid()}-{secrets.token_hex(6)}"
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
            msg = (f"{where}: the store at {self.root} is damaged (a file stands where a folder belongs); "
                   f"run `runicorn verify --repair`")
        else:
            msg = (f"{where}: cannot write to the store at {self.root} ({exc.strerror or exc}); "
                   f"check the permissions of {self.archive}")
        return StoreWriteError(msg, exc.errno, str(where))

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

    def _stage_stream(self, src: IO[bytes], *, origin: str, perm: int = 0o444) -> tuple[Path, str, int]:
        staged = StagedFile(self.writer_dir(), mode=0o600)
        try:
            sha, size = copy_and_hash(src, staged.file)
            staged.finish(fsync=False, mode=perm)
        except OSError as exc:
            staged.discard()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(f"{self.root}: no space left on device while storing {origin}") from None
            raise
        except BaseException:
            staged.discard()
            raise
        intent = staged.path.with_name(f"blob-{sha}")
        os.replace(staged.path, intent)
        return intent, sha, size

    def _stage_file(self, path: Path, expected_sha256: str | None) -> tuple[Path, str, int, int]:
        with open(path, "rb") as src:
            before = os.fstat(src.fileno())
            if not stat.S_ISREG(before.st_mode):
                raise RunicornError(f"{path}: not a regular file")
            perm = blob_perm(before.st_mode)
            intent, sha, size = self._stage_stream(src, origin=str(path), perm=perm)
            try:
                check_unchanged(path, before, src.fileno())
            except BaseException:
                os.unlink(intent)
                raise
        if expected_sha256 is not None and sha != expected_sha256:
            os.unlink(intent)
            raise IntegrityError(f"{path}: sha256 is {sha}, expected {expected_sha256}")
        return intent, sha, size, perm

    def ingest_file(self, path: str | os.PathLike[str], *, expected_sha256: str | None = None) -> BlobInfo:
        """Store one file (read once: hashed while copied); return its blob.

        The blob is readable by group / others only if the file was, and a stored blob
        of the same bytes loses those bits when this file lacks them (never widened).

        Raises:
            ChangedWhileReadingError: the file changed while being read.
            IntegrityError: ``expected_sha256`` given and different.
            RunicornError: not a regular file.
        """
        intent, sha, size, perm = self._stage_file(Path(path), expected_sha256)
        fd = os.open(intent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        self._commit_blobs([(intent, sha, size)], group=False, perms={sha: perm})
        return BlobInfo(sha, size)

    def ingest_files(self, paths: Iterable[str | os.PathLike[str]]) -> list[BlobInfo]:
        """Store many files as one batch: one group sync instead of one fsync per file,
        and no write at all for content the store already has (``runicorn.store.ingest``).

        Raises: as :meth:`ingest_file`, plus StorageFullError; on error nothing of the
        batch is indexed.
        """
        from runicorn.store.ingest import ingest_paths

        return ingest_paths(self, paths)

    def ingest_bytes(self, data: bytes) -> BlobInfo:
        """Store a byte string; return its blob."""
        import io

        intent, sha, size = self._stage_stream(io.BytesIO(data), origin="<bytes>")
        self._commit_blobs([(intent, sha, size)], group=False, fsync_data=True)
        return BlobInfo(sha, size)

    def ingest_stream(self, src: IO[bytes], *, expected_sha256: str | None = None,
                      perm: int = 0o444) -> BlobInfo:
        """Store everything readable from a binary stream.

        ``perm``: the blob's permission, as :func:`runicorn.fsutil.blob_perm` gives for the
        stream's source (an archive member's mode, say); an existing blob is narrowed to it.

        Raises:
            IntegrityError: ``expected_sha256`` given and different.
        """
        intent, sha, size = self._stage_stream(src, origin="<stream>", perm=perm)
        if expected_sha256 is not None and sha != expected_sha256:
            os.unlink(intent)
            raise IntegrityError(f"stream sha256 is {sha}, expected {expected_sha256}")
        self._commit_blobs([(intent, sha, size)], group=False, fsync_data=True, perms={sha: perm})
        return BlobInfo(sha, size)

    def _place_blob(self, intent: Path | str, sha: str, size: int, *, move: bool = False) -> str | None:
        """Put a staged blob at ``blobs/<aa>/<sha>`` unless a good copy is there; return
        the directory to sync, or None when nothing was placed.

        A copy of the wrong size is quarantined and replaced.  The intent is hard-linked
        (it stays, for recovery, until the caller's COMMIT) or, with ``move``, renamed
        (a batch whose journal names it); an existing file is never overwritten.

        Raises:
            RunicornError: the destination keeps appearing and vanishing, or the store
                refused the write (see :meth:`write_error`).
        """
        parent = f"{self.blobs_dir}/{sha[:2]}"
        dest = f"{parent}/{sha}"
        try:
            for _ in range(3):
                try:
                    placed = rename_noreplace(str(intent), dest) if move else publish_link(Path(intent), Path(dest))
                except (FileNotFoundError, NotADirectoryError):
                    if os.path.isdir(parent):
                        raise
                    if os.path.lexists(parent):
                        # A file (or link) stands where the prefix folder belongs: set it aside,
                        # never delete it, so the blob can land and the store stays usable.
                        self._quarantine(Path(parent), "not-a-folder")
                    make_dir(Path(parent), self.dir_mode)  # first blob under this prefix
                    continue
                if placed:
                    return parent
                try:
                    if os.stat(dest).st_size == size:
                        return None
                except FileNotFoundError:
                    continue  # collected meanwhile: try again
                self._quarantine(Path(dest), "size-mismatch")
        except RunicornError:
            raise
        except OSError as exc:
            raise self.write_error(exc, parent) from None
        raise RunicornError(f"{dest}: cannot be placed (it keeps appearing and vanishing)")

    def _commit_blobs(self, staged: list[tuple[Path | str, str, int]], *, group: bool,
                      fsync_data: bool = False, move: bool = False,
                      perms: Mapping[str, int] | None = None) -> None:
        """Place staged blobs and index them, held for this writer, in one transaction.

        ``group``: the data is already flushed and many directories change, so one
        ``syncfs`` makes the placements durable.  ``move``: rename the intents (a batch
        whose journal names them) instead of linking them.  ``perms``: blobs whose
        source was private; a copy already in ``blobs/`` is narrowed to that permission
        (:meth:`narrow_blobs`).  Intents still present are removed after COMMIT.
        """
        if fsync_data:
            for intent, _, _ in staged:
                fd = os.open(intent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.writer_dir()  # created and locked before this process holds anything
        now = time.time()
        unique = {sha: (intent, sha, size) for intent, sha, size in staged}
        moved: set[str] = set()
        with self.index.write() as c:
            dirs: set[str] = set()
            for intent, sha, size in unique.values():
                d = self._place_blob(intent, sha, size, move=move)
                if d is not None:
                    dirs.add(d)
                    if move:
                        moved.add(sha)
            if dirs:
                if group or len(dirs) > 8:
                    syncfs(self.blobs_dir)
                else:
                    for d in dirs:
                        fsync_dir(d)
            if perms:
                self.narrow_blobs(perms)
            c.executemany(
                "INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) VALUES (?, ?, 0, ?, ?) "
                "ON CONFLICT (sha256) DO UPDATE SET touched_at = excluded.touched_at",
                [(sha, size, now, now) for _, sha, size in unique.values()])
            self._acquire_in_tx(c, unique)
        for intent, sha, _ in staged:
            if sha not in moved:
                try:
                    os.unlink(intent)
                except FileNotFoundError:
                    pass

    def narrow_blobs(self, perms: Mapping[str, int]) -> None:
        """Take away the read bits a blob's newest source did not have (``perms``: blob ->
        :func:`runicorn.fsutil.blob_perm` of that source); never adds any.  A missing
        blob is skipped (its writer places it with the right mode)."""
        blobs_dir = str(self.blobs_dir)
        for sha, perm in perms.items():
            if perm & 0o044 == 0o044:
                continue
            path = f"{blobs_dir}/{sha[:2]}/{sha}"
            try:
                mode = stat.S_IMODE(os.stat(path).st_mode)
                if mode & 0o044 & ~perm:
                    os.chmod(path, mode & ~(0o044 & ~perm))
            except FileNotFoundError:
                pass

    def hold_blobs(self, shas: Iterable[str]) -> set[str]:
        """Protect already-stored blobs from gc until a tree uses them; return the missing ones.

        Used when content is known by hash (for example from a stat cache) without
        being re-read: the caller must ingest every blob this returns.
        """
        self.writer_dir()  # created and locked before this process holds anything
        now = time.time()
        wanted = sorted(set(shas))
        blobs_dir = str(self.blobs_dir)
        with self.index.write() as c:
            # One set query and two batched statements: this runs for every file a
            # stat cache vouches for, so it must not cost a round trip per blob.
            known = dict(c.execute(
                "SELECT sha256, size FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))",
                (json.dumps(wanted),)).fetchall())
            # The file must be there with the indexed size, else the caller writes it
            # again (and the damaged file is moved aside when the new one is placed).
            present = [s for s in wanted if s in known and _file_size(f"{blobs_dir}/{s[:2]}/{s}") == known[s]]
            c.executemany("UPDATE blobs SET touched_at = ? WHERE sha256 = ?", [(now, s) for s in present])
            self._acquire_in_tx(c, present)
        return set(wanted) - set(present)

    def release_holds(self, shas: Iterable[str] | None = None) -> None:
        """Let go of one hold on each of ``shas`` that the caller's operation took (every
        hold of this process when None).  Another operation's hold on the same blob or
        tree stays until it lets go too."""
        if self._writer is None:
            return
        writer = self._writer.name
        with self.index.write() as c:
            if shas is None:
                c.execute("DELETE FROM holds WHERE writer = ?", (writer,))
                self._held.clear()
            else:
                self._release_in_tx(c, set(shas))

    # ------------------------------------------------------------------ trees
    def has_tree(self, tree: str) -> bool:
        """True if the index knows the tree."""
        return self.index.scalar("SELECT 1 FROM trees WHERE tree = ?", (tree,)) is not None

    def put_tree(self, entries: Mapping[str, Any], *, source: str | None = None,
                 ref: tuple[str, str] | None = None, ref_meta: Mapping[str, Any] | None = None) -> str:
        """Record a tree from ``relpath -> (sha256, mode, size)``; return its tree id.

        Every blob must already be stored.  Writes the manifest atomically, indexes the
        entries and bumps blob refcounts in one transaction.  The new tree is held
        against gc by this process until a ref names it; ``ref=(kind, name)`` sets that
        ref at once.

        Raises:
            UnsafePathError / ValueError: a bad path, hash, mode or size.
            BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
        """
        norm = normalize_entries(entries)
        tree = compute_tree_id(norm)
        if self.index.scalar("SELECT 1 FROM trees WHERE tree = ?", (tree,)) and \
                self.manifest_path(tree).exists():
            with self.index.write() as c:
                if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                    c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (time.time(), tree))
                    self._hold_in_tx(c, tree)
                    self._release_in_tx(c, {e.sha256 for e in norm.values()})
                    existing = True
                else:
                    existing = False
            if existing:
                if ref is not None:
                    self.set_ref(ref[0], ref[1], tree, meta=ref_meta)
                return tree
        manifest = build_manifest(tree, norm, source=source)
        staged = StagedFile(self.writer_dir(), mode=0o600)
        try:
            staged.file.write(manifest_bytes(manifest))
            staged.finish(fsync=True, mode=0o444)
        except BaseException:
            staged.discard()
            raise
        intent = staged.path.with_name(f"tree-{tree}.json")
        os.replace(staged.path, intent)
        try:
            self._commit_tree(intent, tree, norm)
        finally:
            intent.unlink(missing_ok=True)
        if ref is not None:
            self.set_ref(ref[0], ref[1], tree, meta=ref_meta)
        return tree

    def _commit_tree(self, intent: Path, tree: str, norm: Mapping[str, TreeEntry]) -> None:
        now = time.time()
        shas = {e.sha256 for e in norm.values()}
        with self.index.write() as c:
            dest = self.manifest_path(tree)
            if not dest.exists():
                publish_link(intent, dest)
                fsync_dir(dest.parent)
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (now, tree))
            else:
                # One set query, not a round trip per blob: trees can have 100k entries.
                known = {row[0] for row in c.execute(
                    "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))",
                    (json.dumps(sorted(shas)),))}
                missing = sorted(shas - known)
                if missing:
                    err = BlobNotFoundError(
                        f"tree {tree}: {len(missing)} blob(s) not in the store, e.g. {missing[0]}")
                    err.missing = missing  # type: ignore[attr-defined]
                    raise err
                c.execute("INSERT INTO trees (tree, file_count, total_size, refcount, created_at, touched_at) "
                          "VALUES (?, ?, ?, 0, ?, ?)",
                          (tree, len(norm), sum(e.size for e in norm.values()), now, now))
                c.executemany("INSERT INTO tree_entries (tree, path, blob, mode, size) VALUES (?, ?, ?, ?, ?)",
                              [(tree, p, e.sha256, e.mode, e.size) for p, e in norm.items()])
            self._hold_in_tx(c, tree)
            self._release_in_tx(c, shas)

    def _hold_in_tx(self, c: Any, object_id: str) -> None:
        self._acquire_in_tx(c, (object_id,))

    def _acquire_in_tx(self, c: Any, ids: Iterable[str]) -> None:
        """One more hold on each id (inside the caller's transaction)."""
        ids = list(ids)
        if not ids:
            return
        writer = self.writer_dir().name
        c.executemany("INSERT OR IGNORE INTO holds (writer, sha256) VALUES (?, ?)", [(writer, i) for i in ids])
        self._held.update(ids)

    def _release_in_tx(self, c: Any, shas: set[str], *, every: bool = False) -> None:
        """One hold less (``every``: none left) on each of ``shas`` this process holds;
        the row goes with the last."""
        if self._writer is None:
            return
        gone = []
        for s in shas:
            n = self._held.get(s, 0)
            if n > 1 and not every:
                self._held[s] = n - 1
            elif n >= 1:
                del self._held[s]
                gone.append(s)
        if gone:
            c.executemany("DELETE FROM holds WHERE writer = ? AND sha256 = ?",
                          [(self._writer.name, s) for s in gone])

    def get_manifest(self, tree: str) -> dict[str, Any]:
        """Load and validate a tree's manifest.

        Raises:
            TreeNotFoundError: no such manifest.
            CorruptManifestError: the file is damaged.
        """
        path = self.manifest_path(tree)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise TreeNotFoundError(f"tree {tree} is not in the store at {self.root}") from None
        manifest, _ = parse_manifest(data, origin=path, expected_tree=tree)
        return manifest

    def tree_entries(self, tree: str) -> dict[str, TreeEntry]:
        """A tree's entries from the index.

        Raises:
            TreeNotFoundError: unknown tree.
        """
        rows = self.index.query("SELECT path, blob, mode, size FROM tree_entries WHERE tree = ?", (tree,))
        if not rows and not self.has_tree(tree):
            raise TreeNotFoundError(f"tree {tree} is not in the store at {self.root}")
        return {p: TreeEntry(b, m, s) for p, b, m, s in rows}

    def resolve_tree(self, prefix: str, *, hold: bool = False) -> str:
        """Expand a unique tree-id prefix (at least 6 hex digits).

        ``hold``: also hold the tree against gc for this operation, in the transaction
        that finds it, so a ref set next (which ends the hold) cannot find it collected.

        Raises:
            TreeNotFoundError: no tree matches.
            AmbiguousPrefixError: several do (the message lists some).
        """
        tree = self._resolve_tree(prefix)
        if hold:
            with self.index.write() as c:
                if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
                    raise TreeNotFoundError(f"tree {tree} is not in the store at {self.root}")
                self._hold_in_tx(c, tree)
        return tree

    def _resolve_tree(self, prefix: str) -> str:
        prefix = prefix.lower()
        if is_sha256_hex(prefix):
            if self.has_tree(prefix):
                return prefix
            raise TreeNotFoundError(f"tree {prefix} is not in the store at {self.root}")
        if len(prefix) < 6 or not re.fullmatch(r"[0-9a-f]+", prefix):
            raise TreeNotFoundError(f"{prefix!r} is not a tree id (give at least 6 hex digits)")
        from runicorn.names import SHOWN, unique_prefix

        # A range scan of the primary key: a few rows however many trees there are.
        rows = self.index.query("SELECT tree FROM trees WHERE tree >= ? AND tree < ? ORDER BY tree LIMIT ?",
                                (prefix, prefix + "g", SHOWN + 1))
        tree = unique_prefix(prefix, [str(r[0]) for r in rows], what="tree")
        if tree is None:
            raise TreeNotFoundError(f"tree prefix {prefix!r} matches no trees in the store at {self.root}")
        return tree

    def ingest_directory(self, root: str | os.PathLike[str], *, source: str | None = None,
                         include: Any = None) -> str:
        """Capture a directory (regular files and symlinks, never followed) as a tree.

        ``include(relpath, is_dir) -> bool`` may prune paths.  Returns the tree id.

        Raises:
            ChangedWhileReadingError: a file changed while read.
            RunicornError: ``root`` is not a directory.
        """
        root = Path(root)
        if not root.is_dir():
            raise RunicornError(f"{root}: not a directory")
        files, links = scan_directory(root, include)
        infos = self.ingest_files([full for _, full, _ in files])
        entries: dict[str, TreeEntry] = {}
        for (rel, _, mode), info in zip(files, infos):
            entries[rel] = TreeEntry(info.sha256, mode, info.size)
        stored: dict[bytes, BlobInfo] = {}
        for rel, target in links:
            # Once per distinct target: each ingest is one hold, and put_tree lets go of one.
            info = stored.get(target) or stored.setdefault(target, self.ingest_bytes(target))
            entries[rel] = TreeEntry(info.sha256, MODE_LINK, info.size)
        return self.put_tree(entries, source=source if source is not None else str(root.absolute()))

    # ------------------------------------------------------------------ refs
    @staticmethod
    def _check_ref(kind: str, name: str) -> None:
        if not _KIND_RE.match(kind or ""):
            raise RefError(f"ref kind {kind!r} must match {_KIND_RE.pattern}")
        if not name or "\x00" in name or "\n" in name or len(name) > 4096:
            raise RefError(f"ref name {name!r} must be 1-4096 characters without NUL or newline")

    def set_ref(self, kind: str, name: str, tree: str, *, meta: Mapping[str, Any] | None = None,
                move: bool = True, force_option: str = "force") -> Ref:
        """Point ref ``kind/name`` at ``tree`` (creating or moving it); return it.

        ``move=False`` refuses to move an existing ref to another tree (checked in the
        transaction that writes it, so two writers cannot both think the name was free);
        the refusal names the option (a key of ``runicorn.errors.OPTIONS``) that allows it.

        Raises:
            RefError: bad kind or name, or the ref names another tree and ``move`` is False.
            TreeNotFoundError: the tree is not in the store.
        """
        self._check_ref(kind, name)
        now = time.time()
        record: dict[str, Any] = {"kind": kind, "name": name, "tree": tree, "created_at": now,
                                  "meta": dict(meta or {})}
        intent = self._ref_intent(kind, name)
        try:
            with self.index.write() as c:
                if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
                    raise TreeNotFoundError(f"tree {tree} is not in the store at {self.root}")
                if not move:
                    old = c.execute("SELECT tree FROM refs WHERE kind = ? AND name = ?", (kind, name)).fetchone()
                    if old is not None and old[0] != tree:
                        raise RefError(f"{kind} {name!r} already names tree {old[0][:12]}; pass "
                                       f"{option(force_option)} to move it to {tree[:12]}")
                atomic_write_json(self.ref_path(kind, name), record, staging_dir=self.writer_dir())
                c.execute("INSERT INTO refs (kind, name, tree, created_at, meta) VALUES (?, ?, ?, ?, ?) "
                          "ON CONFLICT (kind, name) DO UPDATE SET tree = excluded.tree, "
                          "created_at = excluded.created_at, meta = excluded.meta",
                          (kind, name, tree, now, json.dumps(record["meta"], sort_keys=True)))
                c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (now, tree))
                # The ref keeps the tree now: every put of it by this process is done.
                self._release_in_tx(c, {tree}, every=True)
        finally:
            intent.unlink(missing_ok=True)
        return Ref(kind, name, tree, now, record["meta"])

    def delete_ref(self, kind: str, name: str) -> bool:
        """Remove ref ``kind/name``; return False if it did not exist.

        The tree becomes collectable by gc once no other ref names it.
        """
        self._check_ref(kind, name)
        intent = self._ref_intent(kind, name)
        try:
            with self.index.write() as c:
                existed = c.execute("SELECT 1 FROM refs WHERE kind = ? AND name = ?",
                                    (kind, name)).fetchone() is not None
                path = self.ref_path(kind, name)
                if path.exists():
                    path.unlink()
                    fsync_dir(path.parent)
                    existed = True
                c.execute("DELETE FROM refs WHERE kind = ? AND name = ?", (kind, name))
        finally:
            intent.unlink(missing_ok=True)
        return existed

    def _ref_intent(self, kind: str, name: str) -> Path:
        intent = self.writer_dir() / f"ref-{secrets.token_hex(8)}.json"
        atomic_write_json(intent, {"kind": kind, "name": name})
        return intent

    def get_ref(self, kind: str, name: str) -> Ref | None:
        """The ref ``kind/name``, or None."""
        rows = self.index.query("SELECT kind, name, tree, created_at, meta FROM refs WHERE kind = ? AND name = ?",
                                (kind, name))
        return _row_to_ref(rows[0]) if rows else None

    def list_refs(self, kind: str | None = None, *, tree: str | None = None) -> list[Ref]:
        """All refs, optionally of one kind and/or naming one tree."""
        sql = "SELECT kind, name, tree, created_at, meta FROM refs WHERE 1"
        params: list[Any] = []
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if tree is not None:
            sql += " AND tree = ?"
            params.append(tree)
        return [_row_to_ref(r) for r in self.index.query(sql + " ORDER BY kind, name", params)]

    def pin(self, tree: str, name: str | None = None, *, force: bool = False,
            meta: Mapping[str, Any] | None = None) -> Ref:
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

    # ------------------------------------------------------------------ stats
    def stats(self) -> dict[str, Any]:
        """Counts and sizes from the index (O(1) in the number of blobs)."""
        with self.index.read() as c:
            totals = dict(c.execute("SELECT name, value FROM totals").fetchall())
            unref_blobs = c.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs WHERE refcount = 0"
                                    ).fetchone()
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

    def diff(self, a: str | os.PathLike[str], b: str | os.PathLike[str], *,
             all_files: bool = False) -> dict[str, Any]:
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
    def gc(self, *, grace_seconds: float = DEFAULT_GC_GRACE_SECONDS, dry_run: bool = False,
           trees: Iterable[str] | None = None, keep_missing_toml: float | None = None) -> dict[str, Any]:
        """Delete trees no ref names and blobs no tree names, older than the grace period.

        ``trees`` limits collection to those trees and the blobs only they used (how a
        run deletion frees exactly its own content).  Blobs held by a live writer are
        never taken.  A dry run reports exactly what a real run would delete.  ``waiting``
        reports what only the grace period keeps (counts, bytes, and when it becomes
        collectable: ``first_at`` .. ``last_at``).  ``keep_missing_toml``: seconds a missing
        Runicorn.toml keeps its bindings (None: ``runicorn.config.keep_missing_toml_seconds``).
        """
        warnings: list[str] = []
        if self.read_only:
            if not dry_run:
                self.require_writable()
            # The refreshers bring binding refs up to date by writing them: here the report
            # uses the refs as last recorded, and says so.
            warnings.append(f"{self.root} is read-only: planned from the refs as last recorded "
                            "(Runicorn.toml files were not re-read)")
        else:
            self.recover()
            for spec in GC_ROOT_REFRESHERS:
                warnings.extend(resolve(spec)(self, dry_run=dry_run, keep_missing_toml=keep_missing_toml) or ())
        from runicorn.store.verify import files_vs_index, kept_by_damaged_manifests

        now = time.time()
        cutoff = now - grace_seconds
        scope = json.dumps(sorted(set(trees))) if trees is not None else None
        # A write transaction even for a dry run (a read-only store has no writers): every
        # writer changes a file and its row in one, so inside it the ref files and manifests
        # on disk must match the index exactly.  If not (damage, a lost WAL), gc deletes nothing.
        tx = self.index.read if self.read_only else self.index.write
        journal: Path | None = None
        for attempt in (1, 2):
            with tx() as c:
                problems, notes = files_vs_index(self, c)
                if not problems:
                    dead_trees, dead_blobs = self._plan_gc(c, cutoff, scope)
                    kept, damaged = kept_by_damaged_manifests(self)
                    notes.extend(damaged)
                    dead_blobs = [] if kept is None else [b for b in dead_blobs if b[0] not in kept]
                    waiting = self._waiting_for_grace(c, now, grace_seconds, scope, dead_trees, dead_blobs, kept)
                    if not dry_run and (dead_trees or dead_blobs):
                        journal = self._execute_gc(c, dead_trees, dead_blobs)
                    break
            if attempt == 1 and not self.read_only:
                self.recover()  # a writer that died since the first recovery
        else:
            raise IndexError_(f"{self.archive}: gc stopped, nothing was deleted: the index disagrees with the "
                              f"files ({'; '.join(problems)}); fix or remove damaged files, then run `runicorn verify --repair`")
        warnings.extend(notes)
        freed = self._remove_collected([t for t, _ in dead_trees], dead_blobs, dry_run, warnings, journal)
        return {
            "dry_run": dry_run,
            "grace_seconds": grace_seconds,
            "trees_deleted": len(dead_trees),
            "blobs_deleted": len(dead_blobs),
            "bytes_freed": freed,
            "tree_ids": [t for t, _ in dead_trees],
            "blob_ids": [b for b, _ in dead_blobs],
            "waiting": waiting,
            "warnings": warnings,
        }

    def _remove_collected(self, dead_trees: list[str], dead_blobs: list[tuple[str, int]], dry_run: bool,
                          warnings: list[str], journal: Path | None = None) -> int:
        """After gc's COMMIT: remove the installed folders of the collected trees (and any an
        earlier gc left), the gc's trash and the blob files its ``journal`` lists; return
        the bytes that really frees.

        Blobs and installed files count (manifests do not: they describe, they are not
        data), each only when its last hard link goes, so a blob still linked from
        elsewhere (a hard-linked restore) frees nothing.  A dry run counts what a real run
        would remove, as it is now.
        """
        from runicorn.artifacts.installed import bytes_freed_by_removing, remove_taken

        taken = resolve(GC_COLLECTED_HOOK)(self, dead_trees, dry_run=dry_run)
        dirs = [path for path, _ in taken]
        if dry_run:
            return bytes_freed_by_removing([self.blob_path(b) for b, _ in dead_blobs] + dirs)
        trash = self._writer / "trash" if self._writer is not None else None
        try:
            # The blob files are still in place (unlinked below, after the folders): counted first.
            freed = bytes_freed_by_removing([self.blob_path(b) for b, _ in dead_blobs] + dirs)
            warnings.extend(remove_taken(taken))
            if journal is not None:
                self._unlink_collected(journal, [b for b, _ in dead_blobs])
        finally:
            if trash is not None:
                shutil.rmtree(trash, ignore_errors=True)
        return freed

    def _waiting_for_grace(self, c: Any, now: float, grace_seconds: float, scope: str | None,
                           dead_trees: list[tuple[str, int]], dead_blobs: list[tuple[str, int]],
                           kept: set[str] | None) -> dict[str, Any]:
        """What only the grace period keeps: unreferenced trees and blobs touched within it,
        and when they become collectable (``first_at``/``last_at``, Unix seconds, or None).
        ``kept``: blobs damaged manifests may still name (None: every blob), never counted."""
        all_trees, all_blobs = self._plan_gc(c, now, scope) if grace_seconds > 0 else ([], [])
        all_blobs = [] if kept is None else [b for b in all_blobs if b[0] not in kept]
        gone_t, gone_b = {t for t, _ in dead_trees}, {b for b, _ in dead_blobs}
        trees = [t for t, _ in all_trees if t not in gone_t]
        blobs = [(b, size) for b, size in all_blobs if b not in gone_b]
        first = last = None
        if trees or blobs:
            row = c.execute(
                "SELECT MIN(t), MAX(t) FROM (SELECT touched_at AS t FROM trees WHERE tree IN "
                "(SELECT value FROM json_each(?)) UNION ALL SELECT touched_at FROM blobs WHERE sha256 IN "
                "(SELECT value FROM json_each(?)))", (json.dumps(trees), json.dumps([b for b, _ in blobs]))).fetchone()
            first, last = row[0] + grace_seconds, row[1] + grace_seconds
        return {"trees": len(trees), "blobs": len(blobs), "bytes": sum(size for _, size in blobs),
                "first_at": first, "last_at": last}

    def _plan_gc(self, c: Any, cutoff: float, scope: str | None) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        tree_sql = ("SELECT tree, total_size FROM trees WHERE refcount = 0 AND touched_at < ? "
                    "AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.sha256 = trees.tree)")
        params: list[Any] = [cutoff]
        if scope is not None:
            tree_sql += " AND tree IN (SELECT value FROM json_each(?))"
            params.append(scope)
        dead_trees = [(t, s) for t, s in c.execute(tree_sql + " ORDER BY tree", params).fetchall()]
        # Blobs that lose their last reference when the dead trees go.
        freed_sql = (
            "WITH dead(tree) AS (SELECT value FROM json_each(?)), "
            "freed AS (SELECT blob, COUNT(*) AS n FROM tree_entries WHERE tree IN (SELECT tree FROM dead) "
            "GROUP BY blob) "
            "SELECT b.sha256, b.size FROM freed f JOIN blobs b ON b.sha256 = f.blob "
            "WHERE b.refcount = f.n AND b.touched_at < ? "
            "AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.sha256 = b.sha256)")
        blobs = dict(c.execute(freed_sql, (json.dumps([t for t, _ in dead_trees]), cutoff)).fetchall())
        if scope is None:
            for sha, size in c.execute(
                    "SELECT sha256, size FROM blobs WHERE refcount = 0 AND touched_at < ? "
                    "AND NOT EXISTS (SELECT 1 FROM holds h WHERE h.sha256 = blobs.sha256)", (cutoff,)):
                blobs[sha] = size
        return dead_trees, sorted(blobs.items())

    def _execute_gc(self, c: Any, dead_trees: list[tuple[str, int]],
                    dead_blobs: list[tuple[str, int]]) -> Path | None:
        """Inside gc's write transaction: drop the doomed rows in set statements, move the
        manifests to the trash (few; recovery puts them back if the transaction rolls
        back) and journal the doomed blobs, whose files stay until
        :meth:`_unlink_collected` after COMMIT.  Returns the journal (None: no blobs)."""
        if dead_trees:
            trash = self.writer_dir() / "trash"
            trash.mkdir(exist_ok=True)
            for tree, _ in dead_trees:
                _move_if_exists(self.manifest_path(tree), trash / f"tree-{tree}.json")
            ids = json.dumps([t for t, _ in dead_trees])
            c.execute("DELETE FROM tree_entries WHERE tree IN (SELECT value FROM json_each(?))", (ids,))
            c.execute("DELETE FROM trees WHERE tree IN (SELECT value FROM json_each(?))", (ids,))
        if not dead_blobs:
            return None
        shas = [b for b, _ in dead_blobs]
        # Durable before the rows go, so a gc killed after its COMMIT is finished by recovery
        # (without it the files would stay as unindexed strays: space, never data, lost).
        journal = atomic_write_json(self.writer_dir() / f"gc-{secrets.token_hex(6)}.json",
                                    {"blobs": shas}, indent=None)
        for i in range(0, len(shas), GC_BATCH):
            c.execute("DELETE FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))",
                      (json.dumps(shas[i:i + GC_BATCH]),))
        return journal

    def _unlink_collected(self, journal: Path, shas: list[str]) -> None:
        """Unlink the blob files gc dropped from the index, ``GC_BATCH`` per write
        transaction (other writers go on between batches), then the journal."""
        for i in range(0, len(shas), GC_BATCH):
            with self.index.write() as c:
                self._unlink_unindexed(c, shas[i:i + GC_BATCH])
        journal.unlink()

    def _unlink_unindexed(self, c: Any, shas: list[str]) -> int:
        """Unlink ``blobs/<aa>/<sha>`` for each of ``shas`` no index row names, inside write
        transaction ``c``; return how many went.

        A row present means the blob was stored again after gc's COMMIT (its writer found
        the old file in place and adopted it): that file is kept.
        """
        shas = [s for s in shas if is_sha256_hex(s)]  # a journal is a file: never trust a name
        present = {row[0] for row in c.execute(
            "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT value FROM json_each(?))", (json.dumps(shas),))}
        blobs_dir = str(self.blobs_dir)
        gone = 0
        for sha in shas:  # sorted: one prefix directory after another
            if sha in present:
                continue
            try:
                os.unlink(f"{blobs_dir}/{sha[:2]}/{sha}")
                gone += 1
            except FileNotFoundError:
                pass
        return gone

    def _finish_gc(self, c: Any, journal: Path) -> str:
        """Recovery of a gc killed after its journal was written: unlink the listed blobs
        that no row names (after its COMMIT: all of them; before it: none)."""
        try:
            shas = json.loads(journal.read_text("utf-8"))["blobs"]
            if not isinstance(shas, list):
                raise TypeError("not a list")
        except (OSError, ValueError, KeyError, TypeError):
            return ""  # torn: written before the COMMIT it would have preceded, so nothing went
        gone = self._unlink_unindexed(c, [str(s) for s in shas])
        journal.unlink(missing_ok=True)
        return f"finished an interrupted gc ({gone} blob file(s) removed)" if gone else ""

    # ------------------------------------------------------------------ recovery
    def recover(self) -> list[str]:
        """Replay or discard what dead writers left in ``archive/tmp``; return what was done.

        A read-only store is left as it is (its next writable opening recovers it).
        """
        actions: list[str] = []
        if self.read_only:
            return actions
        import fcntl

        for d in sorted(self.tmp_dir.iterdir()):
            if self._writer is not None and d == self._writer:
                continue
            if d.is_dir() and d.name.startswith("w-"):
                try:
                    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o644)
                except FileNotFoundError:
                    continue
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live writer
                    if not d.exists():
                        continue  # recovered by another process meanwhile
                    actions.extend(self._recover_writer(d))
                    shutil.rmtree(d, ignore_errors=True)
                finally:
                    os.close(fd)
            elif d.is_dir() and d.name.startswith("n-"):
                # A writer that died while starting: it never staged anything.
                if not nascent_owner_alive(d):
                    shutil.rmtree(d, ignore_errors=True)
                    actions.append(f"removed stale {d.name}")
        return actions

    def _recover_writer(self, d: Path) -> list[str]:
        actions: list[str] = []
        with self.index.write() as c:
            c.execute("DELETE FROM holds WHERE writer = ?", (d.name,))
            for f in sorted(d.iterdir()):
                name = f.name
                if name.startswith("b-") and f.is_dir():
                    from runicorn.store.ingest import recover_batch

                    actions.extend(recover_batch(self, c, f))
                elif name.startswith("blob-") and is_sha256_hex(name[5:]):
                    actions.append(self._recover_blob(c, f, name[5:]))
                elif name.startswith("tree-") and name.endswith(".json"):
                    actions.append(self._recover_tree(c, f, name[5:-5]))
                elif name.startswith("ref-") and name.endswith(".json"):
                    actions.append(self._recover_ref(c, f))
                elif name.startswith("gc-") and name.endswith(".json"):
                    actions.append(self._finish_gc(c, f))
                elif name == "trash" and f.is_dir():
                    actions.extend(self._recover_trash(c, f))
                elif name.startswith("restore-") and name.endswith(".json"):
                    actions.append(_remove_noted_dir(f, "staging", ".rn-restore-", "an interrupted restore"))
                elif name.startswith("deleting-") and name.endswith(".json"):
                    actions.append(self._finish_deletion(c, f))
        return [a for a in actions if a]

    def _recover_blob(self, c: Any, f: Path, sha: str) -> str:
        if sha256_file(f) != sha:
            return f"discarded torn staged blob {sha[:12]}"
        st = f.stat()
        size = st.st_size
        os.chmod(f, blob_perm(st.st_mode))  # read-only, never more readable than staged
        if self._place_blob(f, sha, size) is not None:
            fsync_dir(self.blob_path(sha).parent)
        now = time.time()
        c.execute("INSERT INTO blobs (sha256, size, refcount, created_at, touched_at) VALUES (?, ?, 0, ?, ?) "
                  "ON CONFLICT (sha256) DO NOTHING", (sha, size, now, now))
        return f"adopted blob {sha[:12]}"

    def _recover_tree(self, c: Any, f: Path, tree: str) -> str:
        dest = self.manifest_path(tree)
        if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
            if not dest.exists():
                publish_link(f, dest)
            return ""
        try:
            _, entries = parse_manifest(f.read_bytes(), origin=f, expected_tree=tree)
        except CorruptManifestError:
            return f"discarded torn staged tree {tree[:12]}"
        shas = {e.sha256 for e in entries.values()}
        if any(c.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (s,)).fetchone() is None for s in shas):
            # Never committed and cannot be: withdraw the manifest it may have linked.
            if dest.exists() and os.path.samefile(dest, f):
                dest.unlink()
            return f"discarded uncommitted tree {tree[:12]}"
        if not dest.exists():
            publish_link(f, dest)
            fsync_dir(dest.parent)
        now = time.time()
        c.execute("INSERT INTO trees (tree, file_count, total_size, refcount, created_at, touched_at) "
                  "VALUES (?, ?, ?, 0, ?, ?)",
                  (tree, len(entries), sum(e.size for e in entries.values()), now, now))
        c.executemany("INSERT INTO tree_entries (tree, path, blob, mode, size) VALUES (?, ?, ?, ?, ?)",
                      [(tree, p, e.sha256, e.mode, e.size) for p, e in entries.items()])
        return f"adopted tree {tree[:12]}"

    def _finish_deletion(self, c: Any, note: Path) -> str:
        """Finish a run deletion killed after its commit point (the run directory renamed
        to ``.<run>.rn-deleting-*``): the run's refs and row go, then the directory.
        Killed before that rename, nothing was deleted and nothing is done."""
        try:
            record = json.loads(note.read_text("utf-8"))
            run_id, trash = str(record["run_id"]), Path(record["trash"])
        except (OSError, ValueError, KeyError, TypeError):
            return ""
        if ".rn-deleting-" not in trash.name or not trash.is_dir() or not abandoned(trash):
            return ""
        self._drop_run_refs(c, run_id)
        remove_tree(trash)
        return f"finished the interrupted deletion of run {run_id} ({trash})"

    def _drop_run_refs(self, c: Any, run_id: str) -> None:
        """Delete run ``run_id``'s refs (files and rows) and row inside transaction ``c``."""
        names = [n for (n,) in c.execute("SELECT name FROM refs WHERE kind = 'run'") if
                 n == run_id or n.startswith(run_id + "/")]
        for name in names:
            self.ref_path("run", name).unlink(missing_ok=True)
            c.execute("DELETE FROM refs WHERE kind = 'run' AND name = ?", (name,))
        c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def _recover_ref(self, c: Any, f: Path) -> str:
        try:
            intent = json.loads(f.read_text("utf-8"))
            kind, name = intent["kind"], intent["name"]
        except (ValueError, KeyError, TypeError):
            return ""  # the intent itself was torn: the ref file was not touched yet
        self._sync_ref_row(c, kind, name)
        return f"reconciled ref {kind}/{name}"

    def _sync_ref_row(self, c: Any, kind: str, name: str) -> None:
        record = _read_ref_file(self.ref_path(kind, name))
        if record is None:
            c.execute("DELETE FROM refs WHERE kind = ? AND name = ?", (kind, name))
        else:
            c.execute("INSERT INTO refs (kind, name, tree, created_at, meta) VALUES (?, ?, ?, ?, ?) "
                      "ON CONFLICT (kind, name) DO UPDATE SET tree = excluded.tree, meta = excluded.meta",
                      (kind, name, record["tree"], float(record.get("created_at", time.time())),
                       json.dumps(record.get("meta", {}), sort_keys=True)))

    def _recover_trash(self, c: Any, trash: Path) -> list[str]:
        actions = []
        for f in trash.iterdir():
            if f.name.startswith("blob-"):
                sha = f.name[5:]
                if c.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (sha,)).fetchone():
                    dest = self.blob_path(sha)
                    if not dest.exists():
                        _move_if_exists(f, dest)
                        actions.append(f"restored blob {sha[:12]} from an interrupted gc")
            elif f.name.startswith("tree-"):
                tree = f.name[5:-5]
                if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                    dest = self.manifest_path(tree)
                    if not dest.exists():
                        _move_if_exists(f, dest)
                        actions.append(f"restored tree {tree[:12]} from an interrupted gc")
        return actions

    # ------------------------------------------------------------------ verify / repair
    def verify(self, *, deep: bool = False) -> dict[str, Any]:
        """Check the store against its index (fsck); change nothing.

        Reports missing, resized or (``deep``) corrupt blobs, unindexed and stray
        files, missing or damaged manifests, trees naming missing blobs, refcounts that
        differ from a recount, refs that differ from their files, and leftover temp files.
        """
        from runicorn.store.verify import verify_store

        return verify_store(self, deep=deep)

    def rebuild_index(self, *, deep: bool = False,
                      heal_from: Iterable[str | os.PathLike[str]] | None = None) -> dict[str, Any]:
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

    def _quarantine(self, path: Path, why: str) -> Path:
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        dest = self.quarantine_dir / f"{time.strftime('%Y%m%dT%H%M%S')}-{why}-{path.name}-{secrets.token_hex(3)}"
        os.replace(path, dest)
        return dest


def scan_directory(root: Path, include: Any = None) -> tuple[list[tuple[str, Path, str]], list[tuple[str, bytes]]]:
    """What a tree of ``root`` is made of: ``files`` as ``(relpath, path, mode)`` and
    ``links`` as ``(relpath, target bytes)`` (see :func:`walk_files`).

    The one directory walk behind every ``tree-sha256`` of a directory:
    :meth:`Store.ingest_directory` stores it, ``runicorn.artifacts.tree_hash`` only hashes it.
    """
    files: list[tuple[str, Path, str]] = []
    links: list[tuple[str, bytes]] = []
    for rel, full, st in walk_files(root, include):
        if stat.S_ISLNK(st.st_mode):
            links.append((rel, os.fsencode(os.readlink(full))))
        else:
            files.append((rel, full, mode_of(st.st_mode)))
    return files, links


def walk_files(root: Path, include: Any = None) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Yield ``(relpath, path, lstat)`` for regular files and symlinks below ``root``.

    Symlinks are never followed; other file types are skipped.  ``include(rel, is_dir)``
    may prune.  Paths containing a newline are refused (they cannot be in a tree), and
    so are names that are not UTF-8 and trees deeper than ``runicorn.relpath.MAX_DEPTH``.

    Raises:
        RunicornError / UnsafePathError: such a name, naming it.
    """
    stack = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = prefix + entry.name
            if "\n" in rel:
                raise RunicornError(f"{Path(entry.path)}: file names with a newline cannot be stored")
            st = entry.stat(follow_symlinks=False)
            is_dir = stat.S_ISDIR(st.st_mode)
            if not (is_dir or stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                continue
            if include is not None and not include(rel, is_dir):
                continue
            try:
                # Before anything is read: a name that is not UTF-8, or too deep, stores nothing.
                check_names(prefix, entry.name)
            except UnsafePathError as exc:
                raise UnsafePathError(f"{root}: {exc}; nothing was stored") from None
            if is_dir:
                stack.append((Path(entry.path), rel + "/"))
            else:
                yield rel, Path(entry.path), st


def nascent_owner_alive(d: Path) -> bool:
    """Whether the process that is creating staging dir ``n-<pid>-<hex>`` may still live."""
    try:
        pid = int(d.name.split("-")[1])
        os.kill(pid, 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass
    try:
        return time.time() - d.stat().st_mtime < _WRITER_STALE_SECONDS
    except FileNotFoundError:
        return True


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except (FileNotFoundError, NotADirectoryError):  # NotADirectory: a file stands at blobs/<aa>
        return -1


def _remove_noted_dir(note: Path, key: str, mark: str, what: str) -> str:
    """Remove the directory a dead writer's note names (``note[key]``) when its name has
    ``mark`` and no live process holds its lock; return what was done."""
    try:
        target = Path(json.loads(note.read_text("utf-8"))[key])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if mark not in target.name or not abandoned(target):
        return ""
    remove_tree(target)
    return f"removed {target}, left by {what}"


def _move_if_exists(src: Path, dest: Path) -> None:
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dest)
    except FileNotFoundError:
        pass


def _read_ref_file(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text("utf-8"))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict) or not is_sha256_hex(record.get("tree")):
        return None
    return record


def _row_to_ref(row: tuple[Any, ...]) -> Ref:
    kind, name, tree, created_at, meta = row
    return Ref(kind, name, tree, float(created_at), json.loads(meta or "{}"))


_open_stores: dict[tuple[str, int], Store] = {}
_open_lock = threading.Lock()


def open_store(storage: str | os.PathLike[str] | None = None) -> Store:
    """A per-process shared :class:`Store` for a storage root (closed at exit)."""
    root = resolve_storage_root(storage)
    key = (str(root), os.getpid())
    with _open_lock:
        store = _open_stores.get(key)
        if store is None:
            store = Store(root)
            if not _open_stores:
                import atexit

                atexit.register(_close_all)
            _open_stores[key] = store
        return store


def _close_all() -> None:
    for (root, pid), store in list(_open_stores.items()):
        if pid == os.getpid():
            try:
                store.close()
            except Exception:
                pass
    _open_stores.clear()


def forget_open_stores() -> None:
    """Drop cached stores (tests that delete a storage root call this)."""
    _close_all()
