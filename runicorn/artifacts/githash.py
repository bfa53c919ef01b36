"""Julia-compatible ``git-tree-sha1``: git's tree object id of a set of files.

Equals ``git add -A && git write-tree`` of the same directory: blobs are
``sha1("blob <len>\\0" + bytes)``, a tree lists ``"<mode> <name>\\0<20-byte id>"`` sorted
as git does (a directory sorts as if its name ended in ``/``), modes are ``100644``,
``100755``, ``120000`` and ``40000``; empty directories do not exist for git.  Every
entry named ``.git`` (a repository's directory, a worktree's ``.git`` file, at any depth)
is left out, as Pkg's ``GitTools.tree_hash`` does, so a checkout hashes as its
``git write-tree``.
"""

from __future__ import annotations

from typing import Any, Mapping

from runicorn.hashing import git_tree_object_sha1

_DIR = object()


def git_tree_sha1(entries: Mapping[str, tuple[str, str]]) -> str:
    """The git tree id of ``{relpath: (mode, git blob sha1 hex)}`` (paths through ``.git`` skipped)."""
    root: dict[str, Any] = {}
    for path, (mode, sha1) in entries.items():
        parts = path.split("/")
        if ".git" in parts:
            continue
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = (mode, sha1)
    return _hash_dir(root).hex()


def _hash_dir(node: dict[str, Any]) -> bytes:
    items: list[tuple[bytes, bytes]] = []
    for name, value in node.items():
        bname = name.encode("utf-8", "surrogateescape")
        if isinstance(value, dict):
            items.append((bname + b"/", b"40000 " + bname + b"\x00" + _hash_dir(value)))
        else:
            mode, sha1 = value
            items.append((bname, mode.encode("ascii") + b" " + bname + b"\x00" + bytes.fromhex(sha1)))
    items.sort(key=lambda item: item[0])
    return git_tree_object_sha1(b"".join(body for _, body in items))
