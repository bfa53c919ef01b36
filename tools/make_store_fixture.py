"""Build the frozen store fixture ``tests/data/store-schema4.tar.gz`` and its description
``tests/data/store-schema4.json``.

The tarball is a storage root written by the code of the day it was made: index schema 4
(``PRAGMA user_version``), manifest ``format_version`` 1, ref files version 1.  It is the
input of ``tests/test_store_migration.py``, which opens it with the current code and checks
against the JSON that nothing was lost (trees, entries, refs, blobs, restores, gc, run
deletion).  When the way trees are stored changes, that test is what proves the migration of
stores written before the change.

DO NOT REGENERATE IT WITH LATER VERSIONS.  The fixture is the format of index schema 4 /
manifest version 1, frozen: made again by code that writes a newer format, it would test
nothing.  A later format gets a fixture of its own (a new script run at that version, a new
``store-schema<N>`` name), and this one stays as it is.

It was made, and can only be made again (for instance to add a case, at a checkout of the
commit recorded in the JSON, ``runicorn_commit``), with::

    python tools/make_store_fixture.py            # writes tests/data/store-schema4.{tar.gz,json}
    python tools/make_store_fixture.py --out DIR  # elsewhere

Everything in the store is made through the public API (``runicorn.snapshot_workspace``,
``runicorn.init`` runs, :class:`runicorn.store.Store` methods and the seed's
``runicorn.assets.blob_store``): no SQL, no hand-written store files.  What it holds:

- a workspace snapshotted three times with edits between (a changed file, an added and a
  removed file, a file made executable, symlinks, names beyond ASCII (not UTF-8 is refused
  by the store), nested directories, an empty file, two paths with the same bytes, a
  private file): ``pin/v1`` (named), the second one pinned under its id and as
  ``pin/release``, the third one a run's code snapshot (``run/<run_id>/code``);
- the run ``fixture-run`` (``proj/exp``): a log, a summary, two versions of a rolling output
  and an archived directory;
- a tree no ref names (collectable by gc) whose blobs are all used by other trees, and an
  orphan blob (stored, used by no tree).

The tarball is as deterministic as the store allows (sorted members, one mtime, owner 0,
gzip header without time); the index and the ref files hold the time they were written.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
NAME = "store-schema4"
RUN_ID = "fixture-run"
RUN_PATH = "proj/exp"


def _write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


def _make_workspace(ws: Path) -> None:
    """The first state of the workspace."""
    # An explicit .rnignore: no default one is created, so the trees do not depend on it.
    _write(ws / ".rnignore", "# store fixture: nothing ignored\n*.pyc\n")
    _write(ws / "README.md", "# fixture workspace\n\nfirst version\n")
    _write(ws / "src" / "main.py", "print('v1')\n")
    _write(ws / "src" / "pkg" / "__init__.py", "")  # an empty file
    _write(ws / "src" / "pkg" / "util.py", "def add(a, b):\n    return a + b\n")
    _write(ws / "src" / "pkg" / "deep" / "nested" / "leaf.txt", "a leaf four directories down\n")
    _write(ws / "data" / "copy_a.txt", "the same bytes twice\n")  # two paths, one blob
    _write(ws / "docs" / "copy_b.txt", "the same bytes twice\n")
    _write(ws / "old.txt", "removed after the first snapshot\n")
    _write(ws / "run.sh", "#!/bin/sh\necho run\n", 0o755)  # executable from the start
    _write(ws / "tool.sh", "#!/bin/sh\necho tool\n", 0o644)  # made executable later
    _write(ws / "secret.key", "not for others\n", 0o600)  # private: stays private
    _write(ws / "bin" / "blob.bin", bytes(range(256)) * 8)  # binary content
    os.symlink("src/main.py", ws / "main-link")
    os.symlink("../README.md", ws / "docs" / "readme-link")
    # Names beyond ASCII (the store refuses names that are not UTF-8, so none of those).
    _write(ws / "näme with spaces" / "café.txt", "non-ASCII names\n")
    _write(ws / "näme with spaces" / "\U0001f984.txt", "a name outside the BMP\n")


def _edit_1(ws: Path) -> None:
    """Between the first and second snapshot: change, add, remove, chmod, relink."""
    _write(ws / "src" / "main.py", "print('v2')\n")
    _write(ws / "src" / "new.py", "NEW = True\n")
    (ws / "old.txt").unlink()
    os.chmod(ws / "tool.sh", 0o755)
    (ws / "main-link").unlink()
    os.symlink("src/new.py", ws / "main-link")


def _edit_2(ws: Path) -> None:
    """Between the second snapshot and the run's code snapshot."""
    _write(ws / "README.md", "# fixture workspace\n\nthird version\n")
    _write(ws / "src" / "pkg" / "deep" / "other" / "more.txt", "another nested directory\n")
    (ws / "data" / "copy_a.txt").unlink()
    _write(ws / "data" / "copy_c.txt", "the same bytes twice\n")  # the shared blob under a new name


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def build_store(root: Path, work: Path) -> dict[str, Any]:
    """Fill a new store at ``root`` (scratch files in ``work``); return its description."""
    import runicorn as rn
    from runicorn.assets.blob_store import store_blob
    from runicorn.store import open_store
    from runicorn.store.cache import forget_open_stores

    ws = work / "ws"
    _make_workspace(ws)
    v1 = rn.snapshot_workspace(ws, None, storage=root, name="v1", message="first snapshot")["tree"]
    _edit_1(ws)
    snap2 = rn.snapshot_workspace(ws, None, storage=root)
    v2 = snap2["tree"]
    store = open_store(root)
    store.pin(v2, "release", meta={"note": "a second pin of the second snapshot"})
    _edit_2(ws)

    outputs = work / "outputs"
    with rn.init(path=RUN_PATH, storage=root, run_id=RUN_ID, snapshot_code=True, workspace_root=ws) as run:
        for step in range(3):
            run.log({"loss": 1.0 / (step + 1)}, step=step)
        run.summary({"best_loss": 1.0 / 3})
        for version in (1, 2):
            _write(outputs / "checkpoint.pt", b"weights %d\n" % version * 64)
            run.save_output(outputs / "checkpoint.pt")
        _write(outputs / "weights" / "layer0.bin", b"\x00\x01" * 300)
        _write(outputs / "weights" / "config.json", '{"layers": 1}\n')
        _write(outputs / "weights" / "shared.txt", "the same bytes twice\n")  # shares a workspace blob
        run.archive(outputs / "weights", role="weights")
        run_id = run.run_id
    code = store.get_ref("run", f"{run_id}/code")
    assert code is not None, "the run has no code snapshot"

    # A tree no ref names, of blobs other trees keep: gc takes the tree and no blob with it.
    v2_entries = store.tree_entries(v2)
    unreferenced = store.put_tree(
        {p: v2_entries[p] for p in ("README.md", "src/pkg/util.py", "bin/blob.bin")}, source="fixture: no ref"
    )
    # An orphan blob: stored through the seed's blob API, named by no tree.
    _write(work / "orphan.bin", "an orphan blob no tree names\n")
    orphan = store_blob(work / "orphan.bin", store.blobs_dir)

    trees: dict[str, Any] = {}
    blobs: dict[str, int] = {}
    for tree in sorted({r.tree for r in store.list_refs()} | {unreferenced}):
        entries = store.tree_entries(tree)
        trees[tree] = {
            "entries": {p: [e.sha256, e.mode, e.size] for p, e in sorted(entries.items())},
            "file_count": len(entries),
            "total_size": sum(e.size for e in entries.values()),
        }
        for e in entries.values():
            blobs[e.sha256] = e.size
    blobs[orphan] = store.blob_size(orphan)
    refs = [
        {"kind": r.kind, "name": r.name, "tree": r.tree, "meta": r.meta, "created_at": r.created_at}
        for r in sorted(store.list_refs(), key=lambda r: (r.kind, r.name))
    ]
    stats = store.stats()
    if stats["blob_count"] != len(blobs) or stats["tree_count"] != len(trees) or stats["ref_count"] != len(refs):
        raise SystemExit(f"the description misses something the store holds: {stats}")
    report = store.verify(deep=True)
    forget_open_stores()  # closes the store: holds go, the WAL is checkpointed
    for leftover in ("index.sqlite3-wal", "index.sqlite3-shm"):
        if (root / "archive" / leftover).exists():
            raise SystemExit(f"{leftover} is still there after closing the store")
    return {
        "about": (
            "Store written by index schema 4 / manifest version 1; frozen, never regenerate "
            "(tools/make_store_fixture.py)."
        ),
        "runicorn_version": rn.__version__,
        "runicorn_commit": _git_commit(),
        "made_at": int(time.time()),
        "index_schema": 4,
        "manifest_version": 1,
        "run_id": run_id,
        "run_path": RUN_PATH,
        "roles": {
            "v1": v1,
            "v2": v2,
            "code": code.tree,
            "unreferenced": unreferenced,
            "orphan_blob": orphan,
            "pin": "v1",
        },
        "private_paths": ["secret.key"],
        "verify_at_build": {k: v for k, v in report.items() if k != "storage_root"},
        "stats": {k: v for k, v in stats.items() if k != "storage_root"},
        "trees": trees,
        "refs": refs,
        "blobs": dict(sorted(blobs.items())),
    }


def write_tarball(root: Path, out: Path, mtime: int) -> None:
    """Tar ``root`` (as ``store/``) reproducibly: sorted names, one mtime, owner 0."""

    def norm(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    from runicorn.fsutil import StagedFile

    with StagedFile(out.parent, prefix="." + out.name + ".") as staged:
        with gzip.GzipFile(filename="", mode="wb", fileobj=staged.file, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                paths = [root] + sorted(root.rglob("*"), key=lambda p: os.fsencode(p.relative_to(root)))
                for path in paths:
                    rel = path.relative_to(root)
                    arcname = "store" if rel == Path(".") else f"store/{rel.as_posix()}"
                    info = norm(tar.gettarinfo(str(path), arcname))
                    if info.isreg():
                        with open(path, "rb") as f:
                            tar.addfile(info, f)
                    else:
                        tar.addfile(info)
        staged.commit(out)


def write_fixture(root: Path, out: Path, name: str, description: dict[str, Any]) -> None:
    """Write the closed store at ``root`` as ``out/<name>.tar.gz`` and its description as
    ``out/<name>.json``, after checking that the store left nothing behind."""
    from runicorn.fsutil import atomic_write_json

    for leftover in ("index.sqlite3-wal", "index.sqlite3-shm"):
        if (root / "archive" / leftover).exists():
            raise SystemExit(f"{leftover} is still there after closing the store")
    left = sorted(os.listdir(root / "archive" / "tmp"))
    if left:
        raise SystemExit(f"archive/tmp is not empty after closing the store: {left}")
    write_tarball(root, out / f"{name}.tar.gz", description["made_at"])
    atomic_write_json(out / f"{name}.json", description, indent=1)
    size = (out / f"{name}.tar.gz").stat().st_size
    print(f"wrote {out / name}.tar.gz ({size} bytes, {len(description['trees'])} trees) and .json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data", help="directory to write the fixture to")
    args = parser.parse_args(argv)
    os.environ.pop("RUNICORN_DIR", None)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rn-fixture-") as tmp:
        root = Path(tmp) / "store"
        work = Path(tmp) / "work"
        write_fixture(root, args.out, NAME, build_store(root, work))
    return 0


if __name__ == "__main__":
    sys.exit(main())
