"""The pure, fast lookup path: ``artifact()`` and friends.

Nothing here downloads or writes (except a lazy artifact, which is handed to
:mod:`runicorn.artifacts.install` on first use).  A warm ``artifact("name")`` costs a
dictionary lookup for the caller's TOML, one ``stat`` of that TOML (parse cache), one
``stat`` of ``Overrides.toml`` and one ``isdir`` of the artifact directory.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping

from runicorn.artifacts.toml_read import TOML_NAMES, ParsedToml, entry_hash, is_artifact_name, load_toml
from runicorn.errors import ArtifactError, ArtifactNotInstalledError, TomlFormatError, option

# Called as f(name, tree_hash, path) each time artifact() hands out a path; the runs
# package registers one to record a run's inputs.  Empty by default, so it costs nothing.
observers: list[Callable[[str, str, Path], None]] = []

_caller_toml: dict[str, str | None] = {}
_cwd_toml: dict[str, str | None] = {}
_artifacts_dirs: dict[tuple[str | None, str | None], str] = {}
_overrides_cache: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}


def _find_upward(start: str) -> str | None:
    d = start
    while True:
        for n in TOML_NAMES:
            p = os.path.join(d, n)
            if os.path.isfile(p):
                return p
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def find_toml(caller_file: str | None) -> str:
    """The artifacts TOML for code in ``caller_file``: upward from its directory, else from the cwd.

    Raises:
        ArtifactError: none found.
    """
    found = _caller_toml.get(caller_file) if caller_file is not None else None
    if found is not None:
        return found
    if caller_file is not None and caller_file not in _caller_toml:
        if not caller_file.startswith("<"):
            found = _find_upward(os.path.dirname(os.path.abspath(caller_file)))
        _caller_toml[caller_file] = found
        if found is not None:
            return found
    cwd = os.getcwd()
    try:
        found = _cwd_toml[cwd]
    except KeyError:
        found = _cwd_toml[cwd] = _find_upward(cwd)
    if found is None:
        _cwd_toml.pop(cwd, None)  # a TOML may be created later; do not remember absence
        start = os.path.dirname(os.path.abspath(caller_file)) if caller_file and not caller_file.startswith("<") else cwd
        raise ArtifactError(f"no {' / '.join(TOML_NAMES)} found upward from {start} or from the "
                            f"working directory {cwd}; pass {option('toml')}")
    return found


def forget_lookups() -> None:
    """Drop cached caller -> TOML lookups (after a TOML is created or removed)."""
    _caller_toml.clear()
    _cwd_toml.clear()


def resolve_toml_path(toml: str | os.PathLike[str] | None, caller_file: str | None) -> str:
    """An absolute TOML path: ``toml`` (file or directory holding one) or the caller's."""
    if toml is None:
        return find_toml(caller_file)
    p = os.path.abspath(os.fspath(toml))
    if os.path.isdir(p):
        for n in TOML_NAMES:
            if os.path.isfile(os.path.join(p, n)):
                return os.path.join(p, n)
        return os.path.join(p, TOML_NAMES[0])
    return p


def artifacts_dir(storage: str | os.PathLike[str] | None = None) -> str:
    """``<storage_root>/artifacts`` as a string (cached per storage argument and $RUNICORN_DIR)."""
    key = (None if storage is None else os.fspath(storage), os.environ.get("RUNICORN_DIR"))
    d = _artifacts_dirs.get(key)
    if d is None:
        from runicorn.config import resolve_storage_root

        d = _artifacts_dirs[key] = str(resolve_storage_root(storage) / "artifacts")
    return d


def load_overrides(adir: str) -> dict[str, str]:
    """``<artifacts>/Overrides.toml`` as ``{tree id or artifact name: directory}`` (cached by stat).

    Julia's rules (stdlib Artifacts ``load_overrides``): a key is a tree id
    (``git-tree-sha1`` or ``tree-sha256``, any case) or an artifact name -- also inside a
    ``[<package UUID>]`` table; a target is an absolute directory path or a tree id (that
    tree's ``artifacts/<tree>``); an empty string means "no override".

    Raises:
        TomlFormatError: the file is not valid TOML, or a key or target Julia rejects
            (naming the file and the key).
    """
    path = adir + "/Overrides.toml"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    key = (st.st_mtime_ns, st.st_size)
    hit = _overrides_cache.get(path)
    if hit is not None and hit[0] == key:
        return hit[1]
    from runicorn.artifacts.toml_read import loads_toml

    with open(path, "rb") as f:
        data = f.read()
    try:
        doc = loads_toml(data.decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        raise TomlFormatError(f"{path}: not UTF-8 text ({exc})") from None
    out: dict[str, str] = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            _override_table(path, adir, k, v, out)
            continue
        tree = _tree_key(k)
        if tree is None:
            if _is_uuid(k) or not is_artifact_name(k):
                raise TomlFormatError(f"{path}: override key {k!r} is neither a tree id (40 or 64 hex "
                                      "digits) nor an artifact name")
        target = _override_target(path, adir, k, v)
        if target is not None:
            out[tree or k] = target
    _overrides_cache[path] = (key, out)
    return out


def _override_table(path: str, adir: str, k: str, table: dict[str, Any], out: dict[str, str]) -> None:
    # Julia's [<package UUID>] table of name = target; Runicorn files carry no package
    # UUID, so its names override that name in any file (a top-level name wins).
    if not _is_uuid(k):
        raise TomlFormatError(f"{path}: override table [{k}] must be named by a package UUID "
                              "(name overrides may also be written at top level: name = \"/dir\")")
    for name, v in table.items():
        if not is_artifact_name(name):
            raise TomlFormatError(f"{path}: override [{k}] key {name!r} is not an artifact name")
        target = _override_target(path, adir, f"{k}.{name}", v)
        if target is not None:
            out.setdefault(name, target)


def _tree_key(text: str) -> str | None:
    from runicorn.hashing import is_tree_id

    low = text.lower()
    return low if is_tree_id(low) else None


def _is_uuid(text: str) -> bool:
    import re

    return re.fullmatch(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", text) is not None


def _override_target(path: str, adir: str, k: str, v: object) -> str | None:
    if not isinstance(v, str):
        raise TomlFormatError(f"{path}: override {k!r} must be a directory path string, got {v!r}")
    if v == "":
        return None  # Julia: an empty string means "not overridden"
    tree = _tree_key(v)
    if tree is not None:
        return adir + "/" + tree
    if not os.path.isabs(v):
        raise TomlFormatError(f"{path}: override {k!r} must map to an absolute path or a tree id, "
                              f"got {v!r}")
    return os.path.normpath(v)


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


def _require_entry(parsed: ParsedToml, name: str, platform: Mapping[str, Any] | None) -> dict[str, Any]:
    entry = select_entry(parsed, name, platform)
    if entry is None:
        if name in parsed.artifacts:
            from runicorn.artifacts.platform import describe, normalize_platform

            raise ArtifactError(f"{parsed.path}: artifact {name!r} has no variant for platform "
                                f"{describe(normalize_platform(platform))}")
        from runicorn.names import did_you_mean

        raise ArtifactError(f"{parsed.path}: no artifact named {name!r}{did_you_mean(name, parsed.artifacts)}")
    return entry


def artifact(name: str, *, toml: str | os.PathLike[str] | None = None,
             platform: Mapping[str, Any] | None = None) -> Path:
    """The directory of a bound artifact (``"name/sub/path"`` indexes into it).

    Lazy artifacts are installed on first use (with a progress bar on stderr when it is
    a terminal).

    Raises:
        ArtifactError: no TOML, unknown name, no variant for the platform, or a backslash
            in ``name`` (refused on every platform: write ``name/sub``).
        ArtifactNotInstalledError: a non-lazy artifact is not installed (run ``runicorn fetch``).
        TomlFormatError: the TOML is malformed.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename) if toml is not None \
        else find_toml(sys._getframe(1).f_code.co_filename)
    return _artifact_at(tpath, name, platform)


def _artifact_at(tpath: str, name: str, platform: Mapping[str, Any] | None,
                 storage: str | os.PathLike[str] | None = None) -> Path:
    if "\\" in name:
        # "name\\sub" means name/sub on Windows and a file named with a backslash on POSIX:
        # refused everywhere, so a script behaves the same on every machine.
        raise ArtifactError(f"{tpath}: artifact path {name!r} contains a backslash; write "
                            "'name/sub/path' with forward slashes")
    base, _, sub = name.partition("/")
    parsed = load_toml(tpath)
    entry = _require_entry(parsed, base, platform)
    h = entry_hash(entry)
    adir = artifacts_dir(storage)
    ov = load_overrides(adir)
    d = (ov.get(base) or ov.get(h)) if ov else None
    if d is not None:
        if not os.path.isdir(d):
            raise ArtifactError(f"{adir}/Overrides.toml: override for {base!r} points to {d}, "
                                "which is not a directory")
    else:
        d = adir + "/" + h
        if not os.path.isdir(d):
            if entry.get("lazy"):
                from runicorn.artifacts.install import ensure_artifact_installed
                from runicorn.display import progress_bar

                # A download can take minutes: a bar on stderr when it is a terminal.
                bar = progress_bar(f"installing {base}")
                try:
                    ensure_artifact_installed(base, tpath, platform=platform, storage=storage, progress=bar)
                finally:
                    bar.close()
            elif not entry.get("download") and not _in_store(entry.get("tree-sha256"), storage):
                raise ArtifactNotInstalledError(
                    f"{tpath}: artifact {base!r} ({h[:12]}) is not installed and cannot be fetched: its tree "
                    "is not in the store and it has no download source; bind it again from its directory")
            else:
                raise ArtifactNotInstalledError(
                    f"{tpath}: artifact {base!r} ({h[:12]}) is not installed; "
                    f"run `runicorn fetch {base} --toml {tpath}`")
    if sub:
        from runicorn.relpath import validate_relpath

        validate_relpath(sub, what=f"path inside artifact {base!r}")
        path = Path(d, sub)
    else:
        path = Path(d)
    if observers:
        for fn in observers:
            fn(base, h, path)
    return path


def _in_store(tree: str | None, storage: str | os.PathLike[str] | None) -> bool:
    """Whether the store has ``tree`` (only asked on the way to an error)."""
    from runicorn.store import open_store

    return bool(tree) and open_store(storage).has_tree(tree)  # type: ignore[arg-type]


def artifact_meta(name: str, toml: str | os.PathLike[str] | None = None, *,
                  platform: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The selected entry of ``name`` as a dict with the file's own keys, or None if unbound
    (or if the ``toml`` given does not exist yet).

    Raises:
        ArtifactError: no TOML found.  TomlFormatError: malformed TOML.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
    if toml is not None and not os.path.exists(tpath):
        return None  # a file not written yet binds nothing (create-then-bind scripts)
    entry = select_entry(load_toml(tpath), name, platform)
    return None if entry is None else _copy_entry(entry)


def _copy_entry(entry: dict[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    if "download" in out:
        d = out["download"]
        out["download"] = [dict(x) for x in (d if isinstance(d, list) else [d])]
    return out


def artifact_hash(name: str, toml: str | os.PathLike[str] | None = None, *,
                  platform: Mapping[str, Any] | None = None) -> str | None:
    """The tree id (``tree-sha256``, else ``git-tree-sha1``) bound to ``name``, or None
    (also when the ``toml`` given does not exist yet).

    Raises:
        ArtifactError: no TOML found.  TomlFormatError: malformed TOML.
    """
    tpath = resolve_toml_path(toml, sys._getframe(1).f_code.co_filename)
    if toml is not None and not os.path.exists(tpath):
        return None
    entry = select_entry(load_toml(tpath), name, platform)
    return None if entry is None else entry_hash(entry)


def require_tree_id(tree: object) -> str:
    """``tree`` if it is a ``tree-sha256`` (64 hex) or ``git-tree-sha1`` (40 hex); it names a
    directory below ``artifacts/``, so nothing else (``../x``, ``/abs``) may reach the filesystem.

    Raises:
        ArtifactError: naming the bad value.
    """
    from runicorn.hashing import is_tree_id

    if not is_tree_id(tree):
        raise ArtifactError(f"{tree!r} is not a tree id (64 lowercase hex digits) or "
                            "git-tree-sha1 (40 lowercase hex digits)")
    return tree  # type: ignore[return-value]


def artifact_path(tree: str, *, storage: str | os.PathLike[str] | None = None) -> Path:
    """Where the tree is (or would be) installed: an Overrides.toml directory or ``artifacts/<tree>``.

    Raises:
        ArtifactError: ``tree`` is not a tree id.
    """
    require_tree_id(tree)
    adir = artifacts_dir(storage)
    ov = load_overrides(adir)
    d = ov.get(tree) if ov else None
    return Path(d if d is not None else adir + "/" + tree)


def artifact_exists(tree: str, *, storage: str | os.PathLike[str] | None = None) -> bool:
    """True if the tree is installed (or overridden to an existing directory)."""
    return os.path.isdir(artifact_path(tree, storage=storage))
