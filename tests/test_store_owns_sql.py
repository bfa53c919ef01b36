"""The store owns its index: no SQL and no index access outside ``runicorn/store/``
(issue 14, item 1).  Features call narrow store methods instead."""

from __future__ import annotations

import re
from pathlib import Path

import runicorn

PACKAGE = Path(runicorn.__file__).parent
STORE = PACKAGE / "store"

# SQL statements (as code writes them) and the index's own entry points.
SQL = re.compile(
    r"\b(SELECT\s+[\w*(]|INSERT\s+(OR\s+\w+\s+)?INTO\b|DELETE\s+FROM\b|UPDATE\s+\w+\s+SET\b|"
    r"(CREATE|DROP|ALTER)\s+(TABLE|INDEX|TRIGGER|VIEW)\b|PRAGMA\s+\w+|BEGIN\s+IMMEDIATE\b)"
)
INDEX_ACCESS = re.compile(
    r"\.index\.(query|scalar|read|write|conn)\b|\.execute(many)?\(|\bimport\s+apsw\b|"
    r"\bimport\s+sqlite3\b|runicorn\.store\.index\b"
)


def _offenders(pattern: re.Pattern[str]) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if STORE in path.parents:
            continue
        for n, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    return found


def test_no_sql_outside_the_store() -> None:
    assert _offenders(SQL) == []


def test_no_index_access_outside_the_store() -> None:
    assert _offenders(INDEX_ACCESS) == []


def test_the_patterns_find_what_they_look_for() -> None:
    # The check is only as good as its patterns: they match the statements the store runs.
    text = "".join((STORE / name).read_text("utf-8") for name in ("gc.py", "tables.py", "rows.py"))
    assert SQL.search('c.execute("SELECT tree, total_size FROM trees")')
    for statement in (
        "DELETE FROM blobs",
        "INSERT OR REPLACE INTO stat_cache_dirs",
        "UPDATE toml_usage SET",
        "INSERT OR REPLACE INTO runs",
        "SELECT sha256, size, touched_at FROM blobs",
    ):
        assert SQL.search(statement) and statement in text, statement
    assert INDEX_ACCESS.search("store.index.write()") and INDEX_ACCESS.search("c.executemany(")
