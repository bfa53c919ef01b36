"""Trees in the store: putting them (pages, manifest intent, then manifest and rows in
one transaction, ``schema/README.md`` "Write protocol"), reading them and resolving id
prefixes.  The formats are :mod:`runicorn.store.tree_format` (``schema/manifest.md``,
``schema/pages.md``).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from runicorn.errors import BlobNotFoundError, CorruptManifestError, RunicornError, TreeNotFoundError
from runicorn.fsutil import StagedFile, fsync_dir, make_dir, publish_link, read_sized, sync_written, write_all
from runicorn.hashing import is_sha256_hex
from runicorn.store.layout import BlobInfo, TreeInfo
from runicorn.store.rows import insert_page_rows, insert_tree_rows, missing_pages
from runicorn.store.tree_format import (
    MANIFEST_VERSION,
    MAX_PAGE_BYTES,
    MODE_LINK,
    TreeEntry,
    TreePages,
    build_pages,
    build_paged_manifest,
    compute_tree_id,
    manifest_bytes,
    normalize_entries,
    parse_manifest,
    path_key,
    read_entries,
)
from runicorn.store.walk import scan_directory

if TYPE_CHECKING:
    from runicorn.store.holds import Held
    from runicorn.store.store import Store


def has_tree(store: Store, tree: str) -> bool:
    """:meth:`Store.has_tree`."""
    return store.index.scalar("SELECT 1 FROM trees WHERE tree = ?", (tree,)) is not None


def tree_infos(store: Store, trees: Iterable[str], c: Any = None) -> dict[str, TreeInfo]:
    """:meth:`Store.tree_info` of several trees (in transaction ``c``, else one read
    snapshot); unknown trees are left out."""
    if c is None:
        with store.index.read() as c:
            return tree_infos(store, trees, c)
    out: dict[str, TreeInfo] = {}
    for tree in dict.fromkeys(trees):
        row = c.execute("SELECT file_count, total_size, refcount FROM trees WHERE tree = ?", (tree,)).fetchone()
        if row is None:
            continue
        held = c.execute("SELECT 1 FROM holds WHERE sha256 = ? LIMIT 1", (tree,)).fetchone() is not None
        refs = tuple(
            (str(k), str(n))
            for k, n in c.execute("SELECT kind, name FROM refs WHERE tree = ? ORDER BY kind, name", (tree,)).fetchall()
        )
        out[tree] = TreeInfo(tree, int(row[0]), int(row[1]), int(row[2]), held, refs)
    return out


def touch_tree(store: Store, tree: str) -> bool:
    """:meth:`Store.touch_tree`."""
    with store.index.write() as c:
        if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
            return False
        c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (time.time(), tree))
    return True


def kept_by(store: Store, tree: str, kind: str, name: str) -> bool:
    """:meth:`Store.tree_kept_by`."""
    with store.index.read() as c:
        return (
            c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is not None
            and c.execute("SELECT 1 FROM refs WHERE kind = ? AND name = ? AND tree = ?", (kind, name, tree)).fetchone()
            is not None
        )


class TreeSummary(NamedTuple):
    """What indexing a tree needs besides its pages: its file count and total size."""

    file_count: int
    total_size: int


def summary_of(norm: Mapping[str, TreeEntry]) -> TreeSummary:
    """The :class:`TreeSummary` of validated entries."""
    return TreeSummary(len(norm), sum(e.size for e in norm.values()))


def put_tree(
    store: Store,
    entries: Mapping[str, Any],
    *,
    source: str | None = None,
    ref: tuple[str, str] | None = None,
    ref_meta: Mapping[str, Any] | None = None,
    walked: bool = False,
    held: Held | None = None,
) -> str:
    """:meth:`Store.put_tree`."""
    if walked:  # this package's own walk checked every name; only the order is left
        if "".join(entries).isascii():  # code-point order is then byte order: no key needed
            norm = {path: entries[path] for path in sorted(entries)}
        else:
            norm = dict(sorted(entries.items(), key=lambda item: path_key(item[0])))
    else:
        norm = normalize_entries(entries)
    tree = compute_tree_id(norm)
    summary = summary_of(norm)
    if held is None:
        held = {e.sha256 for e in norm.values()}
    store_tree(store, tree, lambda: build_pages(norm), summary, source=source, held=held)
    if ref is not None:
        store.set_ref(ref[0], ref[1], tree, meta=ref_meta)
    return tree


def store_tree(
    store: Store,
    tree: str,
    pages_of: Callable[[], TreePages],
    summary: TreeSummary,
    *,
    source: str | None,
    held: Held,
) -> None:
    """Store tree ``tree`` (its pages from ``pages_of``, called only when needed) unless
    it is stored; either way it ends held by this writer and the holds of ``held`` (the
    lease under which this writer ingested its blobs, or one hold on each blob id) go.

    Raises:
        BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
    """
    if store.index.scalar("SELECT 1 FROM trees WHERE tree = ?", (tree,)) and store.manifest_path(tree).exists():
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (time.time(), tree))
                store.holds.hold(c, tree)
                store.holds.release(c, held)
                existing = True
            else:
                existing = False
        if existing:
            _heal_pages(store, tree, pages_of)
            return
    pages = pages_of()
    # Staged before the manifest intent naming them, placed in the transaction that
    # indexes them: recovery can always read an intent, and a crash leaves no page file
    # without a row except beside an intent it adopts.  Pages the index has are in
    # place (a gc taking one meanwhile makes the commit write it).
    with store.index.read() as c:
        unknown = missing_pages(c, pages)
    stage_pages(store, pages, [p for p in unknown if not store.page_path(p).exists()])
    manifest = build_paged_manifest(tree, pages, summary.file_count, summary.total_size, source=source)
    staged = StagedFile(store.writer_dir(), mode=0o600)
    try:
        staged.file.write(manifest_bytes(manifest))
        staged.finish(fsync=True, mode=0o444)
    except BaseException:
        staged.discard()
        raise
    intent = staged.path.with_name(f"tree-{tree}.json")
    os.replace(staged.path, intent)
    try:
        commit_tree(store, intent, tree, summary, pages, held)
    finally:
        intent.unlink(missing_ok=True)


def stage_pages(store: Store, pages: TreePages, ids: list[str], staging: Path | None = None) -> None:
    """Write pages ``ids`` to this writer's staging directory, durably, as
    ``page-<id>``: :func:`index_tree` links them into place in the transaction that
    indexes them, and recovery finds them beside a dead writer's tree intent."""
    if not ids:
        return
    staging = staging or store.writer_dir()
    try:
        for pid in ids:
            fd = os.open(f"{staging}/page-{pid}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o444)
            try:
                write_all(fd, pages.pages[pid])
            finally:
                os.close(fd)
        sync_written(store.tmp_dir, [f"{staging}/page-{pid}" for pid in ids])
    except OSError as exc:
        raise store.write_error(exc) from None


# The pages the trees of a JSON list reach, as table ``tp(id)`` of page row ids: their top pages, then
# each node's children, each page once (so a damaged, cyclic listing ends too).
REACHED_PAGES = (
    "WITH RECURSIVE tp(id) AS (SELECT p.id FROM trees t, json_each(t.pages) j JOIN pages p ON p.page = j.value "
    "WHERE t.tree IN (SELECT value FROM json_each(?)) "
    "UNION SELECT l.child FROM page_children l JOIN tp ON l.page = tp.id) "
)


def page_sizes(store: Store, tree: str) -> dict[str, int]:
    """:meth:`Store.tree_page_sizes`."""
    rows = store.index.query(
        REACHED_PAGES + "SELECT p.page, p.size FROM tp JOIN pages p ON p.id = tp.id", (json.dumps([tree]),)
    )
    return {str(page): int(size) for page, size in rows}


def _heal_pages(store: Store, tree: str, pages_of: Callable[[], TreePages]) -> None:
    """Write again the pages of stored tree ``tree`` (pages from ``pages_of``) whose file
    is missing or has another size: storing a tree again repairs its listing, as storing
    a file again repairs its blob."""
    off = store.blob_files_off(page_sizes(store, tree).items())
    if not off:
        return
    pages = pages_of()
    for page in off:
        store.page_path(page).unlink(missing_ok=True)  # write-once: a damaged copy goes first
    write_pages(store, pages, [p for p in off if p in pages.pages])


def write_pages(store: Store, pages: TreePages, ids: list[str], staging: Path | None = None) -> None:
    """Put the files of pages ``ids`` in place (``blobs/<aa>/<id>``, write-once, like
    blobs) and make them durable: linked from the staged copy in ``staging`` (this
    writer's directory by default, :func:`stage_pages`), written and flushed there first
    when it has none."""
    if not ids:
        return
    staging = staging or store.writer_dir()
    missing = [pid for pid in ids if not os.path.exists(f"{staging}/page-{pid}")]
    stage_pages(store, pages, missing, staging)
    top = store.pages_dir
    parents: set[Path] = set()
    try:
        for pid in ids:
            folder = top / pid[:2]
            if folder not in parents:  # each folder once: a page's own mkdir would fail
                if make_dir(folder, store.dir_mode):
                    parents.add(top)
                parents.add(folder)
            publish_link(f"{staging}/page-{pid}", f"{folder}/{pid}")
        sync_written(store.blobs_dir, dirs=parents)
    except OSError as exc:
        raise store.write_error(exc) from None
    finally:
        for pid in ids:
            try:
                os.unlink(f"{staging}/page-{pid}")
            except OSError:
                pass


def index_tree(
    store: Store,
    c: Any,
    tree: str,
    summary: TreeSummary,
    pages: TreePages,
    now: float,
    *,
    check_blobs: bool = True,
    staging: Path | None = None,
) -> None:
    """Inside write transaction ``c``: index ``tree`` (``summary``, stored as
    ``pages``) with the pages the index lacks.  A page about to get its row whose file is
    gone (a gc removed it since it was looked at) is written again first: gc unlinks
    only under the write lock and only files no row names.

    ``check_blobs=False`` (a rebuild): index it even when blobs are missing (verify
    reports them; the links keep the count for a blob healed later).

    Raises:
        BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
    """
    new = missing_pages(c, pages)
    # A leaf the index has counts its blobs already (gc takes only blobs no leaf names),
    # so only the new leaves' blobs are checked: as their links are indexed.
    missing: list[str] | None = [] if check_blobs else None
    insert_page_rows(c, pages, new, now, lost_ok=not check_blobs, missing=missing)
    if missing:
        missing = sorted(set(missing))
        err = BlobNotFoundError(f"tree {tree}: {len(missing)} blob(s) not in the store, e.g. {missing[0]}")
        err.missing = missing  # type: ignore[attr-defined]
        raise err
    write_pages(store, pages, [p for p in new if not _page_file_is(store, p, pages)], staging)
    insert_tree_rows(c, tree, pages, summary.file_count, summary.total_size, now)


def _page_file_is(store: Store, page: str, pages: TreePages) -> bool:
    """True when the page's file holds its bytes in ``pages``; a damaged file (no row
    names it yet) is removed, so the caller writes it again."""
    path = store.page_path(page)
    try:
        with open(path, "rb") as f:
            data = pages.pages[page]  # only for a file there: the bytes may be built again
            if f.read(len(data) + 1) == data:
                return True
        path.unlink()
    except FileNotFoundError:
        pass
    return False


def commit_tree(store: Store, intent: Path, tree: str, summary: TreeSummary, pages: TreePages, held: Held) -> None:
    """Publish the manifest intent and index the tree, held for this writer, in one
    transaction; the holds of ``held`` (:func:`store_tree`) go: the tree keeps its blobs now.

    Raises:
        BlobNotFoundError: a blob is not in the store (``.missing`` lists them).
    """
    now = time.time()
    with store.index.write() as c:
        dest = store.manifest_path(tree)
        published = not dest.exists() and publish_link(intent, dest)
        if published:
            fsync_dir(dest.parent)
        try:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                c.execute("UPDATE trees SET touched_at = ? WHERE tree = ?", (now, tree))
            else:
                index_tree(store, c, tree, summary, pages, now)
            store.holds.hold(c, tree)
            store.holds.release(c, held)
        except BaseException:
            # The transaction is rolled back: a manifest published for it would name a tree
            # the index does not have (verify: unindexed_manifest).  Still under the write
            # lock, so no other writer can have indexed the tree meanwhile.
            if published:
                dest.unlink(missing_ok=True)
            raise


def page_loader(pages_dir: Path) -> Callable[[str], bytes]:
    """A page reader for a folder of pages (a store's ``archive/blobs``): the bytes of a
    page (its caller checks them against its id).

    The loader raises CorruptManifestError naming a page that is missing (or not a
    regular file of at most a page's size bound)."""

    base = f"{pages_dir}{os.sep}"  # (a tree can have thousands of pages: no Path per page)

    def load(page: str) -> bytes:
        path = f"{base}{page[:2]}{os.sep}{page}"
        try:
            # Non-blocking: a FIFO in a hostile blob folder is refused, not waited on.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise CorruptManifestError(f"{path}: page {page} is missing; run `runicorn verify`") from None
        except IsADirectoryError:
            raise CorruptManifestError(f"{path}: page {page} is not a regular file") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CorruptManifestError(f"{path}: page {page} is not a regular file")
            data = read_sized(fd, min(st.st_size, MAX_PAGE_BYTES))
        finally:
            os.close(fd)
        if len(data) > MAX_PAGE_BYTES:
            raise CorruptManifestError(f"{path}: page {page} is larger than any page ({MAX_PAGE_BYTES} bytes)")
        return data

    return load


def get_manifest(store: Store, tree: str) -> dict[str, Any]:
    """:meth:`Store.get_manifest`."""
    path = store.manifest_path(tree)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}") from None
    manifest, _ = parse_manifest(data, origin=path, expected_tree=tree, load_page=store.load_page)
    return manifest


def portable_manifest(store: Store, tree: str) -> bytes:
    """:meth:`Store.portable_manifest`."""
    manifest = dict(get_manifest(store, tree))
    manifest.pop("pages", None)
    manifest.pop("depth", None)
    manifest["format_version"] = MANIFEST_VERSION
    return manifest_bytes(manifest)


def tree_entries(store: Store, tree: str) -> dict[str, TreeEntry]:
    """:meth:`Store.tree_entries`: from the tree's pages, each checked against its id,
    and the whole against the tree id.

    Raises:
        TreeNotFoundError: no such tree.
        CorruptManifestError: a page is missing or damaged.
    """
    row = store.index.query("SELECT depth, pages FROM trees WHERE tree = ?", (tree,))
    if not row:
        raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}")
    depth, top = row[0]
    if top is None:  # a schema-4 tree the migration could not convert (verify says why)
        rows = store.index.query("SELECT path, blob, mode, size FROM tree_entries WHERE tree = ?", (tree,))
        return {p: TreeEntry(b, m, s) for p, b, m, s in rows}
    entries = dict(read_entries(json.loads(top), depth, store.load_page, f"tree {tree}"))
    if compute_tree_id(entries) != tree:
        raise CorruptManifestError(
            f"tree {tree}: its pages ({store.pages_dir}) describe another tree; run `runicorn verify`"
        )
    return entries


def resolve_tree(store: Store, prefix: str, *, hold: bool = False) -> str:
    """:meth:`Store.resolve_tree`."""
    tree = _resolve_prefix(store, prefix)
    if hold:
        with store.index.write() as c:
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone() is None:
                raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}")
            store.holds.hold(c, tree)
    return tree


def _resolve_prefix(store: Store, prefix: str) -> str:
    prefix = prefix.lower()
    if is_sha256_hex(prefix):
        if has_tree(store, prefix):
            return prefix
        raise TreeNotFoundError(f"tree {prefix} is not in the store at {store.root}")
    if len(prefix) < 6 or not re.fullmatch(r"[0-9a-f]+", prefix):
        raise TreeNotFoundError(f"{prefix!r} is not a tree id (give at least 6 hex digits)")
    from runicorn.names import SHOWN, unique_prefix

    # A range scan of the primary key: a few rows however many trees there are.
    rows = store.index.query(
        "SELECT tree FROM trees WHERE tree >= ? AND tree < ? ORDER BY tree LIMIT ?", (prefix, prefix + "g", SHOWN + 1)
    )
    tree = unique_prefix(prefix, [str(r[0]) for r in rows], what="tree")
    if tree is None:
        raise TreeNotFoundError(f"tree prefix {prefix!r} matches no trees in the store at {store.root}")
    return tree


def ingest_directory(store: Store, root: Path, *, source: str | None = None, include: Any = None) -> str:
    """:meth:`Store.ingest_directory`."""
    if not root.is_dir():
        raise RunicornError(f"{root}: not a directory")
    files, links = scan_directory(root, include)
    with store.lease() as lease:  # every blob held under one lease, let go of by the tree at once
        infos = store.ingest_files([full for _, full, _ in files], lease=lease)
        entries: dict[str, TreeEntry] = {}
        for (rel, _, mode), info in zip(files, infos):
            entries[rel] = TreeEntry(info.sha256, mode, info.size)
        stored: dict[bytes, BlobInfo] = {}
        for rel, target in links:
            info = stored.get(target) or stored.setdefault(target, store.ingest_bytes(target, lease=lease))
            entries[rel] = TreeEntry(info.sha256, MODE_LINK, info.size)
        source = source if source is not None else str(root.absolute())
        return put_tree(store, entries, source=source, walked=True, held=lease)
