"""Helpers for the artifact tests: file trees, archives and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import http.server
import os
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def make_tree(root: Path, *, seed: int = 0) -> Path:
    """A small directory with a nested dir, an executable, a symlink and a non-ASCII name."""
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    (root / "a.txt").write_text(f"alpha {seed}\n")
    (root / "sub" / "b.bin").write_bytes(random.Random(seed).randbytes(20000))  # incompressible
    (root / "sub" / "deeper" / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    os.chmod(root / "sub" / "deeper" / "tool.sh", 0o755)
    (root / "sub" / "naïve ünïcode.txt").write_text("ü\n")
    os.symlink("../a.txt", root / "sub" / "link-to-a")
    return root


@dataclass
class Route:
    """How the server answers one path."""

    data: bytes = b""
    status: int = 200
    cut_after: int | None = None  # close the connection after this many body bytes (once)
    ranges: bool = True  # honour Range requests
    stall_after: int | None = None  # send this many body bytes, then hang (once)
    chunked: bool = False  # no Content-Length: Transfer-Encoding: chunked
    pace: float = 0.0  # seconds to wait before each 1 MiB of the body (a slow link)


@dataclass
class Server:
    base: str
    routes: dict[str, Route]
    log: list[tuple[str, str | None]] = field(default_factory=list)
    httpd: Any = None

    def url(self, path: str) -> str:
        return self.base + path

    def gets(self, path: str) -> list[str | None]:
        return [r for p, r in self.log if p == path]


def start_server() -> Server:
    """Start ``http.server`` in a thread on 127.0.0.1 with per-path behaviour."""
    routes: dict[str, Route] = {}
    log: list[tuple[str, str | None]] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            rng = self.headers.get("Range")
            with lock:
                log.append((self.path, rng))
                route = routes.get(self.path)
            if route is None or route.status == 404:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if route.status >= 500:
                self.send_response(route.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = route.data
            start = 0
            if rng and route.ranges and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = memoryview(data)[start:]
            if route.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(body), 1 << 16):
                    piece = body[i : i + (1 << 16)]
                    try:
                        self.wfile.write(b"%x\r\n" % len(piece) + bytes(piece) + b"\r\n")
                    except OSError:  # the client hung up (it may refuse an over-long body)
                        return
                self.wfile.write(b"0\r\n\r\n")
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if route.stall_after is not None:
                n = route.stall_after
                route.stall_after = None
                self.wfile.write(body[:n])
                self.wfile.flush()
                import time

                time.sleep(60)
                return
            if route.cut_after is not None:
                n = route.cut_after
                route.cut_after = None
                self.wfile.write(body[:n])
                self.wfile.flush()
                self.close_connection = True
                import socket

                self.connection.shutdown(socket.SHUT_RDWR)
                return
            for i in range(0, len(body), 1 << 20):
                if route.pace:
                    import time

                    time.sleep(route.pace)
                self.wfile.write(body[i : i + (1 << 20)])

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            import sys

            if not isinstance(sys.exc_info()[1], ConnectionError):  # a client hanging up is normal here
                super().handle_error(request, client_address)

    httpd = Quiet(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return Server(f"http://127.0.0.1:{httpd.server_address[1]}", routes, log, httpd)
