#!/usr/bin/env python3
"""Benchmark workspace snapshots, restore and run deletion against sha256sum + cp -r and DVC.

Data: ``benchdata.make_bench_tree`` (10,000 files of 1-8 KiB in 100 directories plus
4 files of 64 MiB, by default).  Everything runs on one filesystem under a temporary
directory, with a warm page cache for every tool alike.  DVC is installed by this
script into its own virtualenv in the temporary directory (``python -m venv`` +
``pip install dvc``) unless ``--dvc`` names an existing ``dvc`` executable or
``--skip-dvc`` is given.

Measured, each repeated ``--repeats`` times (medians printed), every figure beside
its references from the same repeat:

* first snapshot: ``runicorn snapshot`` (CLI, fresh store) vs ``sha256sum`` + ``cp -r``
  over the same files vs ``dvc add`` (fresh repository, fresh caches);
* unchanged re-snapshot: CLI and in-process ``snapshot_workspace`` vs ``dvc add`` again;
* re-snapshot after rewriting 1% of the small files vs ``dvc add`` after the same change;
* restore with ``--link copy`` / ``hardlink`` vs ``cp -r`` vs ``dvc checkout`` (copy / hardlink);
* every measurement starts after ``sync`` (untimed), so no tool pays for another's
  unwritten data; runicorn's snapshot and restore include their own sync (the store is
  durable), ``cp -r`` and DVC do not sync, and the time a ``sync`` after ``cp -r``
  takes is printed beside the reference;
* ``runicorn delete-run`` of a run that is the only owner of the tree (everything is
  freed) vs ``dvc gc -w -f`` with nothing referenced vs ``rm -rf`` of a plain copy.

No files are deleted between timed steps: every repeat writes to directories of its own
(``store_<i>``, ``cp_<i>``, ``restore_copy_<i>``, ``dvc_<i>`` ...; what a step needs
absent is renamed aside), and the three deletions are timed in a last phase, after every
creating step of every repeat, on inputs prepared earlier.  On ext4 without a journal
the inode allocator skips inodes freed in the last minutes, so a step creating many
files right after a bulk deletion would be slowed by what ran before it.  The temporary
directory is removed once, at the end, untimed.

``--fresh-fs SIZE`` (e.g. ``10G``; root only) runs everything on a newly made, journaled
ext4 image loop-mounted inside the temporary directory and removed at the end, so the
figures depend neither on the host filesystem's kind nor on what ran on it before.  The
report names the filesystem used and whether it has a journal, and warns on ext4
without one.  About 8 copies of the data per repeat are kept until the end (6 without
DVC), checked against the free space first: the defaults with ``--repeats 3`` use about
7.5 GiB, so ``--fresh-fs 10G``.

The CLI figures include interpreter start-up (as ``dvc`` does); the in-process figure
is the library call alone.  Snapshots are captured into the store without a zip
(``runicorn snapshot`` without ``--zip``); ``--zip`` timing is printed separately.

Usage: python tools/bench/bench_snapshot.py [--repeats 3] [--small-files 10000] ...
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchdata import make_bench_tree, rewrite_fraction  # noqa: E402
from benchfs import describe, fresh_fs  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(REPO), DVC_NO_ANALYTICS="1", RUNICORN_DIR="")
# Measure both tools as installed, with their bytecode cached (pip compiles DVC's in its
# virtualenv): with PYTHONDONTWRITEBYTECODE set, every CLI run would recompile runicorn.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)


def run(cmd: list[str] | str, *, cwd: Path | None = None, shell: bool = False) -> str:
    proc = subprocess.run(cmd, cwd=cwd, shell=shell, env=ENV, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {cmd}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    # Start every measurement with no dirty pages pending: runicorn syncs what it
    # stores (one syncfs), and without this it would also pay for flushing whatever
    # the previous step (or anything else on the machine) left unwritten.
    os.sync()
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def rn_cli(store: Path, *args: str) -> str:
    return run([sys.executable, "-m", "runicorn", "--storage", str(store), *args])


def install_dvc(tmp: Path) -> str:
    venv = tmp / "dvc-venv"
    print(f"installing dvc into {venv} ...", flush=True)
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", "dvc"])
    dvc = str(venv / "bin" / "dvc")
    print("dvc", run([dvc, "--version"]).strip(), flush=True)
    return dvc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--small-files", type=int, default=10_000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--big-files", type=int, default=4)
    ap.add_argument("--big-size", type=int, default=64 << 20)
    ap.add_argument("--tmp", type=Path, default=None, help="where to work (default: a new temp dir)")
    ap.add_argument("--fresh-fs", metavar="SIZE", default=None,
                    help="measure on a new journaled ext4 image of SIZE (e.g. 10G), loop-mounted in the "
                         "temp dir and removed at the end (needs root)")
    ap.add_argument("--dvc", default=None, help="an existing dvc executable (default: install one)")
    ap.add_argument("--skip-dvc", action="store_true")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (with --fresh-fs: its image file, unmounted)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rn-bench-snapshot-", dir=args.tmp))
    try:
        if args.fresh_fs:
            with fresh_fs(tmp, args.fresh_fs, keep_image=args.keep) as work:
                bench(args, work, tmp)
        else:
            bench(args, tmp, tmp)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def disk_bytes(root: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


def bench(args: argparse.Namespace, work: Path, tmp: Path) -> None:
    """Measure in ``work``; ``tmp`` (outside a fresh filesystem) holds an installed DVC."""
    fs_lines = describe(work, fresh=bool(args.fresh_fs))
    print("\n".join(fs_lines), flush=True)
    dvc = None if args.skip_dvc else (args.dvc or install_dvc(tmp))
    ws = work / "ws"
    t_gen, info = timed(lambda: make_bench_tree(ws, args.small_files, args.dirs, args.big_files,
                                                args.big_size))
    (ws / ".rnignore").write_text("# nothing excluded\n")  # same file set for every tool
    print(f"data: {info['files']} files, {info['bytes'] / 2**20:.1f} MiB (generated in {t_gen:.1f} s)")
    # Nothing is deleted before the last phase, so every repeat's copies stay: check
    # they fit rather than fail half-way.
    copy = disk_bytes(ws)
    need = copy * (8 if dvc else 6) * args.repeats
    free = shutil.disk_usage(work).free
    if need > free:
        raise SystemExit(f"not enough space in {work}: about {need / 2**30:.1f} GiB needed "
                         f"({args.repeats} repeats), {free / 2**30:.1f} GiB free"
                         + (" (use a larger --fresh-fs)" if args.fresh_fs else ""))
    used_before = shutil.disk_usage(work).used
    # Files modified within the racy window are re-read on purpose; a real workspace's
    # files are older than that, so wait it out once.
    time.sleep(2.1)

    import runicorn
    import runicorn.assets.snapshot as snapshot_mod
    from runicorn.store.store import forget_open_stores

    R: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        R.setdefault(key, []).append(value)

    # Inputs of the deletion phase, per repeat: (store, run id, plain copy, DVC project).
    to_delete: list[tuple[Path, str, Path, Path]] = []
    for i in range(args.repeats):
        print(f"repeat {i + 1}/{args.repeats}", flush=True)
        store = work / f"store_{i}"
        # --- first snapshot
        t, out = timed(lambda: rn_cli(store, "snapshot", str(ws), "--json"))
        add("first.rn", t)
        tree = json.loads(out)["tree"]
        t, _ = timed(lambda: run(f"find '{ws}' -type f -print0 | xargs -0 sha256sum > /dev/null", shell=True))
        add("first.sha256sum", t)
        cp_dst = work / f"cp_{i}"
        t, _ = timed(lambda: run(["cp", "-r", str(ws), str(cp_dst)]))
        add("first.cp", t)
        add("first.ref", R["first.sha256sum"][-1] + R["first.cp"][-1])
        t = time.perf_counter()
        os.sync()  # what making cp's copy durable would add (runicorn's figure includes it)
        add("first.cp_flush", time.perf_counter() - t)
        add("first.ref_durable", R["first.ref"][-1] + R["first.cp_flush"][-1])
        # --- unchanged
        t, out = timed(lambda: rn_cli(store, "snapshot", str(ws), "--json"))
        add("unchanged.rn_cli", t)
        assert json.loads(out)["tree"] == tree and json.loads(out)["files_read"] == 0, out
        t, res = timed(lambda: runicorn.snapshot_workspace(ws, None, storage=store))
        add("unchanged.rn_api", t)
        assert res["tree"] == tree
        # The same with the check that every blob is still stored (one stat per blob)
        # bypassed: the reference that shows what the check costs.
        checked = snapshot_mod._blob_files_intact
        snapshot_mod._blob_files_intact = lambda *a: True
        try:
            t, res = timed(lambda: runicorn.snapshot_workspace(ws, None, storage=store))
        finally:
            snapshot_mod._blob_files_intact = checked
        add("unchanged.rn_api_nocheck", t)
        assert res["tree"] == tree
        # --- zip (reported apart; the archive stays until the end)
        t, _ = timed(lambda: rn_cli(store, "snapshot", str(ws), "--zip", str(work / f"snap_{i}.zip")))
        add("zip.rn_cli", t)
        # --- DVC add (first, unchanged)
        proj = work / f"dvc_{i}"
        if dvc:
            proj.mkdir()
            # cp -r's copy above is the project's data (a rename: no second copy on disk).
            os.rename(cp_dst, proj / "data")
            run([dvc, "init", "--no-scm", "-q"], cwd=proj)
            run([dvc, "config", "core.analytics", "false"], cwd=proj)
            run([dvc, "config", "core.site_cache_dir", str(proj / ".site-cache")], cwd=proj)
            time.sleep(2.1)  # same racy-window courtesy as above
            t, _ = timed(lambda: run([dvc, "add", "-q", "data"], cwd=proj))
            add("first.dvc", t)
            t, _ = timed(lambda: run([dvc, "add", "-q", "data"], cwd=proj))
            add("unchanged.dvc", t)
        # --- 1% change
        n = rewrite_fraction(ws, 0.01, args.small_files, args.dirs, seed=100 + i)
        t, out = timed(lambda: rn_cli(store, "snapshot", str(ws), "--json"))
        add("change1.rn_cli", t)
        changed = json.loads(out)
        assert changed["files_read"] >= n, changed
        tree = changed["tree"]
        if dvc:
            rewrite_fraction(proj / "data", 0.01, args.small_files, args.dirs, seed=100 + i)
            t, _ = timed(lambda: run([dvc, "add", "-q", "data"], cwd=proj))
            add("change1.dvc", t)
        # --- restore
        for mode in ("copy", "hardlink"):
            target = work / f"restore_{mode}_{i}"
            t, _ = timed(lambda: rn_cli(store, "restore", tree, str(target), "--link", mode))
            add(f"restore_{mode}.rn", t)
        plain = work / f"cp_restore_{i}"
        t, _ = timed(lambda: run(["cp", "-r", str(ws), str(plain)]))
        add("restore.cp", t)
        t = time.perf_counter()
        os.sync()  # what making cp's copy durable would add (runicorn's restore includes it)
        add("restore.cp_durable", R["restore.cp"][-1] + time.perf_counter() - t)
        if dvc:
            for mode in ("copy", "hardlink"):
                run([dvc, "config", "cache.type", mode], cwd=proj)
                # Out of the project (dvc would walk it there), not deleted.
                os.rename(proj / "data", work / f"dvc_{i}_data_before_{mode}")
                t, _ = timed(lambda: run([dvc, "checkout", "-q"], cwd=proj))
                add(f"restore_{mode}.dvc", t)
        # --- delete-run + gc, prepared: a fresh store where one run owns everything
        store2 = work / f"store_del_{i}"
        forget_open_stores()
        r = runicorn.init(path="bench/delete", storage=store2, snapshot_code=True, workspace_root=ws)
        r.finish()
        forget_open_stores()
        to_delete.append((store2, r.run_id, plain, proj))

    print(f"space taken on the filesystem since the data was made (by anything): "
          f"{(shutil.disk_usage(work).used - used_before) / 2**30:.2f} GiB; "
          f"estimated for the benchmark: {need / 2**30:.2f} GiB", flush=True)
    # --- deletion phase: nothing timed creates files after this
    for i, (store2, run_id, plain, proj) in enumerate(to_delete):
        print(f"deletions {i + 1}/{args.repeats}", flush=True)
        t, out = timed(lambda: rn_cli(store2, "delete-run", run_id, "--json"))
        add("delete.rn", t)
        deleted = json.loads(out)
        assert deleted["blobs_deleted"] >= info["files"] - 10, deleted
        t, _ = timed(lambda: run(["rm", "-rf", str(plain)]))
        add("delete.rm", t)
        if dvc:
            (proj / "data.dvc").unlink()
            t, _ = timed(lambda: run([dvc, "gc", "-w", "-f", "-q"], cwd=proj))
            add("delete.dvc", t)

    report(R, dvc is not None, fs_lines)


def report(R: dict[str, list[float]], have_dvc: bool, fs_lines: list[str]) -> None:
    med = {k: statistics.median(v) for k, v in R.items()}

    def row(label: str, ours: str, ref: str | None, goal: str = "", check: Callable[[float], bool] | None = None) -> None:
        o = med[ours]
        if ref is None or ref not in med:
            print(f"{label:<38} {o:8.3f} s")
            return
        r = med[ref]
        ratio = o / r if r else float("inf")
        # Each repeat runs both sides back to back, so the median of per-repeat ratios
        # is the figure least disturbed by a noisy machine.
        paired = statistics.median(a / b for a, b in zip(R[ours], R[ref]) if b)
        verdict = ("PASS" if check(paired) else "FAIL") if check else ""
        print(f"{label:<38} {o:8.3f} s  vs {ref:<18} {r:8.3f} s  ratio {ratio:5.2f} "
              f"(paired {paired:5.2f})  {goal} {verdict}")

    print()
    print("\n".join(fs_lines))
    print("medians (seconds); ratio = runicorn / reference (of medians, and median of per-repeat ratios)")
    row("first snapshot (CLI)", "first.rn", "first.ref", "goal <= 1.3", lambda x: x <= 1.3)
    print(f"{'':<38} (reference = sha256sum {med['first.sha256sum']:.3f} s + cp -r {med['first.cp']:.3f} s; "
          f"a sync after cp -r would add {med['first.cp_flush']:.3f} s)")
    row("first snapshot (CLI)", "first.rn", "first.ref_durable")
    print(f"{'':<38} (durable reference: the same plus the sync after cp -r; runicorn syncs before it records)")
    if have_dvc:
        row("first snapshot (CLI)", "first.rn", "first.dvc", "goal <= 0.25 (4x faster)", lambda x: x <= 0.25)
    row("unchanged re-snapshot (API)", "unchanged.rn_api", None)
    print(f"{'':<38} goal <= 0.3 s: {'PASS' if med['unchanged.rn_api'] <= 0.3 else 'FAIL'}")
    row("unchanged re-snapshot (API)", "unchanged.rn_api", "unchanged.rn_api_nocheck")
    print(f"{'':<38} (reference: the same with the check that every blob is stored bypassed)")
    row("unchanged re-snapshot (CLI)", "unchanged.rn_cli", None)
    if have_dvc:
        row("unchanged re-snapshot (CLI)", "unchanged.rn_cli", "unchanged.dvc", "goal <= 0.2 (5x faster)",
            lambda x: x <= 0.2)
        row("re-snapshot after 1% change (CLI)", "change1.rn_cli", "change1.dvc")
    else:
        row("re-snapshot after 1% change (CLI)", "change1.rn_cli", None)
    row("snapshot with --zip, unchanged (CLI)", "zip.rn_cli", None)
    row("restore --link copy (CLI)", "restore_copy.rn", "restore.cp", "goal <= 1.3", lambda x: x <= 1.3)
    row("restore --link copy (CLI)", "restore_copy.rn", "restore.cp_durable")
    print(f"{'':<38} (durable reference: cp -r plus a sync; runicorn syncs before it renames the tree into place)")
    row("restore --link hardlink (CLI)", "restore_hardlink.rn", "restore.cp")
    if have_dvc:
        row("restore --link copy (CLI)", "restore_copy.rn", "restore_copy.dvc")
        row("restore --link hardlink (CLI)", "restore_hardlink.rn", "restore_copy.dvc",
            "goal <= 0.33 (3x faster)", lambda x: x <= 1 / 3)
        row("restore --link hardlink (CLI)", "restore_hardlink.rn", "restore_hardlink.dvc")
    row("delete-run + gc (CLI)", "delete.rn", "delete.rm")
    if have_dvc:
        row("delete-run + gc (CLI)", "delete.rn", "delete.dvc")
    print("\nall samples:", json.dumps({k: [round(x, 3) for x in v] for k, v in R.items()}))


if __name__ == "__main__":
    main()
