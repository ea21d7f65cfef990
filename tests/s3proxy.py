"""A rule-based HTTP reverse proxy in front of the S3 test server, for fault injection.

Every request is read whole and forwarded to the upstream server (Host header
kept as the client sent it, so SigV4 signatures stay valid) unless a rule
fires. Standard library only; listens on loopback, plain HTTP, path-style
requests. A chunked request body is de-chunked and forwarded with a
Content-Length (HTTP trailers are dropped); an ``aws-chunked`` content encoding
inside it passes through byte-exact.

What a rule can do (its action):

* ``Answer(503, "SlowDown")``: an S3 error of the proxy's own (500, 503, 429 ...);
* ``Reply(status, body)``: any answer of the proxy's own;
* ``Drop()`` / ``Reset()``: close the connection without answering (FIN / RST);
* ``Stall(seconds)``: answer nothing for that long (past the client's read
  timeout), then close;
* with ``forward=True`` these three first forward the request, so the server
  makes the change and only the reply is lost;
* ``Truncate(keep)``: forward, then send the answer's headers with the full
  Content-Length but only part of the body, and close (optionally stalling);
* ``Corrupt(count)``: forward, then flip ``count`` bytes of the answer's body;
* ``SetHeader(name, value)``: forward, and answer with that header changed.

A rule fires on matching requests (per operation: ``operation_is``) always, by
chance (``probability``, from the proxy's seeded generator), or on the Nth one
(``skip=N-1, times=1``). ``offline()`` makes the whole server unreachable:
connections are refused (the listening socket is closed) and open ones reset,
for some seconds or until ``online()``.

    rule = Rule(is_upload_part_copy, Answer(501, "NotImplemented"))
    with S3Proxy(s3_server.url, [rule]) as proxy:
        ...  # point the client at proxy.url
        assert proxy.counts()["UploadPartCopy"] == rule.fired
"""

from __future__ import annotations

import dataclasses
import http.client
import random
import socket
import struct
import threading
import time
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
class Reply:
    """Answer with this status and XML body, without forwarding."""

    status: int
    body: bytes


@dataclasses.dataclass(frozen=True)
class Drop:
    """Close the connection without answering (the client sees it closed)."""

    forward: bool = False  # forward first: the change is made, its reply lost


@dataclasses.dataclass(frozen=True)
class Reset:
    """Reset the connection (TCP RST) without answering."""

    forward: bool = False


@dataclasses.dataclass(frozen=True)
class Stall:
    """Answer nothing for ``seconds`` (past the client's read timeout), then close."""

    seconds: float
    forward: bool = False


@dataclasses.dataclass(frozen=True)
class Truncate:
    """Forward; send the answer with its full Content-Length but only the first
    ``keep`` (a fraction) of its body, stall ``stall`` seconds, then close.
    Answers without a body pass unchanged."""

    keep: float = 0.5
    stall: float = 0.0


@dataclasses.dataclass(frozen=True)
class Corrupt:
    """Forward; flip ``count`` bytes of the answer's body (if it has one).

    ``checkable_only``: only answers that a client can check, those that carry a
    whole object uploaded in one piece (its ETag, without "-N", is its MD5).
    """

    count: int = 1
    checkable_only: bool = False


@dataclasses.dataclass(frozen=True)
class SetHeader:
    """Forward; answer with the header ``name`` set to ``value`` (a server's quirk)."""

    name: str
    value: str


Action = Answer | Reply | Drop | Reset | Stall | Truncate | Corrupt | SetHeader
Matcher = Callable[[ProxyRequest], bool]


def request_faults(stall: float) -> dict[str, Action]:
    """Every fault a request can meet, by name: error answers, and connections
    dropped, reset or stalled (``stall`` seconds) before the server sees the
    request or after (the change is made, the answer lost)."""
    return {
        "500": Answer(500, "InternalError"),
        "503-slowdown": Answer(503, "SlowDown"),
        "429-throttled": Answer(429, "TooManyRequests"),
        "drop": Drop(),
        "reset": Reset(),
        "stall": Stall(stall),
        "lost-answer": Drop(forward=True),
        "reset-after": Reset(forward=True),
        "stall-after": Stall(stall, forward=True),
    }


def body_faults(stall: float) -> dict[str, Action]:
    """Every fault an answer's body can meet, by name: cut short (and stalled), corrupted."""
    return {
        "cut-half": Truncate(0.5),
        "cut-headers-only": Truncate(0.0),
        "cut-then-stall": Truncate(0.3, stall=stall),
        "one-byte-flipped": Corrupt(1),
        "many-bytes-flipped": Corrupt(100),
    }


@dataclasses.dataclass
class Rule:
    """Apply ``action`` to matching requests: always, the first ``times`` ones, or by
    chance; the first ``skip`` matching requests pass (``skip=N-1, times=1``: the Nth)."""

    match: Matcher
    action: Action
    times: int | None = None
    probability: float = 1.0  # drawn from the proxy's seeded random generator
    skip: int = 0
    fired: int = 0
    matched: int = 0


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


def any_request(request: ProxyRequest) -> bool:
    return True


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
        self._connections = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = self._serving_thread()
        self.stopping = threading.Event()  # ends stalls early
        # Offline: until this time.monotonic() (inf: until online()); guarded by _lock.
        self._offline_until = 0.0
        self._listening = True
        self._listener_lock = threading.Lock()  # held while the listener closes or opens
        self._back_online: threading.Timer | None = None

    def _serving_thread(self) -> threading.Thread:
        return threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                daemon=True, name="s3proxy")

    def start(self) -> S3Proxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._back_online is not None:
            self._back_online.cancel()
        with self._listener_lock:
            if self._listening:
                self._server.shutdown()
                self._thread.join()
            self._server.server_close()

    def offline(self, seconds: float | None = None) -> None:
        """Be unreachable: refuse new connections and reset open ones, for
        ``seconds`` or until online()."""
        with self._lock:
            self._offline_until = (float("inf") if seconds is None
                                   else time.monotonic() + seconds)
        with self._listener_lock:
            if self._listening:
                self._server.shutdown()
                self._thread.join()
                self._server.socket.close()
                self._listening = False
        if seconds is not None:
            self._back_online = threading.Timer(seconds, self.online)
            self._back_online.daemon = True
            self._back_online.start()

    def online(self) -> None:
        """Listen again on the same port, and answer."""
        with self._listener_lock:
            if not self._listening and not self.stopping.is_set():
                server = self._server
                server.socket = socket.socket(server.address_family, server.socket_type)
                server.server_bind()  # SO_REUSEADDR: the port is ours again at once
                server.server_activate()
                self._thread = self._serving_thread()
                self._thread.start()
                self._listening = True
        with self._lock:
            self._offline_until = 0.0

    def is_offline(self) -> bool:
        with self._lock:
            return time.monotonic() < self._offline_until

    def random_bytes_positions(self, size: int, count: int) -> list[int]:
        with self._lock:
            return [self._random.randrange(size) for _ in range(count)]

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

    def connections(self) -> int:
        """Client connections accepted so far."""
        with self._lock:
            return self._connections

    def connected(self) -> None:
        with self._lock:
            self._connections += 1

    def decide(self, request: ProxyRequest) -> Action | None:
        """Count the request; return the action of the first rule that fires, if any."""
        with self._lock:
            self._counts[request.operation] += 1
            for rule in self.rules:
                if rule.times is not None and rule.fired >= rule.times:
                    continue
                if not rule.match(request):
                    continue
                rule.matched += 1
                if rule.matched <= rule.skip:
                    continue
                if rule.probability < 1 and self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                return rule.action
        return None

    def fired(self) -> Counter[str]:
        """How often each kind of action fired, by its class name."""
        with self._lock:
            counts: Counter[str] = Counter()
            for rule in self.rules:
                counts[type(rule.action).__name__] += rule.fired
            return counts


def _whole_single_part_object(headers: list[tuple[str, str]], size: int) -> bool:
    named = {name.lower(): value for name, value in headers}
    if "-" in named.get("etag", "-"):
        return False
    content_range = named.get("content-range")
    return content_range is None or content_range == f"bytes 0-{size - 1}/{size}"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue for botocore's PUTs
    timeout = 60  # idle client connections end on their own after stop()

    def handle(self) -> None:
        self.server.proxy.connected()  # type: ignore[attr-defined]
        # Clients drop connections they cannot reuse, and faults cut them: both are normal.
        try:
            super().handle()
        except (ConnectionError, OSError):
            self.close_connection = True

    def do_GET(self) -> None:
        proxy: S3Proxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        if proxy.is_offline():
            self._reset()
            return
        request = ProxyRequest(self.command, self.path,
                               parse_qs(urlsplit(self.path).query, keep_blank_values=True),
                               {name.lower(): value for name, value in self.headers.items()},
                               body)
        action = proxy.decide(request)
        if action is None:
            self._forward(request)
        elif isinstance(action, Answer):
            error = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(action.code)}'
                     f"</Code><Message>{escape(action.message)}</Message>"
                     "<RequestId>s3proxy</RequestId></Error>").encode()
            self._respond(action.status, "", [("Content-Type", "application/xml")], error)
        elif isinstance(action, Reply):
            self._respond(action.status, "", [("Content-Type", "application/xml")], action.body)
        elif isinstance(action, (Drop, Reset, Stall)):
            if action.forward:
                self._fetch(request)
            if isinstance(action, Stall):
                proxy.stopping.wait(action.seconds)
            if isinstance(action, Reset):
                self._reset()
            self.close_connection = True
        else:
            self._damaged(request, action)

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET

    def _reset(self) -> None:
        """Close with a TCP RST: linger on, with a zero timeout."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _damaged(self, request: ProxyRequest, action: Truncate | Corrupt | SetHeader
                 ) -> None:
        proxy: S3Proxy = self.server.proxy  # type: ignore[attr-defined]
        status, reason, headers, body = self._fetch(request)
        if isinstance(action, SetHeader):
            headers = [(name, value) for name, value in headers
                       if name.lower() != action.name.lower()] + [(action.name, action.value)]
            self._respond(status, reason, headers, body)
            return
        if not body or not self._has_body(status):
            self._respond(status, reason, headers, body)
            return
        if isinstance(action, Corrupt):
            if action.checkable_only and not _whole_single_part_object(headers, len(body)):
                self._respond(status, reason, headers, body)
                return
            damaged = bytearray(body)
            for position in proxy.random_bytes_positions(len(body), action.count):
                damaged[position] ^= 0xFF
            self._respond(status, reason, headers, bytes(damaged))
            return
        self.send_response_only(status, reason or None)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[:int(len(body) * action.keep)])
        self.wfile.flush()
        if action.stall:
            proxy.stopping.wait(action.stall)
        self.close_connection = True

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
        self._respond(*self._fetch(request))

    def _fetch(self, request: ProxyRequest) -> tuple[int, str, list[tuple[str, str]], bytes]:
        """Send the request upstream; return its answer: status, reason, headers, body."""
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
            return response.status, response.reason, headers, body
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
