"""Tree ids, manifests and tree pages: the on-disk description of one captured directory.

Tree id (``tree-sha256``, see ``schema/tree-id.md``): for every regular file and
symlink below the root, the line ``"<mode> <sha256> <path>\\n"``; lines sorted by the
path's UTF-8 bytes; the id is SHA-256 of ``b"runicorn-tree-v1\\n"`` + the lines.

Manifests (``schema/manifest.md``): version 1 lists every file; version 2 names the
tree's top *pages* (``schema/pages.md``).  A tree's entries, in tree-id order, are cut
into leaf pages where a path's CRC-32 says so (the cut points depend on the paths only,
so changing a file rewrites one leaf); the ids of the leaves are cut the same way into
node pages by their own digits, and so on until at most :data:`TOP_MAX` ids are left.
A page is named by the SHA-256 of its bytes and every reader checks it.  This module is
pure: bytes in, bytes out; where pages are kept is the store's business.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from operator import ge
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple

from runicorn.errors import CorruptManifestError, UnsafePathError
from runicorn.gcpause import cycle_gc_paused
from runicorn.hashing import is_sha256_hex, new_sha256, sha256_bytes
from runicorn.relpath import validate_relpath

if TYPE_CHECKING:
    from runicorn.store.tree_lines import TreeLines

TREE_HEADER = b"runicorn-tree-v1\n"
MANIFEST_FORMAT = "runicorn.manifest"
MANIFEST_VERSION = 1  # lists every file: what remotes hold and version 1 stores wrote
MANIFEST_PAGED = 2  # names the top pages: what a store writes (schema/pages.md)
MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_LINK = "120000"
MODES = frozenset({MODE_FILE, MODE_EXEC, MODE_LINK})
MAX_LINK_TARGET_BYTES = 4095  # PATH_MAX less its NUL


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One file of a tree: its blob, git-style mode string and size in bytes."""

    sha256: str
    mode: str
    size: int


def path_key(path: str) -> bytes:
    """Sort key: the path's UTF-8 bytes (undecodable names survive via surrogateescape)."""
    return path.encode("utf-8", "surrogateescape")


def coerce_entry(path: str, value: Any) -> TreeEntry:
    """Validate one ``relpath -> entry`` item; accepts TreeEntry, tuple or manifest dict.

    Raises:
        UnsafePathError: bad path.
        ValueError: bad hash, mode or size (a symlink's target must be 1 to 4095 bytes).
    """
    validate_relpath(path, what="tree path")
    if isinstance(value, TreeEntry):
        entry = value
    elif isinstance(value, Mapping):
        entry = TreeEntry(value["sha256"], str(value["mode"]), value["size_bytes"])
    else:
        sha, mode, size = value
        entry = TreeEntry(sha, str(mode), size)
    if not is_sha256_hex(entry.sha256):
        raise ValueError(f"tree path {path!r}: {entry.sha256!r} is not a sha256 hex digest")
    if entry.mode not in MODES:
        raise ValueError(f"tree path {path!r}: mode {entry.mode!r} is not one of {sorted(MODES)}")
    if not isinstance(entry.size, int) or isinstance(entry.size, bool) or entry.size < 0:
        raise ValueError(f"tree path {path!r}: size {entry.size!r} is not a non-negative integer")
    _check_link_size(path, entry)
    return entry


def _check_link_size(path: str, entry: TreeEntry) -> None:
    """Refuse a symlink the OS cannot create: an empty target, or one longer than PATH_MAX.

    Raises:
        ValueError: naming the path.
    """
    if entry.mode == MODE_LINK and not 0 < entry.size <= MAX_LINK_TARGET_BYTES:
        raise ValueError(
            f"tree path {path!r}: a symlink target of {entry.size} bytes (1 to {MAX_LINK_TARGET_BYTES} can be restored)"
        )


def normalize_entries(entries: Mapping[str, Any]) -> dict[str, TreeEntry]:
    """Validate a mapping and return it sorted by path bytes (see :func:`coerce_entry`).

    Raises:
        UnsafePathError: a bad path, or a path below another entry (a directory cannot
            also be a file or a symlink, and nothing may be written through a link).
        ValueError: a bad hash, mode or size.
    """
    items = [(p, coerce_entry(p, v)) for p, v in entries.items()]
    items.sort(key=lambda item: path_key(item[0]))
    norm = dict(items)
    check_no_nesting(norm)
    return norm


def _check_page_entries(entries: dict[str, TreeEntry], chunk: list[tuple[str, TreeEntry]]) -> None:
    """:func:`normalize_entries` for ``chunk``, entries of a tree's pages that follow
    ``entries`` (and are among them): their hashes, modes and sizes were checked with
    their lines and their paths came in tree-id order (:func:`leaf_entries`), so what is
    left is each path's safety, each symlink's size and the nesting rule (a path sorts
    after every path it could lie below, so the entries before it are all it needs).

    Raises:
        UnsafePathError / ValueError: as :func:`normalize_entries`.
    """
    for path, entry in chunk:
        validate_relpath(path, what="tree path")
        _check_link_size(path, entry)
    check_no_nesting(entries, paths=[path for path, _ in chunk])


def check_no_nesting(
    entries: Mapping[str, TreeEntry], origin: Any = "tree", paths: Iterable[str] | None = None
) -> None:
    """Refuse entries where a path lies below another entry (file or symlink); with
    ``paths``, only those paths are checked (against all of ``entries``).

    Raises:
        UnsafePathError: naming ``origin`` and both paths.
    """
    for rel in entries if paths is None else paths:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in entries:
                kind = "a symlink" if entries[prefix].mode == MODE_LINK else "a file"
                raise UnsafePathError(f"{origin}: path {rel!r} lies below {prefix!r}, which is {kind}")


def compute_tree_id(entries: Mapping[str, TreeEntry]) -> str:
    """The tree id of validated entries (order of the mapping does not matter)."""
    return tree_id_of([(path, e.mode, e.sha256) for path, e in entries.items()])


def tree_id_of(items: list[tuple[str, str, str]]) -> str:
    """The tree id of validated ``(path, mode, sha256)`` triples with distinct paths.

    ``items`` is sorted in place (in tree-id order).
    """
    items.sort()
    if not paths_are_utf8([path for path, _, _ in items]):
        items.sort(key=lambda item: path_key(item[0]))
    return hash_tree_lines(items[start : start + ID_CHUNK_LINES] for start in range(0, len(items), ID_CHUNK_LINES))


def hash_tree_lines(chunks: Iterable[Iterable[tuple[str, str, str]]]) -> str:
    """The tree id of ``(path, mode, sha256)`` triples in tree-id order, given in chunks:
    the one place the id's lines are written and hashed.  (A chunk at a time: the whole
    listing of a large tree would be a copy of every line at once.)"""
    digest = new_sha256()
    digest.update(TREE_HEADER)
    for chunk in chunks:
        text = "".join([f"{mode} {sha} {path}\n" for path, mode, sha in chunk])
        # surrogateescape: a name that is not UTF-8 is hashed as its bytes (path_key)
        digest.update(text.encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def paths_are_utf8(paths: Sequence[str]) -> bool:
    """Whether every path is UTF-8 as it stands (no lone surrogate from an undecodable
    name): then code-point order is UTF-8 byte order, the tree-id order."""
    for start in range(0, len(paths), ID_CHUNK_LINES):
        try:
            "".join(paths[start : start + ID_CHUNK_LINES]).encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


# Lines written and hashed at once for a tree id.
ID_CHUNK_LINES = 4096


def build_manifest(
    tree: str, entries: Mapping[str, TreeEntry], *, source: str | None = None, created_at: float | None = None
) -> dict[str, Any]:
    """The manifest JSON object for a tree (``schema/manifest.md``)."""
    files = {p: {"sha256": e.sha256, "size_bytes": e.size, "mode": e.mode} for p, e in entries.items()}
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "tree": tree,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at or time.time())),
        "source": source,
        "file_count": len(files),
        "total_size_bytes": sum(e.size for e in entries.values()),
        "files": files,
    }


def build_paged_manifest(
    tree: str,
    pages: TreePages,
    file_count: int,
    total_size: int,
    *,
    source: str | None = None,
    created_at: float | str | None = None,
) -> dict[str, Any]:
    """The version-2 manifest of a tree stored as ``pages`` (``schema/pages.md``):
    constant size, whatever the number of files."""
    if not isinstance(created_at, str):
        created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created_at or time.time()))
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_PAGED,
        "tree": tree,
        "created_at": created_at,
        "source": source,
        "file_count": file_count,
        "total_size_bytes": total_size,
        "depth": pages.depth,
        "pages": list(pages.top),
    }


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """Canonical serialisation: keys sorted, one file per line, UTF-8, trailing newline.

    Written piecewise with the C JSON encoder: an indented ``json.dumps`` of a
    100,000-file manifest goes through the pure-Python encoder and costs seconds.
    """
    dumps = json.dumps
    parts = ["{\n"]
    keys = sorted(manifest)
    for i, key in enumerate(keys):
        value = manifest[key]
        sep = ",\n" if i < len(keys) - 1 else "\n"
        if key == "files" and isinstance(value, Mapping):
            lines = [
                f"  {dumps(path, ensure_ascii=False)}: {_entry_json(entry)}" for path, entry in sorted(value.items())
            ]
            body = "{\n" + ",\n".join(lines) + "\n }" if lines else "{}"
            parts.append(f" {dumps(key)}: {body}{sep}")
        else:
            parts.append(f" {dumps(key, ensure_ascii=False)}: {dumps(value, sort_keys=True, ensure_ascii=False)}{sep}")
    parts.append("}\n")
    return "".join(parts).encode("utf-8", "surrogateescape")


def _entry_json(entry: Any) -> str:
    """One ``files`` entry as JSON, keys sorted (a plain f-string when the values are plain)."""
    if (
        type(entry) is dict
        and entry.keys() == {"mode", "sha256", "size_bytes"}
        and type(entry["size_bytes"]) is int
        and is_sha256_hex(entry["sha256"])
        and entry["mode"] in (MODE_FILE, MODE_EXEC, MODE_LINK)
    ):
        return f'{{"mode": "{entry["mode"]}", "sha256": "{entry["sha256"]}", "size_bytes": {entry["size_bytes"]}}}'
    return json.dumps(entry, sort_keys=True, ensure_ascii=False)


def parse_manifest(
    data: bytes,
    *,
    origin: str | Path = "<manifest>",
    expected_tree: str | None = None,
    load_page: PageLoader | None = None,
    with_files: bool = True,
) -> tuple[dict[str, Any], dict[str, TreeEntry]]:
    """Parse and fully validate a manifest of either version; return (manifest, entries).

    A version-2 manifest's entries come from its pages, read with ``load_page`` (each
    checked against its id); the returned manifest then has ``files`` as version 1
    has, unless not ``with_files`` (a caller that uses the entries: a dict per file is
    the largest part of a big tree's memory).  The tree id is recomputed from the
    entries and must equal the recorded one (and ``expected_tree`` when given).

    Raises:
        CorruptManifestError: naming ``origin`` and the cause (a version-2 manifest
            without ``load_page``, a missing or damaged page, too).
    """
    with cycle_gc_paused():  # an object or more per file, all kept
        manifest, opened = open_manifest(data, origin=origin, expected_tree=expected_tree, load_page=load_page)
        entries = opened.read_all()
        if opened.paged and with_files:
            manifest["files"] = {
                p: {"sha256": e.sha256, "size_bytes": e.size, "mode": e.mode} for p, e in entries.items()
            }
        return manifest, entries


def open_manifest(
    data: bytes,
    *,
    origin: str | Path = "<manifest>",
    expected_tree: str | None = None,
    load_page: PageLoader | None = None,
) -> tuple[dict[str, Any], ManifestEntries]:
    """Parse a manifest of either version and check its header; its entries are read and
    checked through the :class:`ManifestEntries` returned (a version 1 manifest's are
    already: they are in it), so a caller can start on the first pages' entries while the
    rest are read (the restore of a large tree writes them meanwhile).

    Raises:
        CorruptManifestError: as :func:`parse_manifest`, for what the header shows.
    """
    try:
        manifest = json.loads(data.decode("utf-8", "surrogateescape"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptManifestError(f"{origin}: not valid JSON ({exc})") from None
    except RecursionError:  # the JSON parser's depth bound
        raise CorruptManifestError(f"{origin}: not valid JSON (arrays or objects nested too deeply)") from None
    if not isinstance(manifest, dict):
        raise CorruptManifestError(f"{origin}: not a manifest object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CorruptManifestError(f"{origin}: format is {manifest.get('format')!r}, not {MANIFEST_FORMAT!r}")
    version = manifest.get("format_version")
    if version == MANIFEST_PAGED:
        return manifest, ManifestEntries(manifest, origin, expected_tree, load_page)
    if version != MANIFEST_VERSION:
        raise CorruptManifestError(f"{origin}: unsupported format_version {version!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CorruptManifestError(f"{origin}: not a manifest object with a 'files' mapping")
    try:
        entries = normalize_entries(files)
    except (UnsafePathError, ValueError, KeyError, TypeError) as exc:
        raise CorruptManifestError(f"{origin}: bad file entry ({exc})") from None
    _check_tree_id(manifest, entries, origin, expected_tree)
    return manifest, ManifestEntries(manifest, origin, expected_tree, None, entries)


def _check_tree_id(
    manifest: dict[str, Any], entries: Mapping[str, TreeEntry], origin: str | Path, expected_tree: str | None
) -> None:
    """Refuse a manifest whose entries do not hash to its recorded tree (or ``expected_tree``).

    Raises:
        CorruptManifestError: naming ``origin`` and both ids.
    """
    tree = compute_tree_id(entries)
    if manifest.get("tree") != tree:
        raise CorruptManifestError(
            f"{origin}: recorded tree {manifest.get('tree')!r} does not match its files ({tree})"
        )
    if expected_tree is not None and tree != expected_tree:
        raise CorruptManifestError(f"{origin}: holds tree {tree}, expected {expected_tree}")


class ManifestEntries:
    """The entries of a manifest :func:`open_manifest` opened.

    Those of a version-2 manifest are read from its pages a leaf at a time
    (:meth:`chunks`): each leaf's entries are checked before they are given (paths in
    order and safe, symlink sizes, none below another entry), and when the last leaf is
    read, the file count and the tree id are (:attr:`finished` is then True).  A version-1
    manifest's entries were all checked when it was opened.  :attr:`entries` holds the
    entries read so far, in tree-id order.
    """

    def __init__(
        self,
        manifest: dict[str, Any],
        origin: str | Path,
        expected_tree: str | None,
        load_page: PageLoader | None,
        entries: dict[str, TreeEntry] | None = None,
    ) -> None:
        self.paged = entries is None
        self.entries: dict[str, TreeEntry] = {} if entries is None else entries
        self.finished = not self.paged
        self._failure: CorruptManifestError | None = None
        self._reading = self._read()
        self._manifest, self._origin, self._expected = manifest, origin, expected_tree
        if not self.paged:
            self.file_count = len(self.entries)
            return
        if load_page is None:
            raise CorruptManifestError(
                f"{origin}: a version-2 manifest is read with the blob folder that holds its pages (schema/pages.md)"
            )
        top, depth, count = manifest.get("pages"), manifest.get("depth"), manifest.get("file_count")
        if not isinstance(top, list) or len(top) > TOP_MAX or not isinstance(count, int) or count < 0:
            raise CorruptManifestError(f"{origin}: 'pages' or 'file_count' malformed")
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise CorruptManifestError(f"{origin}: page depth {depth!r} is out of range")
        self.file_count = count  # as declared: checked when the last leaf is read
        self._top, self._depth, self._load = top, depth, load_page

    def chunks(self) -> Iterator[list[tuple[str, TreeEntry]]]:
        """The entries not given yet, a leaf page's at a time (a version-1 manifest's: all
        at once); also in :attr:`entries` once given.  Every call continues the same
        reading (one at a time: it is not for two threads at once).

        Raises:
            CorruptManifestError: naming the manifest and the cause: a page missing or
                damaged, a bad entry, the file count or the tree id wrong.
        """
        return self._reading

    def read_all(self) -> dict[str, TreeEntry]:
        """Read (and check) the entries not read yet; return them all.

        Raises:
            CorruptManifestError: as :meth:`chunks` (again the same when the reading
                stopped at it before).
        """
        for _ in self._reading:
            pass
        if not self.finished:
            raise self._failure or CorruptManifestError(f"{self._origin}: its entries were not all read")
        return self.entries

    def _read(self) -> Iterator[list[tuple[str, TreeEntry]]]:
        try:
            yield from self._read_checked()
        except CorruptManifestError as exc:
            self._failure = exc  # for a later read_all (this reading ends here)
            raise

    def _read_checked(self) -> Iterator[list[tuple[str, TreeEntry]]]:
        if not self.paged:
            yield list(self.entries.items())
            return
        origin, entries = self._origin, self.entries
        # leaf_entries refuses a path that does not follow the one before in byte order,
        # so none is listed twice (distinct bytes decode to distinct strings).
        for chunk in leaf_entries(self._top, self._depth, self._load, str(origin), limit=self.file_count):
            entries.update(chunk)
            try:
                _check_page_entries(entries, chunk)
            except (UnsafePathError, ValueError, KeyError, TypeError) as exc:
                raise CorruptManifestError(f"{origin}: bad file entry ({exc})") from None
            yield chunk
        if len(entries) != self.file_count:
            raise CorruptManifestError(
                f"{origin}: file_count {self.file_count} but its pages list {len(entries)} files"
            )
        _check_tree_id(self._manifest, entries, origin, self._expected)
        self.finished = True


def mode_of(st_mode: int) -> str:
    """Map a stat mode to the tree mode string (symlink, executable or plain file)."""
    import stat

    if stat.S_ISLNK(st_mode):
        return MODE_LINK
    return MODE_EXEC if st_mode & 0o100 else MODE_FILE


def iter_lines(entries: Mapping[str, TreeEntry]) -> Iterable[bytes]:
    """The tree-id lines, in order (useful for debugging and docs)."""
    for path in sorted(entries, key=path_key):
        e = entries[path]
        yield f"{e.mode} {e.sha256} ".encode("ascii") + path_key(path) + b"\n"


# ----------------------------------------------------------------- pages
PageLoader = Callable[[str], bytes]
LEAF_HEADER = b"runicorn-leaf-v1\n"
NODE_HEADER = b"runicorn-node-v1\n"
# Expected entries per leaf and ids per node: a cut after an entry whose path's CRC-32
# (or a child id whose first 32 bits) is 0 modulo these.  Small pages keep a one-file
# change small (one leaf, one node per level); MAX bounds a page whatever the names.
LEAF_SPLIT = 32
NODE_SPLIT = 64
LEAF_MAX = 1024
NODE_MAX = 1024
# A manifest lists at most this many top pages; more get another level of nodes.
TOP_MAX = 64
# Bound on a page file a reader accepts: LEAF_MAX lines of at most a 4 KiB path each.
MAX_PAGE_BYTES = LEAF_MAX * (4096 + 100) + len(LEAF_HEADER)
# Deeper than any tree of 2**63 files at these fan-outs: refuses a hostile page cycle.
MAX_DEPTH = 12


@dataclass(frozen=True, slots=True)
class TreePages:
    """The pages of one tree: ``top`` ids at ``depth`` (0: the top pages are leaves),
    and every page's bytes by id, leaves first, each level in order."""

    depth: int
    top: list[str]
    pages: Mapping[str, bytes]
    leaves: frozenset[str]
    # What some pages name, as :func:`page_links` would read it from their bytes: the
    # builder knows it for the pages it cut (no need to parse them again).
    known_links: Mapping[str, dict[str, int]] = field(default_factory=dict)
    # ``(entries, bytes)`` of some pages, known to the builder: the index rows of pages
    # whose bytes are built only when asked for need no build.
    known_shapes: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def shape(self, page: str) -> tuple[int, int]:
        """``(entries, size in bytes)`` of ``page``: its lines (files or children) and length."""
        found = self.known_shapes.get(page)
        if found is not None:
            return found
        data = self.pages[page]
        return data.count(b"\n") - 1, len(data)

    def links(self, page: str) -> dict[str, int]:
        """What ``page`` names, with multiplicity: blobs (a leaf) or child pages (a node)."""
        found = self.known_links.get(page)
        if found is not None:
            return found
        return page_links(self.pages[page], page in self.leaves, f"page {page}")


def leaf_cut(path: bytes) -> bool:
    """True when a leaf page ends after the entry of ``path`` (``schema/pages.md``)."""
    return zlib.crc32(path) % LEAF_SPLIT == 0


def node_cut(page_id: str) -> bool:
    """True when a node page ends after the child ``page_id``."""
    return int(page_id[:8], 16) % NODE_SPLIT == 0


def _cut_points(cuts: list[bool], limit: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each page of lines whose cut flags are ``cuts``."""
    start = 0
    for i, cut in enumerate(cuts):
        if cut or i + 1 - start >= limit:
            yield start, i + 1
            start = i + 1
    if start < len(cuts):
        yield start, len(cuts)


def build_pages(entries: Mapping[str, TreeEntry]) -> TreePages:
    """The pages of a tree whose ``entries`` are validated and sorted by path bytes
    (:func:`runicorn.store.tree_format.normalize_entries`)."""
    pages: dict[str, bytes] = {}
    raws = [path.encode("utf-8", "surrogateescape") for path in entries]
    lines = [f"{e.mode} {e.sha256} {e.size} ".encode() + raw + b"\n" for raw, e in zip(raws, entries.values())]
    cuts = [leaf_cut(raw) for raw in raws]
    ids: list[str] = []
    for start, end in _cut_points(cuts, LEAF_MAX):
        data = b"".join([LEAF_HEADER, *lines[start:end]])
        pid = sha256_bytes(data)
        pages[pid] = data
        ids.append(pid)
    leaves = frozenset(pages)
    depth, top = _add_nodes(ids, pages)
    return TreePages(depth, top, pages, leaves)


def _add_nodes(
    ids: list[str], pages: dict[str, bytes], links: dict[str, dict[str, int]] | None = None
) -> tuple[int, list[str]]:
    """Add to ``pages`` the node levels over leaves ``ids`` (and to ``links`` what each
    names); ``(depth, top ids)``."""
    depth = 0
    while len(ids) > TOP_MAX:
        parents: list[str] = []
        node_lines = [f"{i}\n".encode() for i in ids]
        for start, end in _cut_points([node_cut(i) for i in ids], NODE_MAX):
            data = b"".join([NODE_HEADER, *node_lines[start:end]])
            pid = sha256_bytes(data)
            pages[pid] = data
            if links is not None:
                links[pid] = dict.fromkeys(ids[start:end], 1)  # ids of one level are distinct
            parents.append(pid)
        ids = parents
        depth += 1
    return depth, ids


class LeafSpan(NamedTuple):
    """One leaf page of a built tree: its first path, number of entries (``length``), last path, id,
    and whether it ended at a cut (a cut path or :data:`LEAF_MAX` entries) rather than at
    the end of the tree."""

    first: str
    length: int
    last: str
    leaf: str
    closed: bool


class _LazyPages(Mapping[str, bytes]):
    """Page bytes by id, the leaves' built again from the lines each time they are asked
    for (to be staged, mostly) and not kept: a first snapshot of 1,000,000 files would
    hold about 90 MB of them until its tree is indexed."""

    def __init__(self, order: list[str], built: dict[str, bytes], later: dict[str, Callable[[], bytes]]) -> None:
        self._order = order
        self._built = built
        self._later = later

    def __getitem__(self, page: str) -> bytes:
        data = self._built.get(page)
        if data is None:
            data = self._later[page]()  # KeyError for a page not of this tree
            if sha256_bytes(data) != page:  # the lines changed since: never store it under this id
                raise RuntimeError(f"page {page}: its lines changed after it was cut")
        return data

    def __iter__(self) -> Iterator[str]:
        return iter(self._order)

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, page: object) -> bool:
        return page in self._built or page in self._later


def build_pages_from_lines(
    lines: TreeLines,
    *,
    known: Mapping[str, LeafSpan] | None = None,
    changed: Sequence[int] = (),
) -> tuple[TreePages, list[LeafSpan]]:
    """The pages of a tree given as its lines in tree-id order (:meth:`TreeLines.sort`),
    with the span of each leaf.

    ``known``: leaves of an earlier tree by first path; ``changed``: the sorted indices
    of the lines that may differ from that tree.  The caller vouches that every other
    line is an entry of the earlier tree, unchanged.  A known leaf is taken over (its
    bytes built only if asked for) where this tree's cutting starts a leaf at its first
    path and the same number of lines, ending at its last path, holds no changed line:
    exactly the leaf cutting these lines would give, so the pages are those of
    :func:`build_pages` either way.
    """
    known = known or {}
    paths = lines.paths.reader()  # (the lines are read in order, a few back at most)
    n = len(lines)
    built: dict[str, bytes] = {}
    later: dict[str, Callable[[], bytes]] = {}
    spans_of: dict[str, tuple[int, int]] = {}  # each leaf cut here: its lines
    shapes: dict[str, tuple[int, int]] = {}
    ids: list[str] = []
    spans: list[LeafSpan] = []
    crc, split, limit = zlib.crc32, LEAF_SPLIT, LEAF_MAX

    def leaf_bytes(start: int, end: int) -> bytes:
        texts = [f"{mode} {sha} {size} {path}\n" for path, mode, sha, size in lines.items(start, end)]
        return LEAF_HEADER + "".join(texts).encode("utf-8", "surrogateescape")

    i = 0
    while i < n:
        span = known.get(paths(i))
        if span is not None:
            end = i + span.length
            if (
                end <= n
                and paths(end - 1) == span.last
                and (span.closed or end == n)
                and bisect_left(changed, i) == bisect_left(changed, end)
            ):
                ids.append(span.leaf)
                spans.append(span)
                later[span.leaf] = partial(leaf_bytes, i, end)
                i = end
                continue
        end = i
        while True:
            cut = crc(paths(end).encode("utf-8", "surrogateescape")) % split == 0
            end += 1
            if cut or end - i >= limit or end == n:
                break
        data = leaf_bytes(i, end)
        pid = sha256_bytes(data)
        later[pid] = partial(leaf_bytes, i, end)
        shapes[pid] = (end - i, len(data))
        spans_of[pid] = (i, end)
        ids.append(pid)
        spans.append(LeafSpan(paths(i), end - i, paths(end - 1), pid, cut or end - i >= limit))
        i = end
    leaves = frozenset(ids)
    nodes: dict[str, bytes] = {}
    node_links: dict[str, dict[str, int]] = {}
    depth, top = _add_nodes(ids, nodes, node_links)
    built.update(nodes)
    links = _LinksOfLines(lines, spans_of, node_links)
    pages = _LazyPages(ids + list(nodes), built, later)
    return TreePages(depth, top, pages, leaves, links, shapes), spans


class _LinksOfLines(Mapping[str, dict[str, int]]):
    """What the pages cut from a tree's lines name, by page: a leaf's blobs counted from
    its lines each time they are asked for (a dict per leaf kept until the tree is
    indexed would cost about 140 bytes per file of a first snapshot), a node's children
    as built."""

    def __init__(self, lines: TreeLines, leaf_lines: dict[str, tuple[int, int]], nodes: dict[str, dict[str, int]]):
        self._lines = lines
        self._leaf_lines = leaf_lines
        self._nodes = nodes

    def __getitem__(self, page: str) -> dict[str, int]:
        span = self._leaf_lines.get(page)
        if span is None:
            return self._nodes[page]
        return self._lines.blob_counts(*span)

    def __iter__(self) -> Iterator[str]:
        yield from self._leaf_lines
        yield from self._nodes

    def __len__(self) -> int:
        return len(self._leaf_lines) + len(self._nodes)


# One leaf line: mode, SHA-256 (lowercase hex), size (at most 19 decimal digits: any
# size a file can have, and no number too long for int()) and a non-empty path,
# separated by single spaces (the path may hold spaces).
_LEAF_LINE = rb"(%s) ([0-9a-f]{64}) ([0-9]{1,19}) ([^\n]+)\n" % b"|".join(sorted(m.encode() for m in MODES))
_LEAF_BODY = re.compile(rb"(?:%s)+" % _LEAF_LINE)
_LEAF_LINES = re.compile(_LEAF_LINE)
_MODE_OF = {m.encode(): m for m in MODES}


def _leaf_lines(data: bytes, origin: str) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """The lines of a leaf page as ``(mode, sha256, size, path)`` bytes, every one checked
    (the whole page at once, in the regular expression engine: a leaf can list a few
    thousand files and a tree many leaves).

    Raises:
        CorruptManifestError: not a leaf page, or a malformed line (named).
    """
    if not data.startswith(LEAF_HEADER):
        raise CorruptManifestError(f"{origin}: not a leaf page")
    start = len(LEAF_HEADER)
    if not data.endswith(b"\n") or len(data) == start:
        raise CorruptManifestError(f"{origin}: a leaf page must end with a newline")
    if _LEAF_BODY.fullmatch(data, start) is None:
        for line in data[start:-1].split(b"\n"):  # the first bad line, for the message
            if _LEAF_LINES.fullmatch(line + b"\n") is None:
                raise CorruptManifestError(f"{origin}: malformed leaf line {line[:80]!r}")
        raise CorruptManifestError(f"{origin}: malformed leaf page")
    return _LEAF_LINES.findall(data, start)


def _entries_of(lines: list[tuple[bytes, bytes, bytes, bytes]]) -> list[tuple[str, TreeEntry]]:
    """``(path, entry)`` of checked leaf lines (:func:`_leaf_lines`)."""
    mode_of = _MODE_OF
    return [
        (path.decode("utf-8", "surrogateescape"), TreeEntry(sha.decode("ascii"), mode_of[mode], int(size)))
        for mode, sha, size, path in lines
    ]


def parse_leaf(data: bytes, origin: str) -> list[tuple[str, TreeEntry]]:
    """The entries of a leaf page (paths as stored: the caller validates them when the
    page's source is not trusted).

    Raises:
        CorruptManifestError: not a leaf page, or a malformed line.
    """
    return _entries_of(_leaf_lines(data, origin))


def parse_node(data: bytes, origin: str) -> list[str]:
    """The child page ids of a node page.

    Raises:
        CorruptManifestError: not a node page, or a line that is not a page id.
    """
    if not data.startswith(NODE_HEADER) or not data.endswith(b"\n") or len(data) == len(NODE_HEADER):
        raise CorruptManifestError(f"{origin}: not a node page")
    ids = data[len(NODE_HEADER) : -1].decode("ascii", "replace").split("\n")
    if not all(is_sha256_hex(i) for i in ids):
        raise CorruptManifestError(f"{origin}: a node page line is not a page id")
    return ids


def walk_pages(top: list[str], depth: int, load: PageLoader, origin: str) -> Iterator[tuple[str, bytes, bool]]:
    """Every page below ``top`` (depth first, in order) as ``(id, bytes, is_leaf)``;
    ``load(id)`` returns a page's bytes, checked against its id here.

    Raises:
        CorruptManifestError: a page that does not hash to its id, of the wrong kind
            for its level, or malformed; ``depth`` out of range.
        OSError / whatever ``load`` raises for a page it cannot find.
    """
    if not isinstance(depth, int) or isinstance(depth, bool) or not 0 <= depth <= MAX_DEPTH:
        raise CorruptManifestError(f"{origin}: page depth {depth!r} is out of range")
    for pid in top:
        if not is_sha256_hex(pid):
            raise CorruptManifestError(f"{origin}: {pid!r} is not a page id")
        data = load(pid)
        if sha256_bytes(data) != pid:
            raise CorruptManifestError(f"{origin}: page {pid} does not hash to its name")
        if depth == 0:
            yield pid, data, True
        else:
            yield pid, data, False
            yield from walk_pages(parse_node(data, f"{origin}: page {pid}"), depth - 1, load, origin)


def read_entries(
    top: list[str], depth: int, load: PageLoader, origin: str, *, limit: int | None = None
) -> list[tuple[str, TreeEntry]]:
    """The entries of a tree from its pages, in stored order (:func:`leaf_entries`, as one list).

    Raises:
        CorruptManifestError: as :func:`leaf_entries`.
    """
    return [entry for chunk in leaf_entries(top, depth, load, origin, limit=limit) for entry in chunk]


def leaf_entries(
    top: list[str], depth: int, load: PageLoader, origin: str, *, limit: int | None = None
) -> Iterator[list[tuple[str, TreeEntry]]]:
    """The entries of a tree from its pages, in stored order, a leaf page's at a time
    (see :func:`walk_pages`).

    Raises:
        CorruptManifestError: as :func:`walk_pages`, paths not in strictly increasing
            byte order (a page repeated or reordered), or more than ``limit`` entries (a
            manifest's declared file count bounds what a hostile page set can cost).
    """
    count = 0
    last = b""
    for pid, data, leaf in walk_pages(top, depth, load, origin):
        if leaf:
            lines = _leaf_lines(data, f"{origin}: page {pid}")
            # Pages list a tree's paths in tree-id order (their bytes, as stored), each
            # once: checked as they come, a page repeated (or reordered) below a node is
            # refused at its first repeat, not after walking every repeat a few small
            # hostile pages can name.
            paths = [line[3] for line in lines]
            if paths[0] <= last or any(map(ge, paths, paths[1:])):
                raise CorruptManifestError(f"{origin}: page {pid} lists paths out of order or listed twice")
            last = paths[-1]
            count += len(lines)
            if limit is not None and count > limit:
                raise CorruptManifestError(f"{origin}: its pages list more than the {limit} files it declares")
            yield _entries_of(lines)


def page_links(data: bytes, leaf: bool, origin: str) -> dict[str, int]:
    """What a page references, with multiplicity: blobs (leaf) or child pages (node)."""
    counts: dict[str, int] = {}
    if leaf:
        for _, e in parse_leaf(data, origin):
            counts[e.sha256] = counts.get(e.sha256, 0) + 1
    else:
        for child in parse_node(data, origin):
            counts[child] = counts.get(child, 0) + 1
    return counts
