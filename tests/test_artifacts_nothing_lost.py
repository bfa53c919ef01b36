"""Artifacts and gc: an installer's tree is held while it is materialised, a briefly
missing Runicorn.toml keeps its bindings, gc removes the installed folders of what it
collects (crash-safely) and reports only bytes it really freed (BRIEF section 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runicorn.store import Store
from tests.artifacts_support import make_tree


def cli(root: Path, *args: str, check: int | None = 0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "runicorn", "--storage", str(root), *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)
    if check is not None:
        assert proc.returncode == check, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def files_of(d: Path) -> dict[str, bytes]:
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        if p.is_symlink():
            out[rel] = b"-> " + os.fsencode(os.readlink(p))
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


# ---------------------------------------------------------------- install holds its tree
def test_install_entry_holds_the_tree_against_a_concurrent_gc(tmp_path: Path, monkeypatch) -> None:
    import runicorn.artifacts.install as inst

    root = tmp_path / "st"
    src = make_tree(tmp_path / "src")
    with Store(root) as s:
        tree = s.ingest_directory(src)  # in the store, named by nothing: gc --grace 0 may take it
    store = Store(root)
    real_place = inst._place
    gcs: list[dict] = []

    def place_after_a_gc(*args: object) -> None:
        if not gcs:  # a real gc, in another process, while the installer materialises
            gcs.append(json.loads(cli(root, "gc", "--grace", "0", "--json").stdout))
        real_place(*args)

    monkeypatch.setattr(inst, "_place", place_after_a_gc)
    assert inst.install_entry(store, {"tree-sha256": tree}, base_dir=tmp_path, where="test") == tree
    assert gcs[0]["trees_deleted"] == 0 and gcs[0]["blobs_deleted"] == 0
    assert files_of(root / "artifacts" / tree) == files_of(src)
    assert store.verify(deep=True)["ok"]
    assert store.index.scalar("SELECT COUNT(*) FROM holds") == 0, "the hold ends after materialising"
    store.close()
