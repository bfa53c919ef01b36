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
    return subprocess.run([sys.executable, "-m", "runicorn", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_newlines_in_a_directory_name_and_a_platform_tag_do_not_stop_gc(
        tmp_path: Path, _isolated_storage: Path) -> None:
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
        + f'\n[[tagged]]\nos = "linux\\nx#y"\narch = "x86_64"\ntree-sha256 = "{tree}"\n')
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
    assert names == sorted([
        f"{tmp_path}/odd%0Aproject/Runicorn.toml#data#any",
        f"{plain}/Runicorn.toml#other#any",
        f"{plain}/Runicorn.toml#tagged#arch=x86_64,os=linux%0Ax%23y",
    ])
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
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("alpha\n")
    good = tmp_path / "good"
    good.mkdir()
    r = cli("bind", "data", str(data), cwd=good)
    assert r.returncode == 0, r.stderr
    with Store(_isolated_storage) as store:
        # A logged entry no ref can ever be made for: its name is over the 4096-character
        # ref limit even escaped, and it keeps failing; and a torn line in the log.
        bad = "/" + "x" * 5000 + "/Runicorn.toml"
        with store.index.write() as c:
            c.execute("INSERT INTO toml_usage (path, last_seen) VALUES (?, 0)", (bad,))
    with (_isolated_storage / "artifacts" / "usage.log").open("a") as f:
        f.write('"torn json\n')
    r = cli("gc", "--dry-run", "--grace", "0")
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "warning: kept the earlier bindings of /xxxx" in r.stderr  # reported, then skipped
    r = cli("gc", "--grace", "0")
    assert r.returncode == 0 and "Traceback" not in r.stderr, (r.stdout, r.stderr)
    assert "deleted 0 tree(s)" in r.stdout
    r = cli("verify", "--repair")
    assert r.returncode == 0, (r.stdout, r.stderr)
