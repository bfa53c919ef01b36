"""ManifestGenerator and ``runicorn generate-manifest``: discovery, revisions, atomicity."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from runicorn.cli import main
from runicorn.hashing import sha256_bytes
from runicorn.sync.manifest import ManifestType
from runicorn.sync.manifest_schema import validate_manifest_dict
from runicorn.sync.server.generator import ManifestGenerator
from runicorn.sync.server.generator import STATE_NAME
from tools.testbed.run_trees import make_tree


def _load(path: Path) -> dict:
    return json.loads(path.read_bytes())


def test_discovers_runs_files_and_priorities(tmp_path: Path) -> None:
    make_tree(tmp_path, 4)
    # Not runs: too shallow, hidden, bad run id.
    (tmp_path / "p" / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "p" / "runs" / "r1" / "meta.json").write_text("{}")
    (tmp_path / ".hidden" / "e" / "runs" / "r2").mkdir(parents=True)
    (tmp_path / ".hidden" / "e" / "runs" / "r2" / "meta.json").write_text("{}")
    gen = ManifestGenerator(tmp_path)
    manifest, path = gen.generate()
    assert path == tmp_path / ".runicorn" / "full_manifest.json"
    assert manifest.total_experiments == 4
    names = sorted((e.project, e.name) for e in manifest.experiments)
    assert ("proj0", "group/sub0") in names and ("proj1", "exp1") in names
    doc = _load(path)
    validate_manifest_dict(doc)
    with gzip.open(str(path) + ".gz") as f:
        assert json.loads(f.read()) == doc
    exp = manifest.experiments[0]
    assert exp.status == "running" and exp.tags == ["t"]
    by = {f.path.rsplit("/runs/", 1)[1].split("/", 1)[1]: f for f in exp.files}
    assert by["meta.json"].priority == 1 and by["status.json"].priority == 1
    assert by["summary.json"].priority == 2
    assert by["logs.txt"].priority == 3 and by["events.jsonl"].is_append_only
    assert by["media/img0.png"].priority == 4 and not by["media/img0.png"].is_append_only
    full = tmp_path / by["logs.txt"].path
    assert by["logs.txt"].tail_hash == sha256_bytes(full.read_bytes()[-4096:])
    assert doc["statistics"]["total_files"] == manifest.total_files == 4 * 7


def test_revision_unchanged_then_increases(tmp_path: Path) -> None:
    runs = make_tree(tmp_path, 3)
    gen = ManifestGenerator(tmp_path)
    m1, p = gen.generate()
    m2, _ = ManifestGenerator(tmp_path).generate()  # a fresh process-like instance
    assert (m2.revision, m2.snapshot_id) == (m1.revision, m1.snapshot_id)
    assert gen.runs_rescanned == 3
    with open(runs[1] / "logs.txt", "ab") as f:
        f.write(b"more\n")
    g3 = ManifestGenerator(tmp_path)
    m3, _ = g3.generate()
    assert m3.revision == m1.revision + 1 and m3.snapshot_id != m1.snapshot_id
    assert g3.runs_rescanned == 1  # incremental: only the changed run was re-read
    g4 = ManifestGenerator(tmp_path, incremental=False)
    m4, _ = g4.generate()
    assert g4.runs_rescanned == 3 and m4.revision == m3.revision


def test_crash_between_manifest_and_state_keeps_revision_monotonic(tmp_path: Path) -> None:
    runs = make_tree(tmp_path, 2)
    gen = ManifestGenerator(tmp_path)
    m1, _ = gen.generate()
    state_path = tmp_path / ".runicorn" / STATE_NAME
    old_state = state_path.read_bytes()
    (runs[0] / "status.json").write_text('{"status": "finished"}')
    m2, _ = gen.generate()
    assert m2.revision == m1.revision + 1
    state_path.write_bytes(old_state)  # as if we crashed before the state was written
    m3, _ = gen.generate()
    assert m3.revision == m2.revision  # same content as on disk: not bumped, not reused
    state_path.unlink()
    (runs[1] / "status.json").write_text('{"status": "failed"}')
    m4, _ = gen.generate()
    assert m4.revision == m2.revision + 1


def test_full_and_active_are_separate(tmp_path: Path) -> None:
    runs = make_tree(tmp_path, 3)
    old = time.time() - 7200
    for rd in runs[1:]:
        (rd / "status.json").write_text('{"status": "finished"}')
        for f in rd.rglob("*"):
            os.utime(f, (old, old))
    gen = ManifestGenerator(tmp_path, active_window_seconds=3600)
    full, fp = gen.generate(ManifestType.FULL)
    active, ap = gen.generate(ManifestType.ACTIVE)
    assert fp.name == "full_manifest.json" and ap.name == "active_manifest.json"
    assert full.total_experiments == 3 and active.total_experiments == 1
    assert _load(ap)["manifest_type"] == "active" and _load(fp)["manifest_type"] == "full"


def test_custom_output_path(tmp_path: Path) -> None:
    make_tree(tmp_path / "root", 1)
    out = tmp_path / "out" / "m.json"
    out.parent.mkdir()
    m, p = ManifestGenerator(tmp_path / "root").generate(output_path=out)
    assert p == out and out.exists() and Path(str(out) + ".gz").exists()


def test_concurrent_generators_never_reuse_a_revision(tmp_path: Path) -> None:
    runs = make_tree(tmp_path, 2)
    code = (
        "import sys; from pathlib import Path; from runicorn.manifest import ManifestGenerator;"
        "m,_=ManifestGenerator(Path(sys.argv[1])).generate(); print(m.revision, m.snapshot_id)"
    )
    seen = {}
    for round_ in range(3):
        (runs[0] / "status.json").write_text(json.dumps({"status": f"s{round_}"}))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
            )
            for _ in range(3)
        ]
        for p in procs:
            rev, snap = p.communicate(timeout=60)[0].split()
            assert seen.setdefault(int(rev), snap) == snap  # one snapshot per revision
    assert max(seen) == len(seen)  # one new revision per content change, no gaps


def test_cli_generate_manifest(tmp_path: Path) -> None:
    make_tree(tmp_path, 2)
    res = CliRunner().invoke(main, ["generate-manifest", "--root", str(tmp_path), "--verbose"])
    assert res.exit_code == 0, res.output
    for label in (
        "Manifest Generation Complete",
        "Type:          full",
        "Revision:      1",
        "Experiments:   2",
        "Files:         14",
        "Compressed:",
    ):
        assert label in res.output
    res = CliRunner().invoke(
        main, ["generate-manifest", "--root", str(tmp_path), "--active", "--active-window", "60", "--no-incremental"]
    )
    assert res.exit_code == 0 and "Type:          active" in res.output
    res = CliRunner().invoke(main, ["generate-manifest", "--root", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not a directory" in res.output


def test_cli_interrupted_exits_130(tmp_path: Path, monkeypatch: Any) -> None:
    def boom(self: Any, *a: Any, **k: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ManifestGenerator, "generate", boom)
    res = CliRunner().invoke(main, ["generate-manifest", "--root", str(tmp_path)])
    assert res.exit_code == 130


def test_cli_skips_what_the_format_cannot_represent(tmp_path: Path) -> None:
    """One unrepresentable file or run never fails the whole root: it is skipped with a
    warning naming the real server path, and the summary counts it."""
    root = tmp_path / "root"
    make_tree(root, 2)
    run = sorted(root.glob("*/**/runs/*"))[0]
    (run / "weird\\name.txt").write_text("w")
    (run / "bad\nname").write_text("b")
    (run / "old.txt").write_text("o")
    os.utime(run / "old.txt", (-10, -10))  # before 1970: outside the format's mtime range
    odd = root / "odd\\proj" / "exp" / "runs" / "r1"
    odd.mkdir(parents=True)
    (odd / "meta.json").write_text("{}")
    good = sum(1 for p in root.rglob("*") if p.is_file() and ".runicorn" not in p.parts) - 4

    def gen(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "runicorn", "generate-manifest", "--root", str(root), *extra],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[1],
        )

    res = gen()
    assert res.returncode == 0, res.stderr
    doc = _load(root / ".runicorn" / "full_manifest.json")
    validate_manifest_dict(doc)
    listed = [f["path"] for e in doc["experiments"] for f in e["files"]]
    assert len(listed) == good and not any("name" in p or "old.txt" in p for p in listed)
    assert not any(e["project"] == "odd\\proj" for e in doc["experiments"])
    for real in (run / "weird\\name.txt", run / "bad\nname", run / "old.txt", odd):
        assert repr(str(real)) in res.stderr, res.stderr
    assert "backslash" in res.stderr and "newline" in res.stderr and "mtime" in res.stderr
    assert "Skipped:       1 runs, 3 files" in res.stdout
    # Incremental run reusing the scan cache: same manifest, same report; --verbose lists.
    res = gen("--verbose")
    assert res.returncode == 0, res.stderr
    assert _load(root / ".runicorn" / "full_manifest.json")["revision"] == doc["revision"]
    assert "Skipped:       1 runs, 3 files" in res.stdout
    weird = str(run / "weird\\name.txt")
    assert f"skipped file {weird!r}" in res.stdout
    assert f"skipped run  {str(odd)!r}" in res.stdout
