"""Run handling safety: summaries, run ids, concurrent naming, deleting runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import runicorn as rn
from runicorn.errors import RunicornError


class _Scalar:
    """Like a numpy scalar: not JSON itself, but has ``.item()``."""

    def __init__(self, v: float) -> None:
        self.v = v

    def item(self) -> float:
        return self.v


class _FloatSub(float):
    pass


def test_summary_serialises_like_log_and_survives_a_bad_value() -> None:
    run = rn.init(path="safety/summary")
    assert run.summary({"acc": _Scalar(0.5), "loss": _FloatSub(0.25)}) == {"acc": 0.5, "loss": 0.25}
    with pytest.raises(TypeError) as err:
        run.summary({"bad": object(), "acc": 0.9})
    assert isinstance(err.value, RunicornError) and "not JSON serialisable" in str(err.value)
    # nothing of the failed call was kept, and later summaries still work
    assert json.loads((run.run_dir / "summary.json").read_text()) == {"acc": 0.5, "loss": 0.25}
    assert run.summary({"epoch": 3}) == {"acc": 0.5, "loss": 0.25, "epoch": 3}
    assert json.loads((run.run_dir / "summary.json").read_text()) == {"acc": 0.5, "loss": 0.25, "epoch": 3}
    run.finish()
