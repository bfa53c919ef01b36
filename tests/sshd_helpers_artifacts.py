"""A throwaway OpenSSH sshd on 127.0.0.1 for the ``sftp://`` artifact tests.

Generates a host key, a client key and authorized_keys in a scratch directory and runs
``sshd -D -e -f <config>``.  Callers fail (never skip) when it cannot start.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from pathlib import Path

SFTP_SERVERS = ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "/usr/lib/ssh/sftp-server")


class Sshd:
    """A running sshd: ``port``, ``user``, ``client_key``, ``host_key_line`` (for known_hosts)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.user = getpass.getuser()
        self.client_key = workdir / "id_ed25519"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.host_key_line = ""

    def start(self) -> "Sshd":
        """Start sshd and wait for its banner.

        Raises:
            RuntimeError: sshd is missing or did not come up (with its log).
        """
        if not os.access("/usr/sbin/sshd", os.X_OK):
            raise RuntimeError("/usr/sbin/sshd not found (install openssh-server)")
        self.dir.mkdir(parents=True, exist_ok=True)
        host_key = self.dir / "host_ed25519"
        for key in (host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        (self.dir / "authorized_keys").write_bytes(self.client_key.with_suffix(".pub").read_bytes())
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        sftp = next((p for p in SFTP_SERVERS if os.path.exists(p)), "internal-sftp")
        cfg = self.dir / "sshd_config"
        cfg.write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {host_key}\n"
            f"PidFile {self.dir / 'sshd.pid'}\nAuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "PermitRootLogin yes\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\nLogLevel ERROR\n"
            f"Subsystem sftp {sftp}\n")
        kind, b64 = host_key.with_suffix(".pub").read_text().split()[:2]
        self.host_key_line = f"[127.0.0.1]:{self.port} {kind} {b64}\n"
        log = open(self.dir / "sshd.log", "wb")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.dir / 'sshd.log').read_text()[-1500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    c.settimeout(2)
                    if c.recv(4) == b"SSH-":
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("sshd did not accept connections within 15 s")

    def write_client_config(self, home: Path, alias: str, *, trust_host: bool) -> None:
        """``~/.ssh/config`` naming ``alias`` -> this server, plus known_hosts when trusted."""
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True, exist_ok=True)
        (ssh / "config").write_text(
            f"Host {alias} 127.0.0.1\n    HostName 127.0.0.1\n    Port {self.port}\n    User {self.user}\n"
            f"    IdentityFile {self.client_key}\n")
        kh = ssh / "known_hosts"
        kh.write_text(self.host_key_line if trust_host else "")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
