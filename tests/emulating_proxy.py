"""An S3Proxy (tests/s3proxy.py) that also plays the parts of S3 that moto's server
does not: SSE-C, lost replies, and a server that ignores Range.

moto 5.2 ignores SSE-C completely: it stores no key MD5, returns no
``x-amz-server-side-encryption-customer-*`` headers, and serves an SSE-C object
to a GET without the key or with a wrong one. With ``sse_c=True`` this proxy
enforces SSE-C the way AWS documents it, in front of moto:

* a request's SSE-C headers must be complete, with a 32-byte key whose MD5 is
  the one sent (else 400 InvalidArgument);
* PutObject, CreateMultipartUpload and CopyObject with SSE-C headers make an
  SSE-C object; the upload's key must come again with every UploadPart and
  UploadPartCopy (400 InvalidRequest), and may come with CompleteMultipartUpload;
* HEAD and GET of an SSE-C object without its key are 400 InvalidRequest, with
  another key 403 AccessDenied; SSE-C headers for an object without SSE-C are
  400 InvalidRequest. The same holds for the copy source of CopyObject and
  UploadPartCopy (x-amz-copy-source-server-side-encryption-customer-*);
* successful answers carry x-amz-server-side-encryption-customer-algorithm and
  -key-MD5 (CompleteMultipartUpload's does not, as on AWS).

The proxy knows an object's key by its ETag as moto reports it, so a client
that replaces an object directly in moto makes it an object without SSE-C.
To learn an object's ETag the proxy HEADs it in the upstream itself, with the
test credentials.

Every request is recorded in ``requests``; ``lose_reply`` rules forward a
request and then close the connection without answering (the reply is lost,
the change is made); ``ignore_range`` forwards GETs without their Range header.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import html
import re
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import botocore.session
from botocore.config import Config
from botocore.exceptions import ClientError
from helpers import ACCESS_KEY, SECRET_KEY
from s3proxy import Answer, Drop, Matcher, ProxyRequest, S3Proxy, _Handler

SSE_C = "x-amz-server-side-encryption-customer-"
COPY_SOURCE_SSE_C = "x-amz-copy-source-server-side-encryption-customer-"


@dataclasses.dataclass
class LoseReply:
    """Forward matching requests, then drop the connection instead of answering."""

    match: Matcher
    times: int | None = 1
    fired: int = 0


class SseCRefused(Exception):
    def __init__(self, answer: Answer) -> None:
        super().__init__(answer.code)
        self.answer = answer


def key_md5(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def sent_md5(headers: dict[str, str], prefix: str) -> str | None:
    """The key MD5 of a request's SSE-C headers (None: none sent), checked like S3 does."""
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    md5 = headers.get(prefix + "key-md5")
    if algorithm is None and key is None and md5 is None:
        return None
    if algorithm != "AES256" or not key or not md5:
        raise SseCRefused(Answer(400, "InvalidArgument", "incomplete SSE-C headers"))
    try:
        raw = base64.b64decode(key, validate=True)
    except ValueError:
        raise SseCRefused(Answer(400, "InvalidArgument", "the key is not base64")) from None
    if len(raw) != 32:
        raise SseCRefused(Answer(400, "InvalidArgument", "the key is not 256 bits"))
    if key_md5(raw) != md5:
        raise SseCRefused(Answer(400, "InvalidArgument", "the key MD5 does not match"))
    return md5


def read_refusal(stored: str | None, sent: str | None) -> Answer | None:
    """How S3 answers a read (or copy source) of an object stored with key ``stored``."""
    if stored is not None and sent is None:
        return Answer(400, "InvalidRequest", "The object was stored using a form of Server "
                      "Side Encryption. The correct parameters must be provided to retrieve "
                      "the object.")
    if stored is not None and sent != stored:
        return Answer(403, "AccessDenied", "the SSE-C key is not the object's")
    if stored is None and sent is not None:
        return Answer(400, "InvalidRequest", "The encryption parameters are not applicable "
                      "to this object.")
    return None


def _object_path(request: ProxyRequest) -> str:
    """bucket/key of a path-style request."""
    return unquote(urlsplit(request.target).path).lstrip("/")


def _copy_source_path(request: ProxyRequest) -> str:
    return unquote(request.headers["x-amz-copy-source"].split("?")[0]).lstrip("/")


def _xml_value(body: bytes, tag: str) -> str | None:
    match = re.search(rf"<{tag}>(.*?)</{tag}>".encode(), body, re.DOTALL)
    return html.unescape(match.group(1).decode()) if match else None


class EmulatingProxy(S3Proxy):
    def __init__(self, upstream: str, *, sse_c: bool = False, ignore_range: bool = False,
                 lose_reply: list[LoseReply] | None = None) -> None:
        super().__init__(upstream)
        self._server.RequestHandlerClass = _EmulatingHandler
        self.sse_c = sse_c
        self.ignore_range = ignore_range
        self.lose_reply = list(lose_reply or [])
        self.requests: list[ProxyRequest] = []
        # bucket/key → (ETag without quotes, key MD5 or None); upload ID → key MD5 or None.
        self.objects: dict[str, tuple[str, str | None]] = {}
        self.uploads: dict[str, str | None] = {}
        self._state_lock = threading.Lock()
        self._upstream_client = botocore.session.get_session().create_client(
            "s3", endpoint_url=upstream, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))

    def stored_md5(self, path: str) -> str | None:
        """The key MD5 of the object as it is in the upstream now (None: no SSE-C)."""
        bucket, _, key = path.partition("/")
        try:
            etag = self._upstream_client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
        except ClientError:
            return None
        with self._state_lock:
            known = self.objects.get(path)
        return known[1] if known and known[0] == etag else None

    def remember(self, path: str, etag: str | None, md5: str | None) -> None:
        with self._state_lock:
            if etag is None:
                self.objects.pop(path, None)
            else:
                self.objects[path] = (etag.strip('"'), md5)

    def check(self, request: ProxyRequest) -> dict[str, str | None]:
        """SSE-C checks before forwarding; raises SseCRefused. Returns what the
        answer needs: the destination key MD5 ("md5") of a write."""
        operation, headers = request.operation, request.headers
        sent = sent_md5(headers, SSE_C)
        copy_sent = sent_md5(headers, COPY_SOURCE_SSE_C)
        upload_id = request.query.get("uploadId", [None])[0]
        if operation in ("HeadObject", "GetObject"):
            refusal = read_refusal(self.stored_md5(_object_path(request)), sent)
            if refusal:
                raise SseCRefused(refusal)
            return {"md5": sent}
        if operation in ("CopyObject", "UploadPartCopy"):
            refusal = read_refusal(self.stored_md5(_copy_source_path(request)), copy_sent)
            if refusal:
                raise SseCRefused(refusal)
        if operation in ("UploadPart", "UploadPartCopy"):
            with self._state_lock:
                expected = self.uploads.get(upload_id)
            if sent != expected:
                raise SseCRefused(Answer(400, "InvalidRequest", "the part's SSE-C parameters "
                                         "are not those of the multipart upload"))
        if operation == "CompleteMultipartUpload" and sent is not None:
            with self._state_lock:
                expected = self.uploads.get(upload_id)
            if sent != expected:
                raise SseCRefused(Answer(400, "InvalidRequest", "the SSE-C parameters are "
                                         "not those of the multipart upload"))
        return {"md5": sent}

    def answered(self, request: ProxyRequest, status: int, headers: list[tuple[str, str]],
                 body: bytes, md5: str | None) -> list[tuple[str, str]]:
        """Record what a successful answer changed; return the headers to add."""
        operation = request.operation
        upload_id = request.query.get("uploadId", [None])[0]
        etag = dict((n.lower(), v) for n, v in headers).get("etag")
        if operation == "PutObject":
            self.remember(_object_path(request), etag, md5)
        elif operation == "CopyObject":
            self.remember(_object_path(request), _xml_value(body, "ETag") or etag, md5)
        elif operation == "CreateMultipartUpload":
            with self._state_lock:
                self.uploads[_xml_value(body, "UploadId") or ""] = md5
        elif operation == "CompleteMultipartUpload":
            with self._state_lock:
                md5 = self.uploads.pop(upload_id, None)
            self.remember(_object_path(request), _xml_value(body, "ETag"), md5)
            return []
        elif operation == "AbortMultipartUpload":
            with self._state_lock:
                self.uploads.pop(upload_id, None)
        elif operation == "DeleteObject":
            self.remember(_object_path(request), None, None)
        elif operation == "DeleteObjects":
            bucket = _object_path(request).split("/")[0]
            for key in re.findall(rb"<Key>(.*?)</Key>", request.body, re.DOTALL):
                self.remember(f"{bucket}/{html.unescape(key.decode())}", None, None)
        if md5 is None:
            return []
        return [(SSE_C + "algorithm", "AES256"), (SSE_C + "key-MD5", md5)]

    def loses_reply(self, request: ProxyRequest) -> bool:
        with self._lock:
            for rule in self.lose_reply:
                if (rule.times is None or rule.fired < rule.times) and rule.match(request):
                    rule.fired += 1
                    return True
        return False


class _EmulatingHandler(_Handler):
    _pending: tuple[ProxyRequest, str | None] | None = None

    def handle(self) -> None:
        # A client drops a connection it cannot reuse (a body it did not read whole).
        with contextlib.suppress(ConnectionResetError):
            super().handle()

    def do_GET(self) -> None:
        proxy: EmulatingProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        request = ProxyRequest(self.command, self.path,
                               _parse_query(self.path),
                               {name.lower(): value for name, value in self.headers.items()},
                               body)
        with proxy._lock:  # without big bodies: a test keeps every request
            proxy.requests.append(request if len(body) <= 65536
                                  else dataclasses.replace(request, body=b""))
        action = proxy.decide(request)
        if isinstance(action, Drop):
            self.close_connection = True
            return
        if isinstance(action, Answer):
            self._answer(action)
            return
        md5 = None
        if proxy.sse_c:
            try:
                md5 = proxy.check(request)["md5"]
            except SseCRefused as refused:
                self._answer(refused.answer)
                return
        if proxy.ignore_range and request.operation == "GetObject" and "Range" in self.headers:
            del self.headers["Range"]
        self._pending = (request, md5)
        try:
            self._forward(request)
        finally:
            self._pending = None

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _answer(self, action: Answer) -> None:
        error = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{action.code}</Code>'
                 f"<Message>{html.escape(action.message)}</Message>"
                 "<RequestId>emulating-proxy</RequestId></Error>").encode()
        self._respond(action.status, "", [("Content-Type", "application/xml")], error)

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        proxy: EmulatingProxy = self.server.proxy  # type: ignore[attr-defined]
        if self._pending is not None:
            request, md5 = self._pending
            if proxy.sse_c and 200 <= status < 300:
                # Recorded even when the reply is lost: the server made the change.
                headers = headers + proxy.answered(request, status, headers, body, md5)
            if proxy.loses_reply(request):
                self.close_connection = True
                return
        super()._respond(status, reason, headers, body)


def _parse_query(target: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(target).query, keep_blank_values=True)
