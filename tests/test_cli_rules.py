"""Issue 13 item 4: one command line.  Each rule of docs/cli.md with its test, run as a
user runs the CLI (a child process; a real pseudo-terminal where output differs)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import click
import pytest

import runicorn as rn
from runicorn.display import human_size
from runicorn.store import Store
from tests.artifacts_support import Route, start_server
from tests.test_cli_messages import assert_clean_error, cli


@pytest.fixture
def server():  # type: ignore[no-untyped-def]
    s = start_server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def all_commands() -> Iterator[tuple[str, click.Command]]:
    from runicorn.cli import main

    ctx = click.Context(main)

    def walk(group: click.Group, prefix: str) -> Iterator[tuple[str, click.Command]]:
        for name in group.list_commands(ctx):
            cmd = group.get_command(ctx, name)
            assert cmd is not None
            if isinstance(cmd, click.Group):
                yield from walk(cmd, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", cmd

    yield from walk(main, "")


# A tour that prints a narrative, not data (docs/cli.md says so).
NO_DATA = {"quickstart"}


def test_every_command_that_prints_data_has_json_and_help() -> None:
    names = []
    for name, cmd in all_commands():
        names.append(name)
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert "--help" in opts or cmd.get_help_option(click.Context(cmd)) is not None, name
        if name not in NO_DATA:
            assert "--json" in opts, f"`runicorn {name}` has no --json"
    for must in ("fetch", "path", "bind", "unbind", "pin", "unpin", "export", "snapshot", "generate-manifest"):
        assert must in names


def test_usage_errors_exit_1_with_one_line(tmp_path: Path) -> None:
    cases = [
        (["--bogus"], ["No such option '--bogus'", "runicorn --help"]),
        (["frobnicate"], ["No such command 'frobnicate'", "runicorn --help"]),
        (["snapshot", "--bogus"], ["runicorn snapshot:", "No such option", "runicorn snapshot --help"]),
        (["restore"], ["Missing argument 'TREE|MANIFEST'"]),
        (["gc", "--grace", "soon"], ["'soon' is not a duration"]),
        (["fetch", "-j", "0"], ["-j"]),
        (["remote", "add"], ["runicorn remote add:", "Missing argument 'NAME'"]),
        (["remote", "nope"], ["No such command 'nope'"]),
    ]
    for args, needles in cases:
        assert_clean_error(cli(*args), *needles)
    # no command: the help, on stdout, and success (as --help)
    r = cli()
    assert r.returncode == 0 and "Commands:" in r.stdout and not r.stderr


def test_human_size_is_the_one_formatter() -> None:
    assert human_size(0) == "0 B" and human_size(1023) == "1023 B"
    assert human_size(1536) == "1.5 KiB"
    assert human_size(int(1.2 * 2**30)) == "1.2 GiB"
    assert human_size(5 * 2**50) == "5.0 PiB" and human_size(-2048) == "-2.0 KiB"
    # no command module keeps a formatter of its own
    src = Path(rn.__file__).parent
    for f in src.rglob("*.py"):
        text = f.read_text()
        assert "def _human(" not in text and '"KiB"' not in text or f.name == "display.py", f


@pytest.fixture
def populated(tmp_path: Path, _isolated_storage: Path) -> dict[str, Any]:
    """A store with two snapshots (pinned by name), two runs sharing a prefix, one more run."""
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "weights.bin").write_bytes(random.Random(1).randbytes(int(1.5 * 2**20)))
    first = cli("snapshot", str(ws), "--name", "best").stdout.strip()
    (ws / "notes.txt").write_text("v2\n")
    second = cli("snapshot", str(ws), "--name", "baseline").stdout.strip()
    runs = []
    for rid in ("exp-aaa1", "exp-aaa2", "exp-bbb"):
        with rn.init("proj/exp", run_id=rid, storage=_isolated_storage, workspace_root=ws, snapshot_code=True) as run:
            runs.append(run.run_id)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "mnist", first)
    rn.bind_artifact(toml, "imagenet", second)
    return {"ws": ws, "first": first, "second": second, "runs": runs, "toml": toml}


def test_tables_have_headers_and_human_sizes_unless_json(populated: dict[str, Any]) -> None:
    toml = str(populated["toml"])
    for args, header in [
        (["refs"], ["KIND", "TREE", "CREATED", "NAME"]),
        (["runs"], ["RUN", "STATUS", "CREATED", "PATH"]),
        (["status", "--toml", toml], ["NAME", "TREE", "LAZY", "STATE", "SIZE"]),
        (["ls"], ["DATE", "TYPE", "NAME", "FILES", "SIZE", "SOURCE"]),
        (["du"], ["TYPE", "NAME", "TREES", "SIZE", "UNIQUE", "SHARED"]),
    ]:
        r = cli(*args)
        assert r.returncode == 0, r.stderr
        lines = [line for line in r.stdout.splitlines() if line.split() == header]
        assert lines, (args, r.stdout)
        j = cli(*args, "--json")
        json.loads(j.stdout)  # the same data as JSON, no table
        assert header[0] not in j.stdout.split("\n")[0]
    assert "1.5 MiB" in cli("ls").stdout
    assert "1.5 MiB" in cli("status", "--toml", toml).stdout
    assert "1.5 MiB" in cli("stats").stdout
    snap = cli("snapshot", str(populated["ws"]))
    assert re.search(r"\d+ files, 1\.5 MiB", snap.stderr), snap.stderr


def test_json_for_the_commands_that_lacked_it(populated: dict[str, Any], tmp_path: Path) -> None:
    toml = str(populated["toml"])
    first = populated["first"]
    r = json.loads(cli("pin", first[:8], "--name", "keep", "--json").stdout)
    assert r["kind"] == "pin" and r["name"] == "keep" and r["tree"] == first
    assert json.loads(cli("unpin", "keep", "--json").stdout) == {"unpinned": "keep", "tree": first}
    got = json.loads(cli("fetch", "mnist", "imagenet", "--toml", toml, "--json").stdout)
    assert {a["name"] for a in got["artifacts"]} == {"mnist", "imagenet"}
    assert all(a["error"] is None and Path(a["path"]).is_dir() for a in got["artifacts"])
    got = json.loads(cli("path", "mnist", "--toml", toml, "--json").stdout)
    assert got["name"] == "mnist" and Path(got["path"]).is_dir()
    got = json.loads(cli("bind", "copy", first[:10], "--toml", toml, "--json").stdout)
    assert got["name"] == "copy" and got["tree"] == first
    assert json.loads(cli("unbind", "copy", "--toml", toml, "--json").stdout)["unbound"] == "copy"
    got = json.loads(cli("export", "best", str(tmp_path / "b.tar.gz"), "--json").stdout)
    assert got["tree"] == first and got["format"] == "tar.gz"


def test_did_you_mean_for_artifacts_pins_and_runs(populated: dict[str, Any]) -> None:
    toml = str(populated["toml"])
    # a mistyped command, too
    assert_clean_error(cli("snapshto", str(populated["ws"])), "No such command 'snapshto'", "did you mean 'snapshot'?")
    assert_clean_error(cli("ferch"), "did you mean 'fetch'?")
    assert_clean_error(cli("path", "mnsit", "--toml", toml), "no artifact named 'mnsit'", "did you mean 'mnist'?")
    assert_clean_error(cli("fetch", "imagenett", "--toml", toml), "did you mean 'imagenet'?")
    assert_clean_error(cli("unbind", "mnst", "--toml", toml), "did you mean 'mnist'?")
    assert_clean_error(cli("unpin", "bset"), "no pin named 'bset'", "did you mean 'best'?")
    assert_clean_error(cli("show", "baseine"), "did you mean 'baseline'?")
    assert_clean_error(cli("delete-run", "exp-aab1"), "run 'exp-aab1' not found", "did you mean 'exp-aaa1'")
    assert_clean_error(cli("restore", "bestt", str(populated["ws"].parent / "out")), "did you mean 'best'?")
    # nothing close: no suggestion
    r = cli("unpin", "zzzzzz")
    assert_clean_error(r, "no pin named 'zzzzzz'")
    assert "did you mean" not in r.stderr


def test_run_and_tree_ids_by_unique_prefix_everywhere(populated: dict[str, Any], tmp_path: Path) -> None:
    first, second = populated["first"], populated["second"]
    # an ambiguous run prefix names every candidate
    assert_clean_error(
        cli("delete-run", "exp-aaa", "--dry-run"), "run prefix 'exp-aaa' is ambiguous", "exp-aaa1", "exp-aaa2"
    )
    assert_clean_error(cli("show", "exp-aa"), "is ambiguous", "exp-aaa1, exp-aaa2")
    r = cli("delete-run", "exp-b", "--dry-run", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["success"], r.stderr
    assert json.loads(cli("show", "exp-aaa2", "--json").stdout)["run_id"] == "exp-aaa2"
    # tree ids: restore, export, pin, unpin, show, ls, diff all take a unique prefix
    out = tmp_path / "restored"
    assert cli("restore", first[:7], str(out)).returncode == 0 and (out / "weights.bin").is_file()
    assert cli("export", second[:9], str(tmp_path / "s.zip")).returncode == 0
    assert cli("pin", second[:8]).returncode == 0
    assert json.loads(cli("unpin", second[:8], "--json").stdout)["tree"] == second
    assert json.loads(cli("show", first[:10], "--json").stdout)["tree"] == first
    assert cli("diff", first[:8], second[:8]).returncode == 0
    # too short to be a prefix
    assert_clean_error(cli("restore", first[:3], str(tmp_path / "x")), f"no tree, pin or run named {first[:3]!r}")


def test_the_one_prefix_resolver_lists_candidates() -> None:
    from runicorn.errors import AmbiguousPrefixError
    from runicorn.names import did_you_mean, unique_prefix

    ids = [f"run{i:02d}" for i in range(8)]
    assert unique_prefix("run03", ids, what="run") == "run03"
    assert unique_prefix("zz", ids, what="run") is None
    with pytest.raises(
        AmbiguousPrefixError,
        match=r"matches more than 5 runs \(run00, run01, run02, run03, "
        r"run04, \.\.\.\)",
    ):
        unique_prefix("run", ids, what="run")
    with pytest.raises(AmbiguousPrefixError, match=r"matches 2 trees \(abc1, abc2\)"):
        unique_prefix("abc", ["abc1", "abc2", "abd"], what="tree")
    assert did_you_mean("mnst", ["mnist", "cifar"]) == "; did you mean 'mnist'?"
    assert did_you_mean("xyz", ["mnist"]) == ""


def test_shell_completion_of_artifacts_pins_and_runs(populated: dict[str, Any]) -> None:
    def complete(*words: str, cwd: Path | None = None) -> list[str]:
        env = {
            "_RUNICORN_COMPLETE": "bash_complete",
            "COMP_WORDS": " ".join(("runicorn",) + words),
            "COMP_CWORD": str(len(words)),
        }
        r = cli(env=env, cwd=cwd)
        assert r.returncode == 0, r.stderr
        return [line.split(",", 1)[1] for line in r.stdout.splitlines() if line]

    proj = populated["toml"].parent
    assert complete("path", "mn", cwd=proj) == ["mnist"]
    assert sorted(complete("fetch", "", cwd=proj)) == ["imagenet", "mnist"]
    assert sorted(complete("unpin", "b")) == ["baseline", "best"]
    assert sorted(complete("delete-run", "exp-a")) == ["exp-aaa1", "exp-aaa2"]
    assert "exp-bbb" in complete("show", "exp") and "best" in complete("restore", "be")
    # no store: nothing completes, and none is created
    r = cli(
        env={
            "_RUNICORN_COMPLETE": "bash_complete",
            "COMP_WORDS": "runicorn unpin b",
            "COMP_CWORD": "2",
            "RUNICORN_DIR": str(proj / "nostore"),
        }
    )
    assert r.returncode == 0 and r.stdout.strip() == "" and not (proj / "nostore").exists()
    # the documented script is what click generates
    r = cli(env={"_RUNICORN_COMPLETE": "bash_source"})
    assert r.returncode == 0 and "_RUNICORN_COMPLETE=bash_complete" in r.stdout


# ---------------------------------------------------------------- pseudo-terminal output
def run_on_pty(args: list[str], env: dict[str, str], cols: int = 100) -> tuple[int, bytes]:
    """Run ``python -m runicorn ARGS`` with stdin, stdout and stderr on a real pseudo-terminal."""
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    p = subprocess.Popen(
        [sys.executable, "-m", "runicorn", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(os.environ, **env),
        close_fds=True,
    )
    os.close(slave)
    out = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=120), bytes(out)


def screen(raw: bytes) -> list[str]:
    """What a terminal shows after ``raw``: text, CR, LF, cursor up (ESC[nA), clear line (ESC[2K).

    Any other control sequence fails the test: the CLI promises only these.
    """
    rows: list[str] = [""]
    row = col = 0
    text = raw.decode()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\x1b":
            m = re.match(r"\x1b\[(\d*)([AK])", text[i:])
            assert m, f"unexpected control sequence {text[i : i + 8]!r}"
            if m.group(2) == "A":
                row = max(0, row - int(m.group(1) or 1))
            else:
                assert m.group(1) == "2"
                rows[row] = ""
            i += m.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            if row == len(rows):
                rows.append("")
        else:
            line = rows[row].ljust(col)
            rows[row] = line[:col] + ch + line[col + 1 :]
            col += 1
        i += 1
    while rows and rows[-1] == "":
        rows.pop()
    return rows


def test_fetch_j4_shows_one_progress_line_per_job_on_a_terminal(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    toml = tmp_path / "proj" / "Runicorn.toml"
    toml.parent.mkdir()
    names = ["alpha", "beta", "gamma", "delta"]
    for i, name in enumerate(names):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "data.bin").write_bytes(random.Random(i).randbytes(3 * 2**20))
        with Store(tmp_path / f"scratch{i}") as scratch:
            tree = scratch.ingest_directory(src)
            out = tmp_path / f"{name}.tar"
            sha = rn.archive_artifact(tree, out, store=scratch)
        # a slow link, so that bars are drawn while the four downloads run together
        server.routes[f"/{name}.tar"] = Route(out.read_bytes(), pace=0.15)
        rn.bind_artifact(toml, name, tree, download_info=[(server.url(f"/{name}.tar"), sha, out.stat().st_size)])

    code, raw = run_on_pty(["fetch", "-j", "4", "--toml", str(toml)], {})
    assert code == 0, raw.decode(errors="replace")
    text = raw.decode()
    assert "\x1b[4A" in text, "the block of four lines is redrawn in place"
    assert re.search(r"\[#+ *\] +\d+% ", text), "byte bars were drawn while downloading"
    shown = screen(raw)
    progress, results = shown[:4], shown[4:]
    # one line per job, in the order named, each in its final state; then one result line per
    # artifact; no blank line anywhere
    for name, line in zip(names, progress):
        assert re.fullmatch(rf"{name} +installed 3\.0 MiB", line.rstrip()), shown
    assert [r.split(":")[0] for r in results] == names, shown
    assert all(line.strip() for line in shown), shown
    assert len(shown) == 8, shown

    # the same command with output to a pipe: no progress at all, only the result lines
    r = cli("fetch", "-j", "4", "--toml", str(toml))
    assert r.returncode == 0 and r.stderr == "" and len(r.stdout.splitlines()) == 4
    assert "\x1b" not in r.stdout


def test_path_of_a_lazy_artifact_shows_a_bar_only_on_a_terminal(tmp_path: Path, server) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    (src / "data.bin").write_bytes(random.Random(7).randbytes(2 * 2**20))
    with Store(tmp_path / "scratch") as scratch:
        tree = scratch.ingest_directory(src)
        out = tmp_path / "lazy.tar"
        sha = rn.archive_artifact(tree, out, store=scratch)
    server.routes["/lazy.tar"] = Route(out.read_bytes(), pace=0.15)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "lazy", tree, download_info=[(server.url("/lazy.tar"), sha, out.stat().st_size)], lazy=True)
    r = cli("path", "lazy", "--toml", str(toml))  # a pipe: no bar
    assert r.returncode == 0 and r.stderr == "", r.stderr
    # a fresh store, so that it downloads again, now on a terminal
    code, raw = run_on_pty(["path", "lazy", "--toml", str(toml)], {"RUNICORN_DIR": str(tmp_path / "other")})
    assert code == 0, raw
    shown = screen(raw)
    assert re.fullmatch(r"installing lazy \[#{20}\] 100% 2\.0 MiB/2\.0 MiB", shown[0].rstrip()), shown
    assert shown[1].endswith(tree) and len(shown) == 2, shown


def test_snapshot_and_restore_bars_count_bytes(tmp_path: Path) -> None:
    from runicorn.assets.restore import restore_from_manifest
    from runicorn.snapshot.workspace import snapshot_workspace

    ws = tmp_path / "ws"
    ws.mkdir()
    sizes = [3 * 2**20, 10, 1000, 2**20]
    for i, n in enumerate(sizes):
        (ws / f"f{i}").write_bytes(random.Random(i).randbytes(n))
    seen: list[tuple[int, int]] = []
    res = snapshot_workspace(ws, None, progress=lambda d, t: seen.append((d, t)))
    total = sum(sizes) + (ws / ".rnignore").stat().st_size
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)
    seen.clear()
    with Store.open() as store:
        manifest, blobs = store.manifest_path(res["tree"]), store.blobs_dir
    restore_from_manifest(manifest, blobs, tmp_path / "out", progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (total, total)
    # on a terminal the CLI draws the bar once work takes over a second; a small tree prints none
    code, raw = run_on_pty(["restore", res["tree"][:12], str(tmp_path / "out2")], {})
    assert code == 0 and screen(raw) == [f"restored 5 files to {tmp_path / 'out2'}"], raw
