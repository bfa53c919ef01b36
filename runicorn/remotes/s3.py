"""The S3 backend (``s3://BUCKET/PREFIX``) through obstore, imported only here.

Credentials and region come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``) or, when those are unset, from
``~/.aws/credentials`` and ``~/.aws/config`` (profile ``$AWS_PROFILE``, else ``default``).
The remote's ``endpoint`` option names a non-AWS store (SeaweedFS, MinIO, R2, Ceph).

Create-only writes are ``PUT`` with ``If-None-Match: *`` (obstore ``mode="create"``); a ref
update is ``PUT`` with ``If-Match: <etag>``.  Every upload carries its
``x-amz-checksum-sha256`` so the store checks the bytes it received.

Blobs larger than one part (:func:`runicorn.remotes.resume.part_size`) go as an S3
multipart upload that survives the process: its upload id and every confirmed part's ETag
and SHA-256 are recorded in the local store, and the next push lists the upload's parts and
sends only the missing ones; completion is create-only (``If-None-Match: *``).  obstore
(0.12) drives a multipart upload only inside one call (``put(use_multipart=True)``,
``open_writer``) and exposes neither the upload id nor object_store's ``MultipartStore``
(create / put_part / complete / abort), and its signed URLs cannot carry ``uploadId`` /
``partNumber``; so these calls (and listing and aborting stale uploads for remote gc) go
through botocore, imported only for them.
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path
import threading
from typing import Any, Callable, Iterator

from runicorn.remotes.backend import CHUNK, ObjectInfo
from runicorn.remotes.errors import RemoteConflictError, RemoteError


def _aws_files(profile: str) -> dict[str, str]:
    """Keys of ``profile`` from ~/.aws/credentials and ~/.aws/config (credentials win)."""
    out: dict[str, str] = {}
    home = Path(os.path.expanduser("~/.aws"))
    for name, section in (
        ("config", profile if profile == "default" else f"profile {profile}"),
        ("credentials", profile),
    ):
        path = Path(
            os.environ.get(f"AWS_{'SHARED_CREDENTIALS' if name == 'credentials' else 'CONFIG'}_FILE", home / name)
        )
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
    def __init__(
        self, bucket: str, prefix: str, url: str, *, endpoint: str | None = None, region: str | None = None
    ) -> None:
        import obstore
        from obstore.store import S3Store

        self.obstore = obstore
        self.url = url
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._boto: Any = None
        self._boto_lock = threading.Lock()
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
        self.endpoint, self.region = endpoint, region
        self._keys = {k: kw[k] for k in ("access_key_id", "secret_access_key", "session_token") if k in kw}
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
                        yield ObjectInfo(
                            m["path"], int(m["size"]), m["last_modified"].timestamp(), str(m.get("e_tag") or "")
                        )
        except Exception as exc:  # noqa: BLE001
            raise self._err(prefix, exc) from None

    def put_create(self, key: str, data: bytes | Path) -> bool:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            self.obstore.put(self.store, key, data.read_bytes() if isinstance(data, Path) else data, mode="create")
            return True
        except (AlreadyExistsError, PreconditionError):
            return False
        except Exception as exc:  # noqa: BLE001
            raise self._err(key, exc) from None

    # ------------------------------------------------------------------ multipart, resumable
    def _client(self) -> Any:
        """The botocore S3 client for multipart calls (same endpoint, region and credentials)."""
        with self._boto_lock:
            if self._boto is None:
                import botocore.session
                from botocore.config import Config

                conf = Config(
                    s3={"addressing_style": "path"} if self.endpoint else {},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    retries={"max_attempts": 5, "mode": "standard"},
                    max_pool_connections=32,
                )
                keys = {
                    "aws_access_key_id": self._keys.get("access_key_id"),
                    "aws_secret_access_key": self._keys.get("secret_access_key"),
                    "aws_session_token": self._keys.get("session_token"),
                }
                self._boto = botocore.session.Session().create_client(
                    "s3",
                    region_name=self.region,
                    endpoint_url=self.endpoint,
                    config=conf,
                    **{k: v for k, v in keys.items() if v},
                )
            return self._boto

    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _code(self, exc: BaseException) -> str:
        return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))

    def _listed_parts(self, full: str, upload_id: str) -> dict[int, str] | None:
        """Part number -> ETag of an unfinished upload; None when the upload is gone."""
        out: dict[int, str] = {}
        try:
            for page in (
                self._client().get_paginator("list_parts").paginate(Bucket=self.bucket, Key=full, UploadId=upload_id)
            ):
                for p in page.get("Parts", []):
                    out[int(p["PartNumber"])] = str(p["ETag"])
        except Exception as exc:  # noqa: BLE001 - botocore's ClientError
            if self._code(exc) in ("NoSuchUpload", "404", "NoSuchKey"):
                return None
            raise self._err(full, exc) from None
        return out

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=self._full(key), UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) not in ("NoSuchUpload", "404", "NoSuchKey"):
                raise self._err(key, exc) from None

    def list_uploads(self, prefix: str) -> Iterator[tuple[str, str, float]]:
        """Unfinished multipart uploads under ``prefix``: ``(key, upload_id, initiated)``."""
        try:
            for page in (
                self._client()
                .get_paginator("list_multipart_uploads")
                .paginate(Bucket=self.bucket, Prefix=self._full(prefix))
            ):
                for u in page.get("Uploads", []):
                    key = str(u["Key"])[len(self.prefix) + 1 :] if self.prefix else str(u["Key"])
                    yield key, str(u["UploadId"]), u["Initiated"].timestamp()
        except Exception as exc:  # noqa: BLE001
            raise self._err(prefix, exc) from None

    def put_large(
        self, key: str, path: Path, size: int, sha: str, resume: Any, on_bytes: Callable[[int], None] | None = None
    ) -> tuple[bool, int, int]:
        """Create-only multipart upload of a large local blob, resumed from ``resume``'s record.

        Raises:
            IntegrityError: the local file is not ``size`` bytes hashing to ``sha`` (the upload
                is aborted; nothing is published).
            RemoteError: the store failed.
        """
        import base64

        from runicorn.errors import IntegrityError
        from runicorn.hashing import new_sha256, sha256_digest
        from runicorn.remotes.resume import part_size

        part = part_size()
        full = self._full(key)
        rec = resume.load(remote=self.url, key=key, size=size, part_size=part) if resume is not None else None
        listed: dict[int, str] = {}
        if rec is not None:
            got = self._listed_parts(full, str(rec.get("upload_id")))
            if got is None:  # aborted (remote gc) or completed meanwhile
                rec = None
            else:
                listed = got
        if self.head(key) is not None:
            if rec is not None:
                self.abort_upload(key, rec["upload_id"])
            if resume is not None:
                resume.clear()
            return False, 0, 0
        c = self._client()
        if rec is None:
            try:
                upload_id = c.create_multipart_upload(Bucket=self.bucket, Key=full, ChecksumAlgorithm="SHA256")[
                    "UploadId"
                ]
            except Exception as exc:  # noqa: BLE001
                raise self._err(key, exc) from None
            rec = {"remote": self.url, "key": key, "size": size, "part_size": part, "upload_id": upload_id, "parts": {}}
            if resume is not None:
                resume.save(rec)
        upload_id = rec["upload_id"]
        h = new_sha256()
        sent = kept = 0
        parts: list[dict[str, Any]] = []
        try:
            with open(path, "rb") as f:
                n = 0
                while data := f.read(part):
                    n += 1
                    h.update(data)
                    checksum = base64.b64encode(sha256_digest(data)).decode()
                    done = rec["parts"].get(str(n))
                    if isinstance(done, dict) and done.get("sha256") == checksum and listed.get(n) == done.get("etag"):
                        kept += len(data)  # the store holds this part: not sent again
                    else:
                        etag = c.upload_part(
                            Bucket=self.bucket,
                            Key=full,
                            UploadId=upload_id,
                            PartNumber=n,
                            Body=data,
                            ChecksumSHA256=checksum,
                        )["ETag"]
                        done = rec["parts"][str(n)] = {"etag": etag, "sha256": checksum}
                        if resume is not None:
                            resume.save(rec)
                        sent += len(data)
                    if on_bytes is not None:
                        on_bytes(len(data))
                    parts.append({"PartNumber": n, "ETag": done["etag"], "ChecksumSHA256": checksum})
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore; the record stays for the next push
            raise self._err(key, exc) from None
        if sent + kept != size or h.hexdigest() != sha:
            self.abort_upload(key, upload_id)
            if resume is not None:
                resume.clear()
            raise IntegrityError(
                f"{path}: local blob is damaged (size or sha256 differs); run "
                "`runicorn verify --deep`; nothing of it was published"
            )
        try:
            c.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
            created = True
        except Exception as exc:  # noqa: BLE001
            if self._code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                if self._code(exc) in ("NoSuchUpload", "InvalidPart") and resume is not None:
                    resume.clear()  # the upload is gone: the next push starts afresh
                raise self._err(key, exc) from None
            self.abort_upload(key, upload_id)  # someone else created it: same bytes, by its name
            created = False
        if resume is not None:
            resume.clear()
        return created, sent, kept

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
