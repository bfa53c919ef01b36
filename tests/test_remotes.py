"""Team remotes against real servers: a shared directory, the sshd fixture (SFTP) and a
SeaweedFS (S3), through the CLI in child processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.remote_support import KINDS, make_remote, make_tree, rn, rn_json, same_tree

RUN_SCRIPT = """
import sys, runicorn as rn
with rn.init(path="vision/resnet", snapshot_code=True, workspace_root=sys.argv[1]) as run:
    run.log({"loss": 0.5}, step=1)
    run.summary({"best": 0.5})
    run.archive(sys.argv[2], role="weights")
print(run.run_id)
"""


@pytest.mark.parametrize("kind", KINDS)
def test_push_pin_run_and_artifact_then_a_fresh_clone_pulls_them(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    a, b = tmp_path / "store-a", tmp_path / "store-b"
    project = tmp_path / "project"
    data = make_tree(project / "data", 1)
    ckpt = make_tree(tmp_path / "ckpt", 2)

    rn(["remote", "add", "team", *remote.add_args(), "--default", "--project"], storage=a, env=remote, cwd=project)
    assert (project / "runicorn-remotes.toml").is_file()
    tree = rn_json(["snapshot", str(data)], storage=a, env=remote, cwd=project)["tree"]
    rn(["pin", tree, "--name", "dataset-v1"], storage=a, env=remote)
    env = {**os.environ, "RUNICORN_DIR": str(a), **remote.env}
    run_id = (
        subprocess.run(
            [sys.executable, "-c", RUN_SCRIPT, str(project), str(ckpt)],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            cwd=project,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    rn(["bind", "ds", "data", "--lazy", "--push", "team"], storage=a, env=remote, cwd=project)
    toml = (project / "Runicorn.toml").read_text()
    assert "remote = " in toml and "tree-sha256" in toml

    report = rn_json(["push", "dataset-v1", run_id], storage=a, env=remote, cwd=project)
    assert report["ok"] and {r["status"] for r in report["refs"]} == {"created"}
    assert {r["ref"] for r in report["refs"]} >= {
        "pin/dataset-v1",
        f"run/{run_id}/code",
        f"run/{run_id}/files",
        f"run/{run_id}/archive/weights/0",
    }

    # a teammate: a fresh clone (the committed TOML files only) and an empty store
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("Runicorn.toml", "runicorn-remotes.toml"):
        shutil.copy(project / name, clone / name)
    pulled = rn_json(["pull", "dataset-v1", run_id], storage=b, env=remote, cwd=clone)
    assert pulled["ok"] and pulled["blobs_downloaded"] > 0
    rn(["restore", tree, str(tmp_path / "restored")], storage=b, env=remote)
    same_tree(data, tmp_path / "restored")
    runs = rn_json(["runs"], storage=b, env=remote)
    assert [r["run_id"] for r in runs] == [run_id]
    same_tree(a / "vision" / "resnet" / "runs" / run_id, b / "vision" / "resnet" / "runs" / run_id)
    weights = json.loads((b / "vision/resnet/runs" / run_id / "meta.json").read_text())["archives"][0]["tree"]
    rn(["restore", weights, str(tmp_path / "weights")], storage=b, env=remote)
    same_tree(ckpt, tmp_path / "weights")
    # the bound artifact installs lazily from the remote on first use
    env_b = {**os.environ, "RUNICORN_DIR": str(b), **remote.env}
    path = subprocess.run(
        [sys.executable, "-c", "import runicorn as rn; print(rn.artifact('ds'))"],
        env=env_b,
        cwd=clone,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    same_tree(data, Path(path))
    assert rn_json(["verify", "--deep"], storage=b)["ok"]
    assert rn_json(["remote", "verify", "team", "--deep"], storage=b, env=remote, cwd=clone)["ok"]


@pytest.mark.parametrize("kind", KINDS)
def test_unchanged_push_makes_a_constant_number_of_requests(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    a = tmp_path / "a"
    rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=a, env=remote)
    tree = rn_json(["snapshot", str(make_tree(tmp_path / "d", 3))], storage=a, env=remote)["tree"]
    rn(["pin", tree, "--name", "p"], storage=a)
    first = rn_json(["push", "p"], storage=a, env=remote)
    assert first["blobs_uploaded"] == 18 and first["manifests_uploaded"] == 1
    again = rn_json(["push", "p"], storage=a, env=remote)
    assert again["refs"][0]["status"] == "unchanged" and again["bytes_uploaded"] == 0
    assert again["requests"] <= 5
    # a second pin of an overlapping tree sends only the new blobs: the index knows the rest
    (tmp_path / "d" / "new.txt").write_text("new\n")
    tree2 = rn_json(["snapshot", str(tmp_path / "d")], storage=a, env=remote)["tree"]
    rn(["pin", tree2, "--name", "p2"], storage=a)
    second = rn_json(["push", "p2"], storage=a, env=remote)
    assert second["blobs_uploaded"] == 1 and second["blobs_present"] == 0


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_a_tampered_remote_blob_is_refused_and_nothing_enters_the_store(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    a, b = tmp_path / "a", tmp_path / "b"
    rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=a, env=remote)
    shutil.copy(a / "remotes.toml", tmp_path / "remotes.toml")
    tree = rn_json(["snapshot", str(make_tree(tmp_path / "d", 4))], storage=a, env=remote)["tree"]
    rn(["pin", tree, "--name", "p"], storage=a)
    rn(["push", "p"], storage=a, env=remote)
    sha = __import__("hashlib").sha256(b"content every tree shares\n").hexdigest()
    key = f"blobs/{sha[:2]}/{sha}"
    evil = b"content every tree sharez\n"
    if kind == "file":
        p = Path(remote.url[len("file://") :]) / key
        p.chmod(0o644)
        p.write_bytes(evil)
    else:
        import obstore

        bucket, _, prefix = remote.url[len("s3://") :].partition("/")
        obstore.put(request.getfixturevalue("seaweed").store(bucket), f"{prefix}/{key}", evil)
    b.mkdir()
    shutil.copy(tmp_path / "remotes.toml", b / "remotes.toml")
    p = rn(["pull", "p"], storage=b, env=remote, check=False)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "sha256" in p.stderr and sha in p.stderr and "refused" in p.stderr
    assert "Traceback" not in p.stderr
    stats = rn_json(["stats"], storage=b)
    assert stats["blob_count"] == 0 and stats["tree_count"] == 0 and stats["ref_count"] == 0
    assert rn_json(["remote", "verify", "team", "--deep"], storage=b, env=remote, check=False)["ok"] is False


def test_ref_conflicts_are_reported_and_force_overwrites(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    remote = make_remote("file", tmp_path, request)
    a, b = tmp_path / "a", tmp_path / "b"
    for s in (a, b):
        rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=s, env=remote)
    t1 = rn_json(["snapshot", str(make_tree(tmp_path / "d1", 5, big=False))], storage=a)["tree"]
    t2 = rn_json(["snapshot", str(make_tree(tmp_path / "d2", 6, big=False))], storage=b)["tree"]
    rn(["pin", t1, "--name", "best"], storage=a)
    rn(["pin", t2, "--name", "best"], storage=b)
    rn(["push", "best"], storage=a)
    p = rn(["push", "best"], storage=b, check=False)
    assert p.returncode == 1 and "conflict" in p.stdout and "--force" in p.stderr
    assert rn_json(["push", "best", "--force"], storage=b)["refs"][0]["status"] == "updated"
    again = rn(["push", "best"], storage=a, check=False)  # the remote moved since a saw it
    assert again.returncode == 1 and "conflict" in again.stdout
    # pulling with a different local ref is a conflict too; --force takes the remote's
    assert rn(["pull", "best"], storage=a, check=False).returncode == 1
    assert rn_json(["pull", "best", "--force"], storage=a)["refs"][0]["status"] == "updated"
    assert rn_json(["push", "best"], storage=a)["refs"][0]["status"] == "unchanged"


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_remote_gc_deletes_exactly_what_its_dry_run_lists(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    remote = make_remote(kind, tmp_path, request)
    a = tmp_path / "a"
    rn(["remote", "add", "team", *remote.add_args(), "--default"], storage=a, env=remote)
    t1 = rn_json(["snapshot", str(make_tree(tmp_path / "d1", 7, big=False))], storage=a)["tree"]
    t2 = rn_json(["snapshot", str(make_tree(tmp_path / "d2", 8, big=False))], storage=a)["tree"]
    rn(["pin", t1, "--name", "x"], storage=a)
    rn(["push", "x"], storage=a, env=remote)
    rn(["pin", t2, "--name", "x", "--force"], storage=a)  # moving a pin name needs --force
    rn(["push", "x"], storage=a, env=remote)  # the remote's x moves from t1 to t2
    assert rn_json(["remote", "gc", "--grace", "1h"], storage=a, env=remote)["trees_deleted"] == 0
    dry = rn_json(["remote", "gc", "--grace", "0", "--dry-run"], storage=a, env=remote)
    assert f"manifests/{t1[:2]}/{t1}.json" in dry["keys"] and dry["blobs_deleted"] == 12  # the twelve files only t1 has
    real = rn_json(["remote", "gc", "--grace", "0"], storage=a, env=remote)
    assert sorted(real["keys"]) == sorted(dry["keys"])
    assert rn_json(["remote", "verify", "--deep"], storage=a, env=remote)["ok"]
    # the gc changed the remote's epoch: a's index no longer trusts what it cached, so
    # pushing t1 again sends its blobs again instead of naming deleted ones
    rn(["pin", t1, "--name", "x", "--force"], storage=a)
    back = rn_json(["push", "x"], storage=a, env=remote)
    assert back["blobs_uploaded"] == 12 and back["manifests_uploaded"] == 1
    assert rn_json(["remote", "verify", "--deep"], storage=a, env=remote)["ok"]


def test_cli_help_and_one_line_errors(tmp_path: Path) -> None:
    for args in (
        ["remote"],
        ["remote", "add"],
        ["remote", "list"],
        ["remote", "remove"],
        ["remote", "gc"],
        ["remote", "verify"],
        ["push"],
        ["pull"],
    ):
        assert rn([*args, "--help"], storage=tmp_path / "s").stdout.startswith("Usage:")
    for args, text in (
        (["push", "x"], "no remote given"),
        (["push"], "nothing to push"),
        (["remote", "add", "bad name", "/tmp/x"], "remote name"),
        (["remote", "add", "r", "ftp://host/x"], "unsupported remote URL"),
        (["pull", "p", "--remote", "nope"], "no remote named 'nope'"),
        (["remote", "verify", str(tmp_path / "empty")], "config.json: missing"),
    ):
        p = rn(list(args), storage=tmp_path / "s", check=False)
        assert p.returncode == 1, args
        assert "Traceback" not in p.stderr
        assert text in p.stdout + p.stderr, (args, p.stdout, p.stderr)


def test_remote_add_refuses_a_store_that_overwrites_existing_keys(tmp_path: Path) -> None:
    """A store without create-only writes (here: a directory backend whose create
    overwrites, as an S3 store ignoring If-None-Match would) is refused for shared use."""
    from runicorn.remotes.backend import FileBackend
    from runicorn.remotes.errors import RemoteError
    from runicorn.remotes.maintenance import probe

    class Overwriting(FileBackend):
        def put_create(self, key: str, data: bytes | Path) -> bool:  # type: ignore[override]
            self.put_replace(key, data if isinstance(data, bytes) else data.read_bytes())
            return True

    root = tmp_path / "r"
    root.mkdir()
    with pytest.raises(RemoteError, match="does not enforce create-only writes"):
        probe(Overwriting(root, f"file://{root}"))
    assert not (root / "config.json").exists()
    assert not list((root / "locks").iterdir())  # the probe object is removed
    probe(FileBackend(root, f"file://{root}"))  # the real one passes and gets its config.json
    assert json.loads((root / "config.json").read_text())["format"] == "runicorn-remote"


def test_remote_list_remove_and_project_file(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    remote = make_remote("file", tmp_path, request)
    s = tmp_path / "s"
    project = tmp_path / "proj"
    (project / "sub").mkdir(parents=True)
    rn(["remote", "add", "team", *remote.add_args(), "--project", "--default"], storage=s, cwd=project)
    rn(["remote", "add", "mine", str(tmp_path / "other")], storage=s, cwd=project)
    rows = rn_json(["remote", "list"], storage=s, cwd=project / "sub")  # found upward
    assert [(r["name"], r["default"]) for r in rows] == [("mine", False), ("team", True)]
    p = rn(["remote", "add", "mine", str(tmp_path / "x")], storage=s, cwd=project, check=False)
    assert p.returncode == 1 and "exists" in p.stderr
    p = rn(["remote", "remove", "team"], storage=s, cwd=project, check=False)
    assert p.returncode == 1 and "--project" in p.stderr
    rn(["remote", "remove", "team", "--project"], storage=s, cwd=project)
    assert rn_json(["remote", "remove", "mine"], storage=s, cwd=project)["removed"] == "mine"
    assert rn_json(["remote", "list"], storage=s, cwd=project) == []
    p = rn(["pull", "nothing-here", "--remote", remote.url], storage=s, check=False)
    assert p.returncode == 1 and "is not a pin, run or tree on file:" in p.stderr


def test_push_artifacts_and_all_then_pull_all(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    remote = make_remote("sftp", tmp_path, request)
    a, b = tmp_path / "a", tmp_path / "b"
    project = tmp_path / "p"
    data = make_tree(project / "data", 9, big=False)
    rn(["remote", "add", "team", *remote.add_args(), "--default", "--project"], storage=a, env=remote, cwd=project)
    rn(["bind", "ds", "data"], storage=a, env=remote, cwd=project)
    tree = rn_json(["snapshot", str(make_tree(tmp_path / "other", 10))], storage=a)["tree"]
    rn(["pin", tree, "--name", "other"], storage=a)
    arts = rn_json(["push", "--artifacts"], storage=a, env=remote, cwd=project)
    assert [r["ref"].split("/")[0] for r in arts["refs"]] == ["artifact"]
    everything = rn_json(["push", "--all"], storage=a, env=remote, cwd=project)
    statuses = {r["ref"]: r["status"] for r in everything["refs"]}
    assert statuses[arts["refs"][0]["ref"]] == "unchanged" and statuses["pin/other"] == "created"
    assert {f"pin/{r['name']}" for r in rn_json(["refs", "--kind", "pin"], storage=a)} <= set(statuses)
    pulled = rn_json(["pull", "--all"], storage=b, env=remote, cwd=project)
    assert pulled["ok"] and {r["ref"] for r in pulled["refs"]} == set(statuses)
    rn(["restore", arts["refs"][0]["tree"], str(tmp_path / "r1")], storage=b)
    same_tree(data, tmp_path / "r1")
    assert rn_json(["verify", "--deep"], storage=b)["ok"]
