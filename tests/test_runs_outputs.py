"""Rolling run outputs: run.save_output keeps the last N plus the best; gc frees the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import runicorn as rn
from runicorn.assets.cleanup import delete_run_completely
from runicorn.cli import main
from runicorn.runs import list_outputs
from runicorn.store import open_store


def test_ten_saves_keep_last_three_plus_best_and_gc_frees_the_rest(tmp_path: Path) -> None:
    run = rn.init(path="train/rolling")
    store = open_store()
    losses = [5.0, 4.0, 0.5, 3.0, 2.5, 2.0, 1.9, 1.8, 1.7, 1.6]  # best is version 3
    ckpt = tmp_path / "checkpoint.pt"
    for i, loss in enumerate(losses, start=1):
        run.log({"loss": loss})
        ckpt.write_bytes(f"weights {i}\n".encode() * 100)
        rec = run.save_output(ckpt, keep_last=3, keep_best=("loss", "min"))
        assert rec["output"] == "checkpoint" and rec["version"] == i and rec["value"] == loss
    kept = list_outputs(run.run_id)
    assert [v["version"] for v in kept["checkpoint"]] == [3, 8, 9, 10]
    assert [v["ref"] for v in kept["checkpoint"]][0] == f"run/{run.run_id}/output/checkpoint/3"
    meta_versions = [v["version"] for v in run.meta["outputs"]["checkpoint"]]
    assert meta_versions == [3, 8, 9, 10]
    trees = {v["version"]: v["tree"] for v in kept["checkpoint"]}
    r = CliRunner().invoke(main, ["gc", "--grace", "0"])
    assert r.exit_code == 0, r.output
    for t in trees.values():
        assert store.has_tree(t)
    # the released versions' content is gone: only 4 distinct checkpoint trees remain of this run
    refs = [x for x in store.list_refs("run") if x.name.startswith(f"{run.run_id}/output/")]
    assert sorted(int(x.name.rsplit("/", 1)[1]) for x in refs) == [3, 8, 9, 10]
    run.finish()
    result = delete_run_completely(run.run_id, store.root)
    assert result["success"], result
    assert result["outputs_deleted"] >= 4
    assert list_outputs(run.run_id) == {}


def test_released_versions_blobs_are_collected(tmp_path: Path) -> None:
    run = rn.init(path="train/rolling2")
    store = open_store()
    out = tmp_path / "model"
    out.mkdir()
    trees = []
    for i in range(10):
        (out / "w.bin").write_bytes(bytes([i]) * 4096)
        trees.append(run.save_output(out, keep_last=3, keep_best=("acc", "max"), metric_value=i % 5)["tree"])
    # kept: last 3 (versions 8, 9, 10) + best acc=4 earliest (version 5)
    assert [v["version"] for v in list_outputs(run.run_id)["model"]] == [5, 8, 9, 10]
    released = [trees[i] for i in range(10) if i + 1 not in (5, 8, 9, 10)]
    assert all(store.has_tree(t) for t in released)  # only released, not yet collected
    r = CliRunner().invoke(main, ["gc", "--grace", "0"])
    assert r.exit_code == 0, r.output
    assert not any(store.has_tree(t) for t in released)
    assert all(store.has_tree(trees[v - 1]) for v in (5, 8, 9, 10))
    import hashlib

    for i in (0, 1, 2, 3, 5, 6):  # their unique blobs are gone from disk
        assert not store.has_blob(hashlib.sha256(bytes([i]) * 4096).hexdigest())
    run.finish()


def test_new_version_ref_is_written_before_old_refs_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = rn.init(path="train/rolling3")
    store = open_store()
    f = tmp_path / "ckpt.txt"
    f.write_text("one")
    run.save_output(f, keep_last=1)
    order: list[tuple[str, str]] = []
    real_set, real_del = store.set_ref, store.delete_ref
    monkeypatch.setattr(store, "set_ref", lambda k, n, t, **kw: (order.append(("set", n)), real_set(k, n, t, **kw))[1])
    monkeypatch.setattr(store, "delete_ref", lambda k, n: (order.append(("del", n)), real_del(k, n))[1])
    f.write_text("two")
    run.save_output(f, keep_last=1)
    assert order == [("set", f"{run.run_id}/output/ckpt/2"), ("del", f"{run.run_id}/output/ckpt/1")]
    run.finish()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    run = rn.init(path="train/rolling4")
    f = tmp_path / "x.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="keep_last"):
        run.save_output(f, keep_last=0)
    with pytest.raises(ValueError, match="keep_best"):
        run.save_output(f, keep_best=("loss", "lowest"))
    with pytest.raises(ValueError, match="output name"):
        run.save_output(f, name="a/b")
    with pytest.raises(FileNotFoundError):
        run.save_output(tmp_path / "missing")
    assert list_outputs(run.run_id) == {}
    run.finish()
