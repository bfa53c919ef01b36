"""tools/bench/ab.py reads every benchmark's output, old formats and current ones (no timing asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "tools" / "bench"
_spec = importlib.util.spec_from_file_location("bench_ab", BENCH / "ab.py")
assert _spec and _spec.loader
ab = importlib.util.module_from_spec(_spec)
sys.modules["bench_ab"] = ab  # dataclasses look their module up by name
_spec.loader.exec_module(ab)

# bench_artifacts.py's output before it had --json (main at d31dd55)
ARTIFACTS_TEXT = """payload: 32 MiB in 9 entries; archive 28 MiB
fetch 32 MiB tar.gz over HTTP: runicorn fetch 0.32 s (median of 3) vs curl+sha256sum+tar xzf 0.30 s -> 1.07x (target <= 1.30x)
warm artifact("name"): median 11.6 us over 10,000 calls (target <= 50 us)
import runicorn: 27.2 ms vs python -c pass 23.6 ms -> +3.6 ms (target <= 60 ms)
all targets met
"""

STORE_TEXT = """contender               median s   runs
sha256sum                  0.209   0.225, 0.200, 0.209
cp -r                      0.090   0.093, 0.080, 0.090
runicorn ingest            0.454   0.560, 0.441, 0.454

ingest / (sha256sum + cp -r) = 0.454 / 0.299 = 1.52x   (target <= 1.3x)
"""


def figures(figs: list) -> dict[str, tuple[float, str, bool]]:
    return {f.name: (f.value, f.unit, f.ref) for f in figs}


def test_artifacts_text_and_json_give_the_same_figures() -> None:
    old = figures(ab.parse_artifacts(ARTIFACTS_TEXT))
    assert old["runicorn fetch"] == (0.32, "s", False)
    assert old["curl + sha256sum + tar xzf"] == (0.30, "s", True)
    assert old["warm artifact() (median of 10,000)"] == (11.6, "us", False)
    assert abs(old["python -c 'import runicorn'"][0] - 27.2) < 1e-9
    new_line = json.dumps(
        {
            "fetch_s": 0.32,
            "fetch_baseline_s": 0.30,
            "fetch_ratio": 1.07,
            "warm_artifact_us": 11.6,
            "import_s": 0.0272,
            "python_pass_s": 0.0236,
            "import_added_ms": 3.6,
            "targets_met": True,
        }
    )
    new = figures(ab.parse_artifacts(ARTIFACTS_TEXT + new_line + "\n"))
    assert new.keys() == old.keys()
    for name in new:
        assert abs(new[name][0] - old[name][0]) < 1e-9 and new[name][1:] == old[name][1:], name


def test_store_table_read_without_json() -> None:
    got = figures(ab.parse_store(STORE_TEXT, "ingest"))
    assert got["runicorn ingest"] == (0.454, "s", False)
    assert got["sha256sum"] == (0.209, "s", True)
    assert got["ingest / (sha256sum + cp -r)"] == (1.52, "x", False)


def test_note_flags_only_outside_a_range() -> None:
    assert ab.note([1.0, 1.2, 1.1], [1.15, 1.3, 1.05], "s") == ""
    assert ab.note([1.0, 1.2, 1.1], [1.25, 1.1, 1.3], "s") == "slower (outside A's range)"
    assert ab.note([1.0, 1.2, 1.1], [0.8, 0.9, 0.7], "s") == "faster (outside A's range, disjoint)"
    assert ab.note([8, 8, 8], [9, 9, 9], "n") == "differs"
    assert ab.note([6016214, 6016230], [6016235, 6016240], "n") == ""  # jitter of a byte count
    table = "\n".join(
        ab.table(
            {
                "x: y": {
                    "unit": "s",
                    "ref": False,
                    "A": [1.0, 1.2, 1.1],
                    "B": [2.0, 2.2, 2.1],
                    "pairs": [(1.0, 2.0), (1.2, 2.2), (1.1, 2.1)],
                }
            },
            ["x: y"],
        )
    )
    assert "1.91" in table and "slower (outside A's range, disjoint)" in table


def test_ab_reads_the_current_benchmarks(tmp_path: Path) -> None:
    """The benchmarks of this checkout, at tiny sizes, parsed as ab.py parses them."""
    env = {"BENCH_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, str(BENCH / "bench_artifacts.py"), "--mib", "1", "--reps", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode in (0, 1), out.stderr  # 1: a target missed, figures still printed
    assert figures(ab.parse_artifacts(out.stdout)).keys() == figures(ab.parse_artifacts(ARTIFACTS_TEXT)).keys()
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_store.py"),
            "--mode",
            "ingest",
            "--runs",
            "1",
            "--scale",
            "0.002",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    got = figures(ab.parse_store(out.stdout, "ingest"))
    assert {"runicorn ingest", "sha256sum", "cp -r", "ingest / (sha256sum + cp -r)"} <= got.keys()
    out = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_snapshot.py"),
            "--repeats",
            "1",
            "--small-files",
            "40",
            "--dirs",
            "4",
            "--big-files",
            "1",
            "--big-size",
            "50000",
            "--skip-dvc",
            "--tmp",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    got = figures(ab.parse_snapshot(out.stdout))
    assert {"first.rn", "unchanged.rn_cli", "restore_copy.rn", "delete.rn", "peak RSS first.rn"} <= got.keys()
    assert got["first.cp"][2] and not got["first.rn"][2]  # references marked as such
