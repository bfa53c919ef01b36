"""Permissions are never widened: private store directories, private blobs, restores and
exports that keep a private file private, secrets left out by default (issue 15, item 3)."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from runicorn.store import Store


def perm(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runicorn", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    old = os.umask(0o022)  # as most users have: files 0644 unless made private
    try:
        ws = tmp_path / "ws"
        ws.mkdir(mode=0o700)
        (ws / "train.py").write_text("print('hi')\n")
        (ws / "notes.txt").write_text("my private notes\n")
        os.chmod(ws / "notes.txt", 0o600)
        (ws / "run.sh").write_text("#!/bin/sh\necho private\n")
        os.chmod(ws / "run.sh", 0o700)
        (ws / ".env").write_text("API_KEY=hunter2\n")
        os.chmod(ws / ".env", 0o600)
        (ws / ".env.local").write_text("TOKEN=x\n")
        (ws / "server.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
        (ws / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
        (ws / "id_rsa.pub").write_text("ssh-rsa AAAA\n")
        (ws / "tls.key").write_text("key\n")
        (ws / "id_utils.py").write_text("# not a key: captured\n")
        yield ws
    finally:
        os.umask(old)


def _blob_of(store: Store, tree: str, rel: str) -> Path:
    return store.blob_path(store.tree_entries(tree)[rel].sha256)


def test_snapshot_keeps_private_files_private_in_store_restore_and_exports(
    workspace: Path, tmp_path: Path, _isolated_storage: Path
) -> None:
    os.umask(0o022)
    zip_path = tmp_path / "code.zip"
    r = cli("snapshot", str(workspace), "--zip", str(zip_path))
    assert r.returncode == 0, r.stderr
    root = _isolated_storage
    # Store directories are private to the owner by default.
    for d in (
        root,
        root / "archive",
        root / "archive" / "blobs",
        root / "archive" / "manifests",
        root / "archive" / "refs",
        root / "archive" / "tmp",
    ):
        assert perm(d) == 0o700, d
    assert {perm(p) for p in (root / "archive" / "blobs").iterdir()} == {0o700}
    with Store(root) as store:
        (tree,) = [r.tree for r in store.list_refs("pin")]
        entries = store.tree_entries(tree)
        # The default .rnignore leaves secrets out, and only them.
        for secret in (".env", ".env.local", "server.pem", "id_ed25519", "id_rsa.pub", "tls.key"):
            assert secret not in entries, secret
        assert {"train.py", "notes.txt", "run.sh", "id_utils.py"} <= set(entries)
        # A blob is no more readable than its source.
        assert perm(_blob_of(store, tree, "notes.txt")) == 0o400
        assert perm(_blob_of(store, tree, "run.sh")) == 0o400
        assert perm(_blob_of(store, tree, "train.py")) == 0o444
        tar_path = tmp_path / "tree.tar"
        from runicorn.artifacts.create import archive_artifact

        archive_artifact(tree, tar_path, store=store)
        zip2 = tmp_path / "tree.zip"
        archive_artifact(tree, zip2, store=store)
    # restore re-applies the recorded mode, copy and hardlink alike
    for how in ("copy", "hardlink", "auto"):
        out = tmp_path / f"out-{how}"
        r = cli("restore", tree, str(out), "--link", how)
        assert r.returncode == 0, r.stderr
        assert perm(out / "notes.txt") & 0o077 == 0, how
        assert perm(out / "run.sh") & 0o077 == 0, how
        assert perm(out / "train.py") & 0o044 == 0o044, how
    assert perm(tmp_path / "out-copy" / "notes.txt") == 0o600
    assert perm(tmp_path / "out-copy" / "run.sh") == 0o700
    assert perm(tmp_path / "out-copy" / "train.py") == 0o644
    # zip (snapshot --zip and archive) and tar exports carry the same modes
    for z in (zip_path, zip2):
        with zipfile.ZipFile(z) as zf:
            modes = {i.filename: (i.external_attr >> 16) & 0o777 for i in zf.infolist()}
        assert modes["notes.txt"] == 0o600 and modes["run.sh"] == 0o700 and modes["train.py"] == 0o644, z
    with tarfile.open(tar_path) as tf:
        modes = {m.name: m.mode for m in tf.getmembers()}
    assert modes["notes.txt"] == 0o600 and modes["run.sh"] == 0o700 and modes["train.py"] == 0o644
    # the seed's export goes through the same rule
    from runicorn.assets.restore import export_manifest_to_zip

    with Store(root) as store:
        zip3 = tmp_path / "seed.zip"
        assert export_manifest_to_zip(store.manifest_path(tree), store.blobs_dir, zip3)["success"]
    with zipfile.ZipFile(zip3) as zf:
        assert (zf.getinfo("notes.txt").external_attr >> 16) & 0o777 == 0o600


def test_a_later_ingest_from_a_private_file_narrows_a_public_blob(tmp_path: Path) -> None:
    os.umask(0o022)
    public = tmp_path / "public.txt"
    public.write_text("same bytes\n")
    private = tmp_path / "private.txt"
    private.write_text("same bytes\n")
    os.chmod(private, 0o600)
    group = tmp_path / "group.txt"
    group.write_text("group bytes\n")
    os.chmod(group, 0o640)
    with Store(tmp_path / "st") as store:
        (info,) = store.ingest_files([public])
        assert perm(store.blob_path(info.sha256)) == 0o444
        store.ingest_files([private])  # batch path: the blob exists, is narrowed
        assert perm(store.blob_path(info.sha256)) == 0o400
        store.ingest_files([public])  # a public source never widens it again
        assert perm(store.blob_path(info.sha256)) == 0o400
        (g,) = store.ingest_files([group])
        assert perm(store.blob_path(g.sha256)) == 0o440
        # single-file ingest and large (streamed) files follow the same rule
        big_pub = tmp_path / "big.bin"
        big_pub.write_bytes(os.urandom(3 << 20))
        (b,) = store.ingest_files([big_pub])
        assert perm(store.blob_path(b.sha256)) == 0o444
        big_priv = tmp_path / "big-private.bin"
        big_priv.write_bytes(big_pub.read_bytes())
        os.chmod(big_priv, 0o600)
        store.ingest_file(big_priv)
        assert perm(store.blob_path(b.sha256)) == 0o400
        fresh = tmp_path / "fresh-private.bin"
        fresh.write_bytes(os.urandom(3 << 20))
        os.chmod(fresh, 0o600)
        (f,) = store.ingest_files([fresh])
        assert perm(store.blob_path(f.sha256)) == 0o400
        one = tmp_path / "one.txt"
        one.write_text("single\n")
        os.chmod(one, 0o600)
        assert perm(store.blob_path(store.ingest_file(one).sha256)) == 0o400
        # verify --repair's "make read-only again" keeps a private blob private
        os.chmod(store.blob_path(info.sha256), 0o600)
        store.rebuild_index()
        assert perm(store.blob_path(info.sha256)) == 0o400


def test_shared_store_mode_is_a_documented_setting_that_stays_with_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.umask(0o022)
    monkeypatch.setenv("RUNICORN_DIR_MODE", "2770")
    f = tmp_path / "f.txt"
    f.write_text("x\n")
    with Store(tmp_path / "shared") as store:
        store.ingest_files([f])
        assert perm(store.archive) == 0o2770
        assert perm(store.blobs_dir) == 0o2770
        assert {perm(p) for p in store.blobs_dir.iterdir()} == {0o2770}
        # The group writes the index too (SQLite makes it 0644 under this umask).
        assert perm(store.index_path) & 0o060 == 0o060
        assert perm(Path(f"{store.index_path}-wal")) & 0o060 == 0o060
    monkeypatch.delenv("RUNICORN_DIR_MODE")
    g = tmp_path / "g.txt"
    g.write_text("y\n")
    with Store(tmp_path / "shared") as store:  # reopened without the variable: the store's mode
        store.ingest_files([g])
        assert {perm(p) for p in store.blobs_dir.iterdir()} == {0o2770}
    monkeypatch.setenv("RUNICORN_DIR_MODE", "644")
    from runicorn.errors import RunicornError

    with pytest.raises(RunicornError, match="RUNICORN_DIR_MODE='644'"):
        Store(tmp_path / "new")
    readme = (Path(__file__).resolve().parents[1] / "docs" / "permissions.md").read_text()
    assert "RUNICORN_DIR_MODE" in readme


def _member_modes_archives(tmp_path: Path) -> tuple[Path, Path]:
    """A real tar.gz and a real zip holding members private (0600), group-readable (0640),
    public (0644) and a private script (0700); the zip also holds a member without a unix
    mode (as zips made on Windows do)."""
    files = {
        "secret.txt": (b"tar secret\n", 0o600),
        "group.txt": (b"tar group\n", 0o640),
        "public.txt": (b"tar public\n", 0o644),
        "run.sh": (b"#!/bin/sh\necho tar\n", 0o700),
    }
    src = tmp_path / "members"
    src.mkdir()
    for name, (data, mode) in files.items():
        (src / name).write_bytes(data)
        os.chmod(src / name, mode)
    tar_path = tmp_path / "members.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tf:
        for name in files:
            tf.add(src / name, arcname=name)
    zip_path = tmp_path / "members.zip"
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, (data, mode) in files.items():
            zi = zipfile.ZipInfo("z-" + name)
            zi.create_system = 3
            zi.external_attr = (stat.S_IFREG | mode) << 16
            zf.writestr(zi, data.replace(b"tar", b"zip"))
        plain = zipfile.ZipInfo("z-plain.txt")
        plain.create_system = 0  # MS-DOS: no unix mode recorded
        plain.external_attr = 0x20  # FILE_ATTRIBUTE_ARCHIVE only, as Windows tools write
        zf.writestr(plain, b"zip plain\n")
    return tar_path, zip_path


def test_archive_members_keep_their_privacy_as_blobs_and_when_installed(tmp_path: Path) -> None:
    os.umask(0o022)
    from runicorn.artifacts.extract import extract_into_store

    tar_path, zip_path = _member_modes_archives(tmp_path)
    with Store(tmp_path / "st") as store:
        ex = extract_into_store(store, tar_path)
        blob_modes = {rel: perm(store.blob_path(e.sha256)) for rel, e in ex.entries.items()}
        assert blob_modes == {"secret.txt": 0o400, "group.txt": 0o440, "public.txt": 0o444, "run.sh": 0o400}
        assert ex.entries["run.sh"].mode == "100755" and ex.entries["secret.txt"].mode == "100644"
        ez = extract_into_store(store, zip_path)
        blob_modes = {rel: perm(store.blob_path(e.sha256)) for rel, e in ez.entries.items()}
        assert blob_modes == {
            "z-secret.txt": 0o400,
            "z-group.txt": 0o440,
            "z-public.txt": 0o444,
            "z-run.sh": 0o400,
            "z-plain.txt": 0o444,
        }
        assert ez.entries["z-run.sh"].mode == "100755" and ez.entries["z-plain.txt"].mode == "100644"
        # the same bytes from a public member never widen the private blob again
        again = tmp_path / "again.tar"
        with tarfile.open(again, "w") as tf:
            ti = tarfile.TarInfo("copy.txt")
            ti.size, ti.mode = len(b"tar secret\n"), 0o644
            tf.addfile(ti, io.BytesIO(b"tar secret\n"))
        ea = extract_into_store(store, again)
        assert perm(store.blob_path(ea.entries["copy.txt"].sha256)) == 0o400
    # end to end: `runicorn bind` of the tarball installs it; the installed files stay private
    proj = tmp_path / "proj"
    proj.mkdir()
    storage = tmp_path / "st2"
    r = cli("--storage", str(storage), "bind", "data", str(tar_path), cwd=proj)
    assert r.returncode == 0, r.stderr
    r = cli("--storage", str(storage), "fetch", cwd=proj)
    assert r.returncode == 0, r.stderr
    (installed,) = (p for p in (storage / "artifacts").iterdir() if p.is_dir())
    modes = {p.name: perm(p) for p in installed.iterdir()}
    assert modes == {"secret.txt": 0o400, "group.txt": 0o440, "public.txt": 0o444, "run.sh": 0o700}, modes


def test_a_group_member_opens_a_shared_store_while_another_member_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a store shared by a group, another member's writer lock file (0644) is not
    writable by this user.  Opening the store probes it read-only (enough for ``flock``)
    instead of failing with PermissionError; a lock this user cannot open at all leaves
    that writer to its owner.  (The test runs as root, so 'not writable' is simulated.)"""
    import runicorn.store.recovery as recovery_module

    root = tmp_path / "store"
    real_open = os.open

    def as_another_user(path, flags, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("/lock") and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    with Store(root) as member:
        member.ingest_bytes(b"the other member's writer is live")
        monkeypatch.setattr(recovery_module.os, "open", as_another_user)
        with Store(root) as other:
            assert other.stats()["blob_count"] == 1
        monkeypatch.setattr(recovery_module.os, "open", real_open)


def test_a_shared_stores_members_can_read_a_live_batchs_journal_not_its_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other members' gc, verify and repair must see which files in blobs/ a live batch
    wrote in place: in a store shared by a group the batch folder is searchable (not
    listable) by the group and its journal readable; in a private store both stay the
    owner's.  A staged large file is created 0400, private until it has its blob's
    permission.  (Shown across real users by hand: a second member's repair and gc beside
    a live batch adopt and collect nothing.)"""
    # A group-sharing umask for this test only (every later test in this process sees the default).
    request_umask = os.umask(0o002)
    try:
        _shared_store_staging_modes(tmp_path, monkeypatch)
    finally:
        os.umask(request_umask)


def _shared_store_staging_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runicorn.store.ingest import JOURNAL

    files = [tmp_path / "small.txt", tmp_path / "private.bin"]
    files[0].write_text("small\n")
    files[1].write_bytes(os.urandom(2_000_000))  # large: streamed to a staging file
    os.chmod(files[1], 0o600)
    for mode, batch_perm, journal_perm in (("2770", 0o2710, 0o640), (None, 0o700, 0o600)):
        if mode:
            monkeypatch.setenv("RUNICORN_DIR_MODE", mode)
        else:
            monkeypatch.delenv("RUNICORN_DIR_MODE", raising=False)
        from runicorn.store.ingest import BlobBatch

        with Store(tmp_path / f"store-{mode}") as store:
            batch = BlobBatch(store)
            seen: list[int] = []
            real_chmod = os.chmod

            def chmod(path, mode, *args, **kwargs):  # type: ignore[no-untyped-def]
                if str(path).endswith(".part"):
                    seen.append(perm(Path(path)))
                return real_chmod(path, mode, *args, **kwargs)

            monkeypatch.setattr(os, "chmod", chmod)
            for f in files:
                batch.add_file(str(f))
            batch._write_pending()
            monkeypatch.setattr(os, "chmod", real_chmod)
            assert perm(batch.dir) == batch_perm
            assert perm(batch.dir / JOURNAL) == journal_perm
            assert seen == [0o400], seen  # the private file's staging file, before its chmod
            batch.commit()
