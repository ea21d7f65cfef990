"""The S3 client wrapper: the only module that talks to botocore.

One botocore client is created before the FUSE loop starts and shared by all
worker threads (botocore clients are thread-safe). Every call goes through
``_call``, which counts requests and turns botocore errors into FsError with
the errno from errors.S3_ERRNO.
"""

from __future__ import annotations

import base64
import dataclasses
import errno
import hashlib
import ipaddress
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from . import __version__
from .credentials import Credentials
from .errors import CredentialsError, FsError, S3mountError, errno_for_s3_code

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD tells about an object."""

    key: str
    size: int
    etag: str
    last_modified_ns: int
    content_type: str | None
    metadata: Mapping[str, str]


@dataclasses.dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    size: int
    etag: str
    last_modified_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class ListPage:
    objects: list[ListedObject]
    prefixes: list[str]
    next_token: str | None


@dataclasses.dataclass(frozen=True)
class StoreSettings:
    bucket: str
    url: str | None = None
    region: str | None = None
    path_style: bool = False
    verify: bool | str | None = None  # False, a CA bundle path, or None for botocore's default
    proxy: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 5
    max_connections: int = 10
    anonymous: bool = False
    list_max_keys: int = 1000
    only_instance_role: bool = False  # s3fs's iam_role: no other credential source
    # Added to every request that creates an object: ACL, StorageClass, SSE parameters.
    write_extras: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _ns(timestamp: Any) -> int:
    return int(timestamp.timestamp() * 1_000_000_000)


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))


def wants_path_style(url: str | None) -> bool:
    """Virtual-hosted addressing cannot work when the host is an IP address or localhost."""
    if not url:
        return False
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def default_region(environ: Mapping[str, str]) -> str:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def default_verify(environ: Mapping[str, str]) -> str | None:
    """s3fs honours CURL_CA_BUNDLE; botocore honours AWS_CA_BUNDLE itself."""
    if environ.get("AWS_CA_BUNDLE"):
        return environ["AWS_CA_BUNDLE"]
    return environ.get("CURL_CA_BUNDLE") or None


class Store:
    """S3 operations on one bucket."""

    def __init__(self, settings: StoreSettings, credentials: Credentials | None) -> None:
        self.bucket = settings.bucket
        self.endpoint = settings.url or "AWS S3"
        self._list_max_keys = settings.list_max_keys
        self._counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()
        session = botocore.session.get_session()
        if settings.only_instance_role:
            _keep_only_instance_role(session)
        config = Config(
            signature_version=UNSIGNED if settings.anonymous else "s3v4",
            s3={"addressing_style": "path" if settings.path_style else "virtual"},
            max_pool_connections=settings.max_connections,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            retries={"total_max_attempts": settings.retries + 1, "mode": "standard"},
            # S3-compatible servers often reject botocore's default CRC checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            proxies={"http": settings.proxy, "https": settings.proxy} if settings.proxy else None,
            user_agent_extra=f"s3mount/{__version__}",
            tcp_keepalive=True,
        )
        keys: dict[str, Any] = {}
        if credentials is not None and not settings.anonymous:
            keys = {
                "aws_access_key_id": credentials.access_key,
                "aws_secret_access_key": credentials.secret_key,
                "aws_session_token": credentials.session_token,
            }
        self._write_extras = dict(settings.write_extras)
        self._client = session.create_client(
            "s3",
            region_name=settings.region,
            endpoint_url=settings.url,
            verify=settings.verify,
            config=config,
            **keys,
        )

        # Many S3-compatible servers insist on Content-MD5 for multi-object delete,
        # which botocore no longer sends by default.
        self._client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)

    def request_counts(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._counts)

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        with self._counts_lock:
            self._counts[operation] += 1
        try:
            return getattr(self._client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = _error_code(exc)
            raise FsError(errno_for_s3_code(code), f"{operation}: {code}") from exc
        except (BotoCoreError, OSError) as exc:
            log.warning("%s on %s failed: %s", operation, self.endpoint, exc)
            raise FsError(errno.EIO, f"{operation}: {type(exc).__name__}") from exc  # EIO

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD an object; None when it does not exist."""
        try:
            response = self._call("head_object", Key=key)
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return ObjectInfo(
            key=key,
            size=response["ContentLength"],
            etag=response.get("ETag", ""),
            last_modified_ns=_ns(response["LastModified"]),
            content_type=response.get("ContentType"),
            metadata=response.get("Metadata", {}),
        )

    def list_page(self, prefix: str, *, delimiter: str = "/", token: str | None = None,
                  max_keys: int | None = None) -> ListPage:
        params: dict[str, Any] = {
            "Prefix": prefix,
            "MaxKeys": max_keys or self._list_max_keys,
        }
        if delimiter:
            params["Delimiter"] = delimiter
        if token:
            params["ContinuationToken"] = token
        response = self._call("list_objects_v2", **params)
        objects = [
            ListedObject(
                key=item["Key"],
                size=item.get("Size", 0),
                etag=item.get("ETag", ""),
                last_modified_ns=_ns(item["LastModified"]),
            )
            for item in response.get("Contents", ())
        ]
        prefixes = [item["Prefix"] for item in response.get("CommonPrefixes", ())]
        token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
        return ListPage(objects, prefixes, token)

    def list_all(self, prefix: str, delimiter: str = "/") -> Iterator[ListPage]:
        """Every page of a listing of ``prefix`` (delimited by default)."""
        token = None
        while True:
            page = self.list_page(prefix, delimiter=delimiter, token=token)
            yield page
            if page.next_token is None:
                return
            token = page.next_token

    def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        """Bytes ``start..end`` (inclusive) of an object, pinned to ``etag`` if given.

        A body shorter than asked for (a cut connection) is an error, never data.
        """
        params: dict[str, Any] = {"Key": key, "Range": f"bytes={start}-{end}"}
        if etag:
            params["IfMatch"] = etag
        response = self._call("get_object", **params)
        body = response["Body"]
        try:
            data = body.read()
        except (BotoCoreError, OSError) as exc:
            raise FsError(errno.EIO, f"get_object body: {type(exc).__name__}") from exc
        finally:
            body.close()
        expected = response.get("ContentLength")
        if expected is not None and len(data) != expected:
            raise FsError(errno.EIO, f"get_object: short body ({len(data)} of {expected} bytes)")
        return data

    # Writes. Every key is a full object key; metadata are the x-amz-meta-* names
    # without the prefix.

    def put(self, key: str, body: bytes, *, metadata: Mapping[str, str],
            content_type: str) -> str:
        response = self._call("put_object", Key=key, Body=body, Metadata=dict(metadata),
                              ContentType=content_type, **self._write_extras)
        return response.get("ETag", "")

    def copy(self, source_key: str, key: str, *, metadata: Mapping[str, str] | None,
             content_type: str | None, source_etag: str | None = None) -> str:
        """Server-side copy, up to 5 GiB: with new metadata (directive REPLACE), or,
        when metadata is None, keeping the source's metadata and Content-Type (COPY)."""
        params: dict[str, Any] = {
            "Key": key,
            "CopySource": {"Bucket": self.bucket, "Key": source_key},
            **self._write_extras,
        }
        if metadata is None:
            params["MetadataDirective"] = "COPY"
        else:
            params.update(MetadataDirective="REPLACE", Metadata=dict(metadata),
                          ContentType=content_type)
        if source_etag:
            params["CopySourceIfMatch"] = source_etag
        response = self._call("copy_object", **params)
        return response.get("CopyObjectResult", {}).get("ETag", "")

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)

    def delete_many(self, keys: list[str]) -> None:
        """Delete in batches of 1000; a key that fails to delete is an error."""
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            response = self._call("delete_objects", Delete={
                "Objects": [{"Key": key} for key in batch], "Quiet": True})
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise FsError(errno_for_s3_code(first.get("Code", "")),
                              f"delete_objects: {first.get('Code')} for {len(errors)} keys")

    def create_multipart(self, key: str, *, metadata: Mapping[str, str],
                         content_type: str) -> str:
        response = self._call("create_multipart_upload", Key=key, Metadata=dict(metadata),
                              ContentType=content_type, **self._write_extras)
        return response["UploadId"]

    def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        response = self._call("upload_part", Key=key, UploadId=upload_id, PartNumber=number,
                              Body=body)
        return response["ETag"]

    def upload_part_copy(self, key: str, upload_id: str, number: int, source_key: str,
                         start: int, end: int, source_etag: str | None = None) -> str:
        """Copy bytes start..end (inclusive) of source_key into part ``number``."""
        params: dict[str, Any] = {
            "Key": key, "UploadId": upload_id, "PartNumber": number,
            "CopySource": {"Bucket": self.bucket, "Key": source_key},
            "CopySourceRange": f"bytes={start}-{end}",
        }
        if source_etag:
            params["CopySourceIfMatch"] = source_etag
        response = self._call("upload_part_copy", **params)
        return response["CopyPartResult"]["ETag"]

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> str:
        response = self._call("complete_multipart_upload", Key=key, UploadId=upload_id,
                              MultipartUpload={"Parts": [
                                  {"PartNumber": number, "ETag": etag}
                                  for number, etag in parts]})
        return response.get("ETag", "")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        self._call("abort_multipart_upload", Key=key, UploadId=upload_id)

    def probe(self, prefix: str) -> None:
        """Check, before mounting, that the bucket exists and the credentials work.

        Raises S3mountError with one line that says what is wrong and what to do.
        """
        where = f"bucket '{self.bucket}' at {self.endpoint}"
        try:
            self._client.list_objects_v2(Bucket=self.bucket, Prefix=prefix, MaxKeys=1)
        except NoCredentialsError:
            raise CredentialsError(
                "no credentials found: give -o passwd_file=FILE, set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or use -o public_bucket=1"
            ) from None
        except ClientError as exc:
            code = _error_code(exc)
            raise S3mountError(_probe_message(code, where)) from None
        except SSLError as exc:
            raise S3mountError(
                f"the TLS certificate of {self.endpoint} is not trusted ({_reason(exc)}): give "
                "its CA with -o ca_bundle=FILE (or, insecurely, -o no_check_certificate)"
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            raise S3mountError(
                f"cannot connect to {self.endpoint} ({_reason(exc)}): check -o url= and the "
                "network"
            ) from None
        except ReadTimeoutError:
            raise S3mountError(
                f"{self.endpoint} did not answer in time: check -o url= or raise "
                "-o readwrite_timeout="
            ) from None
        except BotoCoreError as exc:
            raise S3mountError(f"cannot use {where}: {_reason(exc)}") from None


def _add_content_md5(request: Any, **_: Any) -> None:
    body = request.body if isinstance(request.body, bytes) else (request.body or b"")
    if isinstance(body, str):
        body = body.encode()
    digest = hashlib.md5(body, usedforsecurity=False).digest()
    request.headers["Content-MD5"] = base64.b64encode(digest).decode()


def _keep_only_instance_role(session: botocore.session.Session) -> None:
    resolver = session.get_component("credential_provider")
    for provider in list(resolver.providers):
        if provider.METHOD != "iam-role":
            resolver.remove(provider.METHOD)


def _reason(exc: BaseException) -> str:
    # botocore keeps the socket-level cause in kwargs["error"].
    text = f"{exc} {getattr(exc, 'kwargs', {}).get('error', '')}"
    for marker in ("Connection refused", "Name or service not known", "timed out",
                   "No route to host", "certificate verify failed"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def _probe_message(code: str, where: str) -> str:
    if code in ("NoSuchBucket", "404"):
        return f"{where} does not exist (NoSuchBucket): check the bucket name and -o url="
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
                "AuthorizationHeaderMalformed", "InvalidSecurity"):
        return (f"the credentials were refused by {where} ({code}): check the access key and "
                "secret (passwd_file, AWS_* variables or profile)")
    if code in ("AccessDenied", "403", "AllAccessDisabled"):
        return (f"access denied to {where} (AccessDenied): the credentials lack "
                "s3:ListBucket on it")
    if code == "PermanentRedirect":
        return f"{where} is in another region: give -o region= (or the regional -o url=)"
    return f"cannot use {where}: the server answered {code}"


def verify_setting(no_check_certificate: bool, ca_bundle: str | None,
                   environ: Mapping[str, str] = os.environ) -> bool | str | None:
    if no_check_certificate:
        return False
    if ca_bundle:
        if not os.path.isfile(ca_bundle):
            raise S3mountError(f"CA bundle {ca_bundle} does not exist: check -o ca_bundle=")
        return ca_bundle
    return default_verify(environ)
