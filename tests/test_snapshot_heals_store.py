"""A re-snapshot never vouches for a tree the store cannot restore, and `verify --repair
--from DIR` heals lost, quarantined and corrupt blobs from a directory holding the right
bytes (issue 9 item 11; BRIEF section 9.3 and 9.4)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runicorn.store import Store
from tests.assets_helpers import write


def cli(root: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "runicorn", "--storage", str(root), *args], capture_output=True, text=True, timeout=300
    )
    if check is not None:
        assert proc.returncode == check, (args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def workspace(tmp_path: Path, name: str = "ws") -> Path:
    ws = tmp_path / name
    for i in range(5):
        write(ws / f"f{i}.txt", f"{name} file {i}\n" * (50 + i), age=3600)
    write(ws / "sub" / "data.bin", os.urandom(3 << 20), age=3600)  # streamed, not read whole
    write(ws / ".rnignore", "", age=3600)
    os.symlink("f0.txt", ws / "link")
    return ws


def snap(root: Path, ws: Path) -> dict[str, object]:
    import json

    return json.loads(cli(root, "snapshot", str(ws), "--json").stdout)  # type: ignore[no-any-return]


def same_tree(a: Path, b: Path) -> None:
    def listing(top: Path) -> dict[str, bytes]:
        out = {}
        for p in sorted(top.rglob("*")):
            rel = p.relative_to(top).as_posix()
            if p.is_symlink():
                out[rel] = b"->" + os.fsencode(os.readlink(p))
            elif p.is_file():
                out[rel] = p.read_bytes()
        return out

    assert listing(a) == listing(b)


def blob_of(root: Path, data: bytes) -> Path:
    sha = hashlib.sha256(data).hexdigest()
    return root / "archive" / "blobs" / sha[:2] / sha


def damage(path: Path, how: str) -> None:
    """Lose, truncate or flip one byte of a blob file (read-only: made writable first)."""
    os.chmod(path.parent, 0o700)
    if how == "lost":
        path.unlink()
        return
    os.chmod(path, 0o644)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else data[:7] + bytes([data[7] ^ 1]) + data[8:])
    os.chmod(path, 0o444)


def stable_store(tmp_path: Path) -> tuple[Path, Path, str]:
    """A store whose stat cache vouches for every file of the workspace (fast path)."""
    root = tmp_path / "st"
    ws = workspace(tmp_path)
    first = snap(root, ws)
    again = snap(root, ws)
    assert again["files_read"] == 0 and again["tree"] == first["tree"]
    return root, ws, str(first["tree"])


# ---------------------------------------------------------------- the fast path checks the blobs
@pytest.mark.parametrize("victim", ["f3.txt", "sub/data.bin"])
@pytest.mark.parametrize("how", ["lost", "truncated"])
def test_resnapshot_rereads_a_lost_or_resized_blob(tmp_path: Path, victim: str, how: str) -> None:
    root, ws, tree = stable_store(tmp_path)
    damage(blob_of(root, (ws / victim).read_bytes()), how)
    assert not cli(root, "verify", check=None).returncode == 0
    result = snap(root, ws)
    assert result["tree"] == tree
    assert result["files_read"] == 1  # the old fast path said 0 and returned an unrestorable tree
    cli(root, "restore", tree, str(tmp_path / "out"))
    same_tree(ws, tmp_path / "out")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout
    assert snap(root, ws)["files_read"] == 0  # and the fast path is back


def test_resnapshot_rereads_a_blob_quarantined_by_deep_repair(tmp_path: Path) -> None:
    root, ws, tree = stable_store(tmp_path)
    damage(blob_of(root, (ws / "f2.txt").read_bytes()), "flipped")
    repair = cli(root, "verify", "--deep", "--repair", check=1)
    assert "quarantined 1 file(s)" in repair.stdout and "tree_missing_blob" in repair.stdout
    result = snap(root, ws)
    assert result["tree"] == tree and result["files_read"] == 1
    cli(root, "restore", tree, str(tmp_path / "out"))
    same_tree(ws, tmp_path / "out")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout
    with Store(root) as s:  # the healed blob is counted by the tree again: gc keeps it
        assert s.gc(grace_seconds=0)["blobs_deleted"] == 0
        assert s.verify(deep=True)["ok"]


def test_resnapshot_heals_a_lost_symlink_blob(tmp_path: Path) -> None:
    root, ws, tree = stable_store(tmp_path)
    damage(blob_of(root, b"f0.txt"), "lost")
    assert snap(root, ws)["tree"] == tree
    cli(root, "restore", tree, str(tmp_path / "out"))
    same_tree(ws, tmp_path / "out")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout


def vouch_for_as_it_is(store: Store, path: Path) -> None:
    """Make the stat cache row of ``path``'s directory hold the file's lstat fields as
    they are now (keeping the hash it holds): the cache vouches for the old content."""
    from runicorn.snapshot.statcache import STAT_BYTES, pack_stats

    directory = f"{path.parent}/"
    with store.index.write() as c:
        names, stats = c.execute("SELECT names, stats FROM stat_cache_dirs WHERE dir = ?", (directory,)).fetchone()
        k = names.split("/").index(path.name)
        stats = stats[: k * STAT_BYTES] + pack_stats([os.lstat(path)]) + stats[(k + 1) * STAT_BYTES :]
        c.execute("UPDATE stat_cache_dirs SET stats = ? WHERE dir = ?", (stats, directory))


def test_resnapshot_of_a_changed_file_whose_stat_lies_records_what_it_reads(tmp_path: Path) -> None:
    """A re-read is checked against the hash the stat cache promised: bytes that differ
    are a different file (recorded as such), never stored under the old blob's name."""
    root, ws, tree = stable_store(tmp_path)
    victim = ws / "f4.txt"
    old = victim.read_bytes()
    damage(blob_of(root, old), "lost")
    with Store(root) as s:  # the cache row vouches for the old hash; the file now says otherwise
        st = victim.stat()
        new = old.replace(b"ws", b"WS")
        fd = os.open(victim, os.O_WRONLY)
        os.write(fd, new)
        os.close(fd)
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
        vouch_for_as_it_is(s, victim)
    result = snap(root, ws)
    assert result["tree"] != tree and result["files_read"] == 1
    assert not blob_of(root, old).exists()
    assert blob_of(root, new).read_bytes() == new
    cli(root, "restore", str(result["tree"]), str(tmp_path / "out"))
    same_tree(ws, tmp_path / "out")


# ---------------------------------------------------------------- verify --repair --from DIR
def test_verify_repair_from_dir_heals_lost_quarantined_and_corrupt_blobs(tmp_path: Path) -> None:
    root, ws, tree = stable_store(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(ws, copy, symlinks=True)
    damage(blob_of(root, (ws / "f1.txt").read_bytes()), "lost")
    damage(blob_of(root, (ws / "f2.txt").read_bytes()), "flipped")
    cli(root, "verify", "--deep", "--repair", check=1)  # quarantines f2's blob
    damage(blob_of(root, (ws / "sub" / "data.bin").read_bytes()), "flipped")  # corrupt, not yet found
    shutil.rmtree(ws)  # the workspace is gone: only the copy has the bytes
    decoy = tmp_path / "decoys"
    write(decoy / "same-size.txt", (copy / "f1.txt").read_bytes().upper())  # right size, wrong bytes
    proc = cli(root, "verify", "--deep", "--repair", "--from", str(decoy), "--from", str(copy))
    assert "healed 3 of 3 missing blob(s)" in proc.stdout, proc.stdout
    assert proc.stdout.rstrip().endswith("after repair: 0 problem(s)")
    assert not blob_of(root, (copy / "f1.txt").read_bytes().upper()).exists()  # the decoy never entered
    cli(root, "restore", tree, str(tmp_path / "out"))
    same_tree(copy, tmp_path / "out")
    assert "0 problem(s)" in cli(root, "verify", "--deep").stdout


def test_verify_repair_from_a_dir_without_the_bytes_says_what_is_still_missing(tmp_path: Path) -> None:
    root, ws, tree = stable_store(tmp_path)
    lost = blob_of(root, (ws / "f1.txt").read_bytes())
    damage(lost, "lost")
    elsewhere = tmp_path / "elsewhere"
    write(elsewhere / "a.txt", "unrelated\n")
    write(elsewhere / "same-size.txt", (ws / "f1.txt").read_bytes().upper())
    proc = cli(root, "verify", "--repair", "--from", str(elsewhere), check=1)
    assert "healed 0 of 1 missing blob(s)" in proc.stdout
    assert f"1 blob(s) not found there, e.g. {lost.name}" in proc.stdout
    assert "hashed 1 candidate file(s)" in proc.stdout  # only files of a wanted size are read
    assert not lost.exists()


def test_verify_from_needs_repair_and_a_directory(tmp_path: Path) -> None:
    root, ws, _ = stable_store(tmp_path)
    proc = cli(root, "verify", "--from", str(ws), check=1)
    assert proc.stderr.strip() == "error: --from heals blobs during a repair: use it with --repair"
    proc = cli(root, "verify", "--repair", "--from", str(ws / "f1.txt"), check=1)
    assert "is a file" in proc.stderr
    assert "--from DIR" in cli(root, "verify", "--help").stdout


def test_store_api_heals_from_directories(tmp_path: Path) -> None:
    root, ws, tree = stable_store(tmp_path)
    damage(blob_of(root, (ws / "f0.txt").read_bytes()), "lost")
    damage(blob_of(root, (ws / "f4.txt").read_bytes()), "flipped")
    with Store(root) as s:
        report = s.rebuild_index(deep=True, heal_from=[ws])
        assert sorted(report["heal"]["healed"]) == sorted(
            hashlib.sha256((ws / n).read_bytes()).hexdigest() for n in ("f0.txt", "f4.txt")
        )
        assert report["heal"]["still_missing"] == []
        assert s.verify(deep=True)["ok"]
        assert s.heal_blobs([ws])["wanted"] == 0  # nothing left to heal
    cli(root, "restore", tree, str(tmp_path / "out"))
    same_tree(ws, tmp_path / "out")
