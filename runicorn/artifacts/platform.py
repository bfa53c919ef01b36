"""Platforms as plain mappings, and Julia's rules for choosing a variant.

A platform is a mapping of tag -> string, e.g. ``{"os": "linux", "arch": "x86_64",
"libc": "glibc"}``.  Matching: a key present on both sides must be equal, a key missing
on either side is a wildcard; among matching variants the one with the most keys in
common wins (ties: first in the file).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Mapping, Sequence

from runicorn.errors import ArtifactError

# Entry keys that are not platform tags.
RESERVED_KEYS = frozenset({"tree-sha256", "git-tree-sha1", "lazy", "download"})

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8": "aarch64",
                 "i386": "i686", "x86": "i686", "ppc64le": "powerpc64le"}
_OS_ALIASES = {"darwin": "macos", "osx": "macos", "win32": "windows", "mingw32": "windows"}

_host: dict[str, str] | None = None


def _norm(key: str, value: Any) -> str:
    v = str(value).strip().lower()
    if key == "arch":
        return _ARCH_ALIASES.get(v, v)
    if key == "os":
        return _OS_ALIASES.get(v, v)
    return v


def normalize_platform(platform: Mapping[str, Any] | None) -> dict[str, str]:
    """Lower-case a platform mapping and map common aliases (amd64 -> x86_64, darwin -> macos).

    Raises:
        ArtifactError: a key or value is not a string.
    """
    if platform is None:
        return host_platform()
    out: dict[str, str] = {}
    for k, v in platform.items():
        if not isinstance(k, str) or not isinstance(v, (str, int)) or isinstance(v, bool):
            raise ArtifactError(f"platform tag {k!r}={v!r}: tags and values must be strings")
        out[k.strip().lower()] = _norm(k.strip().lower(), v)
    return out


def host_platform() -> dict[str, str]:
    """This machine's platform: ``os``, ``arch`` and, on Linux, ``libc`` (``glibc``/``musl``).

    ``$RUNICORN_PLATFORM`` (``os=linux,arch=aarch64,...``) overrides the detected host.
    """
    global _host
    env = os.environ.get("RUNICORN_PLATFORM")
    if env:
        return parse_platform(env)
    if _host is None:
        import platform as _platform

        osname = _norm("os", sys.platform.rstrip("0123456789") if sys.platform.startswith("linux") else sys.platform)
        host = {"os": osname, "arch": _norm("arch", _platform.machine() or "unknown")}
        if osname == "linux":
            libc = _platform.libc_ver()[0]
            host["libc"] = "glibc" if libc == "glibc" else "musl"
        _host = host
    return dict(_host)


def parse_platform(text: str) -> dict[str, str]:
    """Parse ``os=linux,arch=aarch64`` into a normalised platform mapping.

    Raises:
        ArtifactError: an item is not ``KEY=VALUE``.
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ArtifactError(f"platform item {item!r} is not KEY=VALUE (e.g. os=linux,arch=aarch64)")
        out[key.strip().lower()] = _norm(key.strip().lower(), value)
    return out


def platform_tags(entry: Mapping[str, Any]) -> dict[str, str]:
    """The platform tags of an artifact entry (every key that is not reserved)."""
    return {k: _norm(k, v) for k, v in entry.items() if k not in RESERVED_KEYS}


def platform_key(tags: Mapping[str, str]) -> str:
    """A stable string for a set of tags (``arch=x86_64,os=linux``; ``any`` when empty)."""
    return ",".join(f"{k}={tags[k]}" for k in sorted(tags)) or "any"


def matches(tags: Mapping[str, str], platform: Mapping[str, str]) -> bool:
    """True when every key present on both sides has the same value."""
    for k, v in tags.items():
        other = platform.get(k)
        if other is not None and other != v:
            return False
    return True


def select_variant(entries: Sequence[Mapping[str, Any]], platform: Mapping[str, str]) -> int | None:
    """Index of the best-matching entry for ``platform`` (most shared keys; ties: first), or None."""
    best: int | None = None
    best_score = -1
    for i, entry in enumerate(entries):
        tags = platform_tags(entry)
        if not matches(tags, platform):
            continue
        score = sum(1 for k in tags if k in platform)
        if score > best_score:
            best, best_score = i, score
    return best
