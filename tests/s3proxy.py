"""A rule-based HTTP reverse proxy in front of the S3 test server, for fault injection.

Every request is read whole and forwarded to the upstream server (Host header
kept as the client sent it, so SigV4 signatures stay valid) unless a rule
fires: then the proxy answers with an S3 error of its own, or closes the
connection without answering. Standard library only; listens on loopback, plain
HTTP, path-style requests. A chunked request body is de-chunked and forwarded
with a Content-Length (HTTP trailers are dropped); an ``aws-chunked`` content
encoding inside it passes through byte-exact.

    rule = Rule(is_upload_part_copy, Answer(501, "NotImplemented"))
    with S3Proxy(s3_server.url, [rule]) as proxy:
        ...  # point the client at proxy.url
        assert proxy.counts()["UploadPartCopy"] == rule.fired
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

# Headers about one connection, not the message; http.client sets its own framing.
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "expect", "content-length"})


@dataclasses.dataclass(frozen=True)
class ProxyRequest:
    method: str
    target: str  # path and query, as sent
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    @property
    def operation(self) -> str:
        """A simple S3 operation name, e.g. UploadPartCopy (see operation_name)."""
        return operation_name(self)


@dataclasses.dataclass(frozen=True)
class Answer:
    """Answer with this status and an S3 XML error body."""

    status: int
    code: str
    message: str = "injected by the test proxy"


@dataclasses.dataclass(frozen=True)
class Drop:
    """Close the connection without answering."""


Matcher = Callable[[ProxyRequest], bool]


@dataclasses.dataclass
class Rule:
    """Apply ``action`` to matching requests: always, the first ``times`` ones, or by chance."""

    match: Matcher
    action: Answer | Drop
    times: int | None = None
    probability: float = 1.0  # drawn from the proxy's seeded random generator
    fired: int = 0


def operation_name(request: ProxyRequest) -> str:
    """Name the S3 operation of a path-style request from method, query and headers."""
    method, query, headers = request.method, request.query, request.headers
    has_key = "/" in urlsplit(request.target).path.strip("/")
    if method == "PUT":
        if "x-amz-copy-source" in headers:
            return "UploadPartCopy" if "partNumber" in query else "CopyObject"
        if "partNumber" in query:
            return "UploadPart"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        for name, operation in (("uploads", "CreateMultipartUpload"),
                                ("uploadId", "CompleteMultipartUpload"),
                                ("delete", "DeleteObjects")):
            if name in query:
                return operation
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if has_key else "DeleteBucket"
    if method == "GET":
        if "uploadId" in query:
            return "ListParts"
        if "uploads" in query:
            return "ListMultipartUploads"
        return "GetObject" if has_key else "ListObjects"
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    return method


def method_is(*methods: str) -> Matcher:
    return lambda request: request.method in methods


def has_query(name: str) -> Matcher:
    return lambda request: name in request.query


def has_header(name: str) -> Matcher:
    return lambda request: name.lower() in request.headers


def operation_is(*names: str) -> Matcher:
    return lambda request: request.operation in names


def all_of(*matchers: Matcher) -> Matcher:
    return lambda request: all(match(request) for match in matchers)


def is_upload_part_copy(request: ProxyRequest) -> bool:
    return request.operation == "UploadPartCopy"


def is_copy_object(request: ProxyRequest) -> bool:
    return request.operation == "CopyObject"


class S3Proxy:
    """The proxy: rules are tried in order for every request; the first that fires acts."""

    def __init__(self, upstream: str, rules: list[Rule] | None = None, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"the proxy forwards to plain http only, not {upstream}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.rules = list(rules or [])
        self._random = random.Random(seed)
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="s3proxy")

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> S3Proxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def counts(self) -> Counter[str]:
        """Requests seen (forwarded or not) per operation name."""
        with self._lock:
            return Counter(self._counts)

    def decide(self, request: ProxyRequest) -> Answer | Drop | None:
        """Count the request; return the action of the first rule that fires, if any."""
        with self._lock:
            self._counts[request.operation] += 1
            for rule in self.rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if not rule.match(request):
                    continue
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule.action
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for botocore's PUTs
    timeout = 60  # idle client connections end on their own after stop()

    def do_GET(self) -> None:
        body = self._read_body()
        request = ProxyRequest(self.command, self.path,
                               parse_qs(urlsplit(self.path).query, keep_blank_values=True),
                               {name.lower(): value for name, value in self.headers.items()},
                               body)
        action = self.server.proxy.decide(request)  # type: ignore[attr-defined]
        if isinstance(action, Drop):
            self.close_connection = True
        elif isinstance(action, Answer):
            error = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(action.code)}'
                     f"</Code><Message>{escape(action.message)}</Message>"
                     "<RequestId>s3proxy</RequestId></Error>").encode()
            self._respond(action.status, "", [("Content-Type", "application/xml")], error)
        else:
            self._forward(request)

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: pytest shows the test's own logs."""

    def _read_body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";", 1)[0].strip(), 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, up to the blank line
            pass
        return b"".join(chunks)

    def _forward(self, request: ProxyRequest) -> None:
        host, port = self.server.proxy.upstream  # type: ignore[attr-defined]
        upstream = http.client.HTTPConnection(host, port, timeout=60)
        try:
            upstream.putrequest(request.method, request.target, skip_host=True,
                                skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            if request.body or {"content-length", "transfer-encoding"} & request.headers.keys():
                upstream.putheader("Content-Length", str(len(request.body)))
            upstream.endheaders(request.body)
            response = upstream.getresponse()
            body = response.read()
            headers = [(name, value) for name, value in response.getheaders()
                       if name.lower() not in _HOP_BY_HOP]
            if not self._has_body(response.status):
                # A HEAD answer's Content-Length describes the object it did not send.
                headers += [(name, value) for name, value in response.getheaders()
                            if name.lower() == "content-length"]
            self._respond(response.status, response.reason, headers, body)
        finally:
            upstream.close()

    def _has_body(self, status: int) -> bool:
        return self.command != "HEAD" and status >= 200 and status not in (204, 304)

    def _respond(self, status: int, reason: str, headers: list[tuple[str, str]],
                 body: bytes) -> None:
        self.send_response_only(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        if self._has_body(status):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self._has_body(status):
            self.wfile.write(body)
