"""Artifacts used while a run is active are recorded as the run's inputs (lineage)."""

from __future__ import annotations

import json
from pathlib import Path

import runicorn as rn
from runicorn.assets.cleanup import delete_run_completely
from runicorn.store import open_store


def test_artifact_used_during_a_run_is_an_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.csv").write_text("id,label\n")
    tree = rn.create_artifact(src=data)
    toml = tmp_path / "Runicorn.toml"
    rn.bind_artifact(toml, "labels", tree)
    rn.artifact("labels", toml=toml)  # before any run: nothing to record
    with rn.init(path="lineage/demo") as run:
        for _ in range(3):
            rn.artifact("labels/labels.csv", toml=toml)
    meta = json.loads((run.run_dir / "meta.json").read_text())
    assert [(i["name"], i["tree"]) for i in meta["inputs"]] == [("labels", tree)]
    store = open_store()
    assert store.get_ref("run", f"{run.run_id}/input/labels").tree == tree
    # after the run, artifact() records nothing more
    rn.artifact("labels", toml=toml)
    assert len(json.loads((run.run_dir / "meta.json").read_text())["inputs"]) == 1
    # deleting the run drops its input ref but never the bound artifact
    result = delete_run_completely(run.run_id, store.root)
    assert result["success"] and store.get_ref("run", f"{run.run_id}/input/labels") is None
    assert store.gc(grace_seconds=0)["trees_deleted"] == 0 and rn.artifact_exists(tree)
