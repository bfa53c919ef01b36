"""The S3 backend (``s3://BUCKET/PREFIX``) through obstore, imported only here.

Credentials and region come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``) or, when those are unset, from
``~/.aws/credentials`` and ``~/.aws/config`` (profile ``$AWS_PROFILE``, else ``default``).
The remote's ``endpoint`` option names a non-AWS store (SeaweedFS, MinIO, R2, Ceph).

Create-only writes are ``PUT`` with ``If-None-Match: *`` (obstore ``mode="create"``); a ref
update is ``PUT`` with ``If-Match: <etag>``.  Every upload carries its
``x-amz-checksum-sha256`` so the store checks the bytes it received.  Objects up to
:data:`SINGLE_PUT_MAX` go in one conditional PUT; larger ones (read into memory whole otherwise)
as a multipart upload after a HEAD found the key absent.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
from typing import Any, Iterator

from runicorn.remotes.backend import CHUNK, ObjectInfo
from runicorn.remotes.errors import RemoteConflictError, RemoteError

SINGLE_PUT_MAX = 256 << 20  # bytes held in memory for one conditional PUT


def _aws_files(profile: str) -> dict[str, str]:
    """Keys of ``profile`` from ~/.aws/credentials and ~/.aws/config (credentials win)."""
    out: dict[str, str] = {}
    home = Path(os.path.expanduser("~/.aws"))
    for name, section in (("config", profile if profile == "default" else f"profile {profile}"),
                          ("credentials", profile)):
        path = Path(os.environ.get(f"AWS_{'SHARED_CREDENTIALS' if name == 'credentials' else 'CONFIG'}_FILE",
                                   home / name))
        if not path.is_file():
            continue
        cp = configparser.RawConfigParser()
        try:
            cp.read(path, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise RemoteError(f"{path}: cannot parse ({exc})") from None
        if cp.has_section(section):
            out.update(dict(cp.items(section)))
    return out


class S3Backend:
    def __init__(self, bucket: str, prefix: str, url: str, *, endpoint: str | None = None,
                 region: str | None = None) -> None:
        import obstore
        from obstore.store import S3Store

        self.obstore = obstore
        self.url = url
        kw: dict[str, Any] = {"checksum_algorithm": "sha256"}
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if not os.environ.get("AWS_ACCESS_KEY_ID"):
            files = _aws_files(os.environ.get("AWS_PROFILE", "default"))
            if files.get("aws_access_key_id"):
                kw["access_key_id"] = files["aws_access_key_id"]
                kw["secret_access_key"] = files.get("aws_secret_access_key", "")
                if files.get("aws_session_token"):
                    kw["session_token"] = files["aws_session_token"]
            region = region or files.get("region")
            endpoint = endpoint or files.get("endpoint_url")
        region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if endpoint:
            kw["endpoint"] = endpoint
            kw["virtual_hosted_style_request"] = False
            if endpoint.startswith("http://"):
                kw["client_options"] = {"allow_http": True}
            region = region or "us-east-1"  # signing needs one; non-AWS stores ignore it
        if region:
            kw["region"] = region
        try:
            self.store = S3Store(bucket, prefix=prefix or None, **kw)
        except Exception as exc:  # noqa: BLE001 - obstore's configuration errors
            raise RemoteError(f"{url}: cannot configure S3 access ({exc})") from None

    def _err(self, key: str, exc: BaseException) -> RemoteError:
        text = str(exc).split("\n", 1)[0]
        return RemoteError(f"{self.url}/{key}: {type(exc).__name__}: {text[:300]}")

    def get(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str] | None:
        try:
            if max_bytes is None:
                r = self.obstore.get(self.store, key)
            else:  # a range bounds what a damaged or hostile store can make us read
                r = self.obstore.get(self.store, key, options={"range": (0, max_bytes + 1)})
            data = bytes(r.bytes())
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None
        return data, str(r.meta.get("e_tag") or "")

    def get_chunks(self, key: str) -> Iterator[bytes]:
        try:
            r = self.obstore.get(self.store, key)
            for chunk in r.stream(min_chunk_size=CHUNK):
                yield bytes(chunk)
        except FileNotFoundError:
            raise RemoteError(f"{self.url}/{key}: missing on the remote") from None
        except RemoteError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None

    def head(self, key: str) -> ObjectInfo | None:
        try:
            m = self.obstore.head(self.store, key)
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None
        return ObjectInfo(key, int(m["size"]), m["last_modified"].timestamp(), str(m.get("e_tag") or ""))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # obstore lists whole path segments: ask for the directory, keep the string prefix
        top = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        try:
            for batch in self.obstore.list(self.store, prefix=top or None, chunk_size=1000):
                for m in batch:
                    if m["path"].startswith(prefix):
                        yield ObjectInfo(m["path"], int(m["size"]), m["last_modified"].timestamp(),
                                         str(m.get("e_tag") or ""))
        except Exception as exc:  # noqa: BLE001
            raise self._err(prefix, exc) from None

    def put_create(self, key: str, data: bytes | Path) -> bool:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            if isinstance(data, Path) and data.stat().st_size > SINGLE_PUT_MAX:
                if self.head(key) is not None:
                    return False
                with open(data, "rb") as f:
                    self.obstore.put(self.store, key, f, use_multipart=True, chunk_size=64 << 20)
                return True
            self.obstore.put(self.store, key, data.read_bytes() if isinstance(data, Path) else data,
                             mode="create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None

    def put_cas(self, key: str, data: bytes, expected: str | None) -> str:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        mode: Any = "create" if expected is None else {"e_tag": expected}
        try:
            r = self.obstore.put(self.store, key, data, mode=mode)
        except (AlreadyExistsError, PreconditionError):
            raise RemoteConflictError(f"{self.url}/{key}: changed by someone else") from None
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None
        return str(r.get("e_tag") or "")

    def put_replace(self, key: str, data: bytes) -> None:
        try:
            self.obstore.put(self.store, key, data)
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None

    def delete(self, key: str) -> None:
        try:
            self.obstore.delete(self.store, key)
        except FileNotFoundError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None

    def close(self) -> None:
        pass
