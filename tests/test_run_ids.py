"""Issue 15 item 12: one run-id rule (``runicorn.runs.ids``) for runs, the generator and sync."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from runicorn.errors import CorruptManifestError
from runicorn.sync.manifest_schema import validate_manifest_dict
from runicorn.sync.server.generator import ManifestGenerator
from runicorn.runs.ids import RUN_ID_MAX_LEN, valid_run_id
from tools.testbed.run_trees import make_run
from tests.test_manifest_schema import _mut


def test_the_rule() -> None:
    assert valid_run_id("20250115_103015_abc123")
    assert valid_run_id("a" * RUN_ID_MAX_LEN) and not valid_run_id("a" * (RUN_ID_MAX_LEN + 1))
    for bad in ["abc\n", "abc\r", "", ".", "..", ".hidden", "-x", "a/b", "a b", "ä", None, 5]:
        assert not valid_run_id(bad), bad  # type: ignore[arg-type]


def test_every_user_shares_the_rule() -> None:
    from runicorn.sync import manifest_schema
    from runicorn.sync.server import generator
    from runicorn.sync.client import walk_client
    from runicorn.runs import ids, index

    assert index.valid_run_id is generator.valid_run_id is walk_client.valid_run_id is ids.valid_run_id
    assert manifest_schema.RUN_ID_RE is ids.RUN_ID_RE


def test_runs_generator_and_client_agree_on_the_limit(tmp_path: Path) -> None:
    import runicorn as rn

    longest, too_long = "r" * RUN_ID_MAX_LEN, "r" * (RUN_ID_MAX_LEN + 1)
    with rn.init(path="p/e", run_id=longest) as run:
        assert run.run_dir.name == longest
    with pytest.raises(ValueError, match="run id"):
        rn.init(path="p/e", run_id=too_long)

    server = tmp_path / "server"
    rng = random.Random(0)
    make_run(server, "proj", "exp", longest, rng=rng)
    make_run(server, "proj", "exp", too_long, rng=rng)
    manifest, _ = ManifestGenerator(server).generate()
    assert [e.run_id for e in manifest.experiments] == [longest]

    validate_manifest_dict(_mut(["experiments", 0, "run_id"], longest))
    for bad in [too_long, "abc\n", ".x"]:
        with pytest.raises(CorruptManifestError, match=r"experiments\[0\]\.run_id"):
            validate_manifest_dict(_mut(["experiments", 0, "run_id"], bad))
