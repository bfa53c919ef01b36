"""Every Python sample of the assets guide (seeds/001) runs as written.

The samples are copied verbatim from the guide and executed in order, in one
namespace, in a temporary workspace whose storage root (``$RUNICORN_DIR``) is the
workspace itself, so the guide's relative ``archive/blobs`` and
``archive/manifests/run_001.json`` are real store paths.  Files the samples assume
(``model.pth``, ``train.py``, ``run_001.json``, the run ``20250115_103015_abc123``) are
created first, and names the guide leaves to the reader (``old_run_ids``,
``storage_root``, ``out_path``, ``runs_to_delete``) are defined.

Not executed, on purpose: the API-reference blocks (they are signatures with type
annotations, not runnable code; the signatures are checked with ``inspect`` instead),
the "Old" v0.5 lines of the migration guide (``rn.Artifact``, ``run.use_artifact``),
and in the troubleshooting sample ``restore_from_manifest(...)`` the literal ``...``
placeholder is replaced by real arguments.
"""

from __future__ import annotations

import inspect
import os
import shutil
from pathlib import Path

import pytest

SAMPLES: list[tuple[str, str]] = [
    (
        "quick start: creating workspace snapshots",
        """
import runicorn as rn
from runicorn import snapshot_workspace
from pathlib import Path

# Initialize run
run = rn.init(path="training/resnet")

# Snapshot current workspace
result = snapshot_workspace(
    root=Path("."),
    out_zip=run.run_dir / "code_snapshot.zip",
)

print(f"Captured {result['file_count']} files ({result['total_bytes']} bytes)")

# Continue with training...
run.log({"loss": 0.5})
run.finish()
""",
    ),
    (
        "quick start: using blob storage",
        """
from runicorn.assets.blob_store import store_blob, get_blob_path, get_blob_stats
from pathlib import Path

# Define blob storage root
blob_root = Path("~/.runicorn/archive/blobs").expanduser()

# Store a file (returns SHA256 hash)
sha256 = store_blob(Path("model.pth"), blob_root)
print(f"Stored with hash: {sha256}")

# Store same file again - no duplicate created
sha256_again = store_blob(Path("model.pth"), blob_root)
assert sha256 == sha256_again  # Same hash, no new storage

# Get blob path for retrieval
blob_path = get_blob_path(sha256, blob_root)
print(f"Blob stored at: {blob_path}")

# Check storage statistics
stats = get_blob_stats(blob_root)
print(f"Total blobs: {stats['blob_count']}")
print(f"Total size: {stats['total_size_bytes']} bytes")
""",
    ),
    (
        "fingerprint calculation",
        """
from runicorn.assets.fingerprint import sha256_file
from pathlib import Path

# Calculate file fingerprint
fingerprint = sha256_file(Path("model.pth"))
print(f"SHA256: {fingerprint}")
# Output: SHA256: a47eb79188cdc67a601ebf32...
""",
    ),
    (
        "blob store imports",
        """
from runicorn.assets.blob_store import (
    store_blob,
    get_blob_path,
    blob_exists,
    read_blob,
    get_blob_stats,
)
""",
    ),
    (
        "manifest-based restore",
        """
from runicorn.assets.restore import (
    load_manifest,
    restore_from_manifest,
    export_manifest_to_zip,
    get_file_from_manifest,
)
from pathlib import Path

# Load manifest
manifest = load_manifest(Path("archive/manifests/run_001.json"))
print(f"Files in manifest: {len(manifest['files'])}")

# Restore to directory
result = restore_from_manifest(
    manifest_path=Path("archive/manifests/run_001.json"),
    blob_root=Path("archive/blobs"),
    target_dir=Path("restored_code"),
    overwrite=False,
)
print(f"Restored {result['restored_count']} files")

# Export to zip
result = export_manifest_to_zip(
    manifest_path=Path("archive/manifests/run_001.json"),
    blob_root=Path("archive/blobs"),
    zip_path=Path("export.zip"),
)
print(f"Exported {result['exported_count']} files to {result['zip_path']}")

# Get single file
blob_path = get_file_from_manifest(
    manifest_path=Path("archive/manifests/run_001.json"),
    blob_root=Path("archive/blobs"),
    rel_path="train.py",
)
print(f"train.py stored at: {blob_path}")
""",
    ),
    (
        "cleanup: delete_run_completely",
        """
from runicorn.assets.cleanup import delete_run_completely
from pathlib import Path

# Preview what would be deleted (dry run)
result = delete_run_completely(
    run_id="20250115_103015_abc123",
    storage_root=Path("~/.runicorn").expanduser(),
    dry_run=True,
)
print(f"Would delete {result['blobs_deleted']} blobs")
print(f"Would free {result['bytes_freed']} bytes")

# Actually delete
result = delete_run_completely(
    run_id="20250115_103015_abc123",
    storage_root=Path("~/.runicorn").expanduser(),
    dry_run=False,
)
print(f"Deleted {result['blobs_deleted']} blobs")
print(f"Freed {result['bytes_freed']} bytes")
""",
    ),
    (
        "cleanup: cleanup_orphaned_blobs",
        """
from runicorn.assets.cleanup import cleanup_orphaned_blobs
from pathlib import Path

# Preview orphaned blobs
result = cleanup_orphaned_blobs(
    storage_root=Path("~/.runicorn").expanduser(),
    dry_run=True,
)
print(f"Found {result['orphaned_blobs']} orphaned blobs")
print(f"Would free {result['bytes_freed']} bytes")

# Clean up
result = cleanup_orphaned_blobs(
    storage_root=Path("~/.runicorn").expanduser(),
    dry_run=False,
)
print(f"Cleaned {result['orphaned_blobs']} orphaned blobs")
""",
    ),
    (
        "migration step 1 (new imports)",
        """
from runicorn import snapshot_workspace
from runicorn.assets.restore import restore_from_manifest
""",
    ),
    (
        "migration step 2 (new snapshot code)",
        """
from runicorn import snapshot_workspace
snapshot_workspace(
    root=Path("."),
    out_zip=run.run_dir / "code_snapshot.zip",
)
""",
    ),
    (
        "migration step 3 (new restore code)",
        """
from runicorn.assets.restore import restore_from_manifest
result = restore_from_manifest(
    manifest_path=Path("archive/manifests/run_001.json"),
    blob_root=Path("archive/blobs"),
    target_dir=Path("restored"),
)
""",
    ),
    (
        "best practice 2: snapshots for reproducibility",
        """
run = rn.init(path="important_experiment")

# Snapshot immediately after init
snapshot_workspace(
    root=Path("."),
    out_zip=run.run_dir / "code.zip",
)

# Now train...
""",
    ),
    (
        "best practice 3: monitor storage usage",
        """
from runicorn.assets.blob_store import get_blob_stats
from pathlib import Path

stats = get_blob_stats(Path("~/.runicorn/archive/blobs").expanduser())
print(f"Blobs: {stats['blob_count']}")
print(f"Size: {stats['total_size_bytes'] / 1024 / 1024:.1f} MB")
""",
    ),
    (
        "best practice 4: clean up old runs",
        """
from runicorn.assets.cleanup import delete_run_completely

# Delete old runs (shared blobs are preserved)
for run_id in old_run_ids:
    delete_run_completely(run_id, storage_root)
""",
    ),
    (
        "troubleshooting: extra_excludes",
        """
snapshot_workspace(
    root=Path("."),
    out_zip=out_path,
    extra_excludes=["large_folder/", "*.bin"],
)
""",
    ),
    (
        "troubleshooting: missing blobs (placeholder filled in)",
        """
result = restore_from_manifest(MANIFEST, BLOBS, Path("restored_again"))
if "missing_blobs" in result:
    print(f"Missing: {result['missing_blobs']}")
""",
    ),
    (
        "troubleshooting: disk space not freed",
        """
# Delete runs first
for run_id in runs_to_delete:
    delete_run_completely(run_id, storage_root)

# Then clean orphaned blobs
cleanup_orphaned_blobs(storage_root)
""",
    ),
]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = tmp_path / "workspace"
    ws.mkdir()
    (ws / "train.py").write_text("print('training')\n")
    (ws / "utils.py").write_text("def helper():\n    return 42\n")
    (ws / "large_folder").mkdir()
    (ws / "large_folder" / "blob.dat").write_bytes(os.urandom(1000))
    (ws / "model.pth").write_bytes(os.urandom(4096))
    monkeypatch.setenv("RUNICORN_DIR", str(ws))
    monkeypatch.chdir(ws)
    return ws


def _prepare(ws: Path) -> dict:
    """Create what the samples assume exists; return names they use without defining."""
    import runicorn as rn
    from runicorn.store import open_store

    snap = rn.snapshot_workspace(ws, None)
    manifests = ws / "archive" / "manifests"
    shutil.copyfile(snap["manifest_path"], manifests / "run_001.json")
    home_store = Path("~/.runicorn").expanduser()
    seed_run = rn.init(
        path="training/resnet",
        storage=home_store,
        run_id="20250115_103015_abc123",
        snapshot_code=True,
        workspace_root=ws,
    )
    seed_run.finish()
    old = [rn.init(path="old/exp", storage=home_store) for _ in range(2)]
    doomed = [rn.init(path="old/exp", storage=home_store) for _ in range(2)]
    for r in old + doomed:
        r.finish()
    return {
        "old_run_ids": [r.run_id for r in old],
        "runs_to_delete": [r.run_id for r in doomed],
        "storage_root": home_store,
        "out_path": ws / "out" / "snapshot.zip",
        "MANIFEST": Path("archive/manifests/run_001.json"),
        "BLOBS": Path("archive/blobs"),
        "_store": open_store(ws),
    }


def test_every_seed_sample_runs_as_written(workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict = {"__name__": "__seed__"}
    namespace.update(_prepare(workspace))
    for title, code in SAMPLES:
        try:
            exec(compile(code, f"<seed sample: {title}>", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message says which sample broke
            raise AssertionError(f"seed sample {title!r} failed: {exc!r}") from exc
    out = capsys.readouterr().out
    # What the samples printed is true of the store.
    assert "Captured " in out and "Restored 4 files" in out and "Exported 4 files" in out
    assert "Would delete" in out and "Deleted " in out and "Cleaned " in out
    assert (workspace / "restored_code" / "train.py").read_text() == "print('training')\n"
    assert (workspace / "restored" / "utils.py").read_text().startswith("def helper")
    assert not (Path("~/.runicorn").expanduser() / "training" / "resnet" / "runs" / "20250115_103015_abc123").exists()
    from runicorn.runs.index import list_runs
    from runicorn.store import open_store

    assert list_runs(open_store(Path("~/.runicorn").expanduser())) == []
    # The snapshots never captured the store inside the workspace, nor excluded files.
    import zipfile

    run_zips = list(workspace.glob("training/resnet/runs/*/code_snapshot.zip"))
    assert run_zips
    with zipfile.ZipFile(run_zips[0]) as zf:
        names = set(zf.namelist())
    assert "train.py" in names and "model.pth" not in names
    assert not any(n.startswith(("archive/", "training/")) for n in names)
    with zipfile.ZipFile(workspace / "out" / "snapshot.zip") as zf:
        assert not any(n.startswith("large_folder/") for n in zf.namelist())


def test_signatures_match_the_guide() -> None:
    from runicorn import snapshot_workspace
    from runicorn.assets.blob_store import get_blob_path, store_blob
    from runicorn.assets.cleanup import cleanup_orphaned_blobs, delete_run_completely
    from runicorn.assets.restore import export_manifest_to_zip, restore_from_manifest

    def params(fn):  # type: ignore[no-untyped-def]
        return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]

    s = params(snapshot_workspace)
    assert s[:7] == [
        ("root", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("out_zip", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("ignore_file", "KEYWORD_ONLY", ".rnignore"),
        ("extra_excludes", "KEYWORD_ONLY", None),
        ("max_total_bytes", "KEYWORD_ONLY", 500 * 1024 * 1024),
        ("max_files", "KEYWORD_ONLY", 200_000),
        ("force_snapshot", "KEYWORD_ONLY", False),
    ]
    assert [n for n, _, _ in params(store_blob)] == ["src_path", "blob_root"]
    assert [n for n, _, _ in params(get_blob_path)] == ["sha256", "blob_root"]
    r = params(restore_from_manifest)
    assert r[:4] == [
        ("manifest_path", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("blob_root", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("target_dir", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty),
        ("overwrite", "KEYWORD_ONLY", False),
    ]
    assert [n for n, _, _ in params(export_manifest_to_zip)] == ["manifest_path", "blob_root", "zip_path"]
    assert [n for n, _, _ in params(delete_run_completely)][:3] == ["run_id", "storage_root", "dry_run"]
    assert [n for n, _, _ in params(cleanup_orphaned_blobs)][:2] == ["storage_root", "dry_run"]
