"""One bad logged TOML never stops gc: the usage log escapes what it records, binding ref
names carry any directory name or platform tag, and a bad entry is reported and skipped
(issue 15, item 6)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runicorn.store import Store


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_newlines_in_a_directory_name_and_a_platform_tag_do_not_stop_gc(
    tmp_path: Path, _isolated_storage: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text("beta\n")
    odd = tmp_path / "odd\nproject"  # a directory name with a newline
    odd.mkdir()
    r = cli("bind", "data", str(data), cwd=odd)
    assert r.returncode == 0, r.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    r = cli("bind", "other", str(other), cwd=plain)
    assert r.returncode == 0, r.stderr
    # A platform tag with a newline (and a '#'), written by hand.
    tree = json.loads(cli("refs", "--json").stdout)[0]["tree"]
    (plain / "Runicorn.toml").write_text(
        (plain / "Runicorn.toml").read_text()
        + f'\n[[tagged]]\nos = "linux\\nx#y"\narch = "x86_64"\ntree-sha256 = "{tree}"\n'
    )
    # A path the log could not record whole before: it is one line, escaped.
    log = (_isolated_storage / "artifacts" / "usage.log").read_text()
    lines = log.split("\n")[:-1]
    assert lines == [json.dumps(str(odd / "Runicorn.toml")), str(plain / "Runicorn.toml")]
    for args in (["gc", "--dry-run", "--grace", "0"], ["gc", "--grace", "0"]):
        r = cli(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert "deleted 0 tree(s)" in r.stdout or "would delete 0 tree(s)" in r.stdout
    refs = json.loads(cli("refs", "--kind", "binding", "--json").stdout)
    names = sorted(r["name"] for r in refs)
    assert names == sorted(
        [
            f"{tmp_path}/odd%0Aproject/Runicorn.toml#data#any",
            f"{plain}/Runicorn.toml#other#any",
            f"{plain}/Runicorn.toml#tagged#arch=x86_64,os=linux%0Ax%23y",
        ]
    )
    assert {r["meta"]["toml"] for r in refs} == {str(odd / "Runicorn.toml"), str(plain / "Runicorn.toml")}
    # The log is the source of the index table: a rebuild reads the escaped line back.
    with Store(_isolated_storage) as store:
        store.rebuild_index()
        logged = {p for (p,) in store.index.query("SELECT path FROM toml_usage")}
    assert logged == {str(odd / "Runicorn.toml"), str(plain / "Runicorn.toml")}
    # Deleting the odd project drops its refs at the next gc past the retention, which
    # still runs; its tree stays, bound by the 'tagged' entry (whose platform tag holds
    # the newline).
    (odd / "Runicorn.toml").unlink()
    r = cli("gc", "--grace", "0", "--keep-missing-toml", "0")
    assert r.returncode == 0, r.stderr
    assert "deleted 0 tree(s)" in r.stdout
    refs = json.loads(cli("refs", "--kind", "binding", "--json").stdout)
    assert all("odd" not in r["name"] for r in refs)


def test_a_bad_logged_entry_is_reported_and_skipped(tmp_path: Path, _isolated_storage: Path) -> None:
    # The store of issue 15's item 6: several projects' bindings, content nothing binds any
    # more, and one logged Runicorn.toml that a hand edit gave a platform tag with a newline
    # (no ref name could carry it, so every gc and gc --dry-run of the store failed).
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    tool = tmp_path / "tool"
    tool.mkdir()
    (tool / "t.bin").write_text("tool bytes\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "s.txt").write_text("nothing binds this\n")
    good = tmp_path / "good"
    good.mkdir()
    assert cli("bind", "data", str(data), cwd=good).returncode == 0
    odd = tmp_path / "odd"
    odd.mkdir()
    assert cli("bind", "tool", str(tool), cwd=odd).returncode == 0
    assert cli("bind", "scratch", str(scratch), cwd=good).returncode == 0
    trees = {r["meta"]["artifact"]: r["tree"] for r in json.loads(cli("refs", "--kind", "binding", "--json").stdout)}
    assert cli("unbind", "scratch", cwd=good).returncode == 0  # its tree is now garbage
    (odd / "Runicorn.toml").write_text(
        f'[[tool]]\nos = "linux\\nmusl"\narch = "x86_64"\ntree-sha256 = "{trees["tool"]}"\n'
    )
    with Store(_isolated_storage) as store:
        # and an entry that stays bad: a logged file that cannot be read (its name is over
        # PATH_MAX); a torn line in the log too
        bad = "/" + "x" * 5000 + "/Runicorn.toml"
        with store.index.write() as c:
            c.execute("INSERT INTO toml_usage (path, last_seen) VALUES (?, 0)", (bad,))
    with (_isolated_storage / "artifacts" / "usage.log").open("a") as f:
        f.write('"torn json\n')
    r = cli("gc", "--dry-run", "--grace", "0")
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "would delete 1 tree(s)" in r.stdout, r.stdout  # the unbound tree, nothing else
    assert "warning: kept the earlier bindings of /xxxx" in r.stderr  # reported, then skipped
    r = cli("gc", "--grace", "0")
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "deleted 1 tree(s)" in r.stdout, r.stdout
    assert "warning: kept the earlier bindings of /xxxx" in r.stderr
    with Store(_isolated_storage) as store:
        assert not store.has_tree(trees["scratch"])
        assert store.has_tree(trees["data"]) and store.has_tree(trees["tool"])
        # the edited file's variant is bound under its (escaped) platform tag
        names = {ref.name for ref in store.list_refs("binding")}
    assert f"{odd}/Runicorn.toml#tool#arch=x86_64,os=linux%0Amusl" in names, names
    r = cli("verify", "--repair")
    assert r.returncode == 0, (r.stdout, r.stderr)
