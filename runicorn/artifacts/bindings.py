"""Binding refs (kind ``binding``): how a TOML file's bound artifacts keep their trees alive.

One ref per bound variant, named by :func:`binding_ref_name`; :func:`installed_tree` finds
the tree a hash (a tree id or a git-tree-sha1 link) is installed as.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping

from runicorn.artifacts.platform import platform_key, platform_tags
from runicorn.store import refkinds

BINDING_KIND = refkinds.BINDING


def binding_ref_name(toml_path: str, name: str, entry: Mapping[str, Any]) -> str:
    """``<abs toml>#<artifact>#<platform key>``: one ref per bound variant.

    Whatever the directory names and platform tags hold, the name is a valid ref name:
    ``%``, newline, carriage return and NUL are percent-escaped (and ``#`` in the platform
    key, so the last two ``#`` still split the name); a name too long for a ref is the
    file, the artifact and a digest of the rest.
    """
    key = re.sub(_REF_UNSAFE_KEY, _percent, platform_key(platform_tags(entry)))
    ref = f"{re.sub(_REF_UNSAFE, _percent, toml_path)}#{name}#{key}"
    if len(ref) > 4000:
        from runicorn.hashing import sha256_bytes

        ref = f"~{sha256_bytes(ref.encode('utf-8', 'surrogateescape'))}#{name}#{key[:256]}"
    return ref


# Lone surrogates stand for bytes of a name that is not UTF-8 (os.fsdecode); the index
# stores text as UTF-8, so they are escaped like the characters a ref name cannot hold.
# (Compiled on first use, re caches them: importing this module compiles nothing.)
_REF_UNSAFE = "[%\n\r\x00\udc80-\udcff]"
_REF_UNSAFE_KEY = "[%#\n\r\x00\udc80-\udcff]"


def _percent(m: "re.Match[str]") -> str:
    return f"%{ord(m.group()):02X}"


def installed_tree(store: Any, h: str) -> str | None:
    """The tree-sha256 installed for hash ``h`` (a tree id, or a git-tree-sha1 link), if any."""
    d = store.artifacts_dir / h
    if len(h) == 64:
        return h if d.is_dir() else None
    try:
        target = os.readlink(d)
    except OSError:
        return None
    return target if (store.artifacts_dir / target).is_dir() else None


__all__ = ["BINDING_KIND", "binding_ref_name", "installed_tree"]
