#!/usr/bin/env python3
"""A/B benchmark runner: the benchmarks of two git revisions, interleaved in one run.

For each revision (default A = ``d31dd55``, main before the issue-14 redesign; B = the
head of ``main``) it makes a throwaway checkout (``git worktree add --detach``) and a
virtualenv with that checkout installed (``pip install -e``), both cached by commit under
``--work`` (default ``/tmp/rn-ab/<commit>/{src,venv}``), so a second A/B against the same
commits starts at once.  Then, ``--rounds`` times (default 3), it runs every chosen
benchmark once for A and once for B, back to back, one process at a time, so machine
noise falls on both sides alike; the order alternates (A, B in odd rounds, B, A in even
ones), because whichever runs second meets what the first left behind (its data still
being written back): with A always first, code B did not change measured slower.  Each revision is measured with its
own ``tools/bench`` scripts (what B's refactor changed in them is part of B), run from
its own checkout with its own virtualenv.

Benchmarks (``--bench``, comma separated; quick profile by default, ~1 minute per
revision and round on an idle 2-core machine):

* ``store-ingest``  bench_store.py --mode ingest (issue 2): ingest vs sha256sum, cp -r
* ``store-index``   bench_store.py --mode index (issue 2): stats, gc --dry-run on a big index
* ``store-gc``      bench_store.py --mode gc: gc collecting real files vs rm -rf
* ``snapshot``      bench_snapshot.py (issue 3): snapshot, re-snapshot, restore, delete-run
* ``artifacts``     bench_artifacts.py (issue 4): fetch over loopback HTTP, warm artifact(), import
* ``sync``          bench_sync.py (issue 5): legacy walk / manifest sync / rsync through a local sshd
* ``startup``       measured here: ``python -X importtime -c "import runicorn"`` (the
  ``runicorn`` cumulative line, and the sum of every line), modules ``import runicorn`` loads, ``python -c "import
  runicorn"`` and ``runicorn --help`` wall time, and a warm ``artifact("name")`` (timeit,
  best of 15 x 3,000 calls) in a throwaway project, an unchanged ``snapshot_workspace()`` of 200
  files as a fresh process's first call (imports included); the modules each side loads are listed where they differ

Each benchmark's figures are read from its machine-readable output (``--json`` where the
script has it, else its ``all samples:`` line or its text lines; both the old and the new
formats are understood).  ``--fresh-fs SIZE`` (default ``2G`` when root) is passed to the
benchmarks that support it, so every file-creating step runs on a new journaled ext4
image rather than on a disk whose inode allocator remembers what ran before.  Nothing
leaves the machine: servers (HTTP, sshd) listen on 127.0.0.1, DVC is not installed.
The sshd and SeaweedFS launchers are whatever each revision's benchmarks import.

The table lists, per figure: median of A's rounds, median of B's, B/A, the median of the
per-round ratios (A and B of a round ran back to back), A's range over the rounds, and a note when B's median lies outside A's range (``slower``/``faster``/
``differs`` for counts) -- with ``disjoint`` when no B round falls inside A's range.
Reference figures measured beside the product (``[ref]``: sha256sum, cp -r, rsync, git,
python -c pass ...) show how much the machine itself moved between A and B.  Logs of every
benchmark run and a JSON file of all samples are written under ``--work``.

    python tools/bench/ab.py                                   # d31dd55 vs main, 3 rounds
    python tools/bench/ab.py --a main~5 --b my-branch --rounds 5 --bench snapshot,startup
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
DEFAULT_A = "d31dd55"
DEFAULT_B = "main"

# --------------------------------------------------------------------------- figures


@dataclass
class Figure:
    """One measured number of one benchmark run."""

    name: str
    value: float
    unit: str  # "s", "ms", "us", "KiB", "n" (a count), "x" (a ratio)
    ref: bool = False  # a reference measured beside the product, not the product itself


def _last_json_object(text: str) -> Any:
    """The last JSON object printed in ``text``: a one-line object or an indented block
    starting with a line ``{`` at column 0.

    Raises:
        ValueError: if there is none.
    """
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        line = lines[i]
        if line.startswith("{") and line.rstrip().endswith("}"):
            try:
                return json.loads(line)
            except ValueError:
                pass
        if line.rstrip() == "{":
            try:
                return json.loads("\n".join(lines[i:]))
            except ValueError:
                pass
    raise ValueError("no JSON object in the output")


# The product's own lines in bench_store's tables; everything else there is a reference.
STORE_PRODUCT = ("runicorn", "stats (in process)", "gc --dry-run (in process)")
# bench_store's text tables: "<name>  <median>[  <rss> MiB]   <runs>"
_STORE_ROW = re.compile(r"^(?P<name>\S.*?)\s{2,}(?P<med>\d+\.\d+)(?:\s+\d+\.\d+ MiB)?\s{3}\d")


def parse_store(out: str, mode: str) -> list[Figure]:
    """bench_store.py: the ``--json`` block (``{mode: {name: median}}``), else its table."""
    try:
        data = _last_json_object(out)[mode]
    except (ValueError, KeyError, TypeError):
        data = {m.group("name").strip(): float(m.group("med")) for m in map(_STORE_ROW.match, out.splitlines()) if m}
        m = re.search(r"= (\d+\.\d+)x", out)
        if m:
            data["ratio"] = float(m.group(1))
    figs = []
    for name, value in data.items():
        if name == "ratio":
            label = "ingest / (sha256sum + cp -r)" if mode == "ingest" else "gc / rm -rf (paired)"
            figs.append(Figure(label, value, "x"))
        elif mode == "index":  # milliseconds and less
            figs.append(Figure(name, value * 1000, "ms", ref=not name.startswith(STORE_PRODUCT)))
        else:
            figs.append(Figure(name, value, "s", ref=not name.startswith(STORE_PRODUCT)))
    return figs


# bench_snapshot's steps made of other steps (sums, flush of the reference): left out.
SNAPSHOT_DERIVED = {"first.ref", "first.ref_durable", "change1.ref", "change1.floor", "restore.cp_durable"}


def _is_rn(step: str) -> bool:
    return step.split(".", 1)[1].startswith("rn")


def parse_snapshot(out: str) -> list[Figure]:
    """bench_snapshot.py: its ``all samples: {...}`` and ``peak RSS (KiB): {...}`` lines."""
    samples: dict[str, list[float]] = {}
    rss: dict[str, list[int]] = {}
    for line in out.splitlines():
        if line.startswith("all samples: "):
            samples = json.loads(line[len("all samples: ") :])
        elif line.startswith("peak RSS (KiB): "):
            rss = json.loads(line[len("peak RSS (KiB): ") :])
    if not samples:
        raise ValueError("no 'all samples:' line in the output")
    figs = [
        Figure(step, statistics.median(v), "s", ref=not _is_rn(step))
        for step, v in samples.items()
        if step not in SNAPSHOT_DERIVED and v
    ]
    figs += [Figure(f"peak RSS {step}", max(v), "KiB") for step, v in rss.items() if _is_rn(step) and v]
    return figs


# bench_artifacts' text lines (before it had --json): key -> (pattern, factor to its JSON unit)
_ART_TEXT = {
    "fetch_s": (r"runicorn fetch (\d+\.\d+) s", 1.0),
    "fetch_baseline_s": (r"vs curl\+sha256sum\+tar xzf (\d+\.\d+) s", 1.0),
    "warm_artifact_us": (r'warm artifact\("name"\): median (\d+\.\d+) us', 1.0),
    "import_s": (r"import runicorn: (\d+\.\d+) ms", 0.001),
    "python_pass_s": (r"vs python -c pass (\d+\.\d+) ms", 0.001),
}


def parse_artifacts(out: str) -> list[Figure]:
    """bench_artifacts.py: the ``--json`` line, else its text (the format before it had one)."""
    try:
        data = _last_json_object(out)
    except ValueError:
        data = {}
        for key, (pattern, factor) in _ART_TEXT.items():
            m = re.search(pattern, out)
            if not m:
                raise ValueError(f"bench_artifacts output has no {key}") from None
            data[key] = float(m.group(1)) * factor
    return [
        Figure("runicorn fetch", data["fetch_s"], "s"),
        Figure("curl + sha256sum + tar xzf", data["fetch_baseline_s"], "s", ref=True),
        Figure("warm artifact() (median of 10,000)", data["warm_artifact_us"], "us"),
        Figure("python -c 'import runicorn'", data["import_s"] * 1000, "ms"),
        Figure("python -c pass", data["python_pass_s"] * 1000, "ms", ref=True),
    ]


def parse_sync(out: str) -> list[Figure]:
    """bench_sync.py --json: wall time, SFTP operations and bytes per scenario and method."""
    data = _last_json_object(out)
    figs = [
        Figure("generate-manifest first", data["generate_first_s"], "s"),
        Figure("generate-manifest unchanged", data["generate_unchanged_s"], "s"),
    ]
    for scen, by_method in data["scenarios"].items():
        for method, r in by_method.items():
            ref = method == "rsync"
            figs.append(Figure(f"{scen} {method} wall", r["wall"], "s", ref=ref))
            if r.get("ops") is not None:
                figs.append(Figure(f"{scen} {method} SFTP ops", r["ops"], "n"))
            if r.get("bytes") is not None:
                figs.append(Figure(f"{scen} {method} bytes received", r["bytes"], "n", ref=ref))
    return figs


# --------------------------------------------------------------------------- revisions


@dataclass
class Rev:
    """One side of the A/B: a commit checked out with its own virtualenv."""

    label: str  # "A" or "B"
    spec: str  # what the user asked for
    sha: str
    subject: str
    src: Path
    venv: Path
    helps: dict[str, str] = field(default_factory=dict)  # script -> its --help output
    project: Path | None = None  # the throwaway project of the warm artifact() figure
    modules: dict[str, list[str]] = field(default_factory=dict)  # what import / artifact() load

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    def env(self, work: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # measure with cached bytecode, as installed
        env.pop("VIRTUAL_ENV", None)
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        # The checkout's root on the path: benchmarks import their helpers (and, before the
        # redesign, the test servers) from it; the "tests." and the new location alike.
        env["PYTHONPATH"] = str(self.src)
        env["RUNICORN_DIR"] = str(work / "home" / self.sha[:12])  # never the user's store
        env["TMPDIR"] = str(work / "tmp")
        return env


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def prepare(label: str, spec: str, repo: Path, work: Path, python: str, log: Callable[[str], None]) -> Rev:
    """Check out ``spec`` and install it into a virtualenv, both cached by commit.

    Raises:
        SystemExit: naming the revision, if it cannot be resolved, checked out or installed.
    """
    try:
        sha = git(repo, "rev-parse", "--verify", f"{spec}^{{commit}}")
    except subprocess.CalledProcessError:
        raise SystemExit(f"ab: revision {spec!r} not found in {repo}") from None
    subject = git(repo, "log", "-1", "--format=%s", sha)
    base = work / sha[:12]
    rev = Rev(label, spec, sha, subject, base / "src", base / "venv")
    if not (rev.src / ".git").exists():
        base.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(rev.src, ignore_errors=True)  # a checkout cut short
        git(repo, "worktree", "prune")
        log(f"{label}: checking out {sha[:12]} into {rev.src}")
        try:
            git(repo, "worktree", "add", "--detach", "--force", str(rev.src), sha)
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"ab: cannot check out {sha[:12]} into {rev.src}: {e.stderr.strip()}") from None
    stamp = rev.venv / ".ab-installed"
    if not stamp.exists() or stamp.read_text() != sha:
        log(f"{label}: installing {sha[:12]} into {rev.venv} (pip install -e)")
        shutil.rmtree(rev.venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(rev.venv)], check=True)
        p = subprocess.run(
            [str(rev.venv / "bin" / "pip"), "install", "-q", "-e", str(rev.src)], capture_output=True, text=True
        )
        if p.returncode:
            raise SystemExit(f"ab: pip install -e {rev.src} failed:\n{p.stderr[-3000:]}")
        stamp.write_text(sha)
    where = subprocess.run(
        [rev.python, "-c", "import runicorn; print(runicorn.__file__)"],
        capture_output=True,
        text=True,
        cwd="/",
        env=rev.env(work),
    )
    if where.returncode or not where.stdout.strip().startswith(str(rev.src)):
        raise SystemExit(
            f"ab: {label}'s venv does not import runicorn from {rev.src}: "
            f"{where.stdout.strip()} {where.stderr.strip()[-500:]}"
        )
    return rev


# --------------------------------------------------------------------------- benchmarks


@dataclass
class Bench:
    name: str
    script: str | None  # in the revision's tools/bench/, or None for the built-in startup figures
    args: list[str]
    parse: Callable[[str], list[Figure]]
    fresh_fs: bool = False  # pass --fresh-fs SIZE when the script has it


def benches(profile: str) -> dict[str, Bench]:
    quick = profile == "quick"
    return {
        b.name: b
        for b in [
            Bench(
                "store-ingest",
                "bench_store.py",
                ["--mode", "ingest", "--runs", "3"] + (["--scale", "0.2"] if quick else []),
                lambda out: parse_store(out, "ingest"),
                fresh_fs=True,
            ),
            Bench(
                "store-index",
                "bench_store.py",
                ["--mode", "index", "--runs", "5"] + (["--blobs", "200000"] if quick else []),
                lambda out: parse_store(out, "index"),
                fresh_fs=True,
            ),
            Bench(
                "store-gc",
                "bench_store.py",
                ["--mode", "gc"]
                + (["--runs", "2", "--blobs", "100000", "--collect", "10000"] if quick else ["--runs", "3"]),
                lambda out: parse_store(out, "gc"),
                fresh_fs=True,
            ),
            Bench(
                "snapshot",
                "bench_snapshot.py",
                ["--skip-dvc", "--repeats", "1" if quick else "3"]
                + (
                    ["--small-files", "2000", "--dirs", "20", "--big-files", "2", "--big-size", str(16 << 20)]
                    if quick
                    else []
                ),
                parse_snapshot,
                fresh_fs=True,
            ),
            Bench(
                "artifacts", "bench_artifacts.py", ["--mib", "32" if quick else "256", "--reps", "3"], parse_artifacts
            ),
            Bench(
                "sync",
                "bench_sync.py",
                ["--runs", "30" if quick else "100", "--repeat", "3" if quick else "5"],
                parse_sync,
            ),
            Bench("startup", None, [], lambda out: []),
        ]
    }


def bench_command(rev: Rev, bench: Bench, fresh_fs: str | None) -> list[str]:
    assert bench.script
    cmd = [rev.python, str(rev.src / "tools" / "bench" / bench.script), *bench.args]
    help_text = rev.helps.get(bench.script, "")
    if "--json" in help_text:
        cmd.append("--json")
    if bench.fresh_fs and fresh_fs and "--fresh-fs" in help_text:
        cmd += ["--fresh-fs", fresh_fs]
    return cmd


def preflight(rev: Rev, chosen: list[Bench], work: Path) -> dict[str, str]:
    """Run each chosen script's ``--help`` (it imports what the benchmark imports, the
    server launchers included); return {script: why} for the scripts that fail."""
    problems = {}
    for script in sorted({b.script for b in chosen if b.script}):
        path = rev.src / "tools" / "bench" / script
        if not path.exists():
            problems[script] = f"{rev.label}: {path} does not exist"
            continue
        p = subprocess.run(
            [rev.python, str(path), "--help"],
            capture_output=True,
            text=True,
            cwd=rev.src,
            env=rev.env(work),
            timeout=120,
        )
        if p.returncode:
            last = (p.stderr.strip().splitlines() or ["?"])[-1]
            problems[script] = f"{rev.label}: {script} --help failed: {last}"
        else:
            rev.helps[script] = p.stdout
    return problems


# Built-in figures: how light `import runicorn`, a warm artifact() and the CLI stay.

ARTIFACT_SETUP = """
import os, sys
import runicorn as rn
proj, src = sys.argv[1], sys.argv[2]
os.makedirs(src, exist_ok=True)
with open(os.path.join(src, "f.txt"), "w") as f:
    f.write("x")
tree = rn.create_artifact(src=src)
rn.bind_artifact(os.path.join(proj, "Runicorn.toml"), "name", tree)
"""

ARTIFACT_WARM = """
import json, os, sys, timeit
os.chdir(sys.argv[1])
import runicorn as rn
before = set(sys.modules)
rn.artifact("name")
added = sorted(set(sys.modules) - before)
best = min(timeit.Timer(lambda: rn.artifact("name")).repeat(repeat=15, number=3000)) / 3000
print(json.dumps({"us": best * 1e6, "modules_added": added}))
"""

# An unchanged re-snapshot of 200 small files as the first call of a fresh process: what
# the snapshot path imports is part of its cost (the in-process figure of bench_snapshot).
SNAPSHOT_SETUP = """
import sys, time
from pathlib import Path
import runicorn
ws = Path(sys.argv[1])
for i in range(200):
    (ws / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
    (ws / f"d{i % 10}" / f"f{i}.txt").write_text(f"file {i} " * 50)
(ws / ".rnignore").write_text("# nothing excluded")
time.sleep(2.1)  # out of the racy window, so the capture below is trusted and re-snapshots read nothing
runicorn.snapshot_workspace(ws, None, storage=sys.argv[2])
"""

SNAPSHOT_FIRST = """
import json, sys, time
from pathlib import Path
import runicorn
before = set(sys.modules)
t = time.perf_counter()
res = runicorn.snapshot_workspace(Path(sys.argv[1]), None, storage=sys.argv[2])
t = time.perf_counter() - t
print(json.dumps({"ms": t * 1000, "files_read": res["files_read"], "modules_added": sorted(set(sys.modules) - before)}))
"""

IMPORT_MODULES = (
    "import sys; before = set(sys.modules); import runicorn; print(' '.join(sorted(set(sys.modules) - before)))"
)


def _wall(cmd: list[str], env: dict[str, str], cwd: Path, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def run_startup(rev: Rev, work: Path) -> list[Figure]:
    """The built-in ``startup`` figures for one revision (medians within the round).

    Raises:
        subprocess.CalledProcessError: if a command fails.
    """
    env = rev.env(work)
    cwd = work / "tmp"
    if rev.project is None:  # the throwaway project, made once per revision (untimed)
        rev.project = Path(tempfile.mkdtemp(prefix=f"artifact-{rev.label}-", dir=cwd))
        subprocess.run(
            [rev.python, "-c", ARTIFACT_SETUP, str(rev.project), str(rev.project / "src")],
            check=True,
            capture_output=True,
            env=env,
            cwd=rev.project,
        )
        subprocess.run(
            [rev.python, "-c", SNAPSHOT_SETUP, str(rev.project / "ws"), str(rev.project / "snap-store")],
            check=True,
            capture_output=True,
            env=env,
            cwd=rev.project,
        )
    importtimes, totals = [], []
    for _ in range(7):
        p = subprocess.run(
            [rev.python, "-X", "importtime", "-c", "import runicorn"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
        )
        total = 0
        for line in p.stderr.splitlines():
            # "import time: <self us> | <cumulative us> | <indented module name>"
            parts = line.split("|")
            if len(parts) != 3 or not parts[1].strip().isdigit():
                continue
            total += int(parts[0].split(":")[-1])
            if parts[2].strip() == "runicorn":
                importtimes.append(int(parts[1]) / 1000)
        totals.append(total / 1000)
    if not importtimes:
        raise ValueError("python -X importtime printed no 'runicorn' line")
    rev.modules["import runicorn"] = subprocess.run(
        [rev.python, "-c", IMPORT_MODULES], check=True, capture_output=True, text=True, env=env, cwd=cwd
    ).stdout.split()
    warm = json.loads(
        subprocess.run(
            [rev.python, "-c", ARTIFACT_WARM, str(rev.project)],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
        ).stdout
    )
    rev.modules["the first artifact()"] = warm["modules_added"]
    snaps = []
    for _ in range(5):
        snap = json.loads(
            subprocess.run(
                [rev.python, "-c", SNAPSHOT_FIRST, str(rev.project / "ws"), str(rev.project / "snap-store")],
                check=True,
                capture_output=True,
                text=True,
                env=env,
                cwd=cwd,
            ).stdout
        )
        if snap["files_read"]:
            raise ValueError(f"the unchanged re-snapshot read {snap['files_read']} files")
        snaps.append(snap["ms"])
    rev.modules["the first snapshot_workspace()"] = snap["modules_added"]
    return [
        Figure("importtime: runicorn cumulative (median of 7)", statistics.median(importtimes), "ms"),
        Figure("importtime: total, interpreter start-up included", statistics.median(totals), "ms"),
        Figure("modules loaded by import runicorn", len(rev.modules["import runicorn"]), "n"),
        Figure(
            "python -c 'import runicorn' (median of 20)",
            _wall([rev.python, "-c", "import runicorn"], env, cwd, 20) * 1000,
            "ms",
        ),
        Figure("python -c pass (median of 20)", _wall([rev.python, "-c", "pass"], env, cwd, 20) * 1000, "ms", ref=True),
        Figure(
            "runicorn --help (median of 20)",
            _wall([str(rev.venv / "bin" / "runicorn"), "--help"], env, cwd, 20) * 1000,
            "ms",
        ),
        Figure("warm artifact() (timeit, best of 15 x 3000)", warm["us"], "us"),
        Figure("modules loaded by the first artifact()", len(warm["modules_added"]), "n"),
        Figure("unchanged snapshot_workspace() of 200 files, first call (median of 5)", statistics.median(snaps), "ms"),
        Figure("modules loaded by that first snapshot_workspace()", len(snap["modules_added"]), "n"),
    ]


def run_bench(rev: Rev, bench: Bench, work: Path, fresh_fs: str | None, log_path: Path, timeout: float) -> list[Figure]:
    """One run of ``bench`` for ``rev``; its output goes to ``log_path``.

    Raises:
        RuntimeError: if it fails or its output cannot be read (the message says why).
    """
    os.sync()  # no dirty pages of the previous run to flush on this one's time
    if bench.script is None:
        try:
            figs = run_startup(rev, work)
        except (subprocess.CalledProcessError, ValueError, KeyError) as e:
            err = getattr(e, "stderr", "") or ""
            log_path.write_text(f"{e}\n{err}")
            raise RuntimeError(f"startup figures failed: {e}") from None
        log_path.write_text(json.dumps([f.__dict__ for f in figs], indent=1))
        return figs
    cmd = bench_command(rev, bench, fresh_fs)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=rev.src, env=rev.env(work), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from None
    log_path.write_text(f"$ {' '.join(cmd)}\n# exit {p.returncode}\n{p.stdout}\n--- stderr\n{p.stderr}")
    try:
        figs = bench.parse(p.stdout)
    except (ValueError, KeyError, TypeError) as e:
        last = (p.stderr.strip().splitlines() or [""])[-1]
        raise RuntimeError(f"exit {p.returncode}, output not understood ({e}); {last}") from None
    if not figs:
        raise RuntimeError(f"exit {p.returncode}, no figures in the output")
    # bench_artifacts exits 1 when a target is missed: its figures still count.
    return figs


# --------------------------------------------------------------------------- report

FMT = {"s": "{:.3f}", "ms": "{:.1f}", "us": "{:.2f}", "KiB": "{:.0f}", "n": "{:.0f}", "x": "{:.2f}"}


def fmt(value: float, unit: str) -> str:
    if unit == "ms" and abs(value) < 10:
        return f"{value:.2f}"
    return FMT.get(unit, "{:.3g}").format(value)


def note(a: list[float], b: list[float], unit: str) -> str:
    """Where B's median lies against A's range over the rounds."""
    lo, hi, mb = min(a), max(a), statistics.median(b)
    if lo <= mb <= hi:
        return ""
    if unit in ("n", "KiB"):
        # Counts are exact, but byte counts carry a few timestamps' worth of jitter, and
        # peak RSS a few pages'.
        ma = statistics.median(a)
        if abs(mb - ma) <= 0.01 * abs(ma):
            return ""
    if unit == "n":
        return "differs"
    # Every figure here is a cost (time, memory, a ratio to a reference): lower is better.
    word = "slower" if mb > hi else "faster"
    if unit == "KiB":
        word = "larger" if mb > hi else "smaller"
    disjoint = all(x > hi for x in b) or all(x < lo for x in b)
    return f"{word} (outside A's range{', disjoint' if disjoint else ''})"


def table(results: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    rows = [("step", "unit", "median A", "median B", "B/A", "paired", "A range (rounds)", "note")]
    for key in order:
        r = results[key]
        a, b, unit = r["A"], r["B"], r["unit"]
        name = key + (" [ref]" if r["ref"] else "")
        if not a or not b:
            rows.append(
                (
                    name,
                    unit,
                    fmt(statistics.median(a), unit) if a else "-",
                    fmt(statistics.median(b), unit) if b else "-",
                    "-",
                    "-",
                    "",
                    "missing on one side",
                )
            )
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        ratio = f"{mb / ma:.2f}" if ma else ("1.00" if mb == ma else "inf")
        # A and B of one round ran back to back: the median of per-round ratios is the
        # figure a slow drift of the machine disturbs least.
        pairs = [pb / pa for pa, pb in r.get("pairs", []) if pa]
        paired = f"{statistics.median(pairs):.2f}" if pairs else "-"
        rows.append(
            (
                name,
                unit,
                fmt(ma, unit),
                fmt(mb, unit),
                ratio,
                paired,
                f"{fmt(min(a), unit)}-{fmt(max(a), unit)}",
                note(a, b, unit),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for j, row in enumerate(rows):
        cells = [c.ljust(widths[i]) if i in (0, 1, 6, 7) else c.rjust(widths[i]) for i, c in enumerate(row)]
        out.append("  ".join(cells).rstrip())
        if j == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def summary(results: dict[str, dict[str, Any]], order: list[str]) -> list[str]:
    """One line per product figure whose B median lies on the costly side of A's range."""
    flagged = []
    for key in order:
        r = results[key]
        if r["ref"] or not r["A"] or not r["B"]:
            continue
        n = note(r["A"], r["B"], r["unit"])
        if n.startswith(("slower", "larger", "differs")):
            ratio = statistics.median(r["B"]) / statistics.median(r["A"]) if statistics.median(r["A"]) else 0
            flagged.append(f"  {key}: B/A {ratio:.2f}, {n}")
    product = sum(1 for k in order if not results[k]["ref"])
    rounds = max((len(results[k]["A"]) for k in order), default=0)
    chance = 1 / math.comb(2 * rounds, rounds) if rounds else 1.0
    return [
        f"product figures with B's median on the costly side of A's range: {len(flagged)} of {product} "
        f"(with {rounds} rounds, a figure whose A and B are the same is 'slower, disjoint' by chance "
        f"with probability {chance:.3f}: about {chance * product:.1f} of {product})",
        *flagged,
    ]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--a", default=DEFAULT_A, help=f"revision A, the reference (default {DEFAULT_A})")
    ap.add_argument("--b", default=DEFAULT_B, help=f"revision B, measured against A (default {DEFAULT_B})")
    ap.add_argument("--rounds", type=int, default=3, help="A/B pairs per benchmark (default 3)")
    ap.add_argument(
        "--bench",
        default=",".join(benches("quick")),
        help="comma-separated benchmarks (default: all): " + ", ".join(benches("quick")),
    )
    ap.add_argument(
        "--profile",
        choices=["quick", "full"],
        default="quick",
        help="quick: small data, the whole A/B in ~10-15 min; full: the issues' sizes (hours)",
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/rn-ab"),
        help="checkouts and venvs cached by commit, logs, results (default /tmp/rn-ab)",
    )
    ap.add_argument("--repo", type=Path, default=HERE.parents[1], help="the git repository (default: this one)")
    ap.add_argument(
        "--fresh-fs",
        default="2G" if os.geteuid() == 0 else "",
        help="image size for the benchmarks' --fresh-fs (default 2G when root; '' to measure on the disk of --work)",
    )
    ap.add_argument("--timeout", type=float, default=900, help="seconds one benchmark run may take (default 900)")
    ap.add_argument(
        "--python",
        default=getattr(sys, "_base_executable", sys.executable),
        help="interpreter the venvs are made from (default: the one running this)",
    )
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    all_benches = benches(args.profile)
    names = [n.strip() for n in args.bench.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_benches]
    if unknown or not names:
        ap.error(f"unknown benchmark {', '.join(unknown) or '(none)'}; choose from {', '.join(all_benches)}")
    chosen = [all_benches[n] for n in names]
    work = args.work.resolve()
    (work / "tmp").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    logs = work / "logs" / stamp
    logs.mkdir(parents=True)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S', time.gmtime())} load {loadavg()}] {msg}", file=sys.stderr, flush=True)

    started = time.time()
    load_start = loadavg()
    revs = [
        prepare("A", args.a, args.repo, work, args.python, log),
        prepare("B", args.b, args.repo, work, args.python, log),
    ]
    found = [preflight(rev, chosen, work) for rev in revs]
    broken = {script for f in found for script in f}
    problems = [why for f in found for why in f.values()]
    for p in problems:
        log(f"skipped: {p}")
    runnable = [b for b in chosen if b.script not in broken]

    results: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    failures: list[str] = []
    for r in range(args.rounds):
        for bench in runnable:
            this_round: dict[str, dict[str, float]] = {}
            for rev in revs if r % 2 == 0 else revs[::-1]:
                log(f"round {r + 1}/{args.rounds} {bench.name} {rev.label} ({rev.sha[:12]})")
                log_path = logs / f"{bench.name}-{rev.label}-{r + 1}.txt"
                try:
                    figs = run_bench(rev, bench, work, args.fresh_fs or None, log_path, args.timeout)
                except RuntimeError as e:
                    failures.append(f"round {r + 1} {bench.name} {rev.label}: {e} (log {log_path})")
                    log(f"FAILED: {failures[-1]}")
                    continue
                for f in figs:
                    key = f"{bench.name}: {f.name}"
                    if key not in results:
                        results[key] = {"unit": f.unit, "ref": f.ref, "A": [], "B": [], "pairs": []}
                        order.append(key)
                    results[key][rev.label].append(f.value)
                    this_round.setdefault(key, {})[rev.label] = f.value
            for key, by_rev in this_round.items():
                if len(by_rev) == 2:
                    results[key]["pairs"].append((by_rev["A"], by_rev["B"]))

    elapsed = time.time() - started
    lines = [
        f"A/B of {len(runnable)} benchmark(s), {args.rounds} round(s), profile {args.profile}, "
        f"fresh-fs {args.fresh_fs or 'no'}; {time.strftime('%Y-%m-%d %H:%M', time.gmtime(started))} UTC, "
        f"took {elapsed / 60:.1f} min",
        f"command: {' '.join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)])}",
        *(f"{rev.label} = {rev.sha[:12]} ({rev.spec}): {rev.subject[:90]}" for rev in revs),
        f"load average: {load_start} at the start, {loadavg()} at the end; {os.cpu_count()} cores",
        "",
        *table(results, order),
        "",
        "B/A = median B / median A; paired = median over rounds of B/A within a round (A and B back to back); "
        "[ref] = a reference measured in the same benchmark run (machine noise); note = B's median outside "
        "A's range over the rounds (disjoint: no B round inside it)",
        *summary(results, order),
    ]
    a, b = revs
    for what in sorted(set(a.modules) & set(b.modules)):
        only_b = sorted(set(b.modules[what]) - set(a.modules[what]))
        only_a = sorted(set(a.modules[what]) - set(b.modules[what]))
        if only_a or only_b:
            lines.append(
                f"modules {what} loads: only in B: {' '.join(only_b) or '-'}; only in A: {' '.join(only_a) or '-'}"
            )
    lines += [f"FAILED {f}" for f in failures] + [f"SKIPPED {p}" for p in problems]
    print("\n".join(lines))
    out = work / f"ab-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "revisions": {rev.label: {"spec": rev.spec, "sha": rev.sha, "subject": rev.subject} for rev in revs},
                "rounds": args.rounds,
                "profile": args.profile,
                "results": results,
                "failures": failures,
                "skipped": problems,
                "table": lines,
            },
            indent=1,
        )
    )
    print(f"\nsamples: {out}; logs: {logs}")
    for rev in revs:
        if rev.project:
            shutil.rmtree(rev.project, ignore_errors=True)
    return 1 if failures or problems else 0


if __name__ == "__main__":
    sys.exit(main())
