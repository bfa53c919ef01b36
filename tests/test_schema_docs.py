"""The documents in schema/ are contracts: check them against the code."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

from runicorn.store import Store
from runicorn.store.index import SCHEMA_VERSION, schema_sql
from runicorn.store.tree_format import build_manifest, compute_tree_id

SCHEMA = Path(__file__).resolve().parents[1] / "schema"


def python_block(doc: str) -> str:
    return re.search(r"```python\n(.*?)```", doc, re.S).group(1)  # type: ignore[union-attr]


def test_reference_tree_id_implementation_agrees_with_the_store(tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "nested" / "deeper").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "nested" / "deeper" / "z.bin").write_bytes(os.urandom(5000))
    (src / "nested" / "tool").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "nested" / "tool", 0o755)
    (src / "naïve ünïcode.txt").write_text("x")
    (src / "A-upper").write_text("sorts before lowercase by bytes")
    os.symlink("nested", src / "dirlink")
    os.symlink("a.txt", src / "filelink")
    doc = (SCHEMA / "tree-id.md").read_text()
    code = python_block(doc)
    assert len([line for line in code.splitlines() if line.strip()]) <= 11, "a ten-line reference"
    script = tmp_path / "tree_id.py"
    script.write_text(code)
    out = subprocess.run([sys.executable, str(script), str(src)], capture_output=True, text=True, check=True)
    with Store(tmp_path / "store") as store:
        assert out.stdout.strip() == store.ingest_directory(src)


def test_tree_id_sorts_by_utf8_bytes_also_for_undecodable_names() -> None:
    from runicorn.store.tree_format import TreeEntry, path_key

    def by_the_definition(entries: dict[str, TreeEntry]) -> str:
        h = hashlib.sha256(b"runicorn-tree-v1\n")
        for path in sorted(entries, key=path_key):
            e = entries[path]
            h.update(f"{e.mode} {e.sha256} ".encode("ascii") + path_key(path) + b"\n")
        return h.hexdigest()

    # Surrogate-escaped bytes (0x80-0xFF) sort differently as code points and as bytes.
    names = ["a", "B", "a/b", "a b", "\u00e9", "z\udc80", "\udcff", "\uffff", "\U0001f600", "a.b"]
    for k in range(len(names) + 1):
        chosen = names[:k] + names[::-1][: k // 2]
        entries = {n: TreeEntry(hashlib.sha256(path_key(n)).hexdigest(), "100644", 1) for n in chosen}
        assert compute_tree_id(entries) == by_the_definition(entries), chosen


def test_documented_empty_tree_id() -> None:
    empty = hashlib.sha256(b"runicorn-tree-v1\n").hexdigest()
    assert compute_tree_id({}) == empty
    assert empty in (SCHEMA / "tree-id.md").read_text()


def test_manifest_doc_lists_every_key_the_code_writes() -> None:
    doc = (SCHEMA / "manifest.md").read_text()
    manifest = build_manifest(compute_tree_id({}), {})
    for key in manifest:
        assert f"| `{key}` |" in doc, key
    for key in ("sha256", "size_bytes", "mode"):
        assert f"| `files.*.{key}` |" in doc, key
    assert f'"format_version": {manifest["format_version"]}' in doc


def test_index_sql_in_schema_is_what_the_code_runs() -> None:
    from runicorn.store.tables import feature_tables_sql

    assert (SCHEMA / "index.sql").read_text() == schema_sql()
    assert (SCHEMA / "feature-tables.sql").read_text() == feature_tables_sql()
    assert f"`PRAGMA user_version` = {SCHEMA_VERSION}" in (SCHEMA / "README.md").read_text()


def test_ref_file_doc_matches_written_ref(tmp_path: Path) -> None:
    import json

    with Store(tmp_path / "st") as store:
        info = store.ingest_bytes(b"x")
        tree = store.put_tree({"x": (info.sha256, "100644", 1)})
        store.set_ref("pin", "a name/with slash", tree)
        files = list((store.refs_dir / "pin").iterdir())
        assert [f.name for f in files] == ["a%20name%2Fwith%20slash.json"]
        record = json.loads(files[0].read_text())
    doc = (SCHEMA / "refs.md").read_text()
    for key in record:
        assert f"| `{key}` |" in doc, key
