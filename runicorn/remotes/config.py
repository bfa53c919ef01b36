"""The registry of named remotes, and opening a remote's backend.

Two files, same format (``schema/remote.md``), written with tomlkit (comments survive),
atomically under a lock:

* ``<storage_root>/remotes.toml``: this machine's remotes (``runicorn remote add``);
* ``runicorn-remotes.toml``, found upward from the working directory: the project's remotes,
  committed with the code (``runicorn remote add --project``), so a teammate needs only
  credentials.  A name in the store's file wins over the same name in the project's.

.. code-block:: toml

    [remotes.team]
    url = "s3://ml-team/runicorn"
    endpoint = "https://s3.example.org"   # optional: a non-AWS S3 store
    default = true
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runicorn.errors import option
from runicorn.remotes.errors import RemoteError

PROJECT_FILE = "runicorn-remotes.toml"
STORE_FILE = "remotes.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Remote:
    """A remote: a name (or the URL itself), its canonical URL and options."""

    name: str
    url: str
    endpoint: str | None = None
    region: str | None = None
    default: bool = False
    source: str = ""  # the file that defines it ("" for a URL given directly)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """What the local index keys this remote's cache by (URL plus endpoint)."""
        return f"{self.url}#endpoint={self.endpoint}" if self.endpoint else self.url

    @property
    def kind(self) -> str:
        return self.url.split(":", 1)[0]


def canonical_url(text: str, *, base: Path | None = None) -> str:
    """``s3://bucket/prefix``, ``file:///abs/path`` or ``sftp://[user@]host[:port]/path``.

    Raises:
        RemoteError: an unsupported scheme or a URL missing its bucket / host / path.
    """
    text = text.strip()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and text[1:2] == ":"):
        raw = unquote(parts.path) if scheme == "file" else text
        if scheme == "file" and parts.netloc not in ("", "localhost"):
            raise RemoteError(f"{text!r}: file URLs name a local path (file:///PATH)")
        path = Path(os.path.expanduser(raw))
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        return "file://" + os.path.normpath(path)
    if scheme == "s3":
        if not parts.netloc:
            raise RemoteError(f"{text!r}: expected s3://BUCKET[/PREFIX]")
        prefix = parts.path.strip("/")
        return f"s3://{parts.netloc}" + (f"/{prefix}" if prefix else "")
    if scheme == "sftp":
        if not parts.hostname or not parts.path or parts.path == "/":
            raise RemoteError(f"{text!r}: expected sftp://[USER@]HOST[:PORT]/PATH")
        try:
            port = parts.port
        except ValueError:
            raise RemoteError(f"{text!r}: bad port") from None
        user = f"{parts.username}@" if parts.username else ""
        return f"sftp://{user}{parts.hostname}" + (f":{port}" if port else "") + "/" + parts.path.strip("/")
    raise RemoteError(
        f"{text!r}: unsupported remote URL (use s3://BUCKET/PREFIX, file:///PATH or a path, "
        "or sftp://[USER@]HOST[:PORT]/PATH)"
    )


def project_file(start: Path | None = None) -> Path | None:
    """The nearest ``runicorn-remotes.toml`` at or above ``start`` (default: the working directory)."""
    d = (start or Path.cwd()).absolute()
    for cand in (d, *d.parents):
        f = cand / PROJECT_FILE
        if f.is_file():
            return f
    return None


def _read(path: Path) -> list[Remote]:
    import tomllib

    try:
        doc = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return []
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RemoteError(f"{path}: not valid TOML: {exc}") from None
    table = doc.get("remotes", {})
    if not isinstance(table, dict):
        raise RemoteError(f"{path}: 'remotes' must be a table of [remotes.NAME] tables")
    out = []
    for name, spec in table.items():
        where = f"{path}: remote {name!r}"
        if not _NAME.match(name):
            raise RemoteError(f"{where}: names are letters, digits, '_', '.', '-'")
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise RemoteError(f'{where}: needs url = "..."')
        for k in ("endpoint", "region"):
            if k in spec and not isinstance(spec[k], str):
                raise RemoteError(f"{where}: {k} must be a string")
        if not isinstance(spec.get("default", False), bool):
            raise RemoteError(f"{where}: default must be true or false")
        try:
            url = canonical_url(spec["url"], base=path.parent)
        except RemoteError as exc:
            raise RemoteError(f"{where}: {exc}") from None
        out.append(Remote(name, url, spec.get("endpoint"), spec.get("region"), bool(spec.get("default")), str(path)))
    return out


def store_file(storage_root: Path) -> Path:
    return Path(storage_root) / STORE_FILE


def list_remotes(storage_root: Path) -> list[Remote]:
    """Every named remote: the store's file first, then the project's (names not shadowed)."""
    mine = _read(store_file(storage_root))
    pf = project_file()
    names = {r.name for r in mine}
    return mine + [r for r in (_read(pf) if pf else []) if r.name not in names]


def resolve_remote(storage_root: Path, name: str | None) -> Remote:
    """The remote called ``name`` (or a URL given directly), else the default one.

    Raises:
        RemoteError: unknown name, or no name and no (single) default.
    """
    remotes = list_remotes(storage_root)
    if name is None:
        defaults = [r for r in remotes if r.default]
        if defaults:
            return defaults[0]
        if len(remotes) == 1:
            return remotes[0]
        raise RemoteError(
            "no remote given and no default remote; use --remote NAME "
            "(see `runicorn remote list`, `runicorn remote add NAME URL --default`)"
        )
    for r in remotes:
        if r.name == name:
            return r
    if "://" in name or name.startswith(("/", ".", "~")):
        return Remote(name, canonical_url(name))
    known = ", ".join(r.name for r in remotes) or "none"
    raise RemoteError(f"no remote named {name!r} (known: {known}); add it with `runicorn remote add`")


def _edit(path: Path, change: Any) -> None:
    import tomlkit
    from tomlkit.exceptions import ParseError

    from runicorn.fsutil import atomic_write_text, open_locked

    path.parent.mkdir(parents=True, exist_ok=True)
    with open_locked(path.with_name(f".{path.name}.lock")):
        try:
            text = path.read_text("utf-8")
        except FileNotFoundError:
            text = ""
        try:
            doc = tomlkit.parse(text)
        except ParseError as exc:
            raise RemoteError(f"{path}: not valid TOML: {exc}") from None
        change(doc)
        new = tomlkit.dumps(doc)
        atomic_write_text(path, new)
    _read(path)  # what was written reads back


def add_remote(
    path: Path,
    name: str,
    url: str,
    *,
    endpoint: str | None = None,
    region: str | None = None,
    default: bool = False,
    force: bool = False,
) -> Remote:
    """Record remote ``name`` in the registry file ``path``; return it.

    Raises:
        RemoteError: bad name or URL, or the name exists (without ``force``).
    """
    import tomlkit

    if not _NAME.match(name):
        raise RemoteError(f"remote name {name!r}: use letters, digits, '_', '.', '-' (at most 64)")
    canon = canonical_url(url, base=Path.cwd())

    def change(doc: Any) -> None:
        if "remotes" not in doc:
            doc["remotes"] = tomlkit.table(is_super_table=True)
        table = doc["remotes"]
        if name in table and not force:
            raise RemoteError(
                f"{path}: remote {name!r} exists ({table[name].get('url')}); remove it first or pass {option('force')}"
            )
        if default:
            for other in table.values():
                if isinstance(other, dict) and "default" in other:
                    del other["default"]
        t = tomlkit.table()
        t.add("url", canon)
        if endpoint:
            t.add("endpoint", endpoint)
        if region:
            t.add("region", region)
        if default:
            t.add("default", True)
        table[name] = t

    _edit(path, change)
    return Remote(name, canon, endpoint, region, default, str(path))


def remove_remote(path: Path, name: str) -> bool:
    """Remove ``name`` from the registry file ``path``; False if it was not there."""
    found = False

    def change(doc: Any) -> None:
        nonlocal found
        table = doc.get("remotes")
        if table is not None and name in table:
            del table[name]
            found = True

    if path.is_file():
        _edit(path, change)
    return found


def open_backend(remote: Remote) -> Any:
    """Connect to a remote; return its :class:`~runicorn.remotes.backend.Backend`.

    Raises:
        RemoteError / SSHConnectError: the remote cannot be reached.
    """
    url = remote.url
    parts = urlsplit(url)
    if parts.scheme == "file":
        from runicorn.remotes.backend import FileBackend

        root = Path(unquote(parts.path))
        if not root.is_dir():
            try:
                root.mkdir(parents=True)
            except OSError as exc:
                raise RemoteError(f"{url}: cannot create the remote directory ({exc.strerror})") from None
        return FileBackend(root, url)
    if parts.scheme == "s3":
        from runicorn.remotes.s3 import S3Backend

        return S3Backend(parts.netloc, parts.path.strip("/"), url, endpoint=remote.endpoint, region=remote.region)
    from runicorn.remotes.sftp import SftpBackend

    return SftpBackend(parts.hostname or "", parts.port, parts.username, "/" + parts.path.lstrip("/"), url)
