"""`runicorn ls | show | diff | du` only read: they serve a store on a read-only mount."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_read_only_store import cli, remount_ro, ro_mount  # noqa: F401  (ro_mount is a fixture)


def test_inspect_commands_serve_a_read_only_store(
    ro_mount: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = ro_mount / "store"
    monkeypatch.setenv("RUNICORN_DIR", str(store))
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "train.py").write_text("print('hi')\n")
    a = cli("snapshot", str(ws)).stdout.strip()
    (ws / "train.py").write_text("print('hello')\n")
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                "import runicorn as rn\n"
                f"with rn.init(path='p/e', snapshot_code=True, workspace_root={str(ws)!r}) as run:\n"
                "    print(run.run_id)\n"
            ),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    run_id = r.stdout.strip()
    remount_ro(ro_mount)

    def data(*args: str) -> object:
        res = cli(*args, "--json")
        assert res.returncode == 0 and "Traceback" not in res.stderr, (args, res.stderr)
        return json.loads(res.stdout)

    items = data("ls")
    assert {(i["type"], i["name"]) for i in items} == {("snapshot", a), ("run", run_id)}
    assert [e["path"] for e in data("ls", a[:8])["entries"]] == [".rnignore", "train.py"]  # type: ignore[index]
    shown = data("show", run_id)
    assert shown["status"] == "finished" and shown["code_tree"] != a  # type: ignore[index]
    changes = data("diff", a[:8], run_id)
    assert [e["path"] for e in changes["modified"]] == ["train.py"]  # type: ignore[index]
    du = data("du")
    assert (
        sum(o["unique"] for o in du["owners"]) + du["shared_bytes"] + du["unreferenced_bytes"]
        == data("stats")["total_size_bytes"]
    )  # type: ignore[index]
