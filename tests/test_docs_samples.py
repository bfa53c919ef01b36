"""Issue 13 item 5: every shell and Python sample of README.md and docs/*.md runs as written.

Each document's code blocks run in file order, in a fresh project directory against a
fresh store chosen the way a user configures one (``$RUNICORN_DIR``; ``HOME`` is empty, so
a sample that hard-codes ``~/.runicorn`` instead of using the configured store is caught),
with ``runicorn`` and ``python3`` of this environment first on ``PATH``:

* ```` ```bash ```` / ```` ```sh ```` blocks run as one ``bash`` script each (``set -eo pipefail``);
* ```` ```console ```` blocks run their ``$ `` lines (with ``\\`` continuations) the same way;
  the other lines are output and are not compared;
* ```` ```python ```` blocks run as a script each.

The project directory holds what the samples name as the user's own files (a training
script, ``checkpoints/``, ``build/mnist/``, ``model.pth``; see :func:`_project`).

A block that needs a machine the test cannot have (an S3 endpoint, an SSH server named
in it, cron) is preceded by ``<!-- not run: REASON -->``; it is still checked for what
would make it unusable as pasted: no ``~/.runicorn`` (the configured store is
``$RUNICORN_DIR`` or ``--storage``), no placeholder ids (``<tree>``, ``3f8c2a1b9e4d``,
``20250115_103015_abc123``): commands meant to be pasted get their ids from commands.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUN_LANGS = {"bash", "sh", "console", "python"}
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    text: str
    not_run: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"

    def code_lines(self) -> list[str]:
        """The lines that are code: for console blocks the commands, without comments."""
        if self.lang == "console":
            lines = console_commands(self.text)
        else:
            lines = self.text.splitlines()
        out = []
        for line in lines:
            if line.lstrip().startswith("#"):
                continue
            out.append(re.sub(r"\s#\s.*$", "", line))
        return out


def blocks(doc: Path) -> list[Block]:
    found: list[Block] = []
    lines = doc.read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).lower()
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        prev = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NOT_RUN.search(prev)
        found.append(
            Block(doc, start + 1, lang, textwrap.dedent("\n".join(body)) + "\n", marker.group(1) if marker else None)
        )
        i += 1
    return found


def console_commands(text: str) -> list[str]:
    """The ``$ `` commands of a console block, continuation lines joined."""
    cmds: list[str] = []
    cont = False
    for line in text.splitlines():
        if cont:
            cmds[-1] += "\n" + line
        elif line.startswith("$ "):
            cmds.append(line[2:])
        else:
            continue
        cont = line.rstrip().endswith("\\")
    return cmds


ALL_BLOCKS = [b for d in DOCS for b in blocks(d) if b.lang in RUN_LANGS]

PLACEHOLDERS = [
    (re.compile(r"~/\.runicorn|expanduser\(\)[^\n]*\.runicorn|\"~/\.runicorn"), "hard-codes ~/.runicorn"),
    (re.compile(r"<(tree|run_id|id|sha|hash)>"), "a <placeholder> id"),
    (re.compile(r"\b\d{8}_\d{6}_[0-9a-f]{6}\b"), "a literal run id"),
    (re.compile(r"(?<![\w/.])(?=[0-9]*[a-f])[0-9a-f]{8,64}(?![\w/])"), "a literal tree id or hash"),
    (re.compile(r"\.\.\.\.json"), "an elided file name"),
]


@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: b.where)
def test_samples_hold_no_placeholders_or_default_store(block: Block) -> None:
    for line in block.code_lines():
        for pattern, why in PLACEHOLDERS:
            assert not pattern.search(line), f"{block.where}: {why}: {line.strip()}"


def test_every_block_left_unrun_says_why() -> None:
    for b in ALL_BLOCKS:
        if b.not_run is not None:
            assert len(b.not_run) > 10, b.where
    # What is left unrun needs a machine the test cannot have; everything else runs.
    unrun = [b.where for b in ALL_BLOCKS if b.not_run is not None]
    assert len(unrun) <= 6, unrun


def _project(root: Path) -> None:
    """A user's project: code, a checkpoint folder, a dataset folder, a model file."""
    files = {
        "train.py": "print('training')\n",
        "src/model.py": "LAYERS = 3\n",
        "checkpoints/epoch1.pt": "weights 1\n" * 100,
        "model.pth": "model weights\n" * 100,
        "build/mnist/labels.csv": "image,label\n0.png,0\n",
        "build/mnist/labels.txt": "0 1 2\n",
        "build/mnist/images/0.png": "not really a png\n",
        "data/mnist/labels.csv": "image,label\n0.png,0\n",
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def _run(block: Block, cwd: Path, env: dict[str, str]) -> None:
    if block.lang == "python":
        script = cwd.parent / "sample.py"
        script.write_text(block.text)
        cmd = [sys.executable, str(script)]
    else:
        body = "\n".join(console_commands(block.text)) if block.lang == "console" else block.text
        cmd = ["bash", "-c", "set -eo pipefail\n" + body]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (
        f"{block.where} ({block.lang}) failed:\n{block.text}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    )
    assert "Traceback" not in r.stderr, f"{block.where}: {r.stderr}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: str(d.relative_to(REPO)))
def test_every_sample_runs_as_written_in_a_fresh_store(doc: Path, tmp_path: Path) -> None:
    cwd, home, store = tmp_path / "project", tmp_path / "home-of-user", tmp_path / "configured-store"
    cwd.mkdir()
    home.mkdir()
    _project(cwd)
    env = dict(
        os.environ,
        RUNICORN_DIR=str(store),
        HOME=str(home),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    ran = 0
    for block in blocks(doc):
        if block.lang in RUN_LANGS and block.not_run is None:
            _run(block, cwd, env)
            ran += 1
    assert not (home / ".runicorn").exists(), f"{doc.name}: a sample used ~/.runicorn, not the configured store"
    assert ran or not [b for b in blocks(doc) if b.lang in RUN_LANGS], doc
