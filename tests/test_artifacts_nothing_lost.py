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
    proc = subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(root), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
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
    import runicorn.artifacts.materialize as mat

    root = tmp_path / "st"
    src = make_tree(tmp_path / "src")
    with Store(root) as s:
        tree = s.ingest_directory(src)  # in the store, named by nothing: gc --grace 0 may take it
    store = Store(root)
    real_place = mat._place
    gcs: list[dict] = []

    def place_after_a_gc(*args: object) -> None:
        if not gcs:  # a real gc, in another process, while the installer materialises
            gcs.append(json.loads(cli(root, "gc", "--grace", "0", "--json").stdout))
        real_place(*args)

    monkeypatch.setattr(mat, "_place", place_after_a_gc)
    assert inst.install_entry(store, {"tree-sha256": tree}, base_dir=tmp_path, where="test") == tree
    assert gcs[0]["trees_deleted"] == 0 and gcs[0]["blobs_deleted"] == 0
    assert files_of(root / "artifacts" / tree) == files_of(src)
    assert store.verify(deep=True)["ok"]
    assert store.index.scalar("SELECT COUNT(*) FROM holds") == 0, "the hold ends after materialising"
    store.close()


# ---------------------------------------------------------------- 9. gc removes installed folders
def installed_tree(root: Path, tmp_path: Path, name: str, *, seed: int = 0, files: int = 0) -> tuple[Path, str]:
    """A tree installed at artifacts/<tree>/ in a child process, named by nothing."""
    src = make_tree(tmp_path / name, seed=seed)
    for i in range(files):
        (src / "many").mkdir(exist_ok=True)
        (src / "many" / f"{i}.txt").write_text(f"{name} {i}\n" * 20)
    code = (
        "import sys\nfrom runicorn.artifacts.create import create_artifact\n"
        "print(create_artifact(src=sys.argv[1], storage=sys.argv[2]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(src), str(root)], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    tree = out.split()[-1]
    assert (root / "artifacts" / tree).is_dir()
    return src, tree


def test_gc_removes_the_installed_folder_and_counts_only_bytes_it_frees(tmp_path: Path) -> None:
    from runicorn.artifacts.lookup import artifact_exists

    root = tmp_path / "st"
    src, tree = installed_tree(root, tmp_path, "data")
    folder = root / "artifacts" / tree
    # The user keeps a hard link of one installed file (cp -l): that blob frees nothing.
    kept = tmp_path / "my-copy.bin"
    os.link(folder / "sub" / "b.bin", kept)
    with Store(root) as s:
        entries = s.tree_entries(tree)
        blob_files = {e.sha256: s.blob_path(e.sha256).stat().st_size for e in entries.values()}
    kept_sha = next(e.sha256 for p, e in entries.items() if p == "sub/b.bin")
    tool_copy = (folder / "sub" / "deeper" / "tool.sh").stat().st_size  # executables are copies
    want = sum(size for sha, size in blob_files.items() if sha != kept_sha) + tool_copy

    dry = json.loads(cli(root, "gc", "--grace", "0", "--dry-run", "--json").stdout)
    assert folder.is_dir() and dry["trees_deleted"] == 1 and dry["bytes_freed"] == want
    real = json.loads(cli(root, "gc", "--grace", "0", "--json").stdout)
    assert real["trees_deleted"] == 1 and real["bytes_freed"] == want
    assert not folder.exists() and not artifact_exists(tree, storage=root)
    assert [p.name for p in (root / "artifacts").iterdir() if not p.name.startswith(".locks")] == []
    assert kept.read_bytes() == (src / "sub" / "b.bin").read_bytes()
    assert "0 problem(s)" in cli(root, "verify").stdout


def test_verify_reports_installed_folders_and_repair_fixes_them(tmp_path: Path) -> None:
    root = tmp_path / "st"
    src, tree = installed_tree(root, tmp_path, "data")
    with Store(root) as s:
        s.pin(tree, "keep")
    adir = root / "artifacts"
    # a folder whose tree is gone (left by an old gc), one a killed gc left, one edited
    orphan = adir / ("ab" * 32)
    orphan.mkdir()
    (orphan / "x.txt").write_text("old\n")
    left = adir / f".trash-{'cd' * 8}-gc-0123456789ab"
    (left / "deep").mkdir(parents=True)
    (left / "deep" / "y.txt").write_text("half removed\n")
    (adir / tree / "a.txt").unlink()
    (adir / tree / "stray.txt").write_text("not in the tree\n")

    out = cli(root, "verify", check=1).stdout
    assert f"orphan_installed: {orphan}" in out
    assert f"interrupted_removal: {left}" in out
    assert f"installed_mismatch: {adir / tree}: differs from tree {tree[:12]}: a.txt: missing (and 1 more)" in out
    rep = cli(root, "verify", "--repair").stdout
    assert "after repair: 0 problem(s)" in rep, rep
    assert not orphan.exists() and not left.exists()
    assert files_of(adir / tree) == files_of(src)
    aside = list((root / "archive" / "quarantine").glob("*installed-mismatch*"))
    assert len(aside) == 1 and (aside[0] / "stray.txt").read_text() == "not in the tree\n"  # nothing deleted
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout


_KILL_CHILD = """
import os, signal, sys, threading, time
import runicorn.artifacts.installed as inst
point, root = sys.argv[1], sys.argv[2]
real_remove = inst.remove_taken
def die(*args, **kw):
    if point == "mid_removal":  # part of the first folder removed, then killed
        victim = next(p for p in args[0][0][0].rglob("*") if p.is_file())
        victim.unlink()
    os.kill(os.getpid(), signal.SIGKILL)
def die_within(*args, **kw):  # killed at a given instant of the real removal
    threading.Timer(float(point), os.kill, (os.getpid(), signal.SIGKILL)).start()
    real_remove(*args, **kw)
    time.sleep(60)
if point == "before_rename":
    inst.take_installed = die
elif point in ("after_rename", "mid_removal"):
    inst.remove_taken = die
else:
    inst.remove_taken = die_within
from runicorn.cli import main
sys.argv = ["runicorn", "--storage", root, "gc", "--grace", "0"]
main()
"""


def _crash_store(root: Path, tmp_path: Path, trial: int) -> tuple[Path, str, list[str]]:
    keep_src, keep = installed_tree(root, tmp_path / f"t{trial}", "keep", seed=100 + trial)
    with Store(root) as s:
        s.pin(keep, "keep")
    doomed = [
        installed_tree(root, tmp_path / f"t{trial}", f"doomed{i}", seed=10 * trial + i, files=300)[1] for i in range(2)
    ]
    return keep_src, keep, doomed


def _check_finished(root: Path, keep_src: Path, keep: str, doomed: list[str], finisher: str) -> None:
    """After a killed gc: verify names only what a gc left, the finisher clears it, and a
    last gc leaves exactly the pinned tree and its folder."""
    report = json.loads(cli(root, "verify", "--json", check=None).stdout)
    assert {p["kind"] for p in report["problems"]} <= {"orphan_installed", "interrupted_removal"}, report
    assert files_of(root / "artifacts" / keep) == files_of(keep_src)
    if finisher == "verify":
        cli(root, "verify", "--repair", check=None)
    else:
        cli(root, "gc", "--grace", "0")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout
    cli(root, "gc", "--grace", "0")
    left = sorted(p.name for p in (root / "artifacts").iterdir() if p.name not in (".locks", "usage.log"))
    assert left == [keep], left
    with Store(root) as s:
        assert not any(s.has_tree(t) for t in doomed) and s.has_tree(keep)
        from runicorn.store.tree_format import build_pages

        blobs = {p.name for p in (root / "archive" / "blobs").rglob("*") if p.is_file()}
        entries = s.tree_entries(keep)
        # the tree's blobs, and its pages (kept among them), nothing else
        assert blobs == {e.sha256 for e in entries.values()} | set(build_pages(entries).pages)
    assert files_of(root / "artifacts" / keep) == files_of(keep_src)


def test_gc_killed_while_removing_installed_folders_is_finished_later(tmp_path: Path) -> None:
    import random
    import signal
    import time

    # Fixed points: after the COMMIT before any folder moved, after the moves, mid-removal.
    for trial, point in enumerate(("before_rename", "after_rename", "mid_removal")):
        root = tmp_path / f"fixed{trial}"
        keep_src, keep, doomed = _crash_store(root, tmp_path, trial)
        proc = subprocess.run(
            [sys.executable, "-c", _KILL_CHILD, point, str(root)], capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        with Store(root) as s:
            assert not any(s.has_tree(t) for t in doomed), "killed after the COMMIT"
        names = [p.name for p in (root / "artifacts").iterdir()]
        if point == "before_rename":
            assert set(doomed) <= set(names)
        else:
            assert sum(GC_MARK in n for n in names) == 2 and not set(doomed) & set(names)
        _check_finished(root, keep_src, keep, doomed, "gc" if trial % 2 else "verify")

    # Kills at random instants of the removal (two folders of 300+ files), then at random
    # instants of a whole gc run.
    rng = random.Random(9)
    for trial in range(3, 9):
        root = tmp_path / f"within{trial}"
        keep_src, keep, doomed = _crash_store(root, tmp_path, trial)
        proc = subprocess.run(
            [sys.executable, "-c", _KILL_CHILD, f"{rng.uniform(0, 0.04):.4f}", str(root)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == -signal.SIGKILL, proc.stderr
        _check_finished(root, keep_src, keep, doomed, "gc" if trial % 2 else "verify")
    root = tmp_path / "timing"
    _crash_store(root, tmp_path, 99)
    t0 = time.monotonic()
    cli(root, "gc", "--grace", "0")
    whole = time.monotonic() - t0
    for trial in range(9, 11):
        root = tmp_path / f"random{trial}"
        keep_src, keep, doomed = _crash_store(root, tmp_path, trial)
        proc = subprocess.Popen(
            [sys.executable, "-m", "runicorn", "--storage", str(root), "gc", "--grace", "0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.3, 1.0) * whole)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=300)
        _check_finished(root, keep_src, keep, doomed, "gc" if trial % 2 else "verify")


GC_MARK = "-gc-"


# ---------------------------------------------------------------- 8. a briefly missing Runicorn.toml
def _missing_since(root: Path, toml: Path) -> list[tuple]:
    with Store(root) as s:
        return s.index.query("SELECT missing_since FROM toml_usage WHERE path = ?", (str(toml),))


def test_a_toml_missing_for_a_gc_keeps_its_bindings_until_the_retention(tmp_path: Path) -> None:
    root = tmp_path / "st"
    proj = tmp_path / "proj"
    proj.mkdir()
    data = make_tree(tmp_path / "data")
    want = files_of(data)
    cli(root, "bind", "ds", "../data", cwd=proj)
    tree = json.loads(cli(root, "refs", "--kind", "binding", "--json").stdout)[0]["tree"]
    for p in sorted(data.rglob("*"), reverse=True):  # the store now holds the only copy
        p.unlink() if p.is_file() or p.is_symlink() else p.rmdir()
    toml = proj / "Runicorn.toml"
    away = tmp_path / "other-branch.toml"

    toml.rename(away)  # git checkout of a branch without it
    r = cli(root, "gc", "--grace", "0")
    assert "deleted 0 tree(s)" in r.stdout
    assert r.stderr.startswith(f"warning: {toml} is missing (since ") and "1 binding(s) are kept until" in r.stderr
    assert (root / "artifacts" / tree).is_dir() and _missing_since(root, toml)[0][0] is not None
    away.rename(toml)  # and back
    r = cli(root, "gc", "--grace", "0")
    assert "deleted 0 tree(s)" in r.stdout and r.stderr == ""
    assert _missing_since(root, toml) == [(None,)]
    assert cli(root, "path", "ds", cwd=proj).stdout.strip() == str(root / "artifacts" / tree)
    assert cli(root, "fetch", cwd=proj).stdout.strip() == f"ds: {root / 'artifacts' / tree}"
    assert files_of(root / "artifacts" / tree) == want

    # Missing for longer than the retention (30 days unless configured): then it goes.
    toml.rename(away)
    cli(root, "gc", "--grace", "0")
    with Store(root) as s, s.index.write() as c:
        c.execute("UPDATE toml_usage SET missing_since = missing_since - 31 * 86400")
    r = cli(root, "gc", "--grace", "0")
    assert "deleted 1 tree(s)" in r.stdout
    assert not (root / "artifacts" / tree).exists() and _missing_since(root, toml) == []
    # The file comes back after that: path and fetch say it cannot be installed.
    away.rename(toml)
    r = cli(root, "path", "ds", check=1, cwd=proj)
    assert r.stderr == (
        f"error: {toml}: artifact 'ds' ({tree[:12]}) is not installed and cannot be fetched: its "
        "tree is not in the store and it has no download source; bind it again from its "
        "directory\n"
    )
    for args in (("fetch",), ("fetch", "ds")):
        r = cli(root, *args, check=1, cwd=proj)
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
        assert r.stderr.startswith(
            f"error: ds: {toml}: artifact 'ds': cannot be installed: tree {tree} "
            "is not in the store and the entry has no [[download]] sources"
        )


def test_the_retention_is_configurable(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "st"
    proj = tmp_path / "proj"
    proj.mkdir()
    make_tree(tmp_path / "data")
    cli(root, "bind", "ds", str(tmp_path / "data"), cwd=proj)
    (proj / "Runicorn.toml").rename(tmp_path / "away.toml")
    monkeypatch.setenv("RUNICORN_KEEP_MISSING_TOML", "0")
    assert "deleted 0 tree(s)" in cli(root, "gc", "--grace", "0", "--keep-missing-toml", "2d").stdout
    monkeypatch.setenv("RUNICORN_KEEP_MISSING_TOML", "soon")
    r = cli(root, "gc", "--grace", "0", check=1)
    assert r.stderr == "error: RUNICORN_KEEP_MISSING_TOML='soon' is not a duration like 30d, 12h or 0\n"
    r = cli(root, "gc", "--keep-missing-toml", "-1d", check=1)
    assert "'-1d' is not a duration" in r.stderr
    monkeypatch.setenv("RUNICORN_KEEP_MISSING_TOML", "0")
    assert "deleted 1 tree(s)" in cli(root, "gc", "--grace", "0").stdout


def test_fetch_fails_for_an_artifact_it_cannot_install(tmp_path: Path) -> None:
    root = tmp_path / "st"
    proj = tmp_path / "proj"
    proj.mkdir()
    make_tree(tmp_path / "data")
    cli(root, "bind", "good", str(tmp_path / "data"), cwd=proj)
    toml = proj / "Runicorn.toml"
    lost = "ab" * 32
    toml.write_text(toml.read_text() + f'\n[lost]\ntree-sha256 = "{lost}"\n')  # no download source
    r = cli(root, "fetch", check=1, cwd=proj)
    assert r.stdout.startswith("good: ")
    assert r.stderr == (
        f"error: lost: {toml}: artifact 'lost': cannot be installed: tree {lost} is not in the "
        "store and the entry has no [[download]] sources; bind it again from its directory or "
        "an archive\n"
    )


def test_an_index_of_version_3_gets_missing_since(tmp_path: Path) -> None:
    import apsw

    from runicorn.store.index import SCHEMA_VERSION

    root = tmp_path / "st"
    Store(root).close()
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    conn.execute("DROP TABLE toml_usage")
    conn.execute("CREATE TABLE toml_usage (path TEXT PRIMARY KEY, last_seen REAL NOT NULL) WITHOUT ROWID")
    conn.execute("INSERT INTO toml_usage VALUES ('/p/Runicorn.toml', 1)")
    conn.execute("PRAGMA user_version = 3")
    conn.close()
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        assert s.index.query("SELECT path, missing_since FROM toml_usage") == [("/p/Runicorn.toml", None)]
        assert s.verify()["ok"]


def test_an_installed_git_tree_sha1_artifact_is_not_fetched_again(tmp_path: Path) -> None:
    import hashlib
    import tarfile

    import runicorn as rn

    src = make_tree(tmp_path / "src")
    git = rn.tree_hash(src, kind="git-tree-sha1")
    (tmp_path / "a").mkdir()
    archive = tmp_path / "a" / "j.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, ".")
    first = tmp_path / "a" / "Artifacts.toml"
    first.write_text(
        f'[j]\ngit-tree-sha1 = "{git}"\n\n    [[j.download]]\n    url = "j.tar.gz"\n'
        f'    sha256 = "{hashlib.sha256(archive.read_bytes()).hexdigest()}"\n'
    )
    root = tmp_path / "st"
    p = rn.ensure_artifact_installed("j", first, storage=root)
    archive.unlink()  # the source is gone; the installed copy is enough for another project
    second = tmp_path / "b" / "Artifacts.toml"
    second.parent.mkdir()
    second.write_text(first.read_text())
    assert rn.ensure_artifact_installed("j", second, storage=root) == p
    assert files_of(p) == files_of(src)


def test_materialising_a_few_files_syncs_them_not_the_filesystem(tmp_path: Path, monkeypatch) -> None:
    """``artifact()`` often runs inside a training job that is writing checkpoints: a
    small artifact is made durable by fsyncs of its own files and folders, before its
    folder is renamed into place; a large one by one syncfs."""
    import runicorn.artifacts.materialize as mat
    import runicorn.fsutil
    from runicorn.fsutil import FEW_FILES

    synced: list[str] = []
    syncfs_calls: list[str] = []
    renamed: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        renamed.append(str(src))
        real_rename(src, dst)

    def syncfs(path: Path) -> None:
        syncfs_calls.append(str(path))

    root = tmp_path / "st"
    src = make_tree(tmp_path / "src")
    with Store(root) as s:
        tree = s.ingest_directory(src)
        for module in (runicorn.fsutil, mat):
            monkeypatch.setattr(module, "syncfs", syncfs)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)
        dest = mat.materialize(s, tree)
        monkeypatch.setattr(os, "rename", real_rename)
        assert files_of(dest) == files_of(src) and syncfs_calls == []
        staging = next(r for r in renamed if ".staging-" in r)
        for rel in ("a.txt", "sub/b.bin", "sub/deeper/tool.sh", "sub/naïve ünïcode.txt", "sub", "sub/deeper", ""):
            assert os.path.join(os.path.realpath(staging), rel).rstrip("/") in synced, rel
        assert os.path.realpath(root / "artifacts") in synced  # the rename itself

        for i in range(FEW_FILES + 1):
            (src / f"more-{i}.txt").write_text(f"{i}\n")
        big = s.ingest_directory(src)
        syncfs_calls.clear()
        assert files_of(mat.materialize(s, big)) == files_of(src) and syncfs_calls
