"""``runicorn quickstart``: an end-to-end tour on small embedded data, in a throwaway store."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

# Small embedded project used by the tour.
DEMO_FILES: dict[str, str] = {
    "train.py": "import runicorn\n\nprint('training...')\n",
    "model/config.json": '{"layers": 4, "hidden": 128}\n',
    "data/README.md": "Tiny demo dataset.\n",
    "data/labels.csv": "id,label\n1,cat\n2,dog\n",
}


def _write_demo(root: Path) -> None:
    for rel, text in DEMO_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _step(title: str) -> None:
    click.secho(f"==> {title}", bold=True)


@click.command()
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    help="Run in this directory and keep it (default: a temporary directory).",
)
def quickstart(keep: str | None) -> None:
    """Run the end-to-end tour on embedded demo data (touches nothing of yours)."""
    if keep:
        base = Path(keep).absolute()
        base.mkdir(parents=True, exist_ok=True)
        _tour(base)
    else:
        with tempfile.TemporaryDirectory(prefix="runicorn-quickstart-") as tmp:
            _tour(Path(tmp))
    click.secho("quickstart finished: all steps passed", fg="green", bold=True)


def _tour(base: Path) -> None:
    storage = base / "store"
    project = base / "project"
    _write_demo(project)
    os.environ["RUNICORN_DIR"] = str(storage)
    _store_tour(storage, project)
    _snapshot_tour(base, storage, project)
    _artifact_tour(base, storage, project)


def _store_tour(storage: Path, project: Path) -> None:
    from runicorn.store import Store

    with Store.open(storage) as store:
        _step(f"capture {project} into the store at {storage}")
        tree = store.ingest_directory(project)
        click.echo(f"    tree {tree}")
        _step("capture again: same content, same tree, no new blobs")
        before = store.stats()["blob_count"]
        assert store.ingest_directory(project) == tree
        assert store.stats()["blob_count"] == before
        click.echo(f"    {before} blobs, unchanged")
        _step("pin the tree, then gc: nothing pinned is collected")
        store.pin(tree, "quickstart")
        report = store.gc(grace_seconds=0)
        assert report["trees_deleted"] == 0
        click.echo(f"    gc deleted {report['blobs_deleted']} blobs")
        _step("verify --deep")
        result = store.verify(deep=True)
        assert result["ok"], result["problems"]
        click.echo(f"    {result['blobs_checked']} blobs re-hashed, no problems")
        _step("unpin and gc: the content is reclaimed")
        store.unpin("quickstart")
        report = store.gc(grace_seconds=0)
        click.echo(f"    gc deleted {report['trees_deleted']} tree and {report['blobs_deleted']} blobs")
        assert store.stats()["blob_count"] == 0


def _snapshot_tour(base: Path, storage: Path, project: Path) -> None:
    import runicorn as rn
    from runicorn.runs.delete import delete_run_completely
    from runicorn.restore.engine import restore_from_manifest

    _step("run 1: rn.init(snapshot_code=True) captures the workspace, run.log records metrics")
    with rn.init(path="quickstart/demo", storage=storage, snapshot_code=True, workspace_root=project) as run1:
        run1.log({"loss": 0.5}, step=1)
    click.echo(f"    run {run1.run_id} in {run1.run_dir}")
    _step("run 2 after editing one file: only that file's bytes are new")
    (project / "train.py").write_text(DEMO_FILES["train.py"] + "# tuned learning rate\n")
    with rn.init(path="quickstart/demo", storage=storage, snapshot_code=True, workspace_root=project) as run2:
        run2.log({"loss": 0.4}, step=1)
    store = rn.open_store(storage)
    trees = [store.get_ref("run", f"{r.run_id}/code").tree for r in (run1, run2)]
    assert trees[0] != trees[1]
    click.echo(f"    2 snapshots, {store.stats()['blob_count']} blobs in the store")
    _step("restore run 1's code from its manifest and compare")
    target = base / "restored-run1"
    result = restore_from_manifest(
        manifest_path=store.manifest_path(trees[0]), blob_root=store.blobs_dir, target_dir=target
    )
    assert (target / "train.py").read_text() == DEMO_FILES["train.py"]
    click.echo(f"    restored {result['restored_count']} files into {target}")
    _step("delete run 1 completely: what run 2 shares stays")
    shared = len(store.tree_entries(trees[0])) - 1
    dry = delete_run_completely(run1.run_id, storage, dry_run=True)
    real = delete_run_completely(run1.run_id, storage)
    assert real["success"] and real["blobs_deleted"] == dry["blobs_deleted"] == 1, real
    assert store.verify(deep=True)["ok"]
    click.echo(f"    deleted {real['blobs_deleted']} blob (the old train.py); the {shared} files run 2 shares stay")


def _artifact_tour(base: Path, storage: Path, project: Path) -> None:
    import functools
    import http.server
    import threading

    import runicorn as rn
    from runicorn.store import open_store

    served = base / "served"
    served.mkdir()
    _step("publish: capture data/ as an artifact and write a reproducible archive (another store)")
    publisher = base / "publisher-store"
    tree = rn.create_artifact(src=project / "data", storage=publisher)
    archive = served / "demo-data.tar.gz"
    sha = rn.archive_artifact(tree, archive, storage=publisher)
    click.echo(f"    tree {tree[:16]}..., archive sha256 {sha[:16]}...")

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            pass

    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/demo-data.tar.gz"
    try:
        toml = project / "Runicorn.toml"
        _step(f"bind demo-data in {toml.name} (lazy, downloadable from {url})")
        rn.bind_artifact(
            toml, "demo-data", tree, lazy=True, download_info=[(url, sha, archive.stat().st_size)], storage=storage
        )
        click.echo("    " + toml.read_text().replace("\n", "\n    ").rstrip())
        _step("fetch: artifact('demo-data') downloads, verifies and installs on first use")
        assert not rn.artifact_exists(tree)
        path = rn.artifact("demo-data", toml=toml)
        assert (path / "labels.csv").read_text() == DEMO_FILES["data/labels.csv"]
        assert rn.artifact("demo-data/labels.csv", toml=toml) == path / "labels.csv"
        click.echo(f"    installed at {path}")
    finally:
        server.shutdown()
    store = open_store(storage)
    _step("gc keeps what a Runicorn.toml binds")
    assert store.gc(grace_seconds=0)["trees_deleted"] == 0 and rn.artifact_exists(tree)
    click.echo("    kept")
    _step("unbind, then gc collects the artifact")
    rn.unbind_artifact(toml, "demo-data", storage=storage)
    report = store.gc(grace_seconds=0)
    assert tree in report["tree_ids"]
    click.echo(f"    gc deleted {report['trees_deleted']} tree and {report['blobs_deleted']} blobs")
