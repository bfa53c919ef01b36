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
@click.option("--keep", type=click.Path(file_okay=False), default=None,
              help="Run in this directory and keep it (default: a temporary directory).")
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
    from runicorn.store import Store

    storage = base / "store"
    project = base / "project"
    _write_demo(project)
    os.environ["RUNICORN_DIR"] = str(storage)
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
