"""The S3 client wrapper: the only module that talks to botocore.

One botocore client is created before the FUSE loop starts and shared by all
worker threads (botocore clients are thread-safe). Every call goes through
``_call``, which retries transient failures (see retry.py; botocore's own
retries are off), counts requests and turns botocore errors into S3Error (an
FsError with the errno from errors.S3_ERRNO). A GET is retried together with
the reading of its body, which is checked before it is returned: its length
against Content-Length and the range asked for, and, for a whole object whose
ETag is the MD5 of its content, its MD5.

SSE-C (customer-provided keys): ``SseC`` decides the SSE-C parameters of every
request, and the Store remembers which key each object it saw or wrote needs,
by the key's MD5 that S3 reports on HEAD. An object it does not know yet is
asked for with a HEAD: without SSE-C parameters and with each key in turn, as
s3fs does.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import errno
import hashlib
import ipaddress
import logging
import os
import random
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, cast
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
from botocore.utils import determine_content_length, parse_timestamp

from . import __version__
from .buffers import BufferBody
from .credentials import Credentials
from .errors import CredentialsError, FsError, S3mountError, errno_for_s3_code
from .lean_head import LeanHead, head_fields
from .retry import RetryPolicy, error_code, http_status, transient_answer, transient_reason
from .stats import Stats

log = logging.getLogger(__name__)


class S3Error(FsError):
    """An error answer of S3 to one request: the errno, and S3's error code.

    ``transient``: worth a retry (see retry.py). ``attempts``: how many times the
    request was sent; after more than one, an earlier attempt may have been
    carried out with its answer lost.
    """

    def __init__(self, errno_value: int, detail: str, code: str, *,
                 transient: bool = False) -> None:
        super().__init__(errno_value, detail)
        self.code = code
        self.transient = transient
        self.attempts = 1


class TransferError(FsError):
    """A request or its answer failed on the way (connection, time-out, cut or
    corrupted body): EIO, worth a retry unless the cause says otherwise (a TLS
    certificate that is not trusted, a bad parameter)."""

    def __init__(self, detail: str, *, transient: bool = True) -> None:
        super().__init__(errno.EIO, detail)
        self.transient = transient
        self.attempts = 1

    @classmethod
    def of(cls, what: str, exc: BaseException) -> TransferError:
        """The error for ``exc`` (botocore's or the socket's), raised during ``what``."""
        return cls(f"{what}: {_reason(exc)}", transient=transient_reason(exc) is not None)


_T = TypeVar("_T")


def _failure_name(exc: BaseException) -> str:
    """S3's error code, or the kind of failure when there was no answer."""
    if isinstance(exc, S3Error):
        return exc.code
    cause = exc.__cause__
    return type(cause if cause is not None else exc).__name__


MD5_CHUNK = 1024 * 1024  # read size of an upload body's Content-MD5
# Smaller upload bodies go without "Expect: 100-continue" (as curl's), see _expect_only_big.
EXPECT_MIN_BYTES = 1024 * 1024
SSE_C_ALGORITHM = "AES256"
SSE_C_KEY_BYTES = 32
# How S3 refuses an SSE-C request whose key does not fit the object: 400 for
# missing or unexpected SSE-C parameters, 403 for a wrong key (HEAD answers carry
# no body, so only the status is known).
_SSE_C_REFUSALS = frozenset({"400", "403", "BadRequest", "InvalidRequest", "InvalidArgument",
                             "AccessDenied", "Forbidden"})
# Objects whose SSE-C state this mount remembers (the rest cost a HEAD on first use).
_SSE_C_REMEMBERED = 20_000


def sse_c_key_md5(key: bytes) -> str:
    """The key's MD5, base64, as in x-amz-server-side-encryption-customer-key-MD5."""
    return base64.b64encode(hashlib.md5(key, usedforsecurity=False).digest()).decode()


def decode_sse_c_key(text: bytes) -> bytes:
    """One key as s3fs reads it: 32 characters are the raw key; a longer text is
    the key in base64 (which must give 32 bytes). Raises ValueError, never
    showing the key."""
    if len(text) == SSE_C_KEY_BYTES:
        return text
    if len(text) < SSE_C_KEY_BYTES:
        raise ValueError(f"the key is too short ({len(text)} characters): an SSE-C key is "
                         "32 characters, or 32 bytes in base64 (44 characters)")
    try:
        key = base64.b64decode(text, validate=True)
    except ValueError:
        raise ValueError(f"the key ({len(text)} characters) is longer than 32 characters "
                         "but not base64") from None
    if len(key) != SSE_C_KEY_BYTES:
        raise ValueError(f"the key decodes from base64 to {len(key)} bytes, not 32")
    return key


class SseC:
    """Customer-provided encryption keys (SSE-C) and the one place that decides
    the SSE-C parameters of each request.

    Every key decrypts; an object's key is chosen by the MD5 that S3 reports for
    it. With ``encrypt`` (use_sse=custom) the first key encrypts new objects.
    Without it (load_sse_c alone), new content is written without SSE-C, but a
    server-side copy (chmod, rename, ...) of an SSE-C object keeps its key when
    ``keep_on_copy``, so that a metadata change never decrypts an object. The raw
    keys go to botocore, which sends them base64-encoded with their MD5.
    """

    def __init__(self, keys: Sequence[bytes], *, encrypt: bool, keep_on_copy: bool = True) -> None:
        if not keys:
            raise ValueError("SSE-C needs at least one key")
        self._keys: dict[str, bytes] = {}
        for key in keys:
            if len(key) != SSE_C_KEY_BYTES:
                raise ValueError("an SSE-C key is 32 bytes")
            self._keys.setdefault(sse_c_key_md5(key), key)
        self.encrypt = encrypt
        self.keep_on_copy = keep_on_copy and not encrypt
        self.write_md5: str | None = next(iter(self._keys)) if encrypt else None

    def __repr__(self) -> str:
        return f"SseC({len(self._keys)} keys, encrypt={self.encrypt})"

    @property
    def md5s(self) -> list[str]:
        """The keys' MD5s, in the order the keys were given."""
        return list(self._keys)

    def secrets(self) -> list[str]:
        """Every form a key can take in a log line: base64, and the text of a raw key."""
        forms = []
        for key in self._keys.values():
            forms.append(base64.b64encode(key).decode())
            forms.append(key.decode("latin-1"))
            forms.append(repr(key)[2:-1])
        return forms

    def for_write(self) -> dict[str, Any]:
        """Parameters of a request that creates an object (or a part of one)."""
        return self._params("SSECustomer", self.write_md5)

    def for_read(self, md5: str | None) -> dict[str, Any]:
        """Parameters to read an object encrypted with the key ``md5`` (None: no SSE-C)."""
        return self._params("SSECustomer", md5)

    def for_copy_source(self, md5: str | None) -> dict[str, Any]:
        return self._params("CopySourceSSECustomer", md5)

    def for_copy_destination(self, source_md5: str | None) -> dict[str, Any]:
        """Parameters for the new object of a server-side copy."""
        if self.keep_on_copy:
            return self.for_read(source_md5)
        return self.for_write()

    def destination_md5(self, source_md5: str | None) -> str | None:
        return source_md5 if self.keep_on_copy else self.write_md5

    def _params(self, prefix: str, md5: str | None) -> dict[str, Any]:
        if md5 is None:
            return {}
        key = self._keys.get(md5)
        if key is None:
            raise FsError(errno.EACCES, f"no SSE-C key has the MD5 {md5}")
        return {prefix + "Algorithm": SSE_C_ALGORITHM, prefix + "Key": key}

    @classmethod
    def from_options(cls, use_sse: str | None, load_sse_c: str | None,
                     environ: Mapping[str, str]) -> SseC | None:
        """The keys of s3fs's use_sse=custom[:FILE] and load_sse_c=FILE (else $AWSSSECKEYS).

        The key file of use_sse comes first, so its first key encrypts; then those
        of load_sse_c. Raises CredentialsError (one line) for an unreadable,
        unsafe or malformed key file.
        """
        encrypt = bool(use_sse) and use_sse.partition(":")[0] == "custom"
        keys: list[bytes] = []
        if encrypt and ":" in use_sse:
            keys += load_sse_c_keys(use_sse.partition(":")[2])
        if load_sse_c:
            keys += load_sse_c_keys(load_sse_c)
        if not keys and encrypt and environ.get("AWSSSECKEYS"):
            keys += _environment_keys(environ["AWSSSECKEYS"])
        if not keys:
            if encrypt:
                raise CredentialsError(
                    "use_sse=custom needs SSE-C keys: give use_sse=custom:FILE, "
                    "load_sse_c=FILE or the AWSSSECKEYS environment variable")
            return None
        return cls(keys, encrypt=encrypt, keep_on_copy=not use_sse)


def load_sse_c_keys(path: str) -> list[bytes]:
    """The keys of an s3fs SSE-C key file: one a line; blank lines and # comments skipped.

    The file must be private (no group or other permissions), like a passwd file.
    """
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except FileNotFoundError:
        raise CredentialsError(f"SSE-C key file {path} does not exist") from None
    except (PermissionError, IsADirectoryError):
        raise CredentialsError(f"SSE-C key file {path} is not readable by this user") from None
    except OSError as exc:
        raise CredentialsError(f"cannot read SSE-C key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"SSE-C key file {path} is accessible by group or others (mode "
            f"{stat.S_IMODE(mode):04o}); run: chmod 600 {path}")
    keys = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        text = line.strip()
        if not text or text.startswith(b"#"):
            continue
        try:
            keys.append(decode_sse_c_key(text))
        except ValueError as exc:
            raise CredentialsError(f"SSE-C key file {path}, line {number}: {exc}") from None
    if not keys:
        raise CredentialsError(f"SSE-C key file {path} holds no key")
    return keys


def _environment_keys(value: str) -> list[bytes]:
    keys = []
    for number, text in enumerate(value.split(":"), start=1):
        if not text.strip():
            continue
        try:
            keys.append(decode_sse_c_key(text.strip().encode()))
        except ValueError as exc:
            raise CredentialsError(f"AWSSSECKEYS, key {number}: {exc}") from None
    return keys


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a HEAD tells about an object."""

    key: str
    size: int
    etag: str
    last_modified_ns: int
    content_type: str | None
    metadata: Mapping[str, str]
    sse_c_md5: str | None = None  # the MD5 of the object's SSE-C key; None: no SSE-C


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
    retry_base_delay: float = 0.5  # seconds before the first retry (see retry.RetryPolicy)
    retry_max_delay: float = 20.0
    max_connections: int = 10
    anonymous: bool = False
    list_max_keys: int = 1000
    only_instance_role: bool = False  # s3fs's iam_role: no other credential source
    # Added to every request that creates an object: ACL, StorageClass, SSE parameters.
    write_extras: Mapping[str, str] = dataclasses.field(default_factory=dict)
    sse_c: SseC | None = None  # customer-provided keys (SSE-C)
    requester_pays: bool = False  # x-amz-request-payer: requester on every request
    content_md5: bool = False  # Content-MD5 on PutObject and UploadPart
    unsigned_payload: bool = False  # x-amz-content-sha256: UNSIGNED-PAYLOAD
    instance_name: str | None = None  # added to the User-Agent


_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def parse_s3_timestamp(value: str) -> datetime.datetime:
    """A timestamp of an S3 answer: the ISO 8601 form of listings
    ("2026-11-30T07:22:25.000Z") and the HTTP form of headers ("Mon, 30 Nov 2026
    07:22:25 GMT") without dateutil, which botocore uses and which costs about
    0.7 ms a value (a listing of 1,000 keys: 0.7 s of CPU); anything else as
    botocore parses it."""
    try:
        if value.endswith("Z") and "T" in value:
            return datetime.datetime.fromisoformat(value[:-1]).replace(tzinfo=datetime.UTC)
        if value.endswith(" GMT"):
            _weekday, day, month, year, clock, _zone = value.split()
            hour, minute, second = clock.split(":")
            return datetime.datetime(int(year), _MONTHS[month], int(day), int(hour),
                                     int(minute), int(second), tzinfo=datetime.UTC)
    except (ValueError, KeyError):
        pass
    return parse_timestamp(value)


def _ns(timestamp: Any) -> int:
    return int(timestamp.timestamp() * 1_000_000_000)


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

    def __init__(self, settings: StoreSettings, credentials: Credentials | None,
                 stats: Stats | None = None) -> None:
        self.bucket = settings.bucket
        self.endpoint = settings.url or "AWS S3"
        self._list_max_keys = settings.list_max_keys
        self.stats = stats or Stats()
        self._retry = RetryPolicy(settings.retries, settings.retry_base_delay,
                                  settings.retry_max_delay)
        self._jitter = random.Random()
        # Off once a server shows ETags that are not the MD5 of the content.
        self._etag_is_md5 = True
        session = botocore.session.get_session()
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=parse_s3_timestamp)
        if settings.only_instance_role:
            _keep_only_instance_role(session)
        config = Config(
            signature_version=UNSIGNED if settings.anonymous else "s3v4",
            s3={"addressing_style": "path" if settings.path_style else "virtual",
                # None: botocore's choice (signed, except streamed bodies over https with a
                # Content-MD5); False: never signed.
                "payload_signing_enabled": False if settings.unsigned_payload else None},
            max_pool_connections=settings.max_connections,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            # Retries are ours (_retrying): a GET is retried with the reading of its body.
            retries={"total_max_attempts": 1},
            # S3-compatible servers often reject botocore's default CRC checksums.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            proxies={"http": settings.proxy, "https": settings.proxy} if settings.proxy else None,
            user_agent_extra=f"s3mount/{__version__}" + (
                f" instance/{settings.instance_name}" if settings.instance_name else ""),
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
        self._sse = settings.sse_c
        # SSE-C: object key → (ETag, MD5 of its SSE-C key or None), most recent last.
        self._sse_objects: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        # SSE-C: upload ID → (SSE-C parameters, key MD5) of the object being uploaded.
        self._sse_uploads: dict[str, tuple[dict[str, Any], str | None]] = {}
        self._sse_lock = threading.Lock()
        self._range_ignored_logged = False
        self._client = session.create_client(
            "s3",
            region_name=settings.region,
            endpoint_url=settings.url,
            verify=settings.verify,
            config=config,
            **keys,
        )

        # Registered after botocore's own handler, which adds the header to every upload.
        self._client.meta.events.register("before-call.s3", _expect_only_big)
        # Many S3-compatible servers insist on Content-MD5 for multi-object delete,
        # which botocore no longer sends by default.
        self._client.meta.events.register("before-sign.s3.DeleteObjects", _add_content_md5)
        if settings.content_md5:
            for operation in ("PutObject", "UploadPart"):
                self._client.meta.events.register(f"before-sign.s3.{operation}",
                                                  _add_content_md5)
        if settings.requester_pays:
            # Every operation, signed (before-sign), including those whose botocore
            # model lacks the RequestPayer parameter.
            self._client.meta.events.register("before-sign.s3", _add_request_payer)
        if self._sse is not None:
            # S3 refuses a HEAD with the wrong SSE-C key with 400, which botocore would
            # take for a wrong region and answer with a HeadBucket and a second HEAD.
            self._client.meta.events.register("before-call.s3.HeadObject",
                                              _no_region_redirect)
        self._lean_head: LeanHead | None = None
        if self._sse is None:
            try:
                self._lean_head = LeanHead(
                    self._client, self.bucket,
                    {"x-amz-request-payer": "requester"} if settings.requester_pays else None)
            except Exception as exc:  # botocore's internals differ: its own path serves
                log.debug("HEAD requests go through botocore's call path: %s", exc)

    def request_counts(self) -> dict[str, int]:
        return self.stats.requests()

    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return self._retrying(operation, params.get("Key"),
                              lambda: self._request(operation, params))

    def _request(self, operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """One attempt; raises S3Error or TransferError."""
        body = params.get("Body")
        if hasattr(body, "seek"):
            body.seek(0)  # an attempt before this one may have read it to its end
        self.stats.request(operation, params)
        try:
            response = getattr(self._client, operation)(Bucket=self.bucket, **params)
        except ClientError as exc:
            code = error_code(exc)
            raise S3Error(errno_for_s3_code(code), f"{operation}: {code}", code,
                          transient=transient_answer(http_status(exc), code) is not None
                          ) from exc
        except (BotoCoreError, OSError) as exc:
            raise TransferError.of(operation, exc) from exc
        self.stats.answered(operation, response)
        return response

    def _retrying(self, operation: str, key: str | None, attempt: Callable[[], _T], *,
                  log_failure: bool = True) -> _T:
        """Run ``attempt`` until it succeeds, fails for good, or the retries are spent.

        Waits with exponential backoff and jitter between attempts (retry.py).
        The error that ends it carries the number of attempts made; giving up
        is logged unless the caller reports the error itself (``log_failure``).
        """
        retry = 0
        while True:
            try:
                return attempt()
            except Exception as exc:
                reason = transient_reason(exc)
                what = f"{operation} of {key}" if key else operation
                if reason is None or retry >= self._retry.retries:
                    if reason is not None and log_failure:
                        log.warning("%s on %s: gave up after %d attempts: %s", what,
                                    self.endpoint, retry + 1, reason)
                    if isinstance(exc, FsError):
                        exc.attempts = retry + 1  # type: ignore[attr-defined]
                    self.stats.failed(operation, _failure_name(exc))
                    raise
                retry += 1
                self.stats.count("retries")
                delay = self._retry.delay(retry, self._jitter)
                log.info("%s on %s: %s; retry %d of %d in %.2f s", what, self.endpoint,
                         reason, retry, self._retry.retries, delay)
                time.sleep(delay)

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD an object; None when it does not exist."""
        if self._sse is not None:
            return self._head_sse_c(key, self._sse)
        lean = self._lean_head
        if lean is not None:
            status, headers = self._retrying("head_object", key,
                                             lambda: self._lean_head_attempt(lean, key))
            if status == 200:
                return _object_info(key, head_fields(headers, parse_s3_timestamp), None)
            if status == 404:
                self.stats.failed("head_object", "404")
                return None
            # Any other answer (a redirect, 400): botocore's path asks again and knows
            # what it means.
        try:
            response = self._call("head_object", Key=key)
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return _object_info(key, response, None)

    def _lean_head_attempt(self, lean: LeanHead, key: str) -> tuple[int, Mapping[str, str]]:
        """(status, headers) of 200, 404 and the answers left to botocore's path; an
        error answer that means the same whatever the path raises as botocore's would
        (a HEAD answer has no body: its code is the bare status)."""
        self.stats.request("head_object", {"Key": key})
        try:
            status, headers = lean(key)
        except (BotoCoreError, OSError) as exc:
            raise TransferError.of("head_object", exc) from exc
        if status == 403 or status == 429 or status >= 500:
            code = str(status)
            raise S3Error(errno_for_s3_code(code), f"head_object: {code}", code,
                          transient=transient_answer(status, code) is not None)
        return status, headers

    def _head_sse_c(self, key: str, sse: SseC) -> ObjectInfo | None:
        """HEAD with the SSE-C key the object needs, found by trying: the key this
        mount last saw for it, the write key, no key, then every other key. S3
        refuses a HEAD of an SSE-C object without its key (400), with a wrong key
        (403), and with a key for an object without SSE-C (400)."""
        with self._sse_lock:
            known = self._sse_objects.get(key)
        candidates: list[str | None] = [known[1]] if known else []
        candidates += [sse.write_md5, None, *sse.md5s] if sse.write_md5 else [None, *sse.md5s]
        for md5 in dict.fromkeys(candidates):
            try:
                response = self._call("head_object", Key=key, **sse.for_read(md5))
            except S3Error as exc:
                if exc.errno == errno.ENOENT:
                    self._sse_forget(key)
                    return None
                if exc.code not in _SSE_C_REFUSALS:
                    raise
                continue
            # The key S3 confirms; a server that ignores SSE-C confirms none but
            # accepted the one sent.
            confirmed = response.get("SSECustomerKeyMD5") or md5
            info = _object_info(key, response, confirmed)
            self._sse_remember(key, info.etag, confirmed)
            return info
        raise FsError(errno.EACCES, f"head_object: none of the {len(sse.md5s)} SSE-C keys "
                                    "opens the object")

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
        return cast(bytes, self._get_pinned(key, start, end, etag, None))

    def get_range_into(self, key: str, start: int, end: int, etag: str | None,
                       into: memoryview) -> int:
        """Like ``get_range``, into ``into`` (``end - start + 1`` bytes, a reused
        buffer: a big body then costs no new memory); the number of bytes
        received, fewer only when the object ends before ``end``."""
        return len(self._get_pinned(key, start, end, etag, into))

    def _get_pinned(self, key: str, start: int, end: int, etag: str | None,
                    into: memoryview | None) -> bytes | memoryview:
        params: dict[str, Any] = {"Key": key, "Range": f"bytes={start}-{end}"}
        if etag:
            params["IfMatch"] = etag
        if self._sse is None:
            return self._get(params, start, end, into)
        try:
            return self._get({**params, **self._sse.for_read(self._sse_md5(key, etag))},
                             start, end, into)
        except S3Error as exc:
            if exc.code not in _SSE_C_REFUSALS:
                raise
        # Another client rewrote the object with another key (or without SSE-C).
        self._sse_forget(key)
        return self._get({**params, **self._sse.for_read(self._sse_md5(key, etag))},
                         start, end, into)

    def _get(self, params: dict[str, Any], start: int, end: int,
             into: memoryview | None) -> bytes | memoryview:
        """A ranged GET and the reading of its body, retried together."""
        corrupt: set[str] = set()  # MD5s of bodies that failed the ETag check
        return self._retrying("get_object", params["Key"],
                              lambda: self._get_once(params, start, end, into, corrupt))

    def _get_once(self, params: dict[str, Any], start: int, end: int,
                  into: memoryview | None, corrupt: set[str]) -> bytes | memoryview:
        """The body, or the part of ``into`` it was received into."""
        response = self._request("get_object", params)
        body = response["Body"]
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        data: bytes | memoryview
        try:
            if status == 200 and "ContentRange" not in response:
                data = self._range_of_whole_body(body, response, start, end)
                whole = start == 0 and len(data) == response.get("ContentLength")
            elif into is not None and response.get("ContentLength") is not None:
                length = response["ContentLength"]
                whole = self._check_range(response, length, start, end)
                if length > len(into):
                    raise TransferError(f"get_object: {length} bytes for {len(into)}")
                data = into[:length]
                got = _read_body_into(body, data)
                if got != length:
                    raise TransferError(f"get_object: short body ({got} of {length} bytes)")
            else:
                # StreamingBody checks the length it read against Content-Length.
                data = body.read()
                whole = self._check_range(response, len(data), start, end)
        except (BotoCoreError, OSError) as exc:
            raise TransferError.of("get_object body", exc) from exc
        finally:
            body.close()
        if whole:
            self._check_md5(params["Key"], response, data, corrupt)
        if into is not None and not isinstance(data, memoryview):
            if len(data) > len(into):
                raise TransferError(f"get_object: {len(data)} bytes for {len(into)}")
            into[:len(data)] = data
            data = into[:len(data)]
        return data

    @staticmethod
    def _check_range(response: Mapping[str, Any], length: int, start: int, end: int) -> bool:
        """Check that a body of ``length`` bytes is the range asked for, as long as
        announced; return whether it is the whole object."""
        expected = response.get("ContentLength")
        if expected is not None and length != expected:
            raise TransferError(f"get_object: short body ({length} of {expected} bytes)")
        content_range = response.get("ContentRange")
        if content_range is None:
            return False
        try:
            first_last, _, total_text = content_range.removeprefix("bytes ").partition("/")
            first, last = (int(n) for n in first_last.split("-"))
            total = int(total_text) if total_text != "*" else None
        except ValueError:
            raise TransferError(f"get_object: malformed Content-Range {content_range!r}") from None
        wanted_last = end if total is None else min(end, total - 1)
        if first != start or last != wanted_last or length != last - first + 1:
            raise TransferError(f"get_object: got {length} bytes as {content_range!r} for "
                                f"bytes {start}-{end}")
        return start == 0 and total is not None and last == total - 1

    def _check_md5(self, key: str, response: Mapping[str, Any], data: bytes | memoryview,
                   corrupt: set[str]) -> None:
        """Check a whole object's body against its ETag, when that is an MD5: not
        for multipart objects (ETag "...-N"), SSE-KMS or SSE-C ones."""
        etag = response.get("ETag", "").strip('"')
        if (not self._etag_is_md5 or len(etag) != 32 or "-" in etag
                or response.get("SSECustomerAlgorithm")
                or str(response.get("ServerSideEncryption", "")).startswith("aws:kms")):
            return
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        if digest == etag.lower():
            return
        if digest in corrupt:
            # The same bytes twice: this server's ETags are not MD5s of the content.
            self._etag_is_md5 = False
            log.warning("the ETag of %s on %s is not the MD5 of its content: downloads are no "
                        "longer checked against ETags", key, self.endpoint)
            return
        corrupt.add(digest)
        raise TransferError(f"get_object: body of {len(data)} bytes does not match the ETag "
                            "(MD5)")

    def _range_of_whole_body(self, body: Any, response: dict[str, Any], start: int,
                             end: int) -> bytes:
        """The server ignored Range and sends the whole object (200): read it up to
        ``end`` only, and keep ``start..end``."""
        if not self._range_ignored_logged:
            self._range_ignored_logged = True
            log.warning("%s ignores Range requests: reads fetch objects from their start",
                        self.endpoint)
        total = response.get("ContentLength")
        wanted = end + 1 if total is None else min(end + 1, total)
        chunks, got = [], 0
        while got < wanted:
            chunk = body.read(min(wanted - got, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got < wanted and total is not None:
            raise TransferError(f"get_object: short body ({got} of {wanted} bytes)")
        return b"".join(chunks)[start:]

    # Writes. Every key is a full object key; metadata are the x-amz-meta-* names
    # without the prefix.

    def put(self, key: str, body: bytes, *, metadata: Mapping[str, str],
            content_type: str) -> str:
        sse = self._sse.for_write() if self._sse else {}
        response = self._call("put_object", Key=key, Body=body, Metadata=dict(metadata),
                              ContentType=content_type, **self._write_extras, **sse)
        etag = response.get("ETag", "")
        if self._sse is not None:
            self._sse_remember(key, etag, self._sse.write_md5)
        return etag

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
        source_md5 = None
        if self._sse is not None:
            source_md5 = self._sse_md5(source_key, source_etag)
            params.update(self._sse.for_copy_source(source_md5),
                          **self._sse.for_copy_destination(source_md5))
        try:
            response = self._call("copy_object", **params)
            etag = response.get("CopyObjectResult", {}).get("ETag", "")
        except S3Error as exc:
            etag = None
            if exc.code in ("PreconditionFailed", "412") and exc.attempts > 1 and key == source_key:
                etag = self._copied_before(key, metadata, content_type)
            if etag is None:
                raise
        if self._sse is not None:
            self._sse_remember(key, etag, self._sse.destination_md5(source_md5))
        return etag

    def _copied_before(self, key: str, metadata: Mapping[str, str] | None,
                       content_type: str | None) -> str | None:
        """After a lost answer, a retried copy of an object onto itself finds its
        ETag changed (a multipart object's does): the ETag of ``key`` if it has the
        new metadata, so the first attempt did the copy; else None."""
        info = self.head(key)
        if (info is None or metadata is None or dict(info.metadata) != dict(metadata)
                or (content_type is not None and info.content_type != content_type)):
            return None
        log.info("the copy of %s onto itself was done, though its answer was lost", key)
        return info.etag

    def delete(self, key: str) -> None:
        self._call("delete_object", Key=key)
        self._sse_forget(key)

    def delete_many(self, keys: list[str]) -> None:
        """Delete in batches of 1000; a key that fails to delete is an error.

        Keys that fail for a passing reason (SlowDown, InternalError) are retried
        like a failed request, alone.
        """
        for key in keys:
            self._sse_forget(key)
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            self._retrying("delete_objects", None, lambda batch=batch: self._delete_batch(batch))

    def _delete_batch(self, batch: list[str]) -> None:
        """One DeleteObjects; on transient failures of some keys, ``batch`` becomes them."""
        response = self._request("delete_objects", {"Delete": {
            "Objects": [{"Key": key} for key in batch], "Quiet": True}})
        errors = response.get("Errors") or []
        if not errors:
            return
        code = str(errors[0].get("Code", ""))
        transient = all(transient_answer(None, str(e.get("Code", ""))) for e in errors)
        if transient:
            batch[:] = [e["Key"] for e in errors]
        raise S3Error(errno_for_s3_code(code), f"delete_objects: {code} for {len(errors)} keys",
                      code, transient=transient)

    def create_multipart(self, key: str, *, metadata: Mapping[str, str],
                         content_type: str, copy_of: tuple[str, str | None] | None = None
                         ) -> str:
        """Start a multipart upload. ``copy_of``: (key, ETag) of the object that this
        upload copies as it is, whose SSE-C key the new object may keep (see SseC)."""
        sse: dict[str, Any] = {}
        md5 = None
        if self._sse is not None:
            if copy_of is None:
                sse, md5 = self._sse.for_write(), self._sse.write_md5
            else:
                source_md5 = self._sse_md5(*copy_of)
                sse = self._sse.for_copy_destination(source_md5)
                md5 = self._sse.destination_md5(source_md5)
        response = self._call("create_multipart_upload", Key=key, Metadata=dict(metadata),
                              ContentType=content_type, **self._write_extras, **sse)
        upload_id = response["UploadId"]
        if self._sse is not None:
            with self._sse_lock:
                self._sse_uploads[upload_id] = (sse, md5)
        return upload_id

    def _upload_sse(self, upload_id: str) -> dict[str, Any]:
        """The SSE-C parameters every request of an upload repeats (those it began with)."""
        if self._sse is None:
            return {}
        with self._sse_lock:
            entry = self._sse_uploads.get(upload_id)
        return entry[0] if entry else self._sse.for_write()

    def upload_part(self, key: str, upload_id: str, number: int,
                    body: bytes | memoryview) -> str:
        """Send part ``number``; ``body`` is not used once this returns."""
        response = self._call("upload_part", Key=key, UploadId=upload_id, PartNumber=number,
                              Body=BufferBody(body) if isinstance(body, memoryview) else body,
                              **self._upload_sse(upload_id))
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
        if self._sse is not None:
            params.update(self._sse.for_copy_source(self._sse_md5(source_key, source_etag)),
                          **self._upload_sse(upload_id))
        response = self._call("upload_part_copy", **params)
        return response["CopyPartResult"]["ETag"]

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]],
                           *, size: int | None = None) -> str:
        """Complete an upload of ``size`` bytes (if known) from its parts; return the ETag.

        When the server completed it but its answer was lost, the retry finds no
        upload (NoSuchUpload): then the object is accepted if its ETag is the one
        the parts give and its size is ``size``.
        """
        sse = self._upload_sse(upload_id)
        try:
            response = self._call("complete_multipart_upload", Key=key, UploadId=upload_id,
                                  MultipartUpload={"Parts": [
                                      {"PartNumber": number, "ETag": etag}
                                      for number, etag in parts]}, **sse)
            etag = response.get("ETag", "")
        except S3Error as exc:
            if exc.code != "NoSuchUpload":
                raise
            etag = self._completed_before(key, parts, size)
            if etag is None:
                raise
            log.info("the multipart upload of %s was completed, though its answer was lost",
                     key)
        if self._sse is not None:
            with self._sse_lock:
                _, md5 = self._sse_uploads.pop(upload_id, (None, self._sse.write_md5))
            self._sse_remember(key, etag, md5)
        return etag

    def _completed_before(self, key: str, parts: list[tuple[int, str]],
                          size: int | None) -> str | None:
        """The ETag of ``key`` if it is the object these parts make, else None."""
        expected = multipart_etag([etag for _, etag in parts])
        if expected is None:
            return None
        try:
            info = self.head(key)
        except FsError:
            return None
        if info is None or info.etag.strip('"') != expected:
            return None
        if size is not None and info.size != size:
            return None
        return info.etag

    def multipart_uploads(self, key: str) -> list[str]:
        """Ids of the multipart uploads in progress for exactly ``key`` (first 1000)."""
        response = self._call("list_multipart_uploads", Prefix=key)
        return [upload["UploadId"] for upload in response.get("Uploads", ())
                if upload.get("Key") == key]

    def abort_multipart(self, key: str, upload_id: str) -> None:
        if self._sse is not None:
            with self._sse_lock:
                self._sse_uploads.pop(upload_id, None)
        try:
            self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
        except S3Error as exc:
            # Aborted already: by an attempt whose answer was lost.
            if exc.code != "NoSuchUpload":
                raise

    # What this mount knows of objects' SSE-C keys.

    def _sse_md5(self, key: str, etag: str | None) -> str | None:
        """The MD5 of the SSE-C key of ``key`` (pinned to ``etag``), or None for an
        object without SSE-C; asked for with a HEAD when not known."""
        with self._sse_lock:
            known = self._sse_objects.get(key)
        if known is not None and (not etag or known[0] == etag):
            return known[1]
        info = self.head(key)
        if info is None:
            raise FsError(errno.ENOENT, f"head_object: {key} does not exist")
        if etag and info.etag != etag:
            raise FsError(errno.ESTALE, "head_object: the object changed")
        return info.sse_c_md5

    def _sse_remember(self, key: str, etag: str, md5: str | None) -> None:
        if self._sse is None:
            return
        with self._sse_lock:
            self._sse_objects[key] = (etag, md5)
            self._sse_objects.move_to_end(key)
            while len(self._sse_objects) > _SSE_C_REMEMBERED:
                self._sse_objects.popitem(last=False)

    def _sse_forget(self, key: str) -> None:
        if self._sse is None:
            return
        with self._sse_lock:
            self._sse_objects.pop(key, None)

    def probe(self, prefix: str) -> None:
        """Check, before mounting, that the bucket exists and the credentials work.

        Raises S3mountError with one line that says what is wrong and what to do.
        """
        where = f"bucket '{self.bucket}' at {self.endpoint}"
        try:
            # The failure becomes the one line of the error below.
            self._retrying("list_objects_v2", None, lambda: self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=prefix, MaxKeys=1), log_failure=False)
        except NoCredentialsError:
            raise CredentialsError(
                "no credentials found: give -o passwd_file=FILE, set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or use -o public_bucket=1"
            ) from None
        except ClientError as exc:
            code = error_code(exc)
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


def _object_info(key: str, response: Mapping[str, Any], sse_c_md5: str | None) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=response["ContentLength"],
        etag=response.get("ETag", ""),
        last_modified_ns=_ns(response["LastModified"]),
        content_type=response.get("ContentType"),
        metadata=response.get("Metadata", {}),
        sse_c_md5=sse_c_md5,
    )


def multipart_etag(part_etags: Sequence[str]) -> str | None:
    """The ETag S3 gives an object made of these parts (without quotes): the MD5 of
    the parts' binary MD5s, then -COUNT. None when a part's ETag is not an MD5."""
    try:
        digests = b"".join(bytes.fromhex(etag.strip('"')) for etag in part_etags)
    except ValueError:
        return None
    if len(digests) != 16 * len(part_etags):
        return None
    return f"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(part_etags)}"


def _set_header(request: Any, name: str, value: str) -> None:
    # AWSRequest headers append on assignment; a re-signed request must not get two.
    if name in request.headers:
        del request.headers[name]
    request.headers[name] = value


def _add_content_md5(request: Any, **_: Any) -> None:
    _set_header(request, "Content-MD5", base64.b64encode(_body_md5(request.body)).decode())


def _read_body_into(body: Any, into: memoryview) -> int:
    """Receive a GET's body (botocore's StreamingBody) straight into ``into``; the
    number of bytes read, less than ``len(into)`` only when the body ends first.

    The socket reads go into ``into`` through http.client's ``readinto``, below
    urllib3, which would read into new bytes and copy; the connection then goes
    back to urllib3's pool as after a read of the whole body. Bodies of other
    shapes are read whole and copied.
    """
    raw = getattr(body, "_raw_stream", None)
    response = getattr(raw, "_fp", None)
    if not hasattr(response, "readinto") or not hasattr(raw, "release_conn"):
        data = body.read(len(into))
        into[:len(data)] = data
        return len(data)
    filled = 0
    while filled < len(into):
        received = response.readinto(into[filled:])
        if not received:
            break
        filled += received
    if response.isclosed():  # all of it was read: the connection can serve again
        raw.release_conn()
    return filled


def _body_md5(body: Any) -> bytes:
    """The MD5 of a request body: bytes, str, or the seekable file object that
    botocore makes of an upload's bytes (read whole, then put back where it was)."""
    digest = hashlib.md5(usedforsecurity=False)
    if hasattr(body, "read"):
        position = body.tell()
        while chunk := body.read(MD5_CHUNK):
            digest.update(chunk)
        body.seek(position)
    elif body:
        digest.update(body.encode() if isinstance(body, str) else body)
    return digest.digest()


def _expect_only_big(params: dict[str, Any], **_: Any) -> None:
    """Drop "Expect: 100-continue" from small uploads. botocore waits for the
    server's "100 Continue" before it sends any body: one more round trip per
    request, which doubles the cost of a small file's PUT on a distant server.
    Bodies of a MiB or more keep it: an error answer (403, a redirect) then
    comes before the body is sent, not as a reset in the middle of it."""
    headers = params.get("headers", {})
    if "Expect" in headers:
        length = determine_content_length(params.get("body"))
        if length is not None and length < EXPECT_MIN_BYTES:
            del headers["Expect"]


def _add_request_payer(request: Any, **_: Any) -> None:
    _set_header(request, "x-amz-request-payer", "requester")


def _no_region_redirect(context: dict[str, Any], **_: Any) -> None:
    redirect = context.get("s3_redirect")
    if redirect is not None:
        redirect["redirected"] = True


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
