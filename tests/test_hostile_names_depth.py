"""Names that are not UTF-8 and hostile depth: one rule everywhere, refused before anything
is written, one-line errors, no later command crashes (issue 15, items 4 and 5)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from runicorn.store import Store
from runicorn.store.tree_format import TreeEntry, build_manifest, manifest_bytes, tree_id_of

BAD = b"bad\xff.txt".decode("utf-8", "surrogateescape")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real command, as a user runs it (environment from the test's isolated storage)."""
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
    )


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "RecursionError" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def store_is_clean(root: Path) -> None:
    with Store(root) as s:
        report = s.verify()
    assert report["ok"], report["problems"]
    leftovers = [p for p in root.rglob("*") if p.is_file() and p.parent.parent.name == "manifests"]
    assert leftovers == [], leftovers


def test_snapshot_of_a_name_that_is_not_utf8_is_refused_before_anything_is_written(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "ok.txt").write_text("fine\n")
    (ws / "sub").mkdir()
    open(os.fsencode(ws / "sub") + b"/bad\xff.txt", "wb").write(b"secret")
    r = cli("snapshot", str(ws))
    one_line_error(r, "sub/bad\\xff.txt", "not valid UTF-8", "nothing was stored")
    store_is_clean(_isolated_storage)
    with Store(_isolated_storage) as s:
        assert s.stats()["blob_count"] == 0  # refused before any file was read
    # The library's directory ingest follows the same rule.
    with Store(_isolated_storage) as s:
        with pytest.raises(Exception, match="not valid UTF-8"):
            s.ingest_directory(ws)
        assert s.stats()["blob_count"] == 0
    # Ignoring the file makes the workspace storable again.
    (ws / ".rnignore").write_text("bad*\n")
    r = cli("snapshot", str(ws))
    assert r.returncode == 0, r.stderr
    # Later commands work on that store.
    for args in (["verify"], ["verify", "--repair"], ["gc", "--dry-run"], ["stats"], ["runs"]):
        r = cli(*args)
        assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)


def _tar(path: Path, name: str) -> Path:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as t:
        ti = tarfile.TarInfo(name)
        ti.size = 1
        t.addfile(ti, io.BytesIO(b"y"))
    return path


def test_bind_of_a_tar_with_a_name_that_is_not_utf8_is_refused(tmp_path: Path, _isolated_storage: Path) -> None:
    tar = _tar(tmp_path / "nonutf.tar", BAD)
    proj = tmp_path / "proj"
    proj.mkdir()
    r = cli("bind", "nu", str(tar), cwd=proj)
    one_line_error(r, "nonutf.tar", "bad\\xff.txt", "not valid UTF-8")
    assert not (proj / "Runicorn.toml").exists()
    store_is_clean(_isolated_storage)


def test_a_manifest_an_older_version_left_with_such_a_name_crashes_no_command(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    with Store(_isolated_storage) as s:
        blob = s.ingest_bytes(b"secret")
        entries = {BAD: TreeEntry(blob.sha256, "100644", 6)}
        tree = tree_id_of([(BAD, "100644", blob.sha256)])
        path = s.manifest_path(tree)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(manifest_bytes(build_manifest(tree, entries)))
    r = cli("verify")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "unindexed_manifest" in r.stdout
    r = cli("restore", str(path), str(tmp_path / "out"))
    one_line_error(r, "not valid UTF-8")
    assert [n for n in os.listdir(tmp_path) if "out" in n] == []
    r = cli("delete-run", "20250115_103015_abc123")
    assert "Traceback" not in r.stderr, r.stderr
    r = cli("verify", "--repair")
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    r = cli("gc", "--dry-run")
    assert r.returncode == 0 and "Traceback" not in r.stderr


def test_bind_of_a_tar_2000_levels_deep_is_refused(tmp_path: Path, _isolated_storage: Path) -> None:
    tar = _tar(tmp_path / "deep.tar", "/".join(["d"] * 2000) + "/f")
    proj = tmp_path / "proj"
    proj.mkdir()
    r = cli("bind", "deep", str(tar), cwd=proj)
    one_line_error(r, "deep.tar", "2001 levels deep", "the limit is 255")
    assert len(r.stderr) < 1000  # the name is shortened, not printed whole
    assert not (proj / "Runicorn.toml").exists()
    store_is_clean(_isolated_storage)


def test_restore_of_a_4000_level_manifest_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    from runicorn.hashing import sha256_bytes

    sha = sha256_bytes(b"x")
    rel = "/".join(["a"] * 4000) + "/f"
    entries = {rel: TreeEntry(sha, "100644", 1)}
    manifest = tmp_path / "deep.json"
    manifest.write_bytes(manifest_bytes(build_manifest(tree_id_of([(rel, "100644", sha)]), entries)))
    r = cli("restore", str(manifest), str(tmp_path / "out"))
    one_line_error(r, "deep.json", "4001 levels deep")
    assert [n for n in os.listdir(tmp_path) if "out" in n] == []  # no .out.rn-restore-* left
    # Depth up to the limit works.
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok.joinpath(*["a"] * 250)).mkdir(parents=True)
    (ok.joinpath(*["a"] * 250) / "f").write_text("deep but fine\n")
    with Store(tmp_path / "st") as s:
        tree = s.ingest_directory(ok)
        s.pin(tree)
    r = cli("--storage", str(tmp_path / "st"), "restore", tree, str(tmp_path / "back"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "back").joinpath(*["a"] * 250, "f").read_text() == "deep but fine\n"


def test_a_workspace_deeper_than_the_limit_is_refused_before_anything_is_read(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    ws = tmp_path / "ws"
    deep = ws.joinpath(*["d"] * 300)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    (ws / "top.txt").write_text("y")
    r = cli("snapshot", str(ws))
    one_line_error(r, "levels deep", "the limit is 255", "nothing was stored")
    with Store(_isolated_storage) as s:
        assert s.stats()["blob_count"] == 0


@pytest.mark.parametrize(
    "body",
    [
        "x = " + "[" * 5000 + "]" * 5000 + "\n",
        "[a]\nb = " + "{c = " * 3000 + "1" + "}" * 3000 + "\n",
    ],
    ids=["5000-nested-arrays", "3000-nested-inline-tables"],
)
def test_deeply_nested_toml_gives_one_line_naming_the_file(tmp_path: Path, body: str) -> None:
    import runicorn
    from runicorn.errors import TomlFormatError

    proj = tmp_path / "proj"
    proj.mkdir()
    toml = proj / "Runicorn.toml"
    toml.write_text(body)
    for args in (["status"], ["fetch"], ["bind", "y", str(tmp_path)]):
        r = cli(*args, cwd=proj)
        one_line_error(r, str(toml), "nested too deeply")
    assert toml.read_text() == body  # a bind never rewrote it
    with pytest.raises(TomlFormatError, match="nested too deeply"):
        runicorn.artifact_hash("a", str(toml))
    # Overrides.toml goes through the same reader.
    from runicorn.artifacts.overrides import load_overrides

    adir = tmp_path / "adir"
    adir.mkdir()
    (adir / "Overrides.toml").write_text(body)
    with pytest.raises(TomlFormatError, match="nested too deeply"):
        load_overrides(str(adir))


def test_deeply_nested_json_is_a_corrupt_manifest_not_a_recursion_error(tmp_path: Path) -> None:
    from runicorn.errors import CorruptManifestError
    from runicorn.sync.client.manifest_client import decode_manifest

    deep = b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    manifest = tmp_path / "deep.json"
    manifest.write_bytes(deep)
    r = cli("restore", str(manifest), str(tmp_path / "out"))
    one_line_error(r, "deep.json", "nested too deeply")
    assert [n for n in os.listdir(tmp_path) if "out" in n] == []
    with pytest.raises(CorruptManifestError, match="nested too deeply"):
        decode_manifest(deep, False)
    # A run's meta.json or status.json nested that deeply is an unreadable file, not a crash.
    runs = tmp_path / "st" / "p" / "e" / "runs" / "20250115_103015_abc123"
    runs.mkdir(parents=True)
    (runs / "meta.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    (runs / "status.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with Store(tmp_path / "st") as s:
        s.pin(s.ingest_directory(tmp_path / "st" / "p"))
    r = cli("--storage", str(tmp_path / "st"), "runs")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_bind_in_a_directory_whose_name_is_not_utf8_keeps_what_it_binds(tmp_path: Path) -> None:
    """A project directory named in another encoding: bind records the file (usage log,
    index, binding ref) without a traceback, and gc, an index rebuild and a checkout of
    another branch (the file gone for a while) keep the tree it binds."""
    root = Path(os.environ["RUNICORN_DIR"])
    project = Path(os.fsdecode(os.fsencode(tmp_path) + b"/proj\xff\xfe"))
    (project / "data").mkdir(parents=True)
    (project / "data" / "weights.bin").write_bytes(b"only copy" * 100)

    r = cli("bind", "weights", "data", cwd=project)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert cli("gc", "--grace", "0", cwd=project).returncode == 0
    path = cli("path", "weights", cwd=project)
    assert path.returncode == 0, path.stderr
    assert (Path(path.stdout.strip()) / "weights.bin").read_bytes() == b"only copy" * 100

    # the file gone for one gc (another branch checked out), then back
    toml = project / "Runicorn.toml"
    toml.rename(tmp_path / "elsewhere.toml")
    gc = cli("gc", "--grace", "0", cwd=tmp_path)
    assert gc.returncode == 0 and "kept" in gc.stderr, gc.stderr
    (tmp_path / "elsewhere.toml").rename(toml)

    # the index rebuilt from the files (the usage log holds the path)
    (root / "archive" / "index.sqlite3").unlink()
    for suffix in ("-wal", "-shm"):
        (root / "archive" / f"index.sqlite3{suffix}").unlink(missing_ok=True)
    assert cli("gc", "--grace", "0", cwd=project).returncode == 0
    assert cli("path", "weights", cwd=project).returncode == 0
    with Store(root) as s:
        report = s.verify()
    assert report["ok"], report["problems"]
