"""The one way Runicorn opens SSH connections (sync targets and ``sftp://`` sources).

paramiko, honouring ``~/.ssh/config`` (HostName, Port, User, IdentityFile,
UserKnownHostsFile, ProxyCommand) and known_hosts.  Host keys: a key that differs from
the one in known_hosts is always refused; an unknown host is refused unless the caller
opts in (``accept_new_host_key``), in which case its key is appended to the user's
known_hosts, like OpenSSH's ``StrictHostKeyChecking=accept-new``.  paramiko is imported
only when a connection is made.
"""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runicorn.errors import RunicornError, SSHConnectError, SSHRefusedError

_TARGET_RE = re.compile(
    r"^(?:(?P<user>[^@/:\s]+)@)?(?P<host>\[[^\]\s]+\]|[^@:/\s\[\]]+)"
    r"(?::(?P<port>\d{1,5}))?:(?P<path>.+)$"
)


@dataclass
class SyncTarget:
    """A parsed ``[USER@]HOST[:PORT]:REMOTE_ROOT``."""

    user: str | None
    host: str
    port: int | None
    path: str


def parse_target(text: str) -> SyncTarget:
    """Parse a sync target.

    Raises:
        RunicornError: if it is not ``[USER@]HOST[:PORT]:REMOTE_ROOT``.
    """
    m = _TARGET_RE.match(text.strip())
    if not m:
        raise RunicornError(f"{text!r}: expected [USER@]HOST[:PORT]:REMOTE_ROOT")
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        raise RunicornError(f"{text!r}: port {port} out of range")
    return SyncTarget(m["user"], m["host"].strip("[]"), port, m["path"])


def _known_hosts_files(cfg: dict[str, Any]) -> list[Path]:
    files = cfg.get("userknownhostsfile")
    if isinstance(files, str):
        files = files.split()
    paths = [Path(os.path.expanduser(f)) for f in (files or ["~/.ssh/known_hosts"])]
    return paths


def connect(
    host: str,
    port: int | None = None,
    user: str | None = None,
    *,
    identity: str | None = None,
    accept_new_host_key: bool = False,
    timeout: float = 20.0,
) -> Any:
    """Return a connected ``paramiko.SSHClient`` for ``[user@]host[:port]`` (``~/.ssh/config`` aliases work).

    Raises:
        SSHRefusedError: unknown or changed host key, unreadable config, authentication failed.
        SSHConnectError: network failure (worth retrying).
    """
    import paramiko

    cfg: dict[str, Any] = {}
    cfg_path = Path(os.path.expanduser("~/.ssh/config"))
    if cfg_path.is_file():
        try:
            cfg = dict(paramiko.SSHConfig.from_path(str(cfg_path)).lookup(host))
        except Exception as exc:  # noqa: BLE001 - any parse problem is the user's file
            raise SSHRefusedError(f"{cfg_path}: cannot parse: {exc}") from None
    hostname = cfg.get("hostname", host)
    port = port or int(cfg.get("port", 22))
    user = user or cfg.get("user") or getpass.getuser()
    keys = [identity] if identity else [os.path.expanduser(k) for k in cfg.get("identityfile", [])]
    keys = [k for k in keys if os.path.exists(k)]
    if identity and not keys:
        raise SSHRefusedError(f"{identity}: identity file not found")

    known = _known_hosts_files(cfg)
    client = paramiko.SSHClient()
    try:
        client.load_system_host_keys()
    except OSError:
        pass
    for kh in known:
        if kh.is_file():
            try:
                client.load_host_keys(str(kh))
            except OSError:
                pass

    class _AcceptNew(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            path = known[0]
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with open(path, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)

    class _Reject(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise SSHRefusedError(
                f"host key for {hostname} is unknown ({key.get_name()} {key.fingerprint}); verify it, "
                f"then rerun with --accept-new-host-key (or RUNICORN_SSH_ACCEPT_NEW_HOST_KEY=1)"
            )

    client.set_missing_host_key_policy(_AcceptNew() if accept_new_host_key else _Reject())
    sock = None
    if cfg.get("proxycommand"):
        sock = paramiko.ProxyCommand(cfg["proxycommand"])
    try:
        client.connect(
            hostname,
            port=port,
            username=user,
            key_filename=keys or None,  # type: ignore[arg-type]  # a list is accepted too
            look_for_keys=not keys,
            allow_agent=True,
            timeout=timeout,
            sock=sock,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except SSHConnectError:
        client.close()
        raise
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise SSHRefusedError(
            f"host key for {hostname} CHANGED (got {exc.key.get_name()}, known hosts say "
            f"otherwise); refusing to connect - possible man-in-the-middle"
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise SSHRefusedError(f"authentication as {user}@{hostname}:{port} failed: {exc}") from None
    except (paramiko.SSHException, OSError) as exc:
        client.close()
        raise SSHConnectError(f"cannot connect to {user}@{hostname}:{port}: {exc}") from None
    return client
