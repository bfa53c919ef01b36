"""Platforms as plain mappings, with Julia's rules (``Base.BinaryPlatforms``) for choosing a variant.

A platform is a mapping of tag -> string, e.g. ``{"os": "linux", "arch": "x86_64",
"libc": "glibc"}``.  :func:`make_platform` normalises one as Julia's ``Platform``
constructor does (lower case, architecture aliases, version tags as full versions,
``libc = glibc`` on Linux, ``call_abi = eabihf`` on 32-bit ARM Linux).

Matching (:func:`platforms_match`, the platform asked for acting as Julia's
``HostPlatform``): a tag present on both sides must agree -- by equality, except that
``os_version`` and ``libstdcxx_version`` of the host are caps (the artifact's version must
not exceed the host's) and ``julia_version`` compares major.minor; a tag missing on either
side is a wildcard.  Selection (:func:`select_variant`, Julia's ``select_platform``): among
matching variants, the fewest tags differing from the host's tag set, then the greatest
triplet (``libgfortran5`` beats ``libgfortran4``, ``cxx11`` beats ``cxx03``), whatever the
order of the entries in the file.

Triplets (``x86_64-linux-gnu-libgfortran5-cxx11``) parse and print as Julia does:
:func:`parse_triplet`, :func:`triplet`.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Mapping, Sequence

from runicorn.errors import ArtifactError

# Entry keys that are not platform tags.
RESERVED_KEYS = frozenset({"tree-sha256", "git-tree-sha1", "lazy", "download"})

# Julia's CPUID.normalize_arch table (values seen in `uname -m` and triplets).
ARCH_ALIASES = {
    "amd64": "x86_64",
    "i386": "i686",
    "i486": "i686",
    "i586": "i686",
    "armv6": "armv6l",
    "arm": "armv7l",
    "armv7": "armv7l",
    "armv8": "armv7l",
    "armv8l": "armv7l",
    "arm64": "aarch64",
    "ppc64le": "powerpc64le",
}
# Not Julia's (its constructor only lower-cases the os): accepted from users because
# `sys.platform` and other tools spell them so; Julia files never hold them.
_OS_ALIASES = {"darwin": "macos", "osx": "macos", "win32": "windows", "mingw32": "windows"}

# Tags Julia normalises as versions ("5" -> "5.0.0").
VERSION_TAGS = ("libgfortran_version", "libstdcxx_version", "os_version")
# Tags a host holds as an upper bound (Julia's HostPlatform sets compare_version_cap on them).
CAPPED_TAGS = ("os_version", "libstdcxx_version")
# Characters Julia's add_tag! refuses in tag names and values.
FORBIDDEN_CHARS = "+- /<>:\"'\\|?*"

# Patterns are compiled on first use (re caches them), not when the module is imported:
# gc and the lookup path import it without parsing a version or a triplet.
_VERSION = r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?"

_host: dict[str, str] | None = None


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``(major, minor, patch)`` of a plain version (``"5"``, ``"3.4.26"``, ``"v10.9"``), or None."""
    m = re.fullmatch(_VERSION, text.strip())
    if m is None:
        return None
    return (int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0))


def normalize_version(text: str) -> str:
    """``"5"`` -> ``"5.0.0"`` as Julia's ``string(VersionNumber(...))``; other text unchanged."""
    v = parse_version(text)
    return text if v is None else "%d.%d.%d" % v


def _check_chars(what: str, text: str) -> None:
    bad = [c for c in FORBIDDEN_CHARS if c in text]
    if bad:
        raise ArtifactError(
            f"platform {what} {text!r}: {bad[0]!r} is not allowed in platform tags "
            f"(Julia refuses any of {FORBIDDEN_CHARS!r})"
        )


def make_platform(tags: Mapping[str, Any]) -> dict[str, str]:
    """A platform normalised as Julia's ``Platform(arch, os; tags...)`` builds it.

    Raises:
        ArtifactError: a tag or value is not a string, or holds a character Julia refuses.
    """
    out: dict[str, str] = {}
    for k, v in tags.items():
        if not isinstance(k, str) or not isinstance(v, (str, int)) or isinstance(v, bool):
            raise ArtifactError(f"platform tag {k!r}={v!r}: tags and values must be strings")
        key = k.strip().lower()
        value = str(v).strip().lower()
        if key == "arch":
            value = ARCH_ALIASES.get(value, value)
        elif key == "os":
            value = _OS_ALIASES.get(value, value)
        elif key in VERSION_TAGS:
            value = normalize_version(value)
        _check_chars("tag", key)
        _check_chars(f"value of {key!r}", value)
        out[key] = value
    if out.get("os") == "linux":
        out.setdefault("libc", "glibc")
        if out.get("arch") in ("armv7l", "armv6l"):
            out.setdefault("call_abi", "eabihf")
    return out


def normalize_platform(platform: Mapping[str, Any] | None) -> dict[str, str]:
    """``platform`` normalised (:func:`make_platform`); the host's when None.

    Raises:
        ArtifactError: a bad tag or value.
    """
    if platform is None:
        return host_platform()
    return make_platform(platform)


def host_platform() -> dict[str, str]:
    """This machine's platform: ``os``, ``arch`` and, on Linux, ``libc`` (``glibc``/``musl``).

    ``$RUNICORN_PLATFORM`` (a triplet such as ``aarch64-linux-gnu``, or
    ``os=linux,arch=aarch64,...``) overrides the detected host.

    Raises:
        ArtifactError: ``$RUNICORN_PLATFORM`` does not parse.
    """
    global _host
    env = os.environ.get("RUNICORN_PLATFORM")
    if env:
        return parse_platform(env)
    if _host is None:
        import platform as _platform

        osname = "linux" if sys.platform.startswith("linux") else sys.platform
        host = {"os": osname, "arch": _platform.machine() or "unknown"}
        if host["os"] == "linux":
            host["libc"] = "glibc" if _platform.libc_ver()[0] == "glibc" else "musl"
        _host = make_platform(host)
    return dict(_host)


def parse_platform(text: str) -> dict[str, str]:
    """Parse a triplet (``x86_64-linux-gnu-cxx11``) or ``os=linux,arch=aarch64`` into a platform.

    Raises:
        ArtifactError: neither a triplet Julia parses nor ``KEY=VALUE`` items.
    """
    if "=" not in text:
        return parse_triplet(text.strip())
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ArtifactError(f"platform item {item!r} is not KEY=VALUE (e.g. os=linux,arch=aarch64)")
        out[key.strip()] = value.strip()
    return make_platform(out)


def platform_tags(entry: Mapping[str, Any]) -> dict[str, str]:
    """The platform tags of an artifact entry as written (every key that is not reserved)."""
    return {k: str(v).strip().lower() for k, v in entry.items() if k not in RESERVED_KEYS}


def entry_platform(entry: Mapping[str, Any]) -> dict[str, str]:
    """The platform of an artifact entry as Julia's ``unpack_platform`` builds it.

    Raises:
        ArtifactError: a tag value holds a character Julia refuses.
    """
    return make_platform({k: v for k, v in entry.items() if k not in RESERVED_KEYS and isinstance(v, str)})


def platform_key(tags: Mapping[str, str]) -> str:
    """A stable string for a set of tags (``arch=x86_64,os=linux``; ``any`` when empty)."""
    return ",".join(f"{k}={tags[k]}" for k in sorted(tags)) or "any"


def describe(p: Mapping[str, str]) -> str:
    """How messages name a normalised platform: its triplet, or its tags when it has no os/arch."""
    return triplet(p) if "os" in p and "arch" in p else platform_key(p)


def _tag_matches(key: str, artifact: str, host: str) -> bool:
    if key in CAPPED_TAGS:
        a, h = parse_version(artifact), parse_version(host)
        if a is not None and h is not None:
            return a <= h
    elif key == "julia_version":
        a, h = parse_version(artifact), parse_version(host)
        if a is not None and h is not None:
            return a[:2] == h[:2]
    return artifact == host


def platforms_match(artifact: Mapping[str, str], host: Mapping[str, str]) -> bool:
    """Julia's ``platforms_match(artifact, HostPlatform(host))`` for normalised platforms."""
    for k, v in artifact.items():
        other = host.get(k)
        if other is not None and not _tag_matches(k, v, other):
            return False
    return True


def matches(tags: Mapping[str, str], platform: Mapping[str, str]) -> bool:
    """True when the variant with ``tags`` can be used on the host ``platform``."""
    return platforms_match(make_platform(tags), make_platform(platform))


def triplet(p: Mapping[str, str]) -> str:
    """The triplet of a normalised platform, as Julia's ``triplet`` prints it.

    Extra tags (``-cuda+12.2``) follow in sorted order (Julia's deterministic serialization).
    """
    os_name = p.get("os")
    osv = parse_version(p.get("os_version", "")) if "os_version" in p else None
    if os_name == "linux":
        os_s = "-linux"
    elif os_name == "macos":
        os_s = "-apple-darwin" + (str(osv[0]) if osv else "")
    elif os_name == "windows":
        os_s = "-w64-mingw32"
    elif os_name == "freebsd":
        os_s = "-unknown-freebsd" + (f"{osv[0]}.{osv[1]}" if osv else "")
    elif os_name == "openbsd":
        os_s = "-unknown-openbsd"
    else:
        os_s = "-unknown"
    libc = p.get("libc")
    s = p.get("arch", "") + os_s + ("" if libc is None else "-gnu" if libc == "glibc" else "-" + libc)
    s += p.get("call_abi", "")
    gf = parse_version(p["libgfortran_version"]) if "libgfortran_version" in p else None
    if gf is not None:
        s += f"-libgfortran{gf[0]}"
    if "cxxstring_abi" in p:
        s += "-" + p["cxxstring_abi"]
    cxx = parse_version(p["libstdcxx_version"]) if "libstdcxx_version" in p else None
    if cxx is not None:
        s += f"-libstdcxx{cxx[2]}"
    skip = {"os", "arch", "libc", "call_abi", "libgfortran_version", "libstdcxx_version", "cxxstring_abi", "os_version"}
    for k in sorted(p):
        if k not in skip:
            s += f"-{k}+{p[k]}"
    return s


_TRIPLET = (
    r"(?P<arch>(?:x86_|amd)64|i\d86|aarch64|arm64|arm(?:v7l)?|armv6l|p(?:ower)?pc64le|rv64|riscv64)"
    r"(?P<os>-apple-darwin[\d.]*|-(?:.*-)?freebsd[\d.]*|-(?:.*-)?openbsd[\d.]*|-w64-mingw32|-(?:.*-)?linux)"
    r"(?P<libc>-gnu|-musl)?"
    r"(?P<call_abi>eabihf|eabi)?"
    r"(?P<gfortran>-libgfortran[345]|-gcc[478])?"
    r"(?P<cxxstring>-cxx03|-cxx11)?"
    r"(?P<libstdcxx>-libstdcxx\d+)?"
    r"(?P<tags>(?:-[^-]+\+[^-]+)*)"
)
_OLD_GCC = {"4": "3", "7": "4", "8": "5"}  # -gccN spells libgfortran3/4/5 in old triplets


def parse_triplet(text: str) -> dict[str, str]:
    """A platform from a triplet, as Julia's ``parse(Platform, triplet)``.

    Raises:
        ArtifactError: not a triplet Julia parses.
    """
    m = re.fullmatch(_TRIPLET, text)
    if m is None:
        raise ArtifactError(
            f"platform {text!r} is neither a triplet such as x86_64-linux-gnu "
            "nor KEY=VALUE items such as os=linux,arch=x86_64"
        )
    arch = m["arch"]
    arch = {"amd64": "x86_64", "arm64": "aarch64", "arm": "armv7l", "rv64": "riscv64", "ppc64le": "powerpc64le"}.get(
        arch, arch
    )
    if re.fullmatch(r"i\d86", arch):
        arch = "i686"
    tags: dict[str, str] = {"arch": arch}
    os_part = m["os"]
    ver: str | None = None
    if "darwin" in os_part:
        tags["os"] = "macos"
        ver = os_part.rpartition("darwin")[2]
    elif "freebsd" in os_part:
        tags["os"] = "freebsd"
        ver = os_part.rpartition("freebsd")[2]
    elif "openbsd" in os_part:
        tags["os"] = "openbsd"
        ver = os_part.rpartition("openbsd")[2]
    elif os_part == "-w64-mingw32":
        tags["os"] = "windows"
    else:
        tags["os"] = "linux"
    if ver:
        # Julia reads "17.0.0" and "11.1" alike; a bare "." is no version
        v = parse_version(ver.strip("."))
        if v is not None:
            tags["os_version"] = ver.strip(".")
    if m["libc"]:
        tags["libc"] = "glibc" if m["libc"] == "-gnu" else "musl"
    if m["call_abi"]:
        tags["call_abi"] = m["call_abi"]
    if m["gfortran"]:
        g = m["gfortran"]
        tags["libgfortran_version"] = g[-1] if "libgfortran" in g else _OLD_GCC[g[-1]]
    if m["cxxstring"]:
        tags["cxxstring_abi"] = m["cxxstring"][1:]
    if m["libstdcxx"]:
        tags["libstdcxx_version"] = "3.4." + m["libstdcxx"][len("-libstdcxx") :]
    for field in filter(None, m["tags"].split("-")):
        k, _, v = field.partition("+")
        tags[k] = v
    return make_platform(tags)


def select_variant(entries: Sequence[Mapping[str, Any]], platform: Mapping[str, str]) -> int | None:
    """Index of the entry Julia's ``select_platform`` picks for the host ``platform``, or None.

    Among the entries whose platform matches, the one whose tag set differs least from the
    host's (symmetric difference of the tag names), then the greatest triplet; entries
    with the same loss and triplet go to the one written first.
    """
    host = make_platform(platform)
    host_keys = set(host)
    best: int | None = None
    best_key: tuple[int, str] = (0, "")
    for i, entry in enumerate(entries):
        p = entry_platform(entry)
        if not platforms_match(p, host):
            continue
        loss = len(host_keys.symmetric_difference(p))
        t = triplet(p)
        if best is None or loss < best_key[0] or (loss == best_key[0] and t > best_key[1]):
            best, best_key = i, (loss, t)
    return best
