"""Fetching one download source: local path, ``file://``, ``http(s)://``, ``sftp://``.

A download streams into ``<artifacts>/.downloads/<sha256>.partial`` while its SHA-256
is computed; an interrupted transfer is resumed with an HTTP ``Range`` request (or an
SFTP seek) on the next attempt, which happens after an exponential backoff capped at 10 s
(:func:`retry_wait`); each source gets ``$RUNICORN_DOWNLOAD_RETRIES`` attempts (default 4).  The file is
only handed back once its sha256 (and size, when known) match.

Every download is bounded: by the entry's ``size`` when it has one, otherwise by
``$RUNICORN_DOWNLOAD_MAX`` bytes (default 64 GiB) and never by more than the free space
of the filesystem holding the partial file.  A source that sends (or announces) more is
refused and its partial file removed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from runicorn.errors import ArtifactError, IntegrityError, SSHConnectError
from runicorn.hashing import CHUNK, new_sha256, sha256_file, sha256_resume

Progress = Callable[[int, int | None], None]

RETRIES = 4  # attempts per source, unless $RUNICORN_DOWNLOAD_RETRIES says otherwise
BACKOFF = 0.5  # seconds before the 2nd attempt, doubling, unless $RUNICORN_DOWNLOAD_BACKOFF
MAX_WAIT = 10.0  # no wait between attempts is longer (seconds)
TIMEOUT = float(os.environ.get("RUNICORN_DOWNLOAD_TIMEOUT", "30"))
DEFAULT_DOWNLOAD_MAX = 64 << 30  # bytes, for entries without a declared size


def _env_number(var: str, default: float, *, integer: bool, minimum: float) -> float:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value: float = int(text) if integer else float(text)
    except ValueError:
        value = minimum - 1
    if not value >= minimum:  # also refuses nan
        kind = "a whole number" if integer else "a number of seconds"
        raise ArtifactError(f"{var}={text!r} is not {kind} >= {minimum:g}")
    return value


def download_retries() -> int:
    """Attempts per download source: ``$RUNICORN_DOWNLOAD_RETRIES`` (default 4, at least 1).

    Raises:
        ArtifactError: the variable is not a whole number >= 1.
    """
    return int(_env_number("RUNICORN_DOWNLOAD_RETRIES", RETRIES, integer=True, minimum=1))


def retry_wait(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt`` (2, 3, ...): ``$RUNICORN_DOWNLOAD_BACKOFF``
    (default 0.5) doubled per attempt, never more than 10 s.

    Raises:
        ArtifactError: the variable is not a number >= 0.
    """
    base = _env_number("RUNICORN_DOWNLOAD_BACKOFF", BACKOFF, integer=False, minimum=0)
    return min(MAX_WAIT, base * 2.0 ** min(attempt - 2, 64))


def download_max() -> int:
    """``$RUNICORN_DOWNLOAD_MAX`` (bytes), read at each download so it can be changed at run time.

    Raises:
        ArtifactError: not a non-negative integer.
    """
    text = os.environ.get("RUNICORN_DOWNLOAD_MAX", "")
    if not text:
        return DEFAULT_DOWNLOAD_MAX
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ArtifactError(f"RUNICORN_DOWNLOAD_MAX={text!r} is not a non-negative number of bytes")
    return value


class PermanentError(ArtifactError):
    """This source cannot succeed (404, wrong bytes): go to the next mirror, do not retry."""


class TransientError(ArtifactError):
    """A network hiccup: retry the same source after a backoff."""


class RangeNotSatisfiable(TransientError):
    """The server cannot resume from the partial file's length; it is discarded."""


def is_remote(url: str) -> bool:
    """True for a URL :func:`fetch` downloads into a ``.partial`` file (not a local path)."""
    scheme = urlsplit(url).scheme.lower()
    return not (scheme in ("", "file") or (len(scheme) == 1 and url[1:2] == ":"))


@contextlib.contextmanager
def partial_lock(lock_dir: Path, sha256: str) -> Iterator[None]:
    """Hold ``<lock_dir>/<sha256>.partial.lock`` while the partial file is written and used.

    The partial file is named by the archive's sha256, which entries with different tree
    ids may share, so the per-tree install lock does not cover it.
    """
    from runicorn.fsutil import open_locked

    with open_locked(lock_dir / f"{sha256}.partial.lock"):
        yield


def fetch(
    url: str, *, base_dir: Path, work_dir: Path, sha256: str, size: int | None, progress: Progress | None = None
) -> Path:
    """Make the source's bytes available as a local file (or a local directory) and return it.

    Local files are verified in place; remote ones are downloaded to ``work_dir`` (the
    caller holds :func:`partial_lock` for them until it is done with the file).

    Raises:
        ArtifactError (PermanentError / TransientError / IntegrityError subclasses):
            with a one-line reason the caller reports per source.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not is_remote(url):
        path = Path(unquote(parts.path)) if scheme == "file" else Path(url).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        return _local(path, sha256, size)
    partial = work_dir / f"{sha256}.partial"
    work_dir.mkdir(parents=True, exist_ok=True)
    if scheme in ("http", "https"):
        get: Callable[[int], tuple[Any, int | None, bool]] = functools.partial(_http_open, url)
    elif scheme == "sftp":
        get = functools.partial(_sftp_open, url)
    else:
        raise PermanentError(f"unsupported URL scheme {scheme!r}")
    last: Exception | None = None
    retries = download_retries()
    for attempt in range(retries):
        if attempt:
            time.sleep(retry_wait(attempt + 1))
        try:
            _download(get, partial, sha256, size, progress)
            return partial
        except RangeNotSatisfiable as exc:
            partial.unlink(missing_ok=True)
            last = exc
        except TransientError as exc:
            last = exc
    raise TransientError(f"gave up after {retries} attempt(s) (RUNICORN_DOWNLOAD_RETRIES): {last}")


def _local(path: Path, sha256: str, size: int | None) -> Path:
    if path.is_dir():
        return path
    if not path.is_file():
        raise PermanentError(f"{path}: no such file")
    if size is not None and path.stat().st_size != size:
        raise PermanentError(f"{path}: size is {path.stat().st_size}, expected {size}")
    got = sha256_file(path)
    if got != sha256:
        raise IntegrityError(f"{path}: sha256 is {got}, expected {sha256}")
    return path


def _download(
    get: Callable[[int], tuple[Any, int | None, bool]],
    partial: Path,
    sha256: str,
    size: int | None,
    progress: Progress | None,
) -> None:
    offset = partial.stat().st_size if partial.exists() else 0
    if size is not None and offset > size:
        partial.unlink()
        offset = 0
    if offset and offset == size:
        # an earlier attempt got every byte (then failed later): check it, skip the network
        if sha256_file(partial) == sha256:
            return
        partial.unlink()
        offset = 0
    stream, total, resumed = get(offset)
    try:
        if not (offset and resumed):
            offset = 0
        limit, why = _limit(partial, offset, size)
        if total is not None and offset + total > limit:
            partial.unlink(missing_ok=True)
            raise PermanentError(f"the source announces {offset + total} bytes, more than {why}")
        if offset:
            with open(partial, "rb") as f:
                h = sha256_resume(f)
            mode = "ab"
        else:
            h = new_sha256()
            mode = "wb"
        expected_total = size if size is not None else (offset + total if total is not None else None)
        done = offset
        read = stream.read1
        # unbuffered: what was received is on disk at once, so a killed process resumes from it
        with open(partial, mode, buffering=0) as out:
            while True:
                try:
                    data = read(CHUNK)
                except TimeoutError as exc:
                    raise TransientError(f"timed out after {done} bytes: {exc}") from None
                except OSError as exc:
                    raise TransientError(f"connection failed after {done} bytes: {exc}") from None
                except Exception as exc:  # http.client.IncompleteRead and friends
                    raise TransientError(f"transfer cut after {done} bytes: {exc!r}") from None
                if not data:
                    break
                if done + len(data) > limit:
                    out.close()
                    partial.unlink(missing_ok=True)
                    raise PermanentError(f"the source sent more than {why}; stopped after {done} bytes")
                h.update(data)
                out.write(data)
                done += len(data)
                if progress is not None:
                    progress(done, expected_total)
        if total is not None and done < offset + total:
            raise TransientError(f"transfer cut after {done} of {offset + total} bytes")
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    if size is not None and done != size:
        partial.unlink(missing_ok=True)
        raise IntegrityError(f"got {done} bytes, expected size {size}")
    got = h.hexdigest()
    if got != sha256:
        partial.unlink(missing_ok=True)
        if offset:
            # the kept prefix may be what was wrong: one more attempt from byte zero
            raise TransientError(f"resumed download has sha256 {got}, expected {sha256}; restarting")
        raise IntegrityError(f"sha256 is {got}, expected {sha256}")


def _limit(partial: Path, offset: int, size: int | None) -> tuple[int, str]:
    """The most bytes the partial file may reach, and how to name that bound in an error."""
    if size is not None:
        return size, f"the declared size of {size} bytes"
    import shutil

    cap = download_max()
    free = shutil.disk_usage(partial.parent).free
    if offset + free < cap:
        return offset + free, f"the {free} bytes free on {partial.parent}"
    return cap, f"RUNICORN_DOWNLOAD_MAX={cap} bytes (the entry declares no size)"


class _Closing:
    """An HTTP response that also closes its connection."""

    def __init__(self, resp: Any, conn: Any) -> None:
        self._resp, self._conn = resp, conn

    def read1(self, n: int) -> bytes:
        # read1, not read: read waits to fill the whole request, so a stalled transfer
        # would keep the bytes already received in memory instead of on disk
        return self._resp.read1(n)

    def close(self) -> None:
        self._resp.close()
        self._conn.close()


def _http_open(url: str, offset: int) -> tuple[Any, int | None, bool]:
    """GET ``url`` from ``offset``; return (stream, bytes to come, resumed?)."""
    import http.client

    from runicorn._version import __version__

    for _ in range(6):
        p = urlsplit(url)
        cls = http.client.HTTPSConnection if p.scheme == "https" else http.client.HTTPConnection
        conn = cls(p.hostname or "", p.port, timeout=TIMEOUT)
        headers = {"User-Agent": f"runicorn/{__version__}", "Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        target = (p.path or "/") + (f"?{p.query}" if p.query else "")
        try:
            conn.request("GET", target, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransientError(f"cannot connect: {exc}") from None
        status = resp.status
        if status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            from urllib.parse import urljoin

            url = urljoin(url, resp.getheader("Location"))
            resp.close()
            conn.close()
            continue
        if status == 206 and offset:
            length = resp.getheader("Content-Length")
            return _Closing(resp, conn), int(length) if length else None, True
        if status == 200:
            length = resp.getheader("Content-Length")
            return _Closing(resp, conn), int(length) if length else None, False
        if status == 416 and offset:
            # the partial file does not fit this server's copy: start over on the next attempt
            resp.close()
            conn.close()
            raise RangeNotSatisfiable("server refused the resume range (416); restarting")
        resp.close()
        conn.close()
        if status in (408, 425, 429) or status >= 500:
            raise TransientError(f"HTTP {status} {resp.reason}")
        raise PermanentError(f"HTTP {status} {resp.reason}")
    raise PermanentError("too many redirects")


def _sftp_open(url: str, offset: int) -> tuple[Any, int | None, bool]:
    """Open ``sftp://[user@]host[:port]/path`` at ``offset``; return (stream, bytes to come, resumed?)."""
    p = urlsplit(url)
    client = ssh_connect(p.hostname or "", p.port, unquote(p.username) if p.username else None)
    try:
        sftp = client.open_sftp()
        path = unquote(p.path)
        try:
            remote_size = sftp.stat(path).st_size
            f = sftp.open(path, "rb")
        except FileNotFoundError:
            raise PermanentError(f"{path}: no such file on {p.hostname}") from None
        except OSError as exc:
            raise PermanentError(f"{path}: {exc}") from None
        if offset and offset <= (remote_size or 0):
            f.seek(offset)
            resumed = True
        else:
            offset, resumed = 0, False
        f.prefetch(remote_size)
    except BaseException:
        client.close()
        raise
    return _SftpStream(f, client), (remote_size - offset) if remote_size is not None else None, resumed


class _SftpStream:
    def __init__(self, f: Any, client: Any) -> None:
        self._f, self._client = f, client

    def read1(self, n: int) -> bytes:
        return self._f.read(n)

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            self._client.close()


def ssh_connect(host: str, port: int | None, user: str | None) -> Any:
    """Connect through :func:`runicorn.ssh.connect`; opt in to new host keys with
    ``$RUNICORN_SSH_ACCEPT_NEW_HOST_KEY=1``.

    Raises:
        PermanentError: unknown/changed host key or authentication failure.
        TransientError: network failure.
    """
    from runicorn.errors import SSHRefusedError
    from runicorn.ssh import connect

    accept_new = os.environ.get("RUNICORN_SSH_ACCEPT_NEW_HOST_KEY", "") in ("1", "yes", "true")
    try:
        return connect(host, port, user, accept_new_host_key=accept_new, timeout=TIMEOUT)
    except SSHRefusedError as exc:
        raise PermanentError(str(exc)) from None
    except SSHConnectError as exc:
        raise TransientError(str(exc)) from None
