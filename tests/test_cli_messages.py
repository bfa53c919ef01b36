"""Issue 15 items 9-13: what the command line says, run as a user runs it (``python -m runicorn``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m runicorn ARGS`` in a child process (the environment the test set, plus ``env``)."""
    full = dict(os.environ, **(env or {}))
    full = {k: v for k, v in full.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=120
    )


def assert_clean_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1 with one line on stderr containing every needle, and no traceback."""
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# ---------------------------------------------------------------- item 9: no store at PATH
READ_ONLY = [
    ["stats"],
    ["refs"],
    ["runs"],
    ["verify"],
    ["verify", "--repair"],
    ["gc", "--dry-run"],
    ["gc"],
    ["pin", "abcd"],
    ["unpin", "abcd"],
    ["restore", "abcd", "OUT"],
    ["export", "abcd", "OUT.zip"],
    ["delete-run", "20250101_000000_abcdef"],
    ["export", "abcd", "OUT.tar.gz"],
    ["status", "--toml", "TOML"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=lambda a: " ".join(a))
def test_read_only_commands_need_an_existing_store(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "Runicorn.toml").write_text("")
    args = [
        str(tmp_path / "Runicorn.toml") if a == "TOML" else str(tmp_path / a) if a.startswith("OUT") else a
        for a in args
    ]
    missing = tmp_path / "missing" / "store"
    r = cli(*args, env={"RUNICORN_DIR": str(missing)})
    assert_clean_error(r, f"no store at {missing}", "RUNICORN_DIR")
    assert not (tmp_path / "missing").exists()
    assert not any(p.name.startswith("OUT") for p in tmp_path.iterdir())


def test_the_message_names_what_chose_the_root(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    for args in (["--storage", str(missing), "stats"], ["stats", "--storage", str(missing)]):
        # --storage wins over RUNICORN_DIR, given before or after the subcommand
        r = cli(*args, env={"RUNICORN_DIR": str(tmp_path / "other")})
        assert_clean_error(r, f"no store at {missing}", "--storage")
        assert "RUNICORN_DIR" not in r.stderr.split(";")[0]
    env = dict(os.environ)
    del env["RUNICORN_DIR"]
    r = subprocess.run([sys.executable, "-m", "runicorn", "refs"], capture_output=True, text=True, env=env)
    home_store = Path(env["HOME"]) / ".runicorn"
    assert_clean_error(r, f"no store at {home_store}", "default", "--storage", "RUNICORN_DIR")
    assert not home_store.exists() and not missing.exists() and not (tmp_path / "other").exists()


def test_writing_commands_create_the_store_then_readers_use_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("hello\n")
    root = tmp_path / "new" / "store"
    r = cli("snapshot", str(ws), "--storage", str(root), env={"RUNICORN_DIR": str(tmp_path / "unused")})
    assert r.returncode == 0, r.stderr
    tree = r.stdout.strip()
    assert (root / "archive").is_dir() and not (tmp_path / "unused").exists()
    r = cli("refs", "--storage", str(root))
    assert r.returncode == 0 and tree[:16] in r.stdout, r.stderr
    r = cli("verify", env={"RUNICORN_DIR": str(root)})
    assert (
        r.returncode == 0 and "checked 2 blobs, 1 trees, 1 refs" in r.stdout
    )  # a.txt and the default .rnignore, (r.stdout, r.stderr)
    # generate-manifest never touches a store, so it takes no --storage of its own
    r = cli("generate-manifest", "--storage", str(root))
    assert r.returncode == 1 and "No such option" in r.stderr  # usage errors exit 1, as every user error


# ---------------------------------------------------------------- item 11: export picks the format
def _tree_in(root: Path, tmp_path: Path) -> str:
    from runicorn.store import Store

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a.txt").write_text("alpha\n" * 100)
    (src / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    os.symlink("sub/a.txt", src / "link")
    with Store(root) as s:
        tree = s.ingest_directory(src)
        s.pin(tree)
    return tree


@pytest.mark.parametrize(
    "name,opener",
    [
        ("x.zip", "zip"),
        ("x.tar", "r:"),
        ("x.tar.gz", "r:gz"),
        ("x.tgz", "r:gz"),
        ("x.tar.bz2", "r:bz2"),
        ("x.tar.xz", "r:xz"),
        ("X.TAR.GZ", "r:gz"),
    ],
)
def test_export_picks_the_format_from_the_extension(
    tmp_path: Path, _isolated_storage: Path, name: str, opener: str
) -> None:
    import tarfile
    import zipfile

    from runicorn.hashing import sha256_file

    tree = _tree_in(_isolated_storage, tmp_path)
    out = tmp_path / "out" / name
    r = cli("export", tree[:12], str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [sha256_file(out), str(out)]
    if opener == "zip":
        assert zipfile.is_zipfile(out)
        names = zipfile.ZipFile(out).namelist()
    else:
        with tarfile.open(out, opener) as tf:  # fails if the bytes are another format
            names = tf.getnames()
    assert {"sub/a.txt", "run.sh", "link"} <= {n.rstrip("/") for n in names}
    # The same tree always gives the same bytes, through a manifest file too.
    from runicorn.store import Store

    with Store(_isolated_storage) as s:
        manifest = s.manifest_path(tree)
    again = tmp_path / "again" / name
    r = cli("export", str(manifest), str(again))
    assert r.returncode == 0 and again.read_bytes() == out.read_bytes(), r.stderr


def test_export_refuses_an_unknown_extension_and_archive_is_gone(tmp_path: Path, _isolated_storage: Path) -> None:
    tree = _tree_in(_isolated_storage, tmp_path)
    for name in ("x.rar", "x.gz", "x", "x.tar.lz4"):
        r = cli("export", tree, str(tmp_path / name))
        assert_clean_error(r, str(tmp_path / name), ".tar.gz", ".zip")
        assert not list(tmp_path.glob("*x*"))
    r = cli("archive", tree, str(tmp_path / "x.tar"))
    assert r.returncode == 1 and "No such command" in r.stderr
    help_text = cli("export", "--help").stdout
    assert ".tar.gz" in help_text and ".zip" in help_text


# ---------------------------------------------------------------- item 10: verify and damaged stores
def _snapshot(ws: Path) -> str:
    r = cli("snapshot", str(ws))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_verify_counts_what_it_checked(tmp_path: Path, _isolated_storage: Path) -> None:
    from runicorn.hashing import sha256_bytes
    from runicorn.store import Store
    from runicorn.store.tree_format import TreeEntry, build_manifest, manifest_bytes, tree_id_of

    proj, data = tmp_path / "proj", tmp_path / "data"
    proj.mkdir()
    data.mkdir()
    (data / "a.txt").write_text("hi\n")
    r = cli("bind", "data", str(data), cwd=proj)
    assert r.returncode == 0, r.stderr
    r = cli("verify")
    assert r.returncode == 0 and r.stdout.strip() == "checked 1 blobs, 1 trees, 1 refs: 0 problem(s)", r.stdout
    # A manifest on disk the index does not know is checked (and reported), so it is counted.
    sha = sha256_bytes(b"hi\n")
    entries = {"b.txt": TreeEntry(sha, "100644", 3)}
    tree = tree_id_of([("b.txt", "100644", sha)])
    with Store(_isolated_storage) as s:
        path = s.manifest_path(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(manifest_bytes(build_manifest(tree, entries)))
    r = cli("verify", "--json")
    import json

    report = json.loads(r.stdout)
    assert r.returncode == 1 and (report["blobs_checked"], report["trees_checked"], report["refs_checked"]) == (1, 2, 1)
    assert [p["kind"] for p in report["problems"]] == ["unindexed_manifest"]


def test_a_file_at_a_blob_prefix_is_reported_then_healed(tmp_path: Path, _isolated_storage: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("alpha\n")
    tree = _snapshot(ws)
    from runicorn.hashing import sha256_bytes

    sha = sha256_bytes(b"alpha\n")
    prefix = _isolated_storage / "archive" / "blobs" / sha[:2]
    import shutil

    shutil.rmtree(prefix)
    prefix.write_bytes(b"not a folder")
    r = cli("verify")
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr == "", r.stderr
    assert f"missing_blob: blob {sha}" in r.stdout and f"stray_file: {prefix} is not a blob" in r.stdout
    assert_clean_error(cli("restore", tree, str(tmp_path / "out")), "1 blob(s) missing", sha, "nothing was restored")
    assert not (tmp_path / "out").exists()
    assert_clean_error(cli("export", tree, str(tmp_path / "o.tar.gz")), "1 blob(s) missing", "not written")
    # Writing the content again sets the file aside (nothing is deleted) and the store is whole.
    (ws / "again.txt").write_text("alpha\n")
    assert _snapshot(ws) != tree
    r = cli("verify")
    assert r.returncode == 0, r.stdout
    quarantined = list((_isolated_storage / "archive" / "quarantine").iterdir())
    assert [q.read_bytes() for q in quarantined] == [b"not a folder"]
    r = cli("restore", tree, str(tmp_path / "out"))
    assert r.returncode == 0 and (tmp_path / "out" / "a.txt").read_text() == "alpha\n", r.stderr


@pytest.mark.parametrize("name", ["t.tar.gz", "t.zip", "t.tar"])
def test_export_of_a_truncated_blob_names_the_file(tmp_path: Path, _isolated_storage: Path, name: str) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "big.bin").write_bytes(os.urandom(300_000))
    tree = _snapshot(ws)
    from runicorn.hashing import sha256_file

    blob = _isolated_storage / "archive" / "blobs" / sha256_file(ws / "big.bin")[:2] / sha256_file(ws / "big.bin")
    os.chmod(blob, 0o644)
    os.truncate(blob, 1000)
    r = cli("export", tree, str(tmp_path / name))
    assert_clean_error(r, str(blob), "big.bin", "1000 bytes", "300000", "runicorn verify")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "rn-home", "ws"]  # no archive, no temp


def test_an_unwritable_store_is_not_called_an_unreadable_source(tmp_path: Path, _isolated_storage: Path) -> None:
    """``chattr +i`` (root, as CI runs) makes blobs/ refuse new entries even for root."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("alpha\n")
    _snapshot(ws)
    (ws / "new.txt").write_text("something new\n")
    blobs = _isolated_storage / "archive" / "blobs"
    subprocess.run(["chattr", "+i", str(blobs)], check=True)
    try:
        r = cli("snapshot", str(ws))
    finally:
        subprocess.run(["chattr", "-i", str(blobs)], check=True)
    assert_clean_error(r, str(blobs), "cannot write to the store", "permissions")
    assert ".rnignore" not in r.stderr and "cannot be read" not in r.stderr
    assert cli("verify").returncode == 0


# ---------------------------------------------------------------- item 13: flags, not arguments; gc grace
PY_SPELLINGS = ("force=True", "force_snapshot=True", "overwrite=True", "extra_excludes", "toml=PATH")


def test_each_surface_names_its_own_options(tmp_path: Path, _isolated_storage: Path) -> None:
    import runicorn as rn
    from runicorn.errors import ArtifactError

    ws = tmp_path / "ws"
    ws.mkdir()
    for i in range(5):
        (ws / f"f{i}.txt").write_text(f"{i}\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a").write_text("a\n")
    proj = tmp_path / "proj"
    proj.mkdir()
    assert cli("bind", "d", str(data), cwd=proj).returncode == 0
    tree = _snapshot(ws)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    cases = [  # (argv, cwd, what the CLI must say)
        (["bind", "d", str(data)], proj, "--force"),
        (["restore", tree, str(tmp_path / "full")], None, "--overwrite"),
        (["status"], tmp_path, "--toml PATH"),
    ]
    for argv, cwd, flag in cases:
        r = cli(*argv, cwd=cwd)
        assert r.returncode == 1 and flag in r.stderr, (argv, r.stderr)
        assert not any(p in r.stderr for p in PY_SPELLINGS), r.stderr
    # From Python, the same errors name keyword arguments.
    from runicorn.snapshot.scan import _limit_error

    python = str(_limit_error(Path("/w"), "files", 3, 2))
    assert "extra_excludes=" in python and "force_snapshot=True" in python and "max_files=" in python
    with pytest.raises(ArtifactError, match=r"use force=True"):
        rn.bind_artifact(str(proj / "Runicorn.toml"), "d", "0" * 64)
    from runicorn.assets.restore import restore_from_manifest
    from runicorn.store import Store

    with Store(_isolated_storage) as s:
        with pytest.raises(Exception, match=r"pass overwrite=True"):
            restore_from_manifest(s.manifest_path(tree), s.blobs_dir, tmp_path / "full")


def test_snapshot_over_the_limit_names_cli_flags(tmp_path: Path) -> None:
    """The library default limit is 200,000 files; a smaller one is only reachable from
    Python, so the CLI wording is checked on a real over-limit snapshot run in a child."""
    ws = tmp_path / "ws"
    ws.mkdir()
    for i in range(3):
        (ws / f"f{i}").write_text("x")
    code = (
        "import sys\n"
        "import runicorn.snapshot.workspace as s\n"
        "s.DEFAULT_MAX_FILES = 2\n"
        "s.snapshot_workspace.__kwdefaults__['max_files'] = 2\n"
        "from runicorn.cli import main\n"
        "sys.exit(main(['snapshot', sys.argv[1]]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(ws)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.startswith("error: snapshot of ") and "limit 2" in r.stderr, r.stderr
    assert "--exclude PATTERN" in r.stderr and "--force" in r.stderr and "Traceback" not in r.stderr
    assert not any(p in r.stderr for p in PY_SPELLINGS), r.stderr


def test_gc_says_what_waits_for_the_grace_period(tmp_path: Path, _isolated_storage: Path) -> None:
    import json
    import time

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "a.txt").write_text("alpha\n")
    tree = _snapshot(ws)
    assert cli("unpin", tree).returncode == 0
    before = time.time()
    r = cli("gc")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "deleted 0 tree(s) and 0 blob(s), 0 B"
    assert lines[1].startswith("kept by the grace period (1h): 1 tree(s) and 2 blob(s), ")
    assert "collectable from " in lines[1] and "--grace 0" in lines[1]
    report = json.loads(cli("gc", "--dry-run", "--grace", "30m", "--json").stdout)
    w = report["waiting"]
    assert (w["trees"], w["blobs"]) == (1, 2) and w["bytes"] > 0
    assert before + 1800 - 60 < w["first_at"] <= w["last_at"] < time.time() + 1800
    r = cli("gc", "--grace", "0")
    assert r.stdout.splitlines() == [f"deleted 1 tree(s) and 2 blob(s), {w['bytes']} B"], r.stdout
    assert json.loads(cli("gc", "--json").stdout)["waiting"] == {
        "trees": 0,
        "blobs": 0,
        "bytes": 0,
        "first_at": None,
        "last_at": None,
    }


# ---------------------------------------------------------------- output read only in part
def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """``runicorn ls TREE | head -1``: once the reader closes the pipe, the command stops and
    says nothing, as other Unix tools do, instead of reporting "error: Broken pipe" (or a
    traceback at exit).  Its status is the shell's broken-pipe one (141), or 0 where the
    rest of one large write was dropped without an error reaching the program."""
    ws = tmp_path / "ws"
    ws.mkdir()
    for i in range(3000):  # a listing far larger than a pipe's buffer
        (ws / f"file-with-a-long-name-{i:05d}.txt").write_text(f"{i}\n")
    env = {"RUNICORN_DIR": str(tmp_path / "store")}
    assert cli("snapshot", str(ws), "--name", "big", env=env).returncode == 0
    for args in (["ls", "pin/big"], ["ls", "pin/big", "--json"]):
        child = subprocess.Popen(
            [sys.executable, "-m", "runicorn", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, **env),
        )
        assert child.stdout is not None and child.stderr is not None
        assert child.stdout.readline()
        child.stdout.close()  # the reader goes away with most of the listing unread
        err = child.stderr.read().decode()
        assert child.wait(timeout=120) in (0, 141), err
        assert err == "", err
    # Read to the end, the same listing is whole and the command succeeds.
    r = cli("ls", "pin/big", env=env)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 3001 and r.stderr == ""
