"""Features join the store through extension objects registered by ``runicorn/__init__``
(issue 14, item 1): a store is never opened without them, although runicorn.store imports
no feature; run deletion plans through the store's own gc query; the feature tables keep
their definitions, so stores made before they left the core schema open unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import apsw

import runicorn as rn
from runicorn.store import Store, open_store

REPO = Path(__file__).resolve().parents[1]

_GC_IN_A_FRESH_INTERPRETER = """
import json, sys
from pathlib import Path
import runicorn.store.store as only_the_store
if sys.argv[2] == "without":
    from runicorn.store import extensions
    extensions._registered.clear()  # the control: what gc would do without the features
store = only_the_store.Store(Path(sys.argv[1]))
report = store.gc(grace_seconds=0)
print(json.dumps({"collected": report["tree_ids"], "bindings": len(store.list_refs("binding")),
                  "modules": sorted(m for m in sys.modules if m.startswith("runicorn.artifacts"))}))
"""


def _gc_in_a_fresh_interpreter(root: Path, mode: str) -> dict:  # type: ignore[type-arg]
    r = subprocess.run(
        [sys.executable, "-c", _GC_IN_A_FRESH_INTERPRETER, str(root), mode],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_a_gc_in_an_interpreter_that_imports_only_the_store_refreshes_artifact_roots(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    tree = rn.create_artifact(lambda d: (d / "x").write_text("bound"))
    toml = tmp_path / "p" / "Runicorn.toml"
    toml.parent.mkdir()
    rn.bind_artifact(toml, "data", tree)
    store = open_store()
    for ref in store.list_refs("binding"):  # as if the refs were lost: the file still binds the tree
        store.delete_ref(ref.kind, ref.name)
    assert store.list_refs("binding") == [] and store.list_refs(tree=tree) == []
    store.close()
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    report = _gc_in_a_fresh_interpreter(_isolated_storage, "with")
    assert tree not in report["collected"] and report["bindings"] == 1
    assert "runicorn.artifacts.gcroots" in report["modules"]  # loaded by the gc, not by the import
    with Store(_isolated_storage) as s:
        assert s.has_tree(tree) and [r.tree for r in s.list_refs("binding")] == [tree]
        for ref in s.list_refs("binding"):
            s.delete_ref(ref.kind, ref.name)
    # The control: the same gc without the registration would have collected the bound tree.
    assert tree in _gc_in_a_fresh_interpreter(_isolated_storage, "without")["collected"]


def test_an_index_rebuilt_in_an_interpreter_that_imports_only_the_store_has_runs_and_usage(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    """A lost index is rebuilt when the store is opened: the features' tables come back
    from their own files (run directories, artifacts/usage.log) however the store is reached."""
    tree = rn.create_artifact(lambda d: (d / "x").write_text("bound"))
    toml = tmp_path / "p" / "Runicorn.toml"
    toml.parent.mkdir()
    rn.bind_artifact(toml, "data", tree)
    run = rn.init("proj/exp", run_id="r1")
    run.finish()
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    for suffix in ("", "-wal", "-shm"):
        Path(str(_isolated_storage / "archive" / "index.sqlite3") + suffix).unlink(missing_ok=True)
    code = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        import runicorn.store.store as only_the_store
        store = only_the_store.Store(Path(sys.argv[1]))
        print(json.dumps({"runs": [r[0] for r in store.run_rows.all()],
                          "usage": [k for k, _ in store.toml_usage.all()],
                          "bindings": [r.tree for r in store.list_refs("binding")]}))
    """)
    r = subprocess.run(
        [sys.executable, "-c", code, str(_isolated_storage)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"runs": ["r1"], "usage": [str(toml)], "bindings": [tree]}


def test_the_store_package_imports_no_feature_and_runicorn_registers_them() -> None:
    code = textwrap.dedent("""
        import sys
        import runicorn.store
        from runicorn.store.extensions import registered, tables
        print([e.name for e in registered()], tables())
        print(sorted(m for m in sys.modules if m.startswith("runicorn.")))
    """)
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    names, loaded = r.stdout.splitlines()
    assert (
        names
        == "['runs', 'artifacts', 'snapshots'] ['runs', 'toml_usage', 'stat_cache_dirs', 'stat_cache_leaves', 'stat_cache_seals', 'stat_cache_generation']"
    )
    # the composition point and the extension registry only: no feature, no store class, no SQLite
    assert loaded == str(
        sorted(
            [
                "runicorn._lazy",
                "runicorn._version",
                "runicorn.extensions",
                "runicorn.store",
                "runicorn.store.extensions",
            ]
        )
    )


def test_a_store_made_with_the_feature_tables_in_the_core_schema_opens_unchanged(tmp_path: Path) -> None:
    """The feature tables keep their definitions: a version-4 index made when they were part
    of index.sql (today's stores) opens with its rows and schema as they were."""
    from runicorn.store.index import SCHEMA_VERSION, schema_sql
    from runicorn.store.tables import feature_tables_sql

    root = tmp_path / "old"
    with Store(root) as store:
        info = store.ingest_bytes(b"x")
        store.put_tree({"x": (info.sha256, "100644", 1)}, ref=("pin", "p"))
    index = root / "archive" / "index.sqlite3"
    conn = apsw.Connection(str(index))
    for table in ("stat_cache_dirs", "runs", "toml_usage"):
        conn.execute(f"DROP TABLE {table}")
    # exactly how the index of a store of the previous layout was created: one script
    conn.execute(
        schema_sql().replace(
            "-- Version 2: what each remote", feature_tables_sql() + "\n-- Version 2: what each remote", 1
        )
    )
    conn.execute("INSERT INTO runs VALUES ('r1', 'p/e', 'p/e/runs/r1', 'done', 1.0)")
    conn.execute("INSERT INTO toml_usage VALUES ('/x/Runicorn.toml', 1.0, NULL)")
    before = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    with Store(root) as store:
        assert store.index.version == SCHEMA_VERSION
        assert store.run_rows.run_dir("r1") == "p/e/runs/r1"
        assert store.toml_usage.all() == [("/x/Runicorn.toml", None)]
        assert store.index.query("SELECT name, sql FROM sqlite_master ORDER BY name") == before


def test_a_new_store_has_the_feature_tables_as_before(tmp_path: Path) -> None:
    from runicorn.store.tables import TABLES

    with Store(tmp_path / "new") as store:
        got = dict(store.index.query("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    for name, ddl in TABLES.items():
        create = ddl[ddl.index("CREATE TABLE") :].strip().rstrip(";").replace(" IF NOT EXISTS", "")
        assert got[name] == create, name


def test_delete_run_plans_with_the_gc_query_and_does_what_its_dry_run_says(tmp_path: Path) -> None:
    """gc_plan with the run's refs counted as gone is what gc then collects."""
    with Store(tmp_path / "st") as store:
        own = store.ingest_bytes(b"only the run's")
        shared = store.ingest_bytes(b"shared")
        t1 = store.put_tree({"a": (own.sha256, "100644", own.size), "b": (shared.sha256, "100644", shared.size)})
        t2 = store.put_tree({"b": (shared.sha256, "100644", shared.size)})
        store.set_ref("run", "r1/code", t1)
        store.set_ref("run", "r1/data", t2)
        store.pin(t2, "kept")
        store.release_holds()
        plan = store.gc_plan([t1, t2], refs_gone=[("run", "r1/code"), ("run", "r1/data")])
        assert [t for t, _ in plan.trees] == [t1]
        assert [b for b, _ in plan.blobs] == [own.sha256]
        assert plan.infos[t2].refs == (("pin", "kept"), ("run", "r1/data")) and plan.infos[t1].refcount == 1
        assert not plan.infos[t1].held
        # without the refs counted as gone nothing is collectable
        assert store.gc_plan([t1, t2]).trees == []
        store.delete_ref("run", "r1/code")
        store.delete_ref("run", "r1/data")
        report = store.gc(grace_seconds=0, trees=[t1, t2])
        assert report["tree_ids"] == [t for t, _ in plan.trees]
        assert report["blob_ids"] == [b for b, _ in plan.blobs]


def test_no_module_of_the_store_imports_a_feature_even_lazily() -> None:
    """The store reaches features only through registered extensions: no import of another
    runicorn package anywhere in runicorn/store, inside functions included (``ls``, ``show``
    and ``diff`` get runs and workspace files from the extensions)."""
    import ast

    allowed = {
        "runicorn.store",
        "runicorn.errors",
        "runicorn.fsutil",
        "runicorn.filestat",
        "runicorn.hashing",
        "runicorn.relpath",
        "runicorn.config",
        "runicorn.names",
        "runicorn._lazy",
        "runicorn.workers",
        "runicorn.worker_processes",
        "runicorn.gcpause",
    }
    found = []
    for path in sorted((REPO / "runicorn" / "store").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            for name in names:
                if name.startswith("runicorn") and not any(name == a or name.startswith(a + ".") for a in allowed):
                    found.append(f"{path.name}:{node.lineno} imports {name}")
    assert found == []
