"""Hostile version-2 manifests and page folders: refused at once with the file named,
whatever a page set repeats or reorders, and a page that is not a regular file."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runicorn.errors import CorruptManifestError
from runicorn.hashing import sha256_bytes
from runicorn.store import Store, TreeEntry
from runicorn.store import tree_format as tf

SHA = "a" * 64


def _leaf(paths: list[str]) -> bytes:
    return tf.LEAF_HEADER + b"".join(f"100644 {SHA} 1 {p}\n".encode() for p in paths)


def _manifest(top: list[str], depth: int, entries: dict[str, tf.TreeEntry], count: int | None = None) -> bytes:
    return json.dumps(
        {
            "format": tf.MANIFEST_FORMAT,
            "format_version": tf.MANIFEST_PAGED,
            "tree": tf.compute_tree_id(entries),
            "file_count": len(entries) if count is None else count,
            "total_size": len(entries),
            "created_at": 0,
            "depth": depth,
            "pages": top,
        }
    ).encode()


def test_a_page_repeated_below_a_node_is_refused_at_its_first_repeat() -> None:
    """A small node page naming one leaf thousands of times (and a manifest declaring
    a huge file count) costs a few page reads, not one per repeat."""
    leaf = _leaf(["a"])
    lid = sha256_bytes(leaf)
    node = tf.NODE_HEADER + f"{lid}\n".encode() * 5000
    nid = sha256_bytes(node)
    pages = {lid: leaf, nid: node}
    loads: list[str] = []

    def load(pid: str) -> bytes:
        loads.append(pid)
        return pages[pid]

    data = _manifest([nid], 1, {"a": tf.TreeEntry(SHA, "100644", 1)}, count=10**12)
    with pytest.raises(CorruptManifestError, match="out of order or listed twice"):
        tf.parse_manifest(data, origin="m.json", load_page=load)
    assert len(loads) < 5


def test_top_pages_out_of_order_are_refused() -> None:
    a, b = _leaf(["a"]), _leaf(["b"])
    pages = {sha256_bytes(a): a, sha256_bytes(b): b}
    entries = {p: tf.TreeEntry(SHA, "100644", 1) for p in ("a", "b")}
    data = _manifest([sha256_bytes(b), sha256_bytes(a)], 0, entries)
    with pytest.raises(CorruptManifestError, match="m.json: .*out of order or listed twice"):
        tf.parse_manifest(data, origin="m.json", load_page=pages.__getitem__)
    # the same pages in order are a valid tree
    _, got = tf.parse_manifest(
        _manifest([sha256_bytes(a), sha256_bytes(b)], 0, entries), origin="m.json", load_page=pages.__getitem__
    )
    assert list(got) == ["a", "b"]


def test_a_page_that_is_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A hostile blob folder whose page is a FIFO: one line naming it, no hang."""
    leaf = _leaf(["a"])
    lid = sha256_bytes(leaf)
    blobs = tmp_path / "blobs"
    (blobs / lid[:2]).mkdir(parents=True)
    os.mkfifo(blobs / lid[:2] / lid)
    manifest = tmp_path / "m.json"
    manifest.write_bytes(_manifest([lid], 0, {"a": tf.TreeEntry(SHA, "100644", 1)}))
    code = (
        "import sys\n"
        "from runicorn.errors import CorruptManifestError\n"
        "from runicorn.restore.source import read_manifest\n"
        "try:\n"
        f"    read_manifest({str(manifest)!r}, {str(blobs)!r})\n"
        "except CorruptManifestError as e:\n"
        "    print(e)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("reading a manifest whose page is a FIFO never returned")
    assert out.returncode == 0, out.stderr
    assert lid in out.stdout and "not a regular file" in out.stdout


def test_paths_out_of_order_inside_the_first_leaf_are_refused() -> None:
    leaf = _leaf(["b", "a"])
    lid = sha256_bytes(leaf)
    entries = {p: tf.TreeEntry(SHA, "100644", 1) for p in ("a", "b")}
    with pytest.raises(CorruptManifestError, match="out of order or listed twice"):
        tf.parse_manifest(_manifest([lid], 0, entries), origin="m.json", load_page={lid: leaf}.__getitem__)


def test_a_blob_with_the_bytes_of_a_page_survives_a_rebuilt_index(tmp_path: Path) -> None:
    root = tmp_path / "st"
    with Store(root) as s:
        shas = [s.ingest_bytes(f"c{i}\n".encode()).sha256 for i in range(3)]
        tree = s.put_tree({f"d/f{i}": TreeEntry(shas[i % 3], "100644", 3) for i in range(200)})
        s.pin(tree, "big")
        top = json.loads(s.manifest_path(tree).read_bytes())["pages"][0]
        page = s.load_page(top)
        info = s.ingest_bytes(page)  # a file whose bytes are a page (a copy of a store, say)
        assert info.sha256 == top
        other = s.put_tree({"copy": TreeEntry(top, "100644", len(page))})
        s.pin(other, "copy")
        assert s.verify()["ok"]
    (root / "archive" / "index.sqlite3").unlink()
    for p in root.glob("archive/index.sqlite3-*"):
        p.unlink()
    with Store(root) as s:
        problems = s.verify()["problems"]
        assert not problems, problems
        s.gc(grace_seconds=0)
        assert s.verify(deep=True)["ok"]
        assert s.tree_entries(other)["copy"].sha256 == top
        assert s.tree_entries(tree)
        s.unpin("big")
        s.gc(grace_seconds=0)
        assert s.blob_path(top).exists()
        assert s.verify(deep=True)["ok"]


def test_a_manifest_naming_pages_cut_otherwise_is_rewritten_by_a_repair_and_gc_keeps_it_readable(
    tmp_path: Path,
) -> None:
    """A manifest whose pages list the tree's files but are not its own (one leaf for
    200 files): `verify --repair` names the tree's pages in it, so the gc after it
    takes no page the manifest names."""
    root = tmp_path / "st"
    with Store(root) as s:
        shas = [s.ingest_bytes(f"c{i}\n".encode()).sha256 for i in range(3)]
        entries = {f"d/f{i:04d}": TreeEntry(shas[i % 3], "100644", 3) for i in range(200)}
        tree = s.put_tree(entries)
        s.pin(tree, "t")
        norm = tf.normalize_entries(entries)
        one = tf.LEAF_HEADER + b"".join(f"{e.mode} {e.sha256} {e.size} {p}\n".encode() for p, e in norm.items())
        pid = sha256_bytes(one)
        (s.blobs_dir / pid[:2]).mkdir(exist_ok=True)
        (s.blobs_dir / pid[:2] / pid).write_bytes(one)
        mpath = s.manifest_path(tree)
        m = json.loads(mpath.read_bytes())
        m.update(pages=[pid], depth=0)
        os.chmod(mpath, 0o644)
        mpath.write_text(json.dumps(m))
        before = s.get_manifest(tree)
        s.rebuild_index()
        s.gc(grace_seconds=0)
        after = s.get_manifest(tree)
        assert after["files"] == before["files"] and after["created_at"] == before["created_at"]
        assert s.verify(deep=True)["ok"], s.verify()["problems"]


_GOOD = f"100644 {SHA} 12 a b.txt"  # a path may hold spaces


@pytest.mark.parametrize(
    "line",
    [
        "",  # empty line
        f"100644 {SHA} 12 ",  # empty path
        f"100644 {SHA} 12",  # no path
        f"100664 {SHA} 12 a",  # not a tree mode
        f"100644 {SHA.upper()} 12 a",  # hash not lowercase
        f"100644 {SHA[:63]} 12 a",  # hash too short
        f"100644 {SHA}0 12 a",  # hash too long
        f"100644 {SHA} -1 a",  # negative size
        f"100644 {SHA} +1 a",  # signed size
        f"100644 {SHA}  12 a",  # two spaces
        f"100644 {SHA} 1_2 a",  # not a decimal number
        f" 100644 {SHA} 12 a",  # leading space
        f"100644 {SHA} {'9' * 20} a",  # more digits than any file size has
        f"100644 {SHA} {'9' * 5000} a",  # more than int() converts
    ],
)
def test_a_malformed_leaf_line_is_named_wherever_it_sits(line: str) -> None:
    """Each leaf line is checked whole (mode, lowercase SHA-256, decimal size, a path), and
    the first bad one is quoted, be it first, last or between good ones."""
    for lines in ([line], [_GOOD, line], [line, _GOOD], [_GOOD, line, _GOOD]):
        page = tf.LEAF_HEADER + "".join(f"{x}\n" for x in lines).encode()
        with pytest.raises(
            CorruptManifestError, match="leaf: malformed leaf line " + re.escape(repr(line.encode()[:80]))
        ):
            tf.parse_leaf(page, "leaf")
    for page in (tf.LEAF_HEADER, tf.LEAF_HEADER + f"{_GOOD}".encode(), b"runicorn-node-v1\n" + f"{_GOOD}\n".encode()):
        with pytest.raises(CorruptManifestError, match="leaf: (not a leaf page|a leaf page must end with a newline)"):
            tf.parse_leaf(page, "leaf")


def test_leaf_lines_are_read_as_written() -> None:
    """Modes, sizes with leading zeros, spaces, a carriage return and bytes that are not
    UTF-8 in a path: what a leaf says is what the parser gives back."""
    raw = [
        ("100644", SHA, "012", b"a b.txt"),
        ("100755", "b" * 64, "0", b"run\r.sh"),
        ("120000", "c" * 64, "7", b"link-\xff"),
    ]
    page = tf.LEAF_HEADER + b"".join(f"{m} {s} {n} ".encode() + p + b"\n" for m, s, n, p in raw)
    assert tf.parse_leaf(page, "leaf") == [
        (p.decode("utf-8", "surrogateescape"), TreeEntry(s, m, int(n))) for m, s, n, p in raw
    ]
