"""Seeing what a store holds: ``ls``, ``show``, ``diff`` and ``du`` as data.

Everything here only reads.  The functions take an open :class:`~runicorn.store.Store`
and are also its methods (``store.ls()``, ``store.show(x)``, ``store.diff(a, b)``,
``store.du()``), so a notebook needs no command line.

Names a user may give for a tree (:func:`resolve`), tried in this order:

* ``kind/name`` of a ref (``pin/best-model``, ``run/<run_id>/code``);
* a pin name;
* a run id, or a unique prefix of one (the run's code snapshot, for ``ls`` and ``diff``);
* an artifact name bound in a ``Runicorn.toml`` (when all its bindings name one tree);
* a tree id, or a unique prefix of at least 6 hex digits.

A prefix that matches both a tree and a run is refused as ambiguous.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from runicorn.errors import AmbiguousPrefixError, RunicornError, TreeNotFoundError
from runicorn.hashing import sha256_bytes, sha256_file
from runicorn.names import did_you_mean, unique_prefix
from runicorn.store import refkinds
from runicorn.store.extensions import registered
from runicorn.store.tree_format import MODE_LINK, TreeEntry

if TYPE_CHECKING:
    from runicorn.filestat import FileStat
    from runicorn.store.layout import Ref
    from runicorn.store.store import Store

RUN_KIND = refkinds.RUN
ARTIFACT_KINDS = (refkinds.BINDING, refkinds.ARTIFACT)


@dataclass
class Target:
    """What a name given by the user stands for.

    ``type`` is ``tree``, ``pin``, ``ref``, ``artifact`` or ``run``; ``tree`` is the tree it names (for a
    run: its code snapshot, or None when it has none).
    """

    type: str
    name: str
    tree: str | None
    ref: "Ref | None" = None
    run_id: str | None = None
    refs: list["Ref"] = field(default_factory=list)


# ------------------------------------------------------------------ resolving names
def _runs(store: "Store") -> list[dict[str, Any]]:
    """The runs the registered features know (the runs feature: the indexed run folders)."""
    return [run for ext in registered() for run in ext.runs(store)]


def run_ids(store: "Store") -> list[str]:
    """Every run id the store knows: indexed run directories and runs named by refs."""
    ids = {r["run_id"] for r in _runs(store)}
    ids.update(_run_of(r) for r in store.list_refs(RUN_KIND))
    return sorted(ids)


def resolve_run_id(store: "Store", spec: str) -> str:
    """The run id ``spec`` names: the id itself or a unique prefix of one.

    Raises:
        AmbiguousPrefixError: several run ids start with ``spec`` (listed).
        RunicornError: none does (the message suggests close ids).
    """
    ids = run_ids(store)
    run = unique_prefix(spec, ids, what="run")
    if run is None:
        raise RunicornError(f"run {spec!r} not found in the store at {store.root}{did_you_mean(spec, ids)}")
    return run


def _run_of(ref: "Ref") -> str:
    return str(ref.meta.get("run_id") or ref.name.split("/", 1)[0])


def _run_refs(store: "Store", run_id: str) -> list["Ref"]:
    return [r for r in store.list_refs(RUN_KIND) if r.name == run_id or r.name.startswith(run_id + "/")]


def _code_tree(refs: list["Ref"], run_id: str) -> str | None:
    for r in refs:
        if r.name == f"{run_id}/code":
            return r.tree
    code = [r for r in refs if r.meta.get("role") == "code"]
    return code[-1].tree if code else None


def _run_target(store: "Store", run_id: str) -> Target:
    refs = _run_refs(store, run_id)
    return Target("run", run_id, _code_tree(refs, run_id), run_id=run_id, refs=refs)


def resolve(store: "Store", spec: str) -> Target:
    """What ``spec`` names: a ref ``kind/name``, a pin, a run id (or prefix), a tree id (or prefix).

    Raises:
        TreeNotFoundError: nothing matches (the message suggests close names), or a
            prefix matches several trees or runs.
    """
    if not spec:
        raise TreeNotFoundError("an empty name names no tree, pin or run")
    kind, _, name = spec.partition("/")
    if name:
        try:
            ref = store.get_ref(kind, name)
        except RunicornError:
            ref = None
        if ref is not None:
            return Target("pin", name, ref.tree, ref=ref) if kind == "pin" else Target("ref", spec, ref.tree, ref=ref)
    ref = store.get_ref("pin", spec)
    if ref is not None:
        # A snapshot pinned under its own tree id is shown as the tree it is.
        return Target("tree", ref.tree, ref.tree) if ref.tree == spec else Target("pin", spec, ref.tree, ref=ref)
    ids = run_ids(store)
    run = unique_prefix(spec, ids, what="run")  # AmbiguousPrefixError lists the runs
    if run == spec:
        return _run_target(store, spec)
    bound = [r for r in store.list_refs() if r.kind in ARTIFACT_KINDS and r.meta.get("artifact") == spec]
    if bound:
        trees = sorted({r.tree for r in bound})
        if len(trees) > 1:
            raise TreeNotFoundError(
                f"artifact {spec!r} is bound to {len(trees)} trees ({', '.join(t[:12] for t in trees)}"
                "; platform variants or several Runicorn.toml files); name one by its tree id"
            )
        return Target("artifact", spec, trees[0], ref=bound[0], refs=bound)
    tree: str | None = None
    try:
        tree = store.resolve_tree(spec)
    except AmbiguousPrefixError:
        raise
    except TreeNotFoundError:
        pass
    if tree is not None and run is not None:
        raise AmbiguousPrefixError(
            f"{spec!r} is ambiguous: tree {tree[:12]} and run {run} both start with it; give more characters"
        )
    if tree is not None:
        return Target("tree", tree, tree)
    if run is not None:
        return _run_target(store, run)
    names = (
        [r.name for r in store.list_refs("pin")]
        + ids
        + sorted(
            {str(r.meta["artifact"]) for r in store.list_refs() if r.kind in ARTIFACT_KINDS and r.meta.get("artifact")}
        )
    )
    raise TreeNotFoundError(
        f"no tree, pin or run named {spec!r} in the store at {store.root}{did_you_mean(spec, names)}"
    )


def _tree_of(store: "Store", spec: str) -> tuple[str, str]:
    """(tree id, label) of ``spec``.

    Raises:
        TreeNotFoundError: nothing matches, or a run without a code snapshot.
    """
    t = resolve(store, spec)
    if t.tree is None:
        raise TreeNotFoundError(
            f"run {t.run_id} has no code snapshot; name one of its trees (`runicorn show {t.run_id}` lists them)"
        )
    return t.tree, spec


# ------------------------------------------------------------------ ls
def _item_type(ref: "Ref") -> tuple[str, str]:
    """(type, name) a ref is listed under: runs group their refs, bindings by artifact name."""
    if ref.kind == RUN_KIND:
        return "run", _run_of(ref)
    if ref.kind == "pin":
        snap = ref.name == ref.tree or "message" in ref.meta or ref.meta.get("snapshot")
        return ("snapshot" if snap else "pin"), ref.name
    if ref.kind in ARTIFACT_KINDS:
        return "artifact", str(ref.meta.get("artifact") or ref.name)
    return ref.kind, ref.name


def _tree_rows(store: "Store", trees: Iterable[str]) -> dict[str, tuple[int, int, float]]:
    """``tree -> (file_count, total_size, created_at)`` from the index."""
    wanted = sorted(set(trees))
    rows = store.index.query(
        "SELECT tree, file_count, total_size, created_at FROM trees WHERE tree IN (SELECT value FROM json_each(?))",
        (json.dumps(wanted),),
    )
    return {t: (int(n), int(s), float(c)) for t, n, s, c in rows}


def manifest_source(store: "Store", tree: str) -> str | None:
    """The ``source`` a tree's manifest records (the captured directory), or None."""
    try:
        data = json.loads(store.manifest_path(tree).read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    src = data.get("source") if isinstance(data, dict) else None
    return str(src) if src else None


def ls(store: "Store") -> list[dict[str, Any]]:
    """Snapshots, pins, runs, artifacts (and any other refs), newest first.

    Each item: ``type``, ``name``, ``date`` (unix seconds), ``source``, ``file_count``,
    ``size`` (bytes of its files, each tree once), ``trees`` and ``refs`` (``kind/name``).
    """
    refs = store.list_refs()
    groups: dict[tuple[str, str], list["Ref"]] = {}
    for r in refs:
        groups.setdefault(_item_type(r), []).append(r)
    runs = {r["run_id"]: r for r in _runs(store)}
    for run_id in runs:
        groups.setdefault(("run", run_id), [])
    info = _tree_rows(store, (r.tree for r in refs))
    items: list[dict[str, Any]] = []
    for (typ, name), members in groups.items():
        trees = sorted({r.tree for r in members})
        date = max((r.created_at for r in members), default=0.0)
        source: str | None = None
        if typ == "run":
            run = runs.get(name)
            if run is not None:
                date = run["created_at"]
                source = f"{run['path']} ({run['status']})"
            else:
                date = min((r.created_at for r in members), default=0.0)
        elif typ == "artifact":
            tomls = sorted({str(r.meta.get("toml")) for r in members if r.meta.get("toml")})
            source = ", ".join(tomls) or None
        else:
            source = next((str(r.meta[k]) for r in members for k in ("source", "target") if r.meta.get(k)), None)
            if source is None and trees:
                source = manifest_source(store, trees[0])
        items.append(
            {
                "type": typ,
                "name": name,
                "date": date,
                "source": source,
                "file_count": sum(info.get(t, (0, 0, 0.0))[0] for t in trees),
                "size": sum(info.get(t, (0, 0, 0.0))[1] for t in trees),
                "trees": trees,
                "refs": sorted(f"{r.kind}/{r.name}" for r in members),
            }
        )
    items.sort(key=lambda i: (-i["date"], i["type"], i["name"]))
    return items


def ls_tree(store: "Store", spec: str) -> dict[str, Any]:
    """The files of ``TREE[:PATH]`` (a name :func:`resolve` accepts, then an optional path).

    Returns ``{"tree", "path", "entries": [{"path", "mode", "sha256", "size"}]}``, sorted
    by path; a ``PATH`` lists that file or everything below that directory.

    Raises:
        TreeNotFoundError: unknown tree, or no such path in it.
    """
    try:
        tree, _ = _tree_of(store, spec)
        sub = ""
    except TreeNotFoundError:
        if ":" not in spec:
            raise
        head, _, sub = spec.partition(":")
        tree, _ = _tree_of(store, head)
    sub = sub.strip("/")
    entries = store.tree_entries(tree)
    rows = [
        {"path": p, "mode": e.mode, "sha256": e.sha256, "size": e.size}
        for p, e in sorted(entries.items())
        if not sub or p == sub or p.startswith(sub + "/")
    ]
    if sub and not rows:
        raise TreeNotFoundError(f"tree {tree[:12]} has no path {sub!r}")
    return {"tree": tree, "path": sub, "entries": rows}


# ------------------------------------------------------------------ show
def _tree_info(store: "Store", tree: str) -> dict[str, Any]:
    rows = _tree_rows(store, [tree])
    if tree not in rows:
        raise TreeNotFoundError(f"tree {tree} is not in the store at {store.root}")
    n, size, created = rows[tree]
    users = store.list_refs(tree=tree)
    return {
        "tree": tree,
        "file_count": n,
        "size": size,
        "created_at": created,
        "source": manifest_source(store, tree),
        "referenced_by": [_ref_dict(r) for r in users],
        "runs": sorted({_run_of(r) for r in users if r.kind == RUN_KIND}),
    }


def _ref_dict(r: "Ref") -> dict[str, Any]:
    return {
        "ref": f"{r.kind}/{r.name}",
        "kind": r.kind,
        "name": r.name,
        "tree": r.tree,
        "created_at": r.created_at,
        "meta": r.meta,
    }


def show(store: "Store", spec: str) -> dict[str, Any]:
    """What ``spec`` is, where it came from and what references it.

    A tree: its size, source and the refs naming it.  A pin or ref: the same plus the
    ref.  A run: its directory, status, meta, code snapshots, archives, inputs and
    rolling outputs (``runicorn.runs.list_outputs``), each with its tree.

    Raises:
        TreeNotFoundError: nothing matches ``spec``.
    """
    t = resolve(store, spec)
    if t.type == "run":
        return _show_run(store, t)
    assert t.tree is not None
    out: dict[str, Any] = {"type": t.type, "name": t.name, **_tree_info(store, t.tree)}
    if t.ref is not None:
        out["ref"] = _ref_dict(t.ref)
    return out


def _show_run(store: "Store", t: Target) -> dict[str, Any]:
    run_id = str(t.run_id)
    details = next((d for ext in registered() if (d := ext.run_details(store, run_id)) is not None), {})
    run_dir = details.get("run_dir")
    meta = details.get("meta") or {}
    info = _tree_rows(store, (r.tree for r in t.refs))
    trees = []
    outputs: dict[str, list[dict[str, Any]]] = {}
    for r in t.refs:
        n, size, _ = info.get(r.tree, (0, 0, 0.0))
        role = str(r.meta.get("role") or (r.name.split("/")[1] if "/" in r.name else "run"))
        entry = {
            "ref": f"{r.kind}/{r.name}",
            "role": role,
            "tree": r.tree,
            "file_count": n,
            "size": size,
            "created_at": r.created_at,
            "source": r.meta.get("source"),
        }
        rest = r.name[len(run_id) + 1 :].split("/")
        if rest[0] == "output" and len(rest) == 3 and rest[2].isdigit():
            outputs.setdefault(rest[1], []).append(
                {
                    "version": int(rest[2]),
                    "tree": r.tree,
                    "ref": entry["ref"],
                    "size": size,
                    "metric": r.meta.get("metric"),
                    "value": r.meta.get("value"),
                    "saved_at": r.meta.get("saved_at"),
                    "source": r.meta.get("source"),
                }
            )
        else:
            trees.append(entry)
    for versions in outputs.values():
        versions.sort(key=lambda v: v["version"])
    keep = ("path", "project", "name", "alias", "host", "pid", "argv", "git")
    return {
        "type": "run",
        "name": run_id,
        "run_id": run_id,
        "run_dir": str(run_dir) if run_dir is not None else None,
        "status": details.get("status") or "deleted",
        "created_at": meta.get("created_at", min((r.created_at for r in t.refs), default=None)),
        "meta": {k: meta[k] for k in keep if k in meta},
        "code_tree": t.tree,
        "trees": trees,
        "outputs": outputs,
        "inputs": meta.get("inputs", []),
        "size": sum(info.get(tr, (0, 0, 0.0))[1] for tr in {r.tree for r in t.refs}),
    }


# ------------------------------------------------------------------ diff
class _DirSide:
    """A directory as a tree of it would be, hashed on demand.

    With a ``.rnignore`` in it (a workspace ``runicorn snapshot`` has seen, or a restored
    snapshot) and not ``all_files``: what ``snapshot`` would capture now (its ignore rules
    and ``.gitignore`` files, without the store's own folders).  Otherwise every regular
    file and symlink, as ``restore`` writes a tree.
    """

    def __init__(self, store: "Store", root: Path, *, all_files: bool = False) -> None:
        from runicorn.store.tree_format import mode_of

        self.root = root
        self.items: dict[str, tuple[str, int, Path]] = {}
        found: Iterable[tuple[str, Any, os.stat_result | FileStat]] | None = None
        if not all_files and (root / ".rnignore").is_file():
            found = _workspace_files(store, root)
        if found is None:
            from runicorn.store.walk import walk_files

            found = walk_files(root)
        for rel, full, st in found:
            size = len(os.fsencode(os.readlink(full))) if stat.S_ISLNK(st.st_mode) else st.st_size
            self.items[rel] = (mode_of(st.st_mode), size, Path(full))

    def sha(self, rel: str) -> str:
        mode, _, full = self.items[rel]
        if mode == MODE_LINK:
            return sha256_bytes(os.fsencode(os.readlink(full)))
        return sha256_file(full)


def _workspace_files(store: "Store", root: Path) -> list[tuple[str, str, FileStat]] | None:
    """What ``runicorn snapshot ROOT`` would capture now (no limits, nothing written), as the
    feature that captures workspaces says; None without one."""
    for ext in registered():
        found = ext.workspace_files(store, root)
        if found is not None:
            return found
    return None


def _side(store: "Store", spec: str | os.PathLike[str], all_files: bool) -> tuple[str, dict[str, TreeEntry] | _DirSide]:
    """(label, entries) of a tree name, or of a directory (a Path, or a string that names
    an existing directory and no tree)."""
    if isinstance(spec, os.PathLike):
        path = Path(spec)
    else:
        try:
            tree, label = _tree_of(store, spec)
            return tree, store.tree_entries(tree)
        except TreeNotFoundError as exc:
            path = Path(spec)
            if not path.is_dir():
                if os.sep in spec or spec.startswith("."):
                    raise TreeNotFoundError(f"{spec}: no such directory, and {exc}") from None
                raise
    if not path.is_dir():
        raise RunicornError(f"{path}: not a directory")
    return str(path), _DirSide(store, path, all_files=all_files)


def diff(
    store: "Store", a: str | os.PathLike[str], b: str | os.PathLike[str], *, all_files: bool = False
) -> dict[str, Any]:
    """Paths added, deleted, modified and mode-changed from ``a`` to ``b``.

    Each side is a tree (any name :func:`resolve` accepts) or a directory (a ``Path``, or a
    string naming an existing directory and no tree): with a ``.rnignore`` in it, what
    ``runicorn snapshot`` would capture now; without one, or with ``all_files``, every file
    below it, as ``restore`` writes a tree.  Returns ``{"a", "b", "added", "deleted", "modified",
    "mode_changed", "stat"}``: lists of ``{"path", ...}`` sorted by path (``modified`` has
    old and new mode, size and sha256; a directory file whose size differs is not hashed,
    its ``new_sha256`` is None), ``stat`` the counts and bytes added and removed.

    Raises:
        TreeNotFoundError: a side names no tree and no directory.
    """
    la, ea = _side(store, a, all_files)
    lb, eb = _side(store, b, all_files)

    def get(side: dict[str, TreeEntry] | _DirSide, path: str, other: TreeEntry | None) -> TreeEntry:
        if isinstance(side, _DirSide):
            mode, size, _ = side.items[path]
            # Hash only what could be equal: a different size already means modified.
            sha = side.sha(path) if other is None or other.size == size else ""
            return TreeEntry(sha, mode, size)
        return side[path]

    keys_a = set(ea.items) if isinstance(ea, _DirSide) else set(ea)
    keys_b = set(eb.items) if isinstance(eb, _DirSide) else set(eb)
    added: list[dict[str, Any]] = []
    deleted: list[dict[str, Any]] = []
    modified: list[dict[str, Any]] = []
    mode_changed: list[dict[str, Any]] = []
    for p in sorted(keys_b - keys_a):
        e = get(eb, p, None)
        added.append({"path": p, "mode": e.mode, "size": e.size, "sha256": e.sha256})
    for p in sorted(keys_a - keys_b):
        e = get(ea, p, None)
        deleted.append({"path": p, "mode": e.mode, "size": e.size, "sha256": e.sha256})
    for p in sorted(keys_a & keys_b):
        if isinstance(ea, _DirSide):
            y = get(eb, p, None)
            x = get(ea, p, y)
        else:
            x = get(ea, p, None)
            y = get(eb, p, x)
        if x.sha256 and y.sha256 and x.sha256 == y.sha256:
            if x.mode != y.mode:
                mode_changed.append({"path": p, "old_mode": x.mode, "new_mode": y.mode, "size": y.size})
            continue
        modified.append(
            {
                "path": p,
                "old_mode": x.mode,
                "new_mode": y.mode,
                "old_size": x.size,
                "new_size": y.size,
                "old_sha256": x.sha256 or None,
                "new_sha256": y.sha256 or None,
            }
        )
    stat_ = {
        "added": len(added),
        "deleted": len(deleted),
        "modified": len(modified),
        "mode_changed": len(mode_changed),
        "bytes_added": sum(e["size"] for e in added) + sum(max(0, m["new_size"] - m["old_size"]) for m in modified),
        "bytes_removed": sum(e["size"] for e in deleted) + sum(max(0, m["old_size"] - m["new_size"]) for m in modified),
    }
    return {
        "a": la,
        "b": lb,
        "added": added,
        "deleted": deleted,
        "modified": modified,
        "mode_changed": mode_changed,
        "stat": stat_,
    }


# ------------------------------------------------------------------ du
# Owner -> tree -> top pages -> (node pages ->)* leaf pages -> blobs.
_DU_OWNERS = """
WITH RECURSIVE ot(owner, tree) AS (SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?)),
op(owner, page) AS (
    SELECT ot.owner, p.id FROM ot JOIN trees t ON t.tree = ot.tree, json_each(t.pages) j JOIN pages p ON p.page = j.value
    UNION SELECT op.owner, l.child FROM op JOIN page_children l ON l.page = op.page),
ob AS (SELECT DISTINCT op.owner AS owner, l.blob AS blob FROM op JOIN page_blobs l ON l.page = op.page),
bo AS (SELECT blob, COUNT(*) AS n FROM ob GROUP BY blob)
"""


def du(store: "Store") -> dict[str, Any]:
    """Stored bytes per run, pin, snapshot, artifact (and other ref), like ``hf cache scan``.

    Each blob is counted once per owner that reaches it: ``size`` is what the owner
    reaches, ``unique`` what only it reaches (what deleting it alone could free),
    ``shared`` the rest.  Every stored byte is in exactly one of: some owner's
    ``unique``, ``shared_bytes`` (reached by several owners) or ``unreferenced_bytes``
    (reached by no ref), and these add up to ``total_bytes`` (``stats()['total_size_bytes']``).
    """
    refs = store.list_refs()
    keys: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    pairs = []
    trees: dict[int, set[str]] = {}
    for r in refs:
        key = _item_type(r)
        i = index.setdefault(key, len(keys))
        if i == len(keys):
            keys.append(key)
        pairs.append([i, r.tree])
        trees.setdefault(i, set()).add(r.tree)
    param = (json.dumps(pairs),)
    with store.index.read() as c:
        per = c.execute(
            _DU_OWNERS
            + """
            SELECT ob.owner, COUNT(*), SUM(b.size), SUM(CASE WHEN bo.n = 1 THEN b.size ELSE 0 END)
            FROM ob JOIN bo ON bo.blob = ob.blob JOIN blobs b ON b.id = ob.blob GROUP BY ob.owner""",
            param,
        ).fetchall()
        shared = c.execute(
            _DU_OWNERS
            + """
            SELECT COUNT(*), COALESCE(SUM(b.size), 0) FROM bo JOIN blobs b ON b.id = bo.blob
            WHERE bo.n > 1""",
            param,
        ).fetchone()
        unref = c.execute(
            _DU_OWNERS
            + """
            SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs WHERE id NOT IN (SELECT blob FROM ob)""",
            param,
        ).fetchone()
        total = dict(c.execute("SELECT name, value FROM totals").fetchall())
    found = {int(o): (int(n), int(s), int(u)) for o, n, s, u in per}
    owners: list[dict[str, Any]] = []
    for i, (typ, name) in enumerate(keys):
        n, size, unique = found.get(i, (0, 0, 0))
        owners.append(
            {
                "type": typ,
                "name": name,
                "trees": len(trees.get(i, ())),
                "blobs": n,
                "size": size,
                "unique": unique,
                "shared": size - unique,
            }
        )
    owners.sort(key=lambda o: (-o["size"], o["type"], o["name"]))
    return {
        "owners": owners,
        "shared_blobs": int(shared[0]),
        "shared_bytes": int(shared[1]),
        "unreferenced_blobs": int(unref[0]),
        "unreferenced_bytes": int(unref[1]),
        "blob_count": int(total.get("blob_count", 0)),
        "total_bytes": int(total.get("blob_bytes", 0)),
    }


__all__ = ["Target", "resolve", "run_ids", "ls", "ls_tree", "show", "diff", "du", "manifest_source"]
