"""Materialising a stored tree as ``artifacts/<tree>/`` (one atomic rename)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runicorn.fsutil import few_to_sync, fsync_dir, narrowed_perm, sync_written, syncfs
from runicorn.relpath import ensure_no_symlink_parents, parent_dirs, safe_join
from runicorn.store import Store, TreeEntry
from runicorn.store.layout import note_blobs_linked_out
from runicorn.store.tree_format import MODE_EXEC, MODE_LINK


def materialize(store: Store, tree: str, *, name: str | None = None) -> Path:
    """Make ``artifacts/<tree>/`` from the store by one atomic rename; return it.

    Plain files are hard links to the read-only blobs (copies across filesystems);
    executables are copies (a shared blob's mode must not change); symlinks are
    recreated.  ``name`` (a git-tree-sha1) additionally gets ``artifacts/<name>`` as a
    symlink to the tree directory.  If another process won the race, its copy is kept.
    """
    adir = store.artifacts_dir
    adir.mkdir(parents=True, exist_ok=True)
    dest = adir / tree
    if not dest.is_dir():
        staging = adir / f".staging-{tree[:16]}-{os.urandom(6).hex()}"
        staging.mkdir()
        note_blobs_linked_out(store.blobs_dir)  # before the first link: see the function
        try:
            entries = sorted(store.tree_entries(tree).items())
            for path, e in entries:
                _place(store, staging, path, e)
            # Complete before the rename, even after a crash; a few files sync alone (a
            # syncfs would wait for everything else being written, a training job's too).
            if few_to_sync(len(entries)):
                folders = [staging, *(staging / d for d in parent_dirs(path for path, _ in entries))]
                files = [staging / path for path, e in entries if e.mode != MODE_LINK]
                sync_written(staging, files, folders)
            else:
                syncfs(staging)
            try:
                os.rename(staging, dest)
            except OSError:
                if not dest.is_dir():
                    raise
                shutil.rmtree(staging, ignore_errors=True)
            fsync_dir(adir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if name and name != tree:
        link = adir / name
        tmp = adir / f".link-{name}-{os.urandom(6).hex()}"
        os.symlink(tree, tmp)
        os.replace(tmp, link)
        fsync_dir(adir)
    return dest


def _place(store: Store, root: Path, path: str, e: TreeEntry) -> None:
    ensure_no_symlink_parents(root, path)
    target = safe_join(root, path, what="tree path")
    target.parent.mkdir(parents=True, exist_ok=True)
    from runicorn.store.reader import check_blob_file, open_checked, read_checked

    blob = store.blob_path(e.sha256)
    what = f"installing {path}"
    if e.mode == MODE_LINK:
        os.symlink(os.fsdecode(read_checked(blob, e.sha256, e.size, what)), target)
        return
    if e.mode != MODE_EXEC:
        # a hard link hands out the blob itself: its size is checked (verify --deep re-hashes)
        check_blob_file(blob, e.sha256, e.size, what)
        try:
            os.link(blob, target)
            return
        except OSError:
            pass
    # a copy (the blob stays read-only), streamed so its hash is checked; executable when
    # the entry is, and never more readable than the blob
    with open_checked(blob, e.sha256, e.size, what) as src, open(target, "wb") as dst:
        st = os.fstat(src.fileno())
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(target, narrowed_perm(0o755 if e.mode == MODE_EXEC else 0o444, st.st_mode))


__all__ = ["materialize"]
