"""Build the frozen store fixture ``tests/data/store-schema6.tar.gz`` and its description
``tests/data/store-schema6.json``: the store of ``tools/make_store_fixture.py``, written by
index schema 6 (links name blobs by their SHA-256) and manifest version 2 (pages), with one
more case that only that schema can hold:

- a lost blob: the tree pinned as ``pin/lost`` names a file whose blob file was deleted,
  and ``verify --repair`` then dropped the blob's row, so only the tree's leaf page still
  names it (``roles.lost_blob``; its bytes are ``lost_bytes``);
- a wide tree (``pin/wide``, ``roles.wide_tree``) of 3,000 files of seven contents: about
  a hundred leaf pages, so node pages too (its entries are not listed: its id is their
  digest).

It is the input of ``tests/test_store_migration_ids.py``, which opens it with the current
code (index schema 7: links name blobs by integer ids) and checks against the JSON that
nothing was lost, and that the lost blob, stored again, is counted again.

DO NOT REGENERATE IT WITH LATER VERSIONS (see ``tools/make_store_fixture.py``).  It was
made at the commit recorded in the JSON (``runicorn_commit``), from a regular install of
that commit::

    python tools/make_store_fixture_schema6.py            # writes tests/data/store-schema6.{tar.gz,json}
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_store_fixture import REPO, _write, build_store, write_fixture  # noqa: E402

NAME = "store-schema6"
LOST_BYTES = "a file whose blob was lost, named by a tree\n"


WIDE_FILES = 3000


def add_wide_tree(root: Path, description: dict[str, Any]) -> None:
    """Pin a tree of many paths and few blobs (node pages, a small tarball)."""
    from runicorn.store import open_store

    store = open_store(root)
    infos = [store.ingest_bytes(b"wide content %d\n" % k) for k in range(7)]
    entries = {f"wide/d{i // 100:02d}/f{i:04d}.txt": infos[i % 7] for i in range(WIDE_FILES)}
    tree = store.put_tree(
        {p: (info.sha256, "100644", info.size) for p, info in entries.items()},
        ref=("pin", "wide"),
        source="fixture: a wide tree",
    )
    store.release_holds()
    ref = store.get_ref("pin", "wide")
    assert ref is not None
    description["refs"].append(
        {"kind": ref.kind, "name": ref.name, "tree": ref.tree, "meta": ref.meta, "created_at": ref.created_at}
    )
    description["wide_tree"] = {
        "file_count": WIDE_FILES,
        "total_size": sum(info.size for info in entries.values()),
        "depth": store.get_manifest(tree)["depth"],  # node pages above the leaves
    }
    if description["wide_tree"]["depth"] < 1:
        raise SystemExit("the wide tree has no node page")
    for info in infos:
        description["blobs"][info.sha256] = info.size
    description["roles"]["wide_tree"] = tree


def add_lost_blob(root: Path, work: Path, description: dict[str, Any]) -> None:
    """Pin a tree naming a blob, delete the blob's file and repair the index."""
    from runicorn.store import open_store
    from runicorn.store.cache import forget_open_stores

    store = open_store(root)
    _write(work / "lost.txt", LOST_BYTES)
    info = store.ingest_file(work / "lost.txt")
    kept = store.tree_entries(description["roles"]["v1"])["README.md"]
    tree = store.put_tree(
        {"lost.txt": (info.sha256, "100644", info.size), "README.md": (kept.sha256, kept.mode, kept.size)},
        ref=("pin", "lost"),
        source="fixture: a tree naming a lost blob",
    )
    store.release_holds()
    os.unlink(store.blob_path(info.sha256))
    store.rebuild_index()
    if store.has_blob(info.sha256):
        raise SystemExit("the repair kept the row of the lost blob")
    report = store.verify()
    kinds = sorted(p["kind"] for p in report["problems"])
    if kinds != ["tree_missing_blob"]:
        raise SystemExit(f"expected one missing blob, verify says {report['problems']}")
    entries = store.tree_entries(tree)
    description["trees"][tree] = {
        "entries": {p: [e.sha256, e.mode, e.size] for p, e in sorted(entries.items())},
        "file_count": len(entries),
        "total_size": sum(e.size for e in entries.values()),
    }
    ref = store.get_ref("pin", "lost")
    assert ref is not None
    description["refs"].append(
        {"kind": ref.kind, "name": ref.name, "tree": ref.tree, "meta": ref.meta, "created_at": ref.created_at}
    )
    description["refs"].sort(key=lambda r: (r["kind"], r["name"]))
    description["roles"].update(lost_tree=tree, lost_blob=info.sha256)
    description["lost_bytes"] = LOST_BYTES
    description["stats"] = {k: v for k, v in store.stats().items() if k != "storage_root"}
    description["verify_at_build"] = {k: v for k, v in report.items() if k != "storage_root"}
    forget_open_stores()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data", help="directory to write the fixture to")
    args = parser.parse_args(argv)
    from runicorn.store.index import SCHEMA_VERSION

    if SCHEMA_VERSION != 6:
        raise SystemExit(f"this runicorn writes index schema {SCHEMA_VERSION}; the fixture is of schema 6")
    os.environ.pop("RUNICORN_DIR", None)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rn-fixture-") as tmp:
        root = Path(tmp) / "store"
        work = Path(tmp) / "work"
        description = build_store(root, work)
        add_wide_tree(root, description)
        add_lost_blob(root, work, description)
        description.update(
            about=(
                "Store written by index schema 6 / manifest version 2, with a lost blob; frozen, never "
                "regenerate (tools/make_store_fixture_schema6.py)."
            ),
            index_schema=6,
            manifest_version=2,
        )
        write_fixture(root, args.out, NAME, description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
