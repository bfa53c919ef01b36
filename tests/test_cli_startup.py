"""The read-only store commands start fast: ``runicorn stats`` and ``runicorn gc --dry-run``
load only the modules they use (docs/cli.md: each command is imported when invoked), and
the program exits without collecting every module it loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from runicorn.store import Store

REPO = Path(__file__).resolve().parents[1]

# Only what the command adds counts: a site's start-up (``.pth`` files) may already have
# loaded some of these modules before any of ours runs.
_MODULES_AFTER = """
import sys
at_start = set(sys.modules)
import json
from runicorn.cli import main
main(sys.argv[1:], prog_name="runicorn", standalone_mode=False)
print(json.dumps(sorted(set(sys.modules) - at_start)), file=sys.stderr)
"""

# Loaded by neither command: hashing (OpenSSL), shutil (bz2, lzma), click's shell
# completion, the other commands' modules, and the artifact code a store without Runicorn.toml
# files never needs.
_NOT_FOR_STATS = (
    "hashlib",
    "shutil",
    "click.shell_completion",
    "runicorn.cli.artifact_cmds",
    "runicorn.cli.assets_cmds",
    "runicorn.cli.inspect_cmds",
    "runicorn.cli.remote_cmds",
    "runicorn.cli.sync_cmds",
    "runicorn.artifacts",
    "runicorn.runs",
    "runicorn.snapshot",
)
_NOT_FOR_GC = (
    "hashlib",
    "shutil",
    "click.shell_completion",
    "runicorn.cli.artifact_cmds",
    "runicorn.artifacts.lookup",
    "runicorn.artifacts.toml_read",
    "runicorn.artifacts.bindings",
    "runicorn.artifacts.platform",
    "runicorn.snapshot",
)


def _store_with_a_pin(root: Path) -> None:
    with Store.open(root) as store:
        blob = store.ingest_bytes(b"kept")
        store.pin(store.put_tree({"a.txt": (blob.sha256, "100644", blob.size)}), "keep")


def _modules_of(root: Path, *args: str) -> list[str]:
    r = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, "--storage", str(root), *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stderr.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("args, unwanted", [(("stats", "--json"), _NOT_FOR_STATS), (("gc", "--dry-run"), _NOT_FOR_GC)])
def test_stats_and_gc_dry_run_load_only_what_they_use(
    tmp_path: Path, args: tuple[str, ...], unwanted: tuple[str, ...]
) -> None:
    root = tmp_path / "store"
    _store_with_a_pin(root)
    loaded = _modules_of(root, *args)
    assert "runicorn.cli.store_cmds" in loaded and "apsw" in loaded
    assert [m for m in unwanted if m in loaded or any(x.startswith(m + ".") for x in loaded)] == []


def test_the_program_is_run_which_keeps_mains_output_and_exit_status(tmp_path: Path) -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    assert scripts == {"runicorn": "runicorn.cli:run"}
    root = tmp_path / "store"
    _store_with_a_pin(root)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for args, status in (
        (["stats", "--json"], 0),
        (["gc", "--dry-run"], 0),
        (["stats", "--bogus"], 1),
        (["no-such-command"], 1),
    ):
        via_run = subprocess.run(
            [sys.executable, "-m", "runicorn", "--storage", str(root), *args], capture_output=True, text=True, env=env
        )
        via_main = subprocess.run(
            [sys.executable, "-c", "from runicorn.cli import main; main(prog_name='runicorn')", "--storage", str(root)]
            + args,
            capture_output=True,
            text=True,
            env=env,
        )
        assert (via_run.returncode, via_run.stdout, via_run.stderr) == (status, via_main.stdout, via_main.stderr)
        assert via_main.returncode == status
        if args == ["stats", "--json"]:
            assert json.loads(via_run.stdout)["blob_count"] == 1
