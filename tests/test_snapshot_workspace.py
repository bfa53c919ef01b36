"""Workspace snapshots: ignore rules, limits, stat cache, zip, dedup in the store."""

from __future__ import annotations

import os
from array import array
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import runicorn
from runicorn.snapshot.ignore import DEFAULT_RNIGNORE, IgnoreRules
from runicorn.snapshot.scan import WalkedDir, files_of, iter_workspace_dirs
from runicorn.snapshot.statcache import RACY_NS
from runicorn.errors import RunicornError
from runicorn.store import open_store

from tests.assets_helpers import write


def _files(result: dict) -> set[str]:
    return set(open_store().get_manifest(result["tree"])["files"])


def _dir_walk(
    root: Path, rules: IgnoreRules | None = None, max_files: int = 100
) -> Iterator[tuple[WalkedDir, int, int]]:
    """The snapshot walk of ``root`` by directories, as a snapshot consumes it, with only
    its own ignore files (no .rnignore lines)."""
    return iter_workspace_dirs(
        root,
        IgnoreRules(root, [], None) if rules is None else rules,
        skip_dirs=set(),
        skip_files=set(),
        max_files=max_files,
        max_total_bytes=1 << 20,
        force=False,
    )


def _cached_files(base: str) -> dict[str, tuple[int, int]]:
    """``path -> (mtime_ns, recorded_ns)`` of every file the stat cache holds below ``base``."""
    from runicorn.snapshot.statcache import CachedDir, integers

    out: dict[str, tuple[int, int]] = {}
    for row in open_store().index.query(
        "SELECT dir, names, stats, digests, recorded, settled FROM stat_cache_dirs WHERE dir >= ? AND dir < ?",
        (base + "/", base + "0"),
    ):
        cached = CachedDir(tuple(row))
        fields = integers(cached.stats)
        for k, name in enumerate(cached.names.split("/") if cached.names else []):
            out[cached.dir + name] = (fields[6 * k + 3], cached.recorded[k])
    return out


def _walk(
    root: Path, rules: IgnoreRules | None = None, max_files: int = 100
) -> Iterator[tuple[str, str, os.stat_result]]:
    """:func:`_dir_walk` a file at a time."""
    return files_of(_dir_walk(root, rules, max_files))


def test_seed_keys_zip_and_store_agree(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "train.py", "print('hi')\n")
    write(ws / "run.sh", "#!/bin/sh\necho\n", mode=0o755)
    write(ws / "pkg" / "mod.py", "x = 1\n")
    os.symlink("train.py", ws / "link.py")
    out = tmp_path / "code.zip"
    r = runicorn.snapshot_workspace(root=ws, out_zip=out)
    assert {"workspace_root", "archive_path", "format", "file_count", "total_bytes", "tree"} <= set(r)
    assert r["format"] == "zip" and r["archive_path"] == str(out)
    assert r["workspace_root"] == str(ws.resolve())
    manifest = open_store().get_manifest(r["tree"])
    assert set(manifest["files"]) == {".rnignore", "train.py", "run.sh", "pkg/mod.py", "link.py"}
    assert r["file_count"] == 5
    assert r["total_bytes"] == sum(f["size_bytes"] for f in manifest["files"].values())
    assert manifest["files"]["run.sh"]["mode"] == "100755"
    assert manifest["files"]["link.py"]["mode"] == "120000"
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(manifest["files"])
        assert zf.read("pkg/mod.py") == b"x = 1\n"
        assert zf.read("link.py") == b"train.py"
        assert stat.S_ISLNK(zf.getinfo("link.py").external_attr >> 16)
        assert (zf.getinfo("run.sh").external_attr >> 16) & 0o777 == 0o755
    # kept alive by a pin, so gc does not take it
    assert open_store().get_ref("pin", r["tree"]) is not None


def test_default_rnignore_created_and_applied(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.py", "a")
    write(ws / "__pycache__" / "a.cpython.pyc", "x")
    write(ws / "model.pth", "weights")
    write(ws / "data" / "train.csv", "1,2")
    write(ws / ".git" / "HEAD", "ref")
    r = runicorn.snapshot_workspace(ws, None)
    assert (ws / ".rnignore").read_text() == DEFAULT_RNIGNORE
    assert _files(r) == {".rnignore", "a.py"}


def test_existing_rnignore_is_not_replaced(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "*.tmp\n")
    write(ws / "model.pth", "w")
    write(ws / "x.tmp", "t")
    r = runicorn.snapshot_workspace(ws, None)
    assert (ws / ".rnignore").read_text() == "*.tmp\n"
    assert _files(r) == {".rnignore", "model.pth"}


def test_gitignore_semantics(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(
        ws / ".rnignore",
        "\n".join(
            [
                "*.log",
                "!keep.log",  # negation
                "/top.txt",  # anchored to the root
                "docs/**/draft.md",  # ** in the middle
                "cache/",  # directory only
                "out",  # file or directory
                "excluded_dir/",
                "!excluded_dir/inside.txt",  # cannot re-include below an excluded dir
            ]
        )
        + "\n",
    )
    for rel in [
        "a.log",
        "keep.log",
        "sub/b.log",
        "top.txt",
        "sub/top.txt",
        "docs/draft.md",
        "docs/x/y/draft.md",
        "docs/x/final.md",
        "cache/c.bin",
        "sub/cache/d.bin",
        "notdir/cache",
        "out",
        "sub/out/f.txt",
        "excluded_dir/inside.txt",
        "ok.txt",
    ]:
        write(ws / rel, rel)
    r = runicorn.snapshot_workspace(ws, None)
    assert _files(r) == {".rnignore", "keep.log", "sub/top.txt", "docs/x/final.md", "notdir/cache", "ok.txt"}


def test_nested_gitignore_and_rnignore_precedence(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "!important.tmp\n")
    write(ws / ".gitignore", "*.tmp\nbuild/\n")
    write(ws / "sub" / ".gitignore", "*.txt\n!keep.txt\n/local.md\n")
    for rel in [
        "a.tmp",
        "important.tmp",
        "build/x.o",
        "sub/a.txt",
        "sub/keep.txt",
        "a.txt",
        "sub/local.md",
        "sub/deeper/local.md",
        "local.md",
    ]:
        write(ws / rel, rel)
    r = runicorn.snapshot_workspace(ws, None)
    assert _files(r) == {
        ".rnignore",
        ".gitignore",
        "sub/.gitignore",
        "important.tmp",
        "sub/keep.txt",
        "a.txt",
        "sub/deeper/local.md",
        "local.md",
    }


def test_extra_excludes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for rel in ["a.py", "large_folder/x.py", "w.bin"]:
        write(ws / rel, rel)
    r = runicorn.snapshot_workspace(root=ws, out_zip=None, extra_excludes=["large_folder/", "*.bin"])
    assert _files(r) == {".rnignore", "a.py"}


def test_storage_root_inside_workspace_is_never_captured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.py", "a")
    monkeypatch.setenv("RUNICORN_DIR", str(ws / "my-store"))
    out = ws / "snap.zip"
    r1 = runicorn.snapshot_workspace(ws, out)
    r2 = runicorn.snapshot_workspace(ws, out)
    assert _files(r1) == _files(r2) == {".rnignore", "a.py"}
    assert r1["tree"] == r2["tree"]


def test_limits_raise_clear_value_error_unless_forced(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for i in range(5):
        write(ws / f"f{i}.txt", "x" * 100)
    with pytest.raises(ValueError, match=r"files 4 > limit 3.*force_snapshot"):
        runicorn.snapshot_workspace(ws, tmp_path / "z.zip", max_files=3)
    with pytest.raises(ValueError, match=r"bytes .* > limit 200"):
        runicorn.snapshot_workspace(ws, tmp_path / "z.zip", max_total_bytes=200)
    assert not (tmp_path / "z.zip").exists()
    r = runicorn.snapshot_workspace(ws, tmp_path / "z.zip", max_files=3, max_total_bytes=200, force_snapshot=True)
    assert r["file_count"] == 6


def test_not_a_directory_and_bad_ignore_file(tmp_path: Path) -> None:
    with pytest.raises(RunicornError, match="not a directory"):
        runicorn.snapshot_workspace(tmp_path / "missing", None)
    ws = tmp_path / "ws"
    write(ws / ".rnignore", b"\xff\xfe bad")
    with pytest.raises(RunicornError, match=r"\.rnignore: cannot read ignore file"):
        runicorn.snapshot_workspace(ws, None)


def test_stat_cache_skips_unchanged_and_sees_changes(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    for i in range(20):
        write(ws / f"f{i}.txt", f"content {i}")
    write(ws / ".rnignore", "", age=60)
    r1 = runicorn.snapshot_workspace(ws, None)
    assert r1["files_read"] == 21
    r2 = runicorn.snapshot_workspace(ws, None)
    assert r2["files_read"] == 0 and r2["tree"] == r1["tree"]
    # same size, same (backdated) mtime class, different content: a new mtime reveals it
    write(ws / "f3.txt", "CONTENT 3", age=30)
    r3 = runicorn.snapshot_workspace(ws, None)
    assert r3["files_read"] == 1 and r3["tree"] != r1["tree"]
    assert (
        open_store().get_manifest(r3["tree"])["files"]["f3.txt"]["sha256"]
        != open_store().get_manifest(r1["tree"])["files"]["f3.txt"]["sha256"]
    )
    # deleting a file changes the tree without reading anything
    (ws / "f4.txt").unlink()
    r4 = runicorn.snapshot_workspace(ws, None)
    assert r4["files_read"] == 0 and "f4.txt" not in open_store().get_manifest(r4["tree"])["files"]


@pytest.mark.parametrize("rows_per_page", [3, 4096])
def test_stat_cache_rows_meet_files_whose_walk_order_differs_from_path_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows_per_page: int
) -> None:
    """The cache's rows are read in path order, a page at a time, beside the walked files
    ("a.txt" and "a-b" sort before "a/x", "a0" after it, "é" after every ASCII name).
    Every file is still vouched for, and the rows of removed files (at either end, between
    kept ones, across page boundaries) go."""
    import runicorn.store.tables as tables_mod

    monkeypatch.setattr(tables_mod, "_DIRS_PER_PAGE", rows_per_page)
    ws = tmp_path / "ws"
    names = ["a.txt", "a-b", "a/x", "a/y/z", "a0", "b", "é/1", "é.txt", "z/0", "ab/c", "!first", "~last"]
    for i, name in enumerate(names):
        write(ws / name, f"content {i}")
    os.symlink("a.txt", ws / "a.link")
    write(ws / ".rnignore", "", age=60)
    first = runicorn.snapshot_workspace(ws, None)
    assert first["files_read"] == len(names) + 1
    again = runicorn.snapshot_workspace(ws, None)
    assert again["files_read"] == 0 and again["tree"] == first["tree"]
    for gone in ("!first", "a/x", "~last", "é.txt"):
        (ws / gone).unlink()
    after = runicorn.snapshot_workspace(ws, None)
    assert after["files_read"] == 0 and after["tree"] != first["tree"]
    base = str(ws.resolve())
    kept = sorted(f"{base}/{n}" for n in [*names, ".rnignore"] if os.path.lexists(ws / n))  # links have no row
    assert sorted(_cached_files(base)) == kept
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0


def test_the_walk_yields_files_in_path_order_with_nested_ignore_rules(tmp_path: Path) -> None:
    """The walk is merged with the stat cache as it goes, so it must come in path order: a
    directory's files and subdirectories interleaved by name (a subdirectory sorts as its
    name plus "/"), each directory's .gitignore applying to its own subtree only."""
    ws = tmp_path / "ws"
    for name in ["a.txt", "a/x.log", "a/keep.txt", "a/b/y.log", "a-b", "a0", "b/x.log", "é", "z/1", "!"]:
        write(ws / name, name)
    write(ws / "a" / ".gitignore", "*.log\n")
    rules = IgnoreRules(ws.resolve(), [], None)
    walked = list(_walk(ws.resolve(), rules))
    paths = [full for _, full, _ in walked]
    assert paths == sorted(paths)
    assert [rel for rel, _, _ in walked] == [
        "!",
        "a-b",
        "a.txt",
        "a/.gitignore",
        "a/keep.txt",
        "a0",
        "b/x.log",
        "z/1",
        "é",
    ]
    assert rules.git == []  # the spec a/ pushed was popped when the walk left it
    with pytest.raises(ValueError, match="files 4 > limit 3"):
        list(_walk(ws.resolve(), max_files=3))


def test_the_walk_holds_no_transaction_of_the_store(tmp_path: Path) -> None:
    """The stat cache is read a page at a time while the walk runs: another thread writing to
    the same store in the middle of a snapshot's walk is not kept waiting for the walk."""
    import threading

    from runicorn.snapshot.capture import capture_tree
    from runicorn.store import Store

    ws = tmp_path / "ws"
    for i in range(5):
        write(ws / f"d{i}" / f"f{i}.txt", f"content {i}")
    root = ws.resolve()
    store = Store(tmp_path / "store")
    capture_tree(store, root, _dir_walk(root), source=str(root), want_entries=False)
    done: list[str] = []

    def walk_with_a_writer_in_the_middle():  # type: ignore[no-untyped-def]
        for i, item in enumerate(_dir_walk(root)):
            if i == 2:
                writer = threading.Thread(target=lambda: done.append(store.ingest_bytes(b"meanwhile").sha256))
                writer.start()
                writer.join(20)
                assert done, "the other thread's write waited for the walk"
            yield item

    captured = capture_tree(store, root, walk_with_a_writer_in_the_middle(), source=str(root), want_entries=False)
    assert captured.files_read == 0 and captured.file_count == 5 and done
    store.close()


@pytest.mark.parametrize("change", ["removed", "made a folder"])
def test_a_vouched_file_read_again_that_changed_since_the_walk_is_named(tmp_path: Path, change: str) -> None:
    """A file the stat cache vouched for whose blob is gone is read again after the walk;
    if it vanished or stopped being a regular file meanwhile, the snapshot stops naming it,
    and stores no tree."""
    import shutil

    from runicorn.snapshot.capture import capture_tree
    from runicorn.store import Store

    ws = tmp_path / "ws"
    for i in range(3):
        write(ws / f"f{i}.txt", f"content {i}")
    root = ws.resolve()
    store = Store(tmp_path / "store")
    first = capture_tree(store, root, _dir_walk(root), source=str(root), want_entries=False)
    sha = store.tree_entries(first.tree)["f1.txt"].sha256
    os.unlink(store.blob_path(sha))  # lost: the next snapshot must read f1.txt again

    def walk_then_change():  # type: ignore[no-untyped-def]
        yield from _dir_walk(root)
        (ws / "f1.txt").unlink()
        if change == "made a folder":
            (ws / "f1.txt").mkdir()

    trees = store.index.query("SELECT count(*) FROM trees")[0][0]
    with pytest.raises(RunicornError, match=r"f1\.txt: (vanished|changed) during the snapshot"):
        capture_tree(store, root, walk_then_change(), source=str(root), want_entries=False)
    assert store.index.query("SELECT count(*) FROM trees")[0][0] == trees
    if (ws / "f1.txt").is_dir():
        shutil.rmtree(ws / "f1.txt")
    write(ws / "f1.txt", "content 1")
    again = capture_tree(store, root, _dir_walk(root), source=str(root), want_entries=False)
    assert again.tree == first.tree and again.files_read == 1  # its bytes stored again
    store.close()


def test_racily_clean_files_are_reread(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "", age=60)
    path = write(ws / "hot.txt", "aaaa", age=None)  # mtime = now: same tick as the hash
    r1 = runicorn.snapshot_workspace(ws, None)
    # rewrite with equal size and force the very same mtime: only the racy rule catches it
    st = path.stat()
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    r2 = runicorn.snapshot_workspace(ws, None)
    assert r2["files_read"] == 1
    assert r2["tree"] != r1["tree"]
    row = _cached_files(str(ws.resolve()))[str(path.resolve())]
    assert row[0] >= row[1] - RACY_NS  # still racy: will be read again next time


def test_edit_in_place_with_mtime_put_back_is_reread(tmp_path: Path) -> None:
    """Same size, old (non-racy) mtime restored with utime: only the ctime shows the edit."""
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "", age=60)
    path = write(ws / "weights.txt", "aaaa", age=60)
    r1 = runicorn.snapshot_workspace(ws, None)
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0
    st = path.stat()
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns and path.stat().st_size == st.st_size
    r2 = runicorn.snapshot_workspace(ws, None)
    assert r2["files_read"] == 1 and r2["tree"] != r1["tree"]
    sha = open_store().get_manifest(r2["tree"])["files"]["weights.txt"]["sha256"]
    assert open_store().blob_path(sha).read_bytes() == b"bbbb"


def test_index_of_version_2_drops_its_stat_cache_and_rereads(tmp_path: Path) -> None:
    import apsw

    from runicorn.store import Store
    from runicorn.store.index import SCHEMA_VERSION

    ws = tmp_path / "ws"
    write(ws / ".rnignore", "", age=60)
    write(ws / "a.txt", "alpha", age=60)
    r1 = runicorn.snapshot_workspace(ws, None)
    root = Path(os.environ["RUNICORN_DIR"])
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    conn = apsw.Connection(str(root / "archive" / "index.sqlite3"))
    conn.execute("DROP TABLE stat_cache_dirs")  # for the version-2 table, without ctime_ns
    conn.execute(
        "CREATE TABLE stat_cache (path TEXT PRIMARY KEY, dev INTEGER NOT NULL, ino INTEGER NOT NULL, "
        "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, mode TEXT NOT NULL, "
        "sha256 TEXT NOT NULL, recorded_ns INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with Store(root) as s:
        assert s.index.version == SCHEMA_VERSION
        assert s.verify()["ok"]
    r2 = runicorn.snapshot_workspace(ws, None)
    assert r2["tree"] == r1["tree"] and r2["files_read"] == 2
    assert runicorn.snapshot_workspace(ws, None)["files_read"] == 0


def test_stat_cache_reingests_blobs_that_were_collected(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "", age=60)
    write(ws / "a.txt", "alpha")
    r1 = runicorn.snapshot_workspace(ws, None)
    store = open_store()
    store.unpin(r1["tree"])
    report = store.gc(grace_seconds=0)
    assert report["blobs_deleted"] == 2
    r2 = runicorn.snapshot_workspace(ws, None)
    assert r2["tree"] == r1["tree"]
    assert r2["files_read"] == 2
    assert store.blob_path(store.get_manifest(r2["tree"])["files"]["a.txt"]["sha256"]).read_bytes() == b"alpha"


def test_three_snapshots_dedupe_to_about_one_workspace(tmp_path: Path) -> None:
    """The seed's story: near-identical snapshots cost ~1x in blobs, not 3x."""
    ws = tmp_path / "ws"
    for i in range(30):
        write(ws / "src" / f"m{i}.py", os.urandom(20_000))
    write(ws / "config.py", "lr = 0.1\n")
    workspace_bytes = sum(p.stat().st_size for p in ws.rglob("*") if p.is_file())
    zips = []
    for n, lr in enumerate(["0.1", "0.01", "0.001"]):
        write(ws / "config.py", f"lr = {lr}\n")
        r = runicorn.snapshot_workspace(ws, tmp_path / f"run_{n}" / "code.zip")
        zips.append(Path(r["archive_path"]).stat().st_size)
    blobs = open_store().stats()["total_size_bytes"]
    assert sum(zips) > 2.9 * workspace_bytes  # what three zips cost
    assert blobs < 1.01 * workspace_bytes + 4096  # what the store costs
    assert open_store().stats()["tree_count"] == 3


def test_special_files_are_skipped(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.txt", "x")
    os.mkfifo(ws / "pipe")  # special files are skipped, not read
    r = runicorn.snapshot_workspace(ws, None)
    assert "pipe" not in _files(r)


def test_many_duplicate_files_across_worker_threads(tmp_path: Path) -> None:
    """Enough files to use several threads, with many identical contents (empty files too)."""
    ws = tmp_path / "ws"
    for i in range(300):
        write(ws / f"pkg{i % 7}" / f"f{i}.py", "" if i % 3 == 0 else f"same {i % 5}\n")
    write(ws / "big.bin", os.urandom(40 << 20))
    r = runicorn.snapshot_workspace(ws, None)
    files = open_store().get_manifest(r["tree"])["files"]
    assert len(files) == 302
    assert len({f["sha256"] for f in files.values()}) == 1 + 5 + 1 + 1  # empty, 5 texts, big, .rnignore
    assert open_store().verify()["ok"]
    assert open_store().stats()["blob_count"] == 8


_PATTERNS = [
    "*.log",
    "!keep.log",
    "/top.txt",
    "docs/**/draft.md",
    "cache/",
    "out",
    "a/b/",
    "**/deep",
    "x?z",
    "[abc]*.tmp",
    "!b.tmp",
    "\\#hash",
    "trail\\ ",
    "build/**",
    "!build/keep/",
    "*.egg-info/",
    "/anchored/dir/",
    "sub/*.md",
    "*~",
    "*.t[mx]p",
    "*draft*/",
    "**",
    "!**/",
    "node_modules",
]
_KEYS = [
    "a.log",
    "keep.log",
    "sub/keep.log",
    "top.txt",
    "sub/top.txt",
    "docs/draft.md",
    "docs/x/y/draft.md",
    "cache/",
    "cache",
    "sub/cache/",
    "out",
    "out/",
    "sub/out/",
    "a/b/",
    "z/a/b/",
    "deep",
    "q/deep/",
    "xyz",
    "x/z",
    "a.tmp",
    "b.tmp",
    "d.tmp",
    "#hash",
    "trail ",
    "build/",
    "build/keep/",
    "build/x.o",
    "p.egg-info/",
    "anchored/dir/",
    "z/anchored/dir/",
    "sub/r.md",
    "sub/s/r.md",
    "node_modules/",
    "w/node_modules",
    "plain.txt",
    "dir/plain.txt",
    "d000/f00000.txt",
    "notes.txt~",
    "sub/x.txp",
    "q/my-draft-2/",
    "q/my-draft-2",
]


@pytest.mark.parametrize(
    "lines",
    [_PATTERNS[:k] for k in range(1, len(_PATTERNS) + 1)]
    + [DEFAULT_RNIGNORE.splitlines(), ["*/"], ["**/"], ["*/", "!cache/"], ["*.log", "*/", "!sub/"]],
)
def test_ignore_prefilter_agrees_with_pathspec(tmp_path: Path, lines: list[str]) -> None:
    import pathspec

    from runicorn.snapshot.ignore import IgnoreRules

    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    cache = tmp_path / "ignore-cache.json"
    # Without a cache, with a fresh one, then answered from what the first scan left in it.
    for use in (None, cache, cache):
        rules = IgnoreRules(tmp_path, lines, None, cache=use)
        for key in _KEYS:
            expected = spec.check_file(key).include
            assert (rules._verdict(rules.rn, key) if rules.rn else None) == expected, key
            prefix, _, name = key.rstrip("/").rpartition("/")
            name += "/" if key.endswith("/") else ""
            dropped = rules.excluded(prefix + "/" if prefix else "", [name, "unrelated-name"])
            assert (name in dropped) == (expected is True), key
            assert (name in dropped) != rules.included(key.rstrip("/"), key.endswith("/")), key
        rules.save()
    assert rules.rn is None or rules.rn.spec is None  # the last one never needed pathspec


def test_excluded_applies_nested_gitignore_to_its_own_subtree(tmp_path: Path) -> None:
    from runicorn.snapshot.ignore import IgnoreRules

    write(tmp_path / "sub" / ".gitignore", "*.txt\n!keep.txt\n/local.md\nbin/\n")
    rules = IgnoreRules(tmp_path, ["!important.txt"], None)
    assert rules.enter("sub/", str(tmp_path / "sub")) == 1
    assert rules.excluded("sub/", ["a.txt", "keep.txt", "important.txt", "local.md", "bin/", "bin"]) == {
        "a.txt",
        "local.md",
        "bin/",
    }
    assert rules.excluded("sub/deeper/", ["a.txt", "local.md", "bin/"]) == {"a.txt", "bin/"}
    assert rules.excluded("", ["a.txt", "local.md", "bin/"]) == set()  # outside sub/


def test_unchanged_pinned_snapshot_writes_nothing_and_unpinned_one_is_kept(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    write(ws / "a.py", "a")
    write(ws / "pkg" / "b.py", "b")
    write(ws / ".rnignore", "*.tmp\n")
    first = runicorn.snapshot_workspace(ws, None)
    store = open_store()

    def touched() -> float:
        return store.index.scalar("SELECT touched_at FROM trees WHERE tree = ?", (first["tree"],))

    before, changes = touched(), store.index.conn.total_changes()
    again = runicorn.snapshot_workspace(ws, None)
    assert again["tree"] == first["tree"] and again["files_read"] == 0
    assert (again["file_count"], again["total_bytes"]) == (first["file_count"], first["total_bytes"])
    assert touched() == before and store.index.conn.total_changes() == changes  # a pure read
    # Without its pin the tree is touched (gc grace) and pinned again.
    assert store.unpin(first["tree"])
    third = runicorn.snapshot_workspace(ws, None)
    assert third["tree"] == first["tree"] and third["files_read"] == 0
    assert touched() > before and store.get_ref("pin", first["tree"]) is not None
    store.gc(grace_seconds=0)
    assert store.has_tree(first["tree"])
    # A zip still gets every entry from the fast path.
    out = tmp_path / "code.zip"
    zipped = runicorn.snapshot_workspace(ws, out)
    assert zipped["files_read"] == 0 and zipped["tree"] == first["tree"]
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == [".rnignore", "a.py", "pkg/b.py"]


def test_ignore_cache_spares_pathspec_and_follows_rule_changes(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    ws = tmp_path / "ws"
    write(ws / ".rnignore", "*.log\n!keep.log\n")
    write(ws / "sub" / ".gitignore", "*.txt\n")
    for rel in ["a.log", "keep.log", "a.py", "sub/x.txt", "sub/y.py", ".git/HEAD"]:
        write(ws / rel, rel)
    write(ws / os.fsdecode(b"not-utf8-\xff.log"), "x")  # a verdict about an undecodable name
    first = runicorn.snapshot_workspace(ws, None)
    assert _files(first) == {".rnignore", "keep.log", "a.py", "sub/.gitignore", "sub/y.py", ".git/HEAD"}
    cache = open_store().archive / "ignore-cache.json"
    assert json.loads(cache.read_text())["format"] == "runicorn.ignore-cache"
    script = (
        "import sys, runicorn; r = runicorn.snapshot_workspace(sys.argv[1], None); "
        "print(r['tree'], 'pathspec' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(ws)], capture_output=True, text=True, check=True, env=dict(os.environ)
    ).stdout.split()
    assert out == [first["tree"], "False"]  # every verdict came from the cache
    # Changed rules are another rule set: pathspec decides again.
    write(ws / "sub" / ".gitignore", "*.py\n")
    second = runicorn.snapshot_workspace(ws, None)
    assert _files(second) == {".rnignore", "keep.log", "a.py", "sub/.gitignore", "sub/x.txt", ".git/HEAD"}
    # A damaged cache is ignored (and replaced).
    cache.write_text("{not json")
    assert runicorn.snapshot_workspace(ws, None)["tree"] == second["tree"]
    assert json.loads(cache.read_text())["version"] == 3


def test_ignore_cache_keeps_the_most_recently_written_rule_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from runicorn.snapshot import ignore
    from runicorn.snapshot.ignore import IgnoreRules

    monkeypatch.setattr(ignore, "_CACHE_MAX_SPECS", 2)
    cache = tmp_path / "ignore-cache.json"
    keys = []
    for lines in (["*.a"], ["*.b"], ["*.a"], ["*.c"]):
        rules = IgnoreRules(tmp_path, lines, None, cache=cache)
        assert rules.excluded("", ["x.a", "x.b", "x.c"]) == {"x" + lines[0][1:]}
        rules.save()
        keys.append(list(json.loads(cache.read_text())["specs"]))
    assert len(keys[1]) == 2 and keys[2] == keys[1]  # "*.a" known already: nothing to write
    # A read-only use is not written, so "*.a" is the oldest change and goes first.
    assert keys[3] == [keys[1][1], keys[3][1]] and keys[3][1] not in keys[1]


def test_a_snapshot_leaves_no_holds_and_a_failed_one_lets_go_of_what_it_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot holds what it ingests under one lease: the tree (and its ref) takes
    over, so no hold row is left, not even for content met in several ingest batches;
    a snapshot that fails after ingesting lets go of all of it, and gc may take it."""
    from runicorn.snapshot import capture
    from runicorn.store import Store

    monkeypatch.setattr(capture, "_INGEST_BATCH_FILES", 3)  # many batches, the same content in several
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "", age=60)
    for i in range(20):
        write(ws / f"d{i % 4}" / f"f{i}.txt", f"content {i % 5}\n", age=60)
    runicorn.snapshot_workspace(ws, None)
    store = open_store()
    assert store.index.scalar("SELECT COUNT(*) FROM holds") == 0

    for i in range(20):
        write(ws / "new" / f"g{i}.txt", f"new content {i}\n", age=60)

    def broken(self: Store, *args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error (injected while committing the tree)")

    monkeypatch.setattr(Store, "put_tree_pages", broken)
    with pytest.raises(OSError, match="injected"):
        runicorn.snapshot_workspace(ws, None)
    assert store.index.scalar("SELECT COUNT(*) FROM holds") == 0
    before = store.stats()["blob_count"]
    assert store.gc(grace_seconds=0)["blobs_deleted"] == 20  # the new files' blobs, and only them
    assert store.stats()["blob_count"] == before - 20
    monkeypatch.undo()
    again = runicorn.snapshot_workspace(ws, None)
    assert len(_files(again)) == 41 and store.index.scalar("SELECT COUNT(*) FROM holds") == 0
    assert store.verify()["ok"]


def test_a_directory_row_keeps_any_device_and_inode_number_and_a_damaged_one_vouches_for_nothing() -> None:
    """Device and inode numbers of 2**63 or more are kept (as their two's complement) and
    told apart; a row whose columns disagree in length names no file."""
    from types import SimpleNamespace

    from runicorn.snapshot.statcache import RACY_NS, CachedDir, dir_row, integers, pack_stats

    def lstat(dev: int, ino: int) -> os.stat_result:
        fields = {"st_dev": dev, "st_ino": ino, "st_size": 3, "st_mtime_ns": 10, "st_ctime_ns": 11, "st_mode": 0o100644}
        return SimpleNamespace(**fields)  # type: ignore[return-value]

    big = [lstat(2**64 - 1, 2**63 + 5), lstat(7, 2**63 + 6)]
    packed = pack_stats(big)
    assert list(integers(packed)) == [
        -1,
        2**63 + 5 - 2**64,
        3,
        10,
        11,
        0o100644,
        7,
        2**63 + 6 - 2**64,
        3,
        10,
        11,
        0o100644,
    ]
    row = dir_row("/w/", "a/b", packed, b"\1" * 32 + b"\2" * 32, array("q", [10 + RACY_NS + 1, 10 + RACY_NS + 1]))
    assert row[5] == 1  # settled
    cached = CachedDir(row)
    assert cached.vouches_for_all("a/b", packed)
    assert cached.vouch("b", pack_stats([big[1]]), 10) == (b"\2" * 32, 10 + RACY_NS + 1)
    assert cached.vouch("b", pack_stats([lstat(7, 2**63 + 7)]), 10) is None
    damaged = CachedDir((*row[:3], row[3][:-1], *row[4:]))
    assert not damaged.vouches_for_all("a/b", packed) and damaged.vouch("a", pack_stats([big[0]]), 10) is None
