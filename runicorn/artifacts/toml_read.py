"""Reading ``Runicorn.toml`` / Julia ``Artifacts.toml``: tomllib, validated, cached by stat,
and choosing an entry (the variant of an artifact for a platform).

This module is on the hot path of :func:`runicorn.artifact`: after the first parse a
lookup costs one ``os.stat`` of the file.  ``tomllib`` is imported only on a parse.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from runicorn.errors import ArtifactError, TomlFormatError

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")

# Julia looks for JuliaArtifacts.toml before Artifacts.toml (Artifacts.artifact_names).
TOML_NAMES = ("Runicorn.toml", "JuliaArtifacts.toml", "Artifacts.toml")


class ParsedToml:
    """A validated artifacts file: ``name -> [entry, ...]`` (one entry unless platform variants).

    A plain class rather than a dataclass: ``dataclasses`` pulls in ``inspect``, which
    would cost milliseconds on the first ``artifact()`` call.
    """

    __slots__ = ("path", "artifacts", "variants", "select_cache")

    def __init__(self, path: str, artifacts: dict[str, list[dict[str, Any]]], variants: dict[str, bool]) -> None:
        self.path = path
        self.artifacts = artifacts
        self.variants = variants  # name -> written as [[name]] (platform variants)
        self.select_cache: dict[tuple[str, str], int | None] = {}


# path -> ((mtime_ns, size), parsed)
_cache: dict[str, tuple[tuple[int, int], ParsedToml]] = {}


def is_artifact_name(name: object) -> bool:
    """True for a valid artifact name: the whole string (a trailing newline is refused too)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The directory name of an entry: its ``tree-sha256``, else its ``git-tree-sha1``."""
    return str(entry.get("tree-sha256") or entry["git-tree-sha1"])


def load_toml(path: str) -> ParsedToml:
    """Parse and validate an artifacts TOML, reusing the last parse while (mtime, size) holds.

    Raises:
        TomlFormatError: missing file, bad TOML (with line and column), or a bad entry;
            the message names the file, the artifact and what is wrong.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise TomlFormatError(f"{path}: no such artifacts file") from None
    key = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    parsed = parse_toml_bytes(_read(path), path)
    _cache[path] = (key, parsed)
    return parsed


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def forget(path: str | None = None) -> None:
    """Drop cached parses (all, or one file)."""
    if path is None:
        _cache.clear()
    else:
        _cache.pop(path, None)


def parse_toml_bytes(data: bytes, path: str) -> ParsedToml:
    """Parse and validate TOML text from ``path`` (see :func:`load_toml`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TomlFormatError(f"{path}: not UTF-8 text ({exc})") from None
    return validate_document(loads_toml(text, path), path)


def loads_toml(text: str, path: str) -> dict[str, Any]:
    """The one TOML parse of every file Runicorn reads (``tomllib``), with its errors
    turned into one-line :class:`TomlFormatError` naming the file.

    Nesting depth is bounded: the parser recurses once per nested array or inline table,
    and a document nested beyond the interpreter's recursion limit is refused as such.

    Raises:
        TomlFormatError: not valid TOML, or nested too deeply.
    """
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlFormatError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:
        raise TomlFormatError(f"{path}: not valid TOML: arrays or inline tables nested too deeply") from None


def validate_document(doc: dict[str, Any], path: str) -> ParsedToml:
    """Check every artifact of a parsed document (see ``schema/runicorn-toml.md``).

    Raises:
        TomlFormatError: naming the file, the artifact and the problem.
    """
    artifacts: dict[str, list[dict[str, Any]]] = {}
    variants: dict[str, bool] = {}
    for name, value in doc.items():
        where = f"{path}: artifact {name!r}"
        if not is_artifact_name(name):
            raise TomlFormatError(f"{where}: name must be letters, digits, '_', '.', '+', '-' and must not contain '/'")
        if isinstance(value, dict):
            artifacts[name] = [_check_entry(value, where, in_array=False)]
            variants[name] = False
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            artifacts[name] = [_check_entry(v, f"{where} variant {i + 1}", in_array=True) for i, v in enumerate(value)]
            variants[name] = True
        else:
            raise TomlFormatError(
                f"{where}: must be a table [{name}] or an array of tables [[{name}]], not {type(value).__name__}"
            )
    return ParsedToml(path, artifacts, variants)


def _check_entry(entry: dict[str, Any], where: str, *, in_array: bool) -> dict[str, Any]:
    from runicorn.hashing import is_sha1_hex, is_sha256_hex

    # Hex ids are accepted in either case (as Julia and pooch accept them) and kept lower-case.
    for k in ("tree-sha256", "git-tree-sha1"):
        if isinstance(entry.get(k), str):
            entry[k] = entry[k].lower()
    tree = entry.get("tree-sha256")
    git = entry.get("git-tree-sha1")
    if tree is None and git is None:
        raise TomlFormatError(f"{where}: needs 'tree-sha256' (or Julia's 'git-tree-sha1')")
    if tree is not None and not is_sha256_hex(tree):
        raise TomlFormatError(f"{where}: 'tree-sha256' must be 64 hex digits, got {tree!r}")
    if git is not None and not is_sha1_hex(git):
        raise TomlFormatError(f"{where}: 'git-tree-sha1' must be 40 hex digits, got {git!r}")
    lazy = entry.get("lazy", False)
    if not isinstance(lazy, bool):
        raise TomlFormatError(f"{where}: 'lazy' must be true or false, got {lazy!r}")
    if in_array:
        for k in ("os", "arch"):
            if k not in entry:
                raise TomlFormatError(f"{where}: platform variants ([[...]]) need '{k}'")
    for k, v in entry.items():
        if k in ("tree-sha256", "git-tree-sha1", "lazy", "download"):
            continue
        if not isinstance(v, str) or not v:
            raise TomlFormatError(f"{where}: platform tag {k!r} must be a non-empty string, got {v!r}")
        if in_array:
            from runicorn.artifacts.platform import FORBIDDEN_CHARS

            for text in (k, v):
                bad = next((c for c in FORBIDDEN_CHARS if c in text.lower()), None)
                if bad is not None:
                    raise TomlFormatError(
                        f"{where}: platform tag {k!r} = {v!r}: {bad!r} is not allowed "
                        "in platform tags (Julia refuses it)"
                    )
    downloads = entry.get("download", [])
    if isinstance(downloads, dict):
        downloads = [downloads]
    if not isinstance(downloads, list):
        raise TomlFormatError(f"{where}: 'download' must be an array of tables [[name.download]]")
    for i, d in enumerate(downloads):
        dw = f"{where} download {i + 1}"
        if not isinstance(d, dict):
            raise TomlFormatError(f"{dw}: must be a table with 'url' and 'sha256'")
        if "remote" in d:  # a runicorn remote holding the tree itself (schema/remote.md)
            for k in ("remote", "endpoint"):
                if k in d and (not isinstance(d[k], str) or not d[k]):
                    raise TomlFormatError(f"{dw}: '{k}' must be a non-empty string")
            if tree is None:
                raise TomlFormatError(f"{dw}: a 'remote' source needs the entry's 'tree-sha256'")
            continue
        url = d.get("url")
        if not isinstance(url, str) or not url:
            raise TomlFormatError(f"{dw}: 'url' must be a non-empty string")
        sha = d.get("sha256")
        if isinstance(sha, str):
            sha = d["sha256"] = sha.lower()
        if not is_sha256_hex(sha):
            raise TomlFormatError(f"{dw}: 'sha256' must be 64 hex digits, got {sha!r}")
        size = d.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise TomlFormatError(f"{dw}: 'size' must be a non-negative integer, got {size!r}")
    return entry


# ---------------------------------------------------------------- choosing an entry
def select_entry(parsed: ParsedToml, name: str, platform: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The entry of ``name`` for ``platform`` (host when None), or None if unbound / no match."""
    variants = parsed.artifacts.get(name)
    if variants is None:
        return None
    if platform is None:
        pkey = os.environ.get("RUNICORN_PLATFORM", "")
    else:
        from runicorn.artifacts.platform import normalize_platform, platform_key

        pkey = "=" + platform_key(normalize_platform(platform))
    ck = (name, pkey)
    try:
        idx = parsed.select_cache[ck]
    except KeyError:
        if not parsed.variants[name]:
            idx = 0
        else:
            from runicorn.artifacts.platform import normalize_platform, select_variant

            idx = select_variant(variants, normalize_platform(platform))
        parsed.select_cache[ck] = idx
    return None if idx is None else variants[idx]


def require_entry(parsed: ParsedToml, name: str, platform: Mapping[str, Any] | None) -> dict[str, Any]:
    entry = select_entry(parsed, name, platform)
    if entry is None:
        if name in parsed.artifacts:
            from runicorn.artifacts.platform import describe, normalize_platform

            raise ArtifactError(
                f"{parsed.path}: artifact {name!r} has no variant for platform {describe(normalize_platform(platform))}"
            )
        from runicorn.names import did_you_mean

        raise ArtifactError(f"{parsed.path}: no artifact named {name!r}{did_you_mean(name, parsed.artifacts)}")
    return entry


def copy_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    if "download" in out:
        d = out["download"]
        out["download"] = [dict(x) for x in (d if isinstance(d, list) else [d])]
    return out
