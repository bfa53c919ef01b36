"""Issue 13 item 1: `runicorn ls | show | diff | du`, driven through the CLI (``python -m
runicorn``) on a store with snapshots, a pin, a run (code, an archive, rolling outputs) and
an artifact binding, whose trees share blobs.  The Python API (``Store.diff`` ...) is
checked against the same store."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runicorn.store import Store


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def ok(*args: str, cwd: Path | None = None) -> str:
    r = cli(*args, cwd=cwd)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    return r.stdout


def data(*args: str, cwd: Path | None = None) -> Any:
    return json.loads(ok(*args, "--json", cwd=cwd))


def one_line_error(r: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    os.chmod(path, mode)


@pytest.fixture
def world(tmp_path: Path, _isolated_storage: Path) -> dict[str, Any]:
    """Two snapshots of a workspace (every kind of change between them), a named pin, a
    run whose code is the second snapshot (shared blobs) with an archive and rolling
    outputs, and a bound artifact."""
    ws = tmp_path / "ws"
    write(ws / ".rnignore", "*.tmp\n")
    write(ws / "README.md", "hello\n")
    write(ws / "src/train.py", "print('v1')\n")
    write(ws / "src/run.sh", "#!/bin/sh\necho hi\n")
    write(ws / "data/big.bin", os.urandom(300_000))
    write(ws / "gone.txt", "soon deleted\n")
    os.symlink("README.md", ws / "link")
    os.symlink("src", ws / "retarget")
    a = ok("snapshot", str(ws)).strip()
    write(ws / "src/train.py", "print('v2, longer')\n")
    os.chmod(ws / "src/run.sh", 0o755)  # mode only
    (ws / "gone.txt").unlink()
    write(ws / "new/added.txt", "new file\n")
    (ws / "retarget").unlink()
    os.symlink("data", ws / "retarget")  # a symlink to another target
    (ws / "README.md").unlink()
    write(ws / "README.md", "hello\n", 0o755)  # same bytes, executable now
    b = ok("snapshot", str(ws)).strip()
    ok("pin", a[:10], "--name", "baseline")

    import runicorn as rn

    cwd = os.getcwd()
    os.chdir(ws)
    try:
        with rn.init(path="training/resnet", snapshot_code=True) as run:
            run.archive(str(ws / "data"), role="dataset")  # the same blob as both snapshots
            for epoch in range(5):
                write(tmp_path / "ckpt.pt", b"weights %d" % epoch * 1000)
                run.log({"loss": [0.9, 0.2, 0.5, 0.4, 0.3][epoch]})
                run.save_output(str(tmp_path / "ckpt.pt"), keep_last=2, keep_best=("loss", "min"))
            run_id = run.run_id
    finally:
        os.chdir(cwd)
    proj = tmp_path / "proj"
    write(proj / "build/mnist/labels.txt", "0 1 2\n" * 1000)
    ok("bind", "mnist", "build/mnist", cwd=proj)
    from runicorn.store.cache import forget_open_stores

    forget_open_stores()
    return {"ws": ws, "a": a, "b": b, "run": run_id, "tmp": tmp_path, "proj": proj}


# ---------------------------------------------------------------------------- ls
def test_ls_lists_snapshots_pins_runs_artifacts_newest_first(world: dict[str, Any]) -> None:
    items = data("ls")
    kinds = {(i["type"], i["name"]) for i in items}
    assert ("snapshot", world["b"]) in kinds and ("snapshot", world["a"]) in kinds
    assert ("pin", "baseline") in kinds and ("run", world["run"]) in kinds and ("artifact", "mnist") in kinds
    dates = [i["date"] for i in items]
    assert dates == sorted(dates, reverse=True)
    run = next(i for i in items if i["type"] == "run")
    assert run["source"] == "training/resnet (finished)"
    assert world["b"] in run["trees"] and len(run["trees"]) == 1 + 1 + 3  # code, archive, 3 outputs kept
    snap = next(i for i in items if i["name"] == world["a"])
    assert snap["source"] == str(world["ws"]) and snap["file_count"] == 8
    art = next(i for i in items if i["type"] == "artifact")
    assert art["size"] == 6000 and art["source"] == str(world["proj"] / "Runicorn.toml")

    table = ok("ls").splitlines()
    assert table[0].split() == ["DATE", "TYPE", "NAME", "FILES", "SIZE", "SOURCE"]
    assert len(table) == 1 + len(items)
    row = next(line for line in table if " artifact " in line)
    assert "5.9 KiB" in row and "mnist" in row


def test_ls_tree_is_git_ls_tree_r_l(world: dict[str, Any]) -> None:
    with Store.open() as store:
        entries = store.tree_entries(world["a"])
    lines = ok("ls", world["a"][:8]).splitlines()
    assert len(lines) == len(entries)
    for line in lines:
        meta, path = line.split("\t")
        mode, kind, sha, size = meta.split()
        assert kind == "blob" and (mode, sha, int(size)) == (
            entries[path].mode,
            entries[path].sha256,
            entries[path].size,
        )
    assert [json_e["path"] for json_e in data("ls", f"{world['a'][:8]}:src")["entries"]] == [
        "src/run.sh",
        "src/train.py",
    ]
    assert ok("ls", "baseline:src/train.py").count("\n") == 1  # a pin name, one file
    assert ok("ls", world["run"]).splitlines() == ok("ls", world["b"]).splitlines()  # a run: its code
    one_line_error(cli("ls", f"{world['a'][:8]}:nothing/here"), "has no path 'nothing/here'")


# ---------------------------------------------------------------------------- show
def test_show_tree_pin_and_run(world: dict[str, Any]) -> None:
    t = data("show", world["b"][:7])
    assert t["type"] == "tree" and t["tree"] == world["b"] and t["source"] == str(world["ws"])
    refs = {r["ref"] for r in t["referenced_by"]}
    assert refs == {f"pin/{world['b']}", f"run/{world['run']}/code"} and t["runs"] == [world["run"]]
    out = ok("show", world["b"][:7])
    assert f"run/{world['run']}/code" in out and "referenced by:" in out

    p = data("show", "baseline")
    assert p["type"] == "pin" and p["tree"] == world["a"] and p["ref"]["ref"] == "pin/baseline"
    assert {r["ref"] for r in p["referenced_by"]} == {"pin/baseline", f"pin/{world['a']}"}

    r = data("show", world["run"][:17])  # a unique run-id prefix
    assert r["type"] == "run" and r["run_id"] == world["run"] and r["status"] == "finished"
    assert r["code_tree"] == world["b"] and r["meta"]["path"] == "training/resnet"
    assert {t["role"] for t in r["trees"]} == {"code", "dataset"}
    import runicorn.runs

    listed = runicorn.runs.list_outputs(world["run"])
    assert (
        {n: [v["version"] for v in vs] for n, vs in r["outputs"].items()}
        == {n: [v["version"] for v in vs] for n, vs in listed.items()}
        == {"ckpt": [2, 4, 5]}
    )
    art = data("show", "mnist")  # an artifact by its bound name
    assert art["type"] == "artifact" and art["file_count"] == 1
    assert [r["kind"] for r in art["referenced_by"]] == ["binding"]
    assert ok("ls", "mnist").endswith("\tlabels.txt\n")
    text = ok("show", world["run"])
    assert "rolling outputs:" in text and "loss=0.2" in text
    assert text.count("\n  ckpt ") == 3


# ---------------------------------------------------------------------------- diff
def _walk(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every file and symlink below root as (mode, content or link target), from the disk."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
            full = Path(d, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("120000", os.readlink(full).encode())
            else:
                out[rel] = ("100755" if st.st_mode & 0o100 else "100644", full.read_bytes())
    return out


def test_diff_of_two_snapshots_matches_comparing_their_restores(world: dict[str, Any]) -> None:
    ra, rb = world["tmp"] / "ra", world["tmp"] / "rb"
    ok("restore", world["a"], str(ra))
    ok("restore", world["b"], str(rb))
    fa, fb = _walk(ra), _walk(rb)
    expected = {
        "added": sorted(set(fb) - set(fa)),
        "deleted": sorted(set(fa) - set(fb)),
        "modified": sorted(p for p in set(fa) & set(fb) if fa[p][1] != fb[p][1]),
        "mode_changed": sorted(p for p in set(fa) & set(fb) if fa[p][1] == fb[p][1] and fa[p][0] != fb[p][0]),
    }
    # Every kind of change is present, so the comparison means something.
    assert expected == {
        "added": ["new/added.txt"],
        "deleted": ["gone.txt"],
        "modified": ["retarget", "src/train.py"],
        "mode_changed": ["README.md", "src/run.sh"],
    }
    got = data("diff", world["a"][:8], world["b"][:8])
    assert {k: [e["path"] for e in got[k]] for k in expected} == expected
    assert got["stat"]["added"] == 1 and got["stat"]["mode_changed"] == 2
    # The same against the restored directories, on either side, and through the Python API.
    assert {k: [e["path"] for e in data("diff", world["a"], str(rb))[k]] for k in expected} == expected
    assert {k: [e["path"] for e in data("diff", str(ra), world["b"])[k]] for k in expected} == expected
    with Store.open() as store:
        api = store.diff("baseline", rb)
    assert {k: [e["path"] for e in api[k]] for k in expected} == expected
    assert data("diff", world["a"], str(ra))["stat"] == {
        "added": 0,
        "deleted": 0,
        "modified": 0,
        "mode_changed": 0,
        "bytes_added": 0,
        "bytes_removed": 0,
    }

    assert ok("diff", world["a"][:8], world["b"][:8]).splitlines() == [  # by path, as git does
        "mode      README.md",
        "deleted   gone.txt",
        "added     new/added.txt",
        "modified  retarget",
        "mode      src/run.sh",
        "modified  src/train.py",
    ]
    st = ok("diff", "--stat", world["a"][:8], world["b"][:8])
    assert re.search(r"^ src/train.py +\| modified 12 B -> 20 B$", st, re.M), st
    assert st.splitlines()[-1].startswith("6 path(s) changed: 1 added, 2 modified, 1 deleted, 2 mode changed")


# ---------------------------------------------------------------------------- du
def test_du_unique_bytes_add_up_to_the_stats_total(world: dict[str, Any]) -> None:
    d = data("du")
    total = data("stats")["total_size_bytes"]
    assert sum(o["unique"] for o in d["owners"]) + d["shared_bytes"] + d["unreferenced_bytes"] == total
    assert d["total_bytes"] == total
    owners = {(o["type"], o["name"]): o for o in d["owners"]}
    run = owners[("run", world["run"])]
    # data/big.bin is in both snapshots and the run's archive: shared, never unique.
    assert run["shared"] >= 300_000 and run["unique"] < 300_000
    assert owners[("artifact", "mnist")]["unique"] == 6000
    assert d["unreferenced_bytes"] == 2 * 9000  # the two dropped checkpoint versions
    for o in d["owners"]:
        assert o["size"] == o["unique"] + o["shared"]
    # gc frees exactly the unreferenced bytes; the sum still holds afterwards.
    ok("gc", "--grace", "0")
    d2, total2 = data("du"), data("stats")["total_size_bytes"]
    assert total2 == total - d["unreferenced_bytes"] and d2["unreferenced_bytes"] == 0
    assert sum(o["unique"] for o in d2["owners"]) + d2["shared_bytes"] == total2

    table = ok("du").splitlines()
    assert table[0].split() == ["TYPE", "NAME", "TREES", "SIZE", "UNIQUE", "SHARED"]
    assert any(line.startswith("total stored:") for line in table)


# ---------------------------------------------------------------------------- errors
def test_unknown_names_and_missing_store_are_one_line_errors(world: dict[str, Any], tmp_path: Path) -> None:
    one_line_error(cli("show", "baselin"), "no tree, pin or run named 'baselin'", "did you mean 'baseline'")
    one_line_error(cli("show", world["run"][:-1] + "x"), "did you mean", world["run"])
    one_line_error(cli("ls", "zzzzzz"), "no tree, pin or run named 'zzzzzz'")
    one_line_error(cli("show", "mnsit"), "did you mean 'mnist'")
    one_line_error(cli("diff", world["a"], str(tmp_path / "nowhere")), "no such directory")
    one_line_error(cli("diff", "nope", world["a"]), "'nope'")
    for args in (["ls"], ["du"], ["show", "x"], ["diff", "a", "b"]):
        one_line_error(cli("--storage", str(tmp_path / "empty"), *args), "no store at")
    assert not (tmp_path / "empty").exists()  # read-only commands create nothing
    for cmd in ("ls", "show", "diff", "du"):
        assert "Usage:" in ok(cmd, "--help")


def test_diff_against_a_workspace_follows_its_ignore_rules_unless_all(world: dict[str, Any]) -> None:
    ws = world["ws"]
    write(ws / "scratch.tmp", "ignored by the workspace's .rnignore\n")
    assert data("diff", world["b"], str(ws))["stat"]["added"] == 0  # what a snapshot would take
    assert [e["path"] for e in data("diff", world["b"], str(ws), "--all")["added"]] == ["scratch.tmp"]
    write(ws / "src/train.py", "print('v3')\n")
    assert ok("diff", world["b"], str(ws)).splitlines() == ["modified  src/train.py"]
    r = cli("diff", world["b"], str(ws), "--stat")
    assert r.stdout.splitlines()[-1].startswith("1 path(s) changed") and r.returncode == 0
