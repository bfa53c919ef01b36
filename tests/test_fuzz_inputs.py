"""Seeded fuzzing of hostile inputs (issue 15): archives, restore manifests, sync manifests
and Runicorn.toml files.

For every case: only the project's own errors (``RunicornError``) and, through the CLI, a
clean exit 1 with one line on stderr; nothing is written outside the case's roots; the
store verifies clean afterwards.  Deterministic (``RUNICORN_FUZZ_SEED``, default 15) and
bounded: fixed case counts, each section also stops starting cases after its time share
so the whole file stays well under a minute on a slow CI machine (never asserted on).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import random
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from runicorn.errors import RunicornError
from runicorn.store import Store

SEED = int(os.environ.get("RUNICORN_FUZZ_SEED", "15"))
pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # zips with repeated names, on purpose
SECTION_SECONDS = 12.0  # per section; four sections


def _cases(n: int) -> Iterator[tuple[int, random.Random]]:
    """``n`` seeded cases, fewer if the section's time share runs out first."""
    start = time.monotonic()
    for i in range(n):
        if time.monotonic() - start > SECTION_SECONDS:
            return
        yield i, random.Random(f"{SEED}-{i}")


def _own_error_or_success(fn: Callable[[], Any], what: str) -> Any:
    """Run ``fn``; a RunicornError is an accepted refusal, anything else fails the test."""
    try:
        return fn()
    except RunicornError:
        return None
    except BaseException as exc:  # noqa: BLE001 - the point is to catch everything else
        raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _files_outside(tmp_path: Path, allowed: list[Path]) -> list[Path]:
    """Every non-directory under ``tmp_path`` that is not inside an allowed root."""
    out = []
    for dirpath, dirnames, filenames in os.walk(tmp_path):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if not any(d / n == a for a in allowed)]
        for n in filenames + [n for n in dirnames if (d / n).is_symlink()]:
            out.append(d / n)
    return out


def _assert_clean(store: Store, what: str) -> None:
    report = store.verify()
    assert report["ok"], (what, report["problems"])


# ---------------------------------------------------------------- hostile names, links, sizes
def _name(rng: random.Random, outside: Path) -> str:
    parts = ["a", "b", "c d", "é", "..", ".", "", "sub", "x" * 300, "back\\slash", "f.txt", "new\nline"]
    roll = rng.random()
    if roll < 0.05:
        return "/".join(["d"] * rng.choice([300, 2000])) + "/f"
    if roll < 0.12:
        return str(outside / "abs-escape")
    if roll < 0.16:
        return "/" + rng.choice(parts)
    return "/".join(rng.choice(parts) for _ in range(rng.randint(1, 4))) or "a"


def _link_target(rng: random.Random, outside: Path) -> str:
    return rng.choice(
        ["a", "sub/f.txt", "..", "../outside", "../../..", str(outside), "b/../../x", "", "/etc/passwd", "é", "d/" * 50]
    )


def _payload(rng: random.Random) -> bytes:
    return rng.choice([b"", b"alpha\n", rng.randbytes(rng.randint(1, 3000)), b"\0" * 5000])


# ---------------------------------------------------------------- archives
def _tar_bytes(rng: random.Random, outside: Path) -> bytes:
    raw = io.BytesIO()
    fmt = rng.choice([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tf:
        for _ in range(rng.randint(0, 6)):
            name = _name(rng, outside)
            kind = rng.choices(["file", "dir", "sym", "hard", "fifo", "chr"], [6, 2, 3, 2, 1, 1])[0]
            ti = tarfile.TarInfo(name)
            ti.mode = rng.choice([0o644, 0o755, 0o4755, 0o000, 0o777])
            data = b""
            if kind == "file":
                data = _payload(rng)
                ti.size = len(data)
            elif kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, _link_target(rng, outside)
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, rng.choice([_link_target(rng, outside), name])
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            else:
                ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            try:
                tf.addfile(ti, io.BytesIO(data) if kind == "file" else None)
            except (ValueError, UnicodeError):
                continue  # a name this tar format cannot even hold
    data = raw.getvalue()
    comp = rng.choice(["", "gz", "bz2", "xz"])
    if comp == "gz":
        data = gzip.compress(data, mtime=0)
    elif comp == "bz2":
        data = bz2.compress(data)
    elif comp == "xz":
        data = lzma.compress(data)
    return data


def _zip_bytes(rng: random.Random, outside: Path) -> bytes:
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", compression=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as zf:
        for _ in range(rng.randint(0, 6)):
            name = _name(rng, outside)
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.create_system = 3
            kind = rng.choices(["file", "dir", "sym"], [6, 2, 3])[0]
            if kind == "sym":
                zi.external_attr = (0o120777) << 16
                data = _link_target(rng, outside).encode()
            elif kind == "dir":
                zi.filename = name.rstrip("/") + "/"
                zi.external_attr = (0o40755 << 16) | 0x10
                data = b""
            else:
                zi.external_attr = rng.choice([0o100644, 0o100755, 0o010644]) << 16
                data = _payload(rng)
            try:
                zf.writestr(zi, data)
            except (ValueError, UnicodeError):
                continue
    return raw.getvalue()


def _damage(rng: random.Random, data: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.15 and data:
        return data[: rng.randint(0, len(data) - 1)]  # truncated
    if roll < 0.3 and data:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    return data


def test_fuzz_archives(tmp_path: Path) -> None:
    from runicorn.artifacts.extract import extract_into_store

    store_root, work, outside = tmp_path / "store", tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    outside.mkdir()
    seen = 0
    with Store(store_root) as store:
        for i, rng in _cases(400):
            seen += 1
            zipped = rng.random() < 0.35
            data = _damage(rng, _zip_bytes(rng, outside) if zipped else _tar_bytes(rng, outside))
            archive = work / f"case{i}.{rng.choice(['zip', 'tar', 'tar.gz', 'tgz', 'bin'])}"
            archive.write_bytes(data)
            got = _own_error_or_success(lambda: extract_into_store(store, archive), f"archive case {i}")
            if got is not None and got.entries and rng.random() < 0.5:
                # Accepted content can become a tree, like bind does.
                _own_error_or_success(lambda: store.put_tree(got.entries, source=str(archive)), f"tree {i}")
            _assert_clean(store, f"archive case {i}")
    assert seen >= 10
    assert list(outside.iterdir()) == []
    assert _files_outside(tmp_path, [store_root, work]) == []


def test_fuzz_archives_through_the_cli(tmp_path: Path) -> None:
    """A few of the same archives bound by ``runicorn bind``, as a user would."""
    store_root, work, outside = tmp_path / "store", tmp_path / "work", tmp_path / "outside"
    proj = tmp_path / "proj"
    for d in (work, outside, proj):
        d.mkdir()
    env = dict(os.environ, RUNICORN_DIR=str(store_root))
    for i, rng in _cases(6):
        data = _damage(rng, _zip_bytes(rng, outside) if i % 2 else _tar_bytes(rng, outside))
        archive = work / f"case{i}.{'zip' if i % 2 else 'tar'}"
        archive.write_bytes(data)
        r = subprocess.run(
            [sys.executable, "-m", "runicorn", "bind", f"a{i}", str(archive)],
            cwd=proj,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
        assert r.returncode in (0, 1), r.stderr
        assert "Traceback" not in r.stderr, r.stderr
        if r.returncode == 1:
            assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: "), r.stderr
    assert list(outside.iterdir()) == []
    # bind writes the project's Runicorn.toml (and its lock file) and nothing else there.
    assert {p.name for p in _files_outside(tmp_path, [store_root, work]) if p.parent == proj} <= {
        "Runicorn.toml",
        ".Runicorn.toml.lock",
    }
    assert [p for p in _files_outside(tmp_path, [store_root, work]) if p.parent != proj] == []
    with Store(store_root) as store:
        _assert_clean(store, "cli archives")


# ---------------------------------------------------------------- restore manifests
def test_fuzz_restore_manifests(tmp_path: Path) -> None:
    from runicorn.assets.restore import restore_from_manifest
    from runicorn.hashing import sha256_bytes
    from runicorn.store.tree_format import TreeEntry, build_manifest, manifest_bytes, tree_id_of

    store_root, work, out, outside = tmp_path / "store", tmp_path / "work", tmp_path / "out", tmp_path / "outside"
    for d in (work, out, outside):
        d.mkdir()
    with Store(store_root) as store:
        contents = [b"alpha\n", b"", b"../outside", str(outside).encode(), b"../../..", b"sub", os.urandom(4000)]
        known = []
        for c in contents:
            info = store.ingest_bytes(c)
            known.append((info.sha256, info.size))
        keeper = store.put_tree({f"k{j}": TreeEntry(sha, "100644", size) for j, (sha, size) in enumerate(known)})
        store.pin(keeper)  # the blobs stay referenced: every case restores from a clean store
        for i, rng in _cases(400):
            entries: dict[str, TreeEntry] = {}
            for _ in range(rng.randint(0, 6)):
                sha, size = rng.choice(known) if rng.random() < 0.85 else (sha256_bytes(rng.randbytes(8)), 8)
                if rng.random() < 0.1:
                    size += rng.choice([-1, 1, 1 << 40])
                mode = rng.choices(["100644", "100755", "120000", "040000", "777"], [5, 2, 3, 1, 1])[0]
                entries[_name(rng, outside)] = TreeEntry(sha, mode, size)
            try:
                tree = tree_id_of([(p, e.mode, e.sha256) for p, e in entries.items()])
            except Exception:  # noqa: BLE001 - a name the tree-id rule refuses: use any id
                tree = sha256_bytes(b"%d" % i)
            if rng.random() < 0.1:
                tree = sha256_bytes(b"wrong")
            doc = build_manifest(tree, entries)
            roll = rng.random()
            if roll < 0.1:
                doc.pop(rng.choice(sorted(doc)))
            elif roll < 0.2:
                doc[rng.choice(sorted(doc))] = rng.choice([None, 1, "x", [], {}, -1, 1e308])
            try:
                raw = manifest_bytes(doc)
            except Exception:  # noqa: BLE001 - not serialisable canonically: plain JSON then
                raw = json.dumps(doc, default=str).encode("utf-8", "surrogateescape")
            if rng.random() < 0.1:
                raw = _damage(rng, raw)
            manifest = work / f"m{i}.json"
            manifest.write_bytes(raw)
            target = out / f"t{i}"
            if rng.random() < 0.15:
                target.mkdir()
                (target / "existing").write_text("keep me\n")
            link = rng.choice(["copy", "hardlink", "auto"])
            overwrite = rng.random() < 0.3
            _own_error_or_success(
                lambda: restore_from_manifest(manifest, store.blobs_dir, target, overwrite=overwrite, link=link),
                f"restore case {i}",
            )
            _assert_clean(store, f"restore case {i}")
    assert list(outside.iterdir()) == []
    assert _files_outside(tmp_path, [store_root, work, out]) == []
    # Nothing restored writes through a link to outside the target either.
    for p in out.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert os.path.realpath(p).startswith(str(out) + os.sep), p


# ---------------------------------------------------------------- sync manifests
def _sync_doc(rng: random.Random, base: dict[str, Any], outside: Path) -> dict[str, Any]:
    doc = json.loads(json.dumps(base))
    doc["revision"] = doc.get("revision", 0) + 1 + rng.randint(0, 3)
    for _ in range(rng.randint(1, 4)):
        exps = doc.get("experiments")
        exp = rng.choice(exps) if isinstance(exps, list) and exps else None
        roll = rng.random()
        if not isinstance(exp, dict) or not isinstance(exp.get("files"), list) or roll < 0.1:
            doc[rng.choice(sorted(doc))] = rng.choice([None, 1, "x", [], {}, -1, "1.0\n"])
        elif roll < 0.3:
            exp[rng.choice(["run_id", "project", "name"])] = rng.choice(
                ["..", ".hidden", "a/b", "x\n", "ok", "archive", "r" * 129, str(outside), ""]
            )
        elif roll < 0.7 and exp["files"]:
            f = rng.choice(exp["files"])
            run = "{project}/{name}/runs/{run_id}".format(**exp)
            f = dict(f) if not isinstance(f, dict) else f
            f["path"] = rng.choice(
                [
                    f"{run}/../../../escape",
                    str(outside / "x"),
                    f"{run}/ok.txt",
                    f"{run}//x",
                    f"{run}/a\\b",
                    f"{run}/" + "/".join(["d"] * 300),
                    f"{run}/{_name(rng, outside)}",
                ]
            )
            if rng.random() < 0.3:
                f["size"] = rng.choice([-1, 1 << 62, 0, "1", None])
        elif roll < 0.85 and exp["files"]:
            exp["files"].append(dict(rng.choice(exp["files"])))  # a duplicate
        else:
            exps.append(json.loads(json.dumps(exp)))  # type: ignore[union-attr]
    return doc


def test_fuzz_sync_manifests(tmp_path: Path, conn: Any) -> None:
    """Many decoded and path-checked in process, some through a real sync over SFTP."""
    from runicorn.sync.server.generator import ManifestGenerator
    from runicorn.sync.manifest import SyncManifest
    from runicorn.sync.client.manifest_client import ManifestSyncClient, check_manifest_paths, decode_manifest
    from tools.testbed.run_trees import make_tree

    server, outside, caches = tmp_path / "server", tmp_path / "outside", tmp_path / "caches"
    outside.mkdir()
    caches.mkdir()
    make_tree(server, 3)
    ManifestGenerator(server).generate()
    manifest_file = server / ".runicorn" / "full_manifest.json"
    base = json.loads(manifest_file.read_bytes())
    (server / ".runicorn" / "full_manifest.json.gz").unlink(missing_ok=True)
    sftp = conn.open_sftp()
    for i, rng in _cases(400):
        doc = _sync_doc(rng, base, outside)
        raw = json.dumps(doc).encode()
        gz = rng.random() < 0.3
        if rng.random() < 0.1:
            raw = _damage(rng, raw)
        wire = gzip.compress(raw) if gz else raw

        def decode_and_map() -> None:
            parsed = decode_manifest(wire, gz)
            manifest = SyncManifest.from_dict(parsed)
            cache = caches / f"c{i}"
            paths = check_manifest_paths(manifest, cache)
            for exp in manifest.experiments:
                for fe in exp.files:
                    assert str(paths(fe.path)).startswith(str(cache) + os.sep), fe.path

        _own_error_or_success(decode_and_map, f"sync manifest case {i}")
        if i % 40 == 0:  # the real client, end to end, against a real sshd
            manifest_file.write_bytes(raw)
            cache = caches / f"sync{i}"
            _own_error_or_success(
                lambda: ManifestSyncClient(sftp, str(server), cache, jitter_max=0).sync(), f"sync case {i}"
            )
            if cache.exists():
                with Store(cache) as store:
                    _assert_clean(store, f"sync case {i}")
    assert list(outside.iterdir()) == []
    assert _files_outside(tmp_path, [server, caches]) == []


# ---------------------------------------------------------------- Runicorn.toml
def _toml_text(rng: random.Random, archive_url: str, archive_sha: str, outside: Path) -> str:
    name = rng.choice(["data", "x y", "ok-name", "é", "a.b", "", "1", "data\nx", "archive"])
    tree = rng.choice(["0" * 64, "f" * 63, "F" * 64, archive_sha, 5, "", "../" * 10])
    lines = [
        f"[{json.dumps(name) if rng.random() < 0.5 else name}]",
        f"tree-sha256 = {json.dumps(tree)}",
        f"lazy = {rng.choice(['true', 'false', '1', json.dumps('yes')])}",
    ]
    for _ in range(rng.randint(0, 2)):
        url = rng.choice(
            [
                archive_url,
                "file://" + str(outside / "nope.tar"),
                "file://../../etc/passwd",
                "sftp://host\n/x",
                "http://127.0.0.1:1/x.tar",
                "gopher://x",
                "",
                "relative/path.tar",
            ]
        )
        lines += [
            f"[[{json.dumps(name)}.download]]",
            f"url = {json.dumps(url)}",
            f"sha256 = {json.dumps(rng.choice([archive_sha, 'z' * 64, '']))}",
        ]
        if rng.random() < 0.3:
            lines.append(f"size = {rng.choice(['-1', '0', '99999999999999999999', '1.5', json.dumps('10')])}")
    if rng.random() < 0.15:
        lines.append(
            f"[[{rng.choice(['ffmpeg', 'data'])}]]\nos = {json.dumps(rng.choice(['linux', 'x/y', '']))}\n"
            f"arch = {json.dumps(rng.choice(['x86_64', 'aarch64', 'a' * 300]))}\n"
            f"tree-sha256 = {json.dumps('1' * 64)}"
        )
    roll = rng.random()
    if roll < 0.05:
        lines.append("deep = " + "[" * 3000 + "]" * 3000)
    elif roll < 0.1:
        lines.append("deep = " + "{a = " * 1000 + "1" + "}" * 1000)
    text = "\n".join(lines) + "\n"
    if rng.random() < 0.1:
        text = _damage(rng, text.encode()).decode("utf-8", "surrogateescape")
    return text


def test_fuzz_runicorn_toml(tmp_path: Path) -> None:
    from runicorn.artifacts.install import ensure_artifact_installed, record_usage, select_downloadable_artifacts
    from runicorn.artifacts.toml_read import load_toml

    store_root, work, outside = tmp_path / "store", tmp_path / "work", tmp_path / "outside"
    for d in (work, outside):
        d.mkdir()
    # A real archive the TOMLs may point at (and a hostile one).
    rng0 = random.Random(SEED)
    archive = work / "a.tar"
    archive.write_bytes(_tar_bytes(rng0, outside))
    from runicorn.hashing import sha256_file

    url, sha = archive.as_uri(), sha256_file(archive)
    with Store(store_root) as store:
        for i, rng in _cases(300):
            proj = work / f"p{i}"
            proj.mkdir()
            toml = proj / "Runicorn.toml"
            toml.write_bytes(_toml_text(rng, url, sha, outside).encode("utf-8", "surrogateescape"))
            parsed = _own_error_or_success(lambda: load_toml(str(toml)), f"toml case {i}")
            if parsed is not None:
                _own_error_or_success(
                    lambda: select_downloadable_artifacts(str(toml), include_lazy=True), f"toml select {i}"
                )
                _own_error_or_success(lambda: record_usage(store, str(toml)), f"toml usage {i}")
                for name in list(parsed.artifacts)[:2]:
                    _own_error_or_success(
                        lambda: ensure_artifact_installed(name, str(toml), storage=store_root),
                        f"toml install {i} {name!r}",
                    )
            if i % 25 == 0:
                _own_error_or_success(lambda: store.gc(dry_run=True), f"gc after toml {i}")
            _assert_clean(store, f"toml case {i}")
        _own_error_or_success(lambda: store.gc(grace_seconds=0), "final gc")
        _assert_clean(store, "after gc")
    assert list(outside.iterdir()) == []
    assert _files_outside(tmp_path, [store_root, work]) == []


@pytest.mark.parametrize("which", ["status", "fetch"])
def test_fuzz_toml_through_the_cli(tmp_path: Path, which: str) -> None:
    outside, work = tmp_path / "outside", tmp_path / "work"
    outside.mkdir()
    work.mkdir()
    store_root = tmp_path / "store"
    Store(store_root).close()
    env = dict(os.environ, RUNICORN_DIR=str(store_root))
    for i, rng in _cases(4):
        toml = work / f"R{i}.toml"
        toml.write_bytes(
            _toml_text(rng, "file:///nonexistent.tar", "0" * 64, outside).encode("utf-8", "surrogateescape")
        )
        r = subprocess.run(
            [sys.executable, "-m", "runicorn", which, "--toml", str(toml)],
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=120,
        )
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    assert list(outside.iterdir()) == []
    with Store(store_root) as store:
        _assert_clean(store, "cli tomls")
