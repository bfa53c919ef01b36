"""A throwaway OpenSSH ``sshd`` on 127.0.0.1 for tests and benchmarks.

Generic on purpose: anything that needs a real SSH/SFTP server (sync, ``sftp://``
downloads, benchmarks) can start one with :class:`SshdServer`.  It generates its own
host key and client key, listens on a free port and serves SFTP for the current user.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

SFTP_SERVER_CANDIDATES = (
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "/usr/lib/ssh/sftp-server",
)


class SshdUnavailable(RuntimeError):
    """sshd could not be found, installed or started."""


def find_sshd(install: bool = True) -> str:
    """Path of the sshd binary, installing openssh-server through apt when root.

    Raises:
        SshdUnavailable: if it cannot be found or installed.
    """
    for cand in ("/usr/sbin/sshd", shutil.which("sshd") or ""):
        if cand and os.access(cand, os.X_OK):
            return cand
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "openssh-server"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        if os.access("/usr/sbin/sshd", os.X_OK):
            return "/usr/sbin/sshd"
    raise SshdUnavailable("sshd not found (install openssh-server)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SshdServer:
    """An sshd serving 127.0.0.1:<port> with a generated key pair.

    Attributes: ``host``, ``port``, ``user``, ``key_path`` (client private key),
    ``known_hosts_path`` (contains this server's host key), ``workdir``.
    """

    def __init__(self, workdir: Path | None = None) -> None:
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="runicorn-sshd-"))
        self.host = "127.0.0.1"
        self.port = 0
        self.user = getpass.getuser()
        self.key_path = self.workdir / "client_key"
        self.known_hosts_path = self.workdir / "known_hosts"
        self.host_key_path = self.workdir / "ssh_host_ed25519_key"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "sshd.log"

    def _keygen(self, path: Path) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, stdout=subprocess.DEVNULL
        )

    def start(self, timeout: float = 15.0) -> "SshdServer":
        """Generate keys and config, start sshd and wait until it accepts connections.

        Raises:
            SshdUnavailable: if sshd is missing or does not come up.
        """
        sshd = find_sshd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.workdir, 0o700)
        if not self.host_key_path.exists():
            self._keygen(self.host_key_path)
        if not self.key_path.exists():
            self._keygen(self.key_path)
        shutil.copyfile(self.key_path.with_suffix(".pub"), self.workdir / "authorized_keys")
        os.chmod(self.workdir / "authorized_keys", 0o600)
        sftp_server = next((p for p in SFTP_SERVER_CANDIDATES if os.path.exists(p)), "internal-sftp")
        if os.geteuid() == 0:
            # sshd insists on its privilege-separation directory existing.
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        cfg = self.workdir / "sshd_config"
        cfg.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.host}",
                    f"Port {self.port}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.workdir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.workdir / 'authorized_keys'}",
                    "PermitRootLogin yes",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UsePAM no",
                    "MaxSessions 32",
                    "MaxStartups 64",
                    "LogLevel ERROR",
                    f"Subsystem sftp {sftp_server}",
                    "",
                ]
            )
        )
        host_pub = self.host_key_path.with_suffix(".pub").read_text().split()
        self.known_hosts_path.write_text(f"[{self.host}]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SshdUnavailable(
                    f"sshd exited with {self.proc.returncode}: {self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise SshdUnavailable(f"sshd did not start on {self.host}:{self.port} in {timeout}s")

    def connect(self, **kw: Any) -> Any:
        """A connected ``paramiko.SSHClient`` using the generated key and known_hosts."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts_path))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            self.host,
            port=self.port,
            username=self.user,
            key_filename=str(self.key_path),
            look_for_keys=False,
            allow_agent=False,
            timeout=10,
            **kw,
        )
        return client

    def session_pids(self) -> list[int]:
        """PIDs of the per-connection sshd children (to kill a connection mid-transfer)."""
        if self.proc is None:
            return []
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(x) for x in out.split()]

    def kill_sessions(self) -> int:
        """SIGKILL every connection's sshd process (the listener survives); returns count."""
        pids = self.session_pids()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def write_client_config(self, home: Path, alias: str, *, trust_host: bool) -> None:
        """Write ``home/.ssh/config`` naming ``alias`` -> this server (and known_hosts when trusted)."""
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh / "config").write_text(
            f"Host {alias} 127.0.0.1\n    HostName 127.0.0.1\n    Port {self.port}\n    User {self.user}\n"
            f"    IdentityFile {self.key_path}\n"
        )
        (ssh / "known_hosts").write_text(self.known_hosts_path.read_text() if trust_host else "")

    def stop(self) -> None:
        """Stop sshd (listener and any sessions)."""
        if self.proc is not None:
            self.kill_sessions()
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> "SshdServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
