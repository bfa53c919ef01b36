"""Crash recovery: replaying or discarding what dead writers left in ``archive/tmp``
(``schema/README.md``, "Write protocol" and "Work outside ``archive/``"): writer
directories, intents, gc trash and journals, batches and the notes of restores and run
deletions."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runicorn.errors import CorruptManifestError
from runicorn.fsutil import abandoned, fsync_dir, publish_link, remove_tree
from runicorn.hashing import is_sha256_hex
from runicorn.store.blobs import adopt_staged_blob
from runicorn.store.gc import finish_gc
from runicorn.store.holds import drop_writer_holds
from runicorn.store.ingest import recover_batch
from runicorn.store.layout import WORKERS_DIE_SECONDS, move_if_exists, nascent_owner_alive, workers_dying
from runicorn.store.refs import sync_ref_row
from runicorn.store.tree_format import build_pages, parse_manifest

if TYPE_CHECKING:
    from runicorn.store.store import Store


def recover(store: Store) -> list[str]:
    """:meth:`Store.recover`."""
    actions: list[str] = []
    if store.read_only:
        return actions

    own = store.current_writer
    for d in sorted(store.tmp_dir.iterdir()):
        import shutil  # not at the top: it loads bz2 and lzma, ~5 ms of every command

        if own is not None and d == own:
            continue
        if d.is_dir() and d.name.startswith("w-"):
            # Read-only is enough for flock: in a store shared by a group, another member's
            # lock file is not writable by this user.
            try:
                fd = os.open(d / "lock", os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                try:
                    fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                except OSError:
                    continue
            except PermissionError:
                continue  # another user's writer this user cannot probe: left to its owner
            try:
                if not _lock_writer(fd, d):
                    continue  # a live writer
                if not d.exists():
                    continue  # recovered by another process meanwhile
                try:
                    actions.extend(recover_writer(store, d))
                except PermissionError as exc:  # its staging is private to its owner
                    actions.append(f"left {d.name} to its owner, whose files this user cannot read ({exc})")
                    continue
                shutil.rmtree(d, ignore_errors=True)
            finally:
                os.close(fd)
        elif d.is_dir() and d.name.startswith("n-"):
            # A writer that died while starting: it never staged anything.
            if not nascent_owner_alive(d):
                shutil.rmtree(d, ignore_errors=True)
                actions.append(f"removed stale {d.name}")
    actions.extend(drop_orphan_holds(store))
    return actions


def _lock_writer(fd: int, d: Path) -> bool:
    """Take the lock of writer folder ``d`` (open as ``fd``) if no live process holds it,
    waiting up to ``WORKERS_DIE_SECONDS`` for the workers of a writer that is gone."""
    import fcntl

    deadline = None
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if deadline is None:
                if not workers_dying(d):
                    return False
                deadline = time.monotonic() + WORKERS_DIE_SECONDS
            elif time.monotonic() > deadline:
                return False
            time.sleep(0.005)


def recover_writer(store: Store, d: Path) -> list[str]:
    """Replay or discard everything in writer directory ``d`` (its holds go too), in one
    write transaction; return what was done."""
    actions: list[str] = []
    with store.index.write() as c:
        drop_writer_holds(c, d.name)
        for f in sorted(d.iterdir()):
            name = f.name
            if name.startswith("b-") and f.is_dir():
                actions.extend(recover_batch(store, c, f))
            elif name.startswith("blob-") and is_sha256_hex(name[5:]):
                actions.append(adopt_staged_blob(store, c, f, name[5:]))
            elif name.startswith("tree-") and name.endswith(".json"):
                actions.append(recover_tree(store, c, f, name[5:-5]))
            elif name.startswith("ref-") and name.endswith(".json"):
                actions.append(recover_ref(store, c, f))
            elif name.startswith("gc-") and name.endswith(".json"):
                actions.append(finish_gc(store, c, f))
            elif name == "trash" and f.is_dir():
                actions.extend(recover_trash(store, c, f))
            elif name.startswith("restore-") and name.endswith(".json"):
                actions.append(remove_noted_dir(f, "staging", ".rn-restore-", "an interrupted restore"))
            elif name.startswith("deleting-") and name.endswith(".json"):
                actions.append(finish_deletion(store, c, f))
    return [a for a in actions if a]


def drop_orphan_holds(store: Store) -> list[str]:
    """Drop the holds of writers whose directory is gone (a folder removed by hand, or
    rows copied with the index): no live writer can own them, and they would keep their
    objects from gc for good.  Returns what was done."""

    def orphans(c: Any) -> list[str]:
        live = {d.name for d in store.tmp_dir.iterdir() if d.name.startswith("w-")}
        return [w for w in _holding_writers(c) if w not in live]

    with store.index.read() as c:
        if not orphans(c):
            return []
    with store.index.write() as c:
        # Listed again inside the write lock: a writer makes its folder before its first
        # hold commits, so the folder of every writer with rows is in this listing.
        gone = orphans(c)
        for w in gone:
            drop_writer_holds(c, w)
    return [f"dropped the holds of {w}, whose folder is gone" for w in gone]


def _holding_writers(c: Any) -> list[str]:
    """The writers with hold rows or ranges: one index seek each (this runs at every
    opening of a store, while a snapshot may hold a million blobs)."""
    found: set[str] = set()
    for table in ("holds", "hold_ranges"):
        row = c.execute(f"SELECT min(writer) FROM {table}").fetchone()
        while row is not None and row[0] is not None:
            found.add(str(row[0]))
            row = c.execute(f"SELECT min(writer) FROM {table} WHERE writer > ?", (row[0],)).fetchone()
    return sorted(found)


def recover_tree(store: Store, c: Any, f: Path, tree: str) -> str:
    """Adopt (or discard, when torn or not committable) a dead writer's tree intent ``f``."""
    dest = store.manifest_path(tree)
    if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
        if not dest.exists():
            publish_link(f, dest)
        return ""

    def staged_or_stored(page: str) -> bytes:
        # The writer staged the pages beside its intent; some may be in place already.
        try:
            return (f.parent / f"page-{page}").read_bytes()
        except FileNotFoundError:
            return store.load_page(page)

    try:
        _, entries = parse_manifest(f.read_bytes(), origin=f, expected_tree=tree, load_page=staged_or_stored)
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
    from runicorn.store.trees import index_tree, summary_of

    index_tree(store, c, tree, summary_of(entries), build_pages(entries), time.time(), staging=f.parent)
    return f"adopted tree {tree[:12]}"


def finish_deletion(store: Store, c: Any, note: Path) -> str:
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
    drop_run_refs(store, c, run_id)
    remove_tree(trash)
    return f"finished the interrupted deletion of run {run_id} ({trash})"


def drop_run_refs(store: Store, c: Any, run_id: str) -> None:
    """Delete run ``run_id``'s refs (files and rows) and row inside transaction ``c``."""
    names = [
        n for (n,) in c.execute("SELECT name FROM refs WHERE kind = 'run'") if n == run_id or n.startswith(run_id + "/")
    ]
    for name in names:
        store.ref_path("run", name).unlink(missing_ok=True)
        c.execute("DELETE FROM refs WHERE kind = 'run' AND name = ?", (name,))
    c.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))


def recover_ref(store: Store, c: Any, f: Path) -> str:
    """Reconcile the row of the ref a dead writer's intent ``f`` names with its file."""
    try:
        intent = json.loads(f.read_text("utf-8"))
        kind, name = intent["kind"], intent["name"]
    except (ValueError, KeyError, TypeError):
        return ""  # the intent itself was torn: the ref file was not touched yet
    sync_ref_row(store, c, kind, name)
    return f"reconciled ref {kind}/{name}"


def recover_trash(store: Store, c: Any, trash: Path) -> list[str]:
    """Put back what a gc that did not commit moved to its trash."""
    actions = []
    for f in trash.iterdir():
        if f.name.startswith("blob-"):
            sha = f.name[5:]
            if c.execute("SELECT 1 FROM blobs WHERE sha256 = ?", (sha,)).fetchone():
                dest = store.blob_path(sha)
                if not dest.exists():
                    move_if_exists(f, dest)
                    actions.append(f"restored blob {sha[:12]} from an interrupted gc")
        elif f.name.startswith("tree-"):
            tree = f.name[5:-5]
            if c.execute("SELECT 1 FROM trees WHERE tree = ?", (tree,)).fetchone():
                dest = store.manifest_path(tree)
                if not dest.exists():
                    move_if_exists(f, dest)
                    actions.append(f"restored tree {tree[:12]} from an interrupted gc")
    return actions


def remove_noted_dir(note: Path, key: str, mark: str, what: str) -> str:
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
