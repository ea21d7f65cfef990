"""HeadObject with a fraction of botocore's CPU per call.

A cold ``ls -l`` costs one HEAD per entry, and the daemon's CPU per HEAD
bounds how many it can make per second. botocore's call path (parameter
validation, serialization, endpoint rules, a score of event hooks, the
response parser) costs about 3.5 ms of CPU per HEAD on a small machine; the
HTTP exchange and the signature alone cost about half of that.

LeanHead asks botocore once, at start, how it sends a HEAD in this bucket
(URL, User-Agent, signing context) by stopping a probe request just before
it is signed, so the probe needs neither credentials nor the network. Each
HEAD then builds that request for its key and signs it. Where the client
would connect straight to the endpoint (no proxy, no client certificate), it
goes out on kept-alive connections of LeanHead's own (_KeptConnections),
with the client's TLS verification and time-outs, which write the request
and read the answer's head themselves: urllib3's urlopen, botocore's
response wrapping and http.client's header parsing cost more CPU than the
exchange itself. Otherwise it goes through the client's own connection pool.

A HEAD has no body and no query, so its SigV4 signature is a few string
operations and two HMACs: when the client signs plain SigV4 for service
"s3", LeanHead signs itself (_SigV4), with the client's credentials (so they
are refreshed) and a signing key derived once a day, at about a twentieth
of the CPU of botocore's signer. Any other signing (anonymous access, S3
Express, a changed signing context) goes through the client's own signer,
with every before-sign handler. Handlers that add signed headers are
therefore not seen by _SigV4: the caller passes such headers
(``signed_headers``, e.g. x-amz-request-payer) to both.

The caller handles the answers whose meaning does not depend on the path
(200, 404, 403, 429 and 5xx: a HEAD answer has no body, so its error code is
the bare status), and leaves any other one (a region redirect, 400) to
botocore's full call path, which knows what each means.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from botocore.auth import _host_from_url
from botocore.awsrequest import AWSPreparedRequest, AWSRequest
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.httpsession import get_cert_path
from botocore.utils import percent_encode

_PROBE_KEY = "s3mount-probe"
_PROBE_HOOK = "s3mount-lean-head-probe"


class _Probed(Exception):
    def __init__(self, request: AWSRequest) -> None:
        super().__init__("probe")
        self.request = request


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# What a signing context may hold for _SigV4 to sign as botocore's S3SigV4Auth does.
_PLAIN_SIGNING = {"region", "signing_name", "disableDoubleEncoding"}


class _SigV4:
    """AWS Signature Version 4 of a HEAD request without query or body, as
    botocore's S3SigV4Auth computes it (tests/unit/test_lean_head_sigv4.py
    compares the two)."""

    def __init__(self, credentials: Any, region: str, url_prefix: str,
                 signed_headers: Mapping[str, str]) -> None:
        self._credentials = credentials
        self._region = region
        self._host = _host_from_url(url_prefix)
        self._extra = {name.lower(): " ".join(value.split())
                       for name, value in signed_headers.items()}
        self._day_key: tuple[str, str, bytes] = ("", "", b"")  # (secret, date, key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached_secret, cached_date, key = self._day_key
        if cached_secret == secret and cached_date == date:
            return key
        key = ("AWS4" + secret).encode()
        for part in (date, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._day_key = (secret, date, key)
        return key

    def headers(self, path: str, timestamp: str | None = None) -> dict[str, str]:
        """The headers that sign a HEAD of ``path`` (percent-encoded, as in the
        URL) at ``timestamp`` (YYYYMMDDTHHMMSSZ, default now)."""
        frozen = self._credentials.get_frozen_credentials()
        if timestamp is None:
            timestamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        date = timestamp[:8]
        signed = {"host": self._host, "x-amz-content-sha256": _EMPTY_SHA256,
                  "x-amz-date": timestamp, **self._extra}
        if frozen.token:
            signed["x-amz-security-token"] = frozen.token
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join(("HEAD", path, "",
                               *(f"{name}:{signed[name]}" for name in names), "",
                               signed_names, _EMPTY_SHA256))
        scope = f"{date}/{self._region}/s3/aws4_request"
        string_to_sign = "\n".join(("AWS4-HMAC-SHA256", timestamp, scope,
                                    hashlib.sha256(canonical.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(frozen.secret_key, date),
                             string_to_sign.encode(), hashlib.sha256).hexdigest()
        del signed["host"]  # sent apart, from the URL
        signed["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={frozen.access_key}/{scope}, "
                                   f"SignedHeaders={signed_names}, Signature={signature}")
        return signed


class _NoAnswer(Exception):
    """What came back is not an HTTP answer (nothing, on a connection the server
    closed while it was idle, or a broken status line)."""


# As http.client: the longest line of an answer's head, and the most header lines.
_MAX_LINE = 65536
_MAX_HEADERS = 100


def _read_answer(reader: BinaryIO) -> tuple[int, dict[str, str], bool]:
    """(status, headers by lower-case name, whether the connection stays open) of
    the answer to a HEAD, which has no body. Interim 1xx answers are skipped."""
    while True:
        line = reader.readline(_MAX_LINE + 1)
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            raise _NoAnswer(line[:80])
        headers: dict[str, str] = {}
        for _ in range(_MAX_HEADERS + 1):
            line = reader.readline(_MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                break
            if not line.endswith(b"\n"):
                raise _NoAnswer("cut short" if len(line) <= _MAX_LINE else "header line too long")
            name, colon, value = line.decode("latin-1").partition(":")
            if colon:  # the first of repeated headers, as http.client's get()
                headers.setdefault(name.strip().lower(), value.strip())
        else:
            raise _NoAnswer("too many headers")
        status = int(code)
        if status >= 200:
            keep = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
            return status, headers, keep


class _Connection:
    """A connection's socket and the buffered reader of its answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


class _KeptConnections:
    """HEAD requests on kept-alive HTTP/1.1 connections to one endpoint.

    A HEAD answer has no body, so a connection is free again as soon as its
    headers are read. The request is written and the answer's head read here,
    not by http.client, whose header parsing (the email package) cost about
    half of a HEAD's CPU. Failures raise botocore's exceptions, as the client's
    own pool does, so that retry.py and the log see the same errors either way.
    """

    def __init__(self, url: str, *, verify: bool | str, connect_timeout: float,
                 read_timeout: float, limit: int) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"no kept connections for {url!r}")
        self._url = url
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = _host_from_url(url)  # as _SigV4 signs it
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            if verify:
                self._context = ssl.create_default_context(cafile=get_cert_path(verify))
            else:
                self._context = ssl.create_default_context()
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._limit = limit
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    def _connect(self) -> _Connection:
        try:
            sock = socket.create_connection((self._host, self._port),
                                            timeout=self._connect_timeout)
        except TimeoutError as exc:
            raise ConnectTimeoutError(endpoint_url=self._url, error=exc) from exc
        except OSError as exc:
            raise EndpointConnectionError(endpoint_url=self._url, error=exc) from exc
        try:
            if self._context is not None:  # the handshake, within the connect time-out
                sock = self._context.wrap_socket(sock, server_hostname=self._host)
            sock.settimeout(self._read_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        except ssl.SSLError as exc:
            sock.close()
            raise SSLError(endpoint_url=self._url, error=exc) from exc
        except TimeoutError as exc:
            sock.close()
            raise ConnectTimeoutError(endpoint_url=self._url, error=exc) from exc
        except OSError as exc:
            sock.close()
            raise EndpointConnectionError(endpoint_url=self._url, error=exc) from exc
        return _Connection(sock)

    def head(self, target: str, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str]]:
        """(status, headers by lower-case name) of a HEAD of ``target`` (the path,
        percent-encoded)."""
        request = "".join((f"HEAD {target} HTTP/1.1\r\nHost: {self._host_header}\r\n",
                           *(f"{name}: {value}\r\n" for name, value in headers.items()),
                           "\r\n")).encode("latin-1")
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        if connection is not None:
            try:
                return self._exchange(connection, request)
            except (ConnectionError, _NoAnswer):
                # The server closed the kept connection while it was idle: once
                # more on a new one (a HEAD changes nothing).
                connection.close()
        connection = self._connect()
        try:
            return self._exchange(connection, request)
        except (ConnectionError, _NoAnswer) as exc:
            connection.close()
            raise ConnectionClosedError(endpoint_url=self._url) from exc

    def _exchange(self, connection: _Connection,
                  request: bytes) -> tuple[int, Mapping[str, str]]:
        try:
            connection.sock.sendall(request)
            status, headers, keep = _read_answer(connection.reader)
        except (ConnectionError, _NoAnswer):
            raise
        except TimeoutError as exc:
            connection.close()
            raise ReadTimeoutError(endpoint_url=self._url, error=exc) from exc
        except ssl.SSLError as exc:
            connection.close()
            raise SSLError(endpoint_url=self._url, error=exc) from exc
        except (OSError, ValueError) as exc:
            connection.close()
            raise ConnectionClosedError(endpoint_url=self._url) from exc
        self._give_back(connection, keep)
        return status, headers

    def _give_back(self, connection: _Connection, keep: bool) -> None:
        """Keep an answered connection for the next HEAD, unless the server is
        closing it (Connection: close, HTTP/1.0) or enough are kept already."""
        if keep:
            with self._lock:
                if len(self._idle) < self._limit:
                    self._idle.append(connection)
                    return
        connection.close()


class LeanHead:
    """Sends HeadObject requests for keys of one bucket as ``client`` would."""

    def __init__(self, client: Any, bucket: str,
                 signed_headers: Mapping[str, str] | None = None) -> None:
        self._signer = client._request_signer
        self._http = client._endpoint.http_session

        def capture(request: AWSRequest, **_: Any) -> None:
            raise _Probed(request)

        events = client.meta.events
        events.register_first("before-sign.s3.HeadObject", capture, unique_id=_PROBE_HOOK)
        try:
            client.head_object(Bucket=bucket, Key=_PROBE_KEY)
        except _Probed as probed:
            probe = probed.request
        else:
            raise ValueError("botocore sent a HeadObject without signing it")
        finally:
            events.unregister("before-sign.s3.HeadObject", unique_id=_PROBE_HOOK)
        url: str = probe.url
        quoted_probe = percent_encode(_PROBE_KEY, safe="/~")
        if not url.endswith("/" + quoted_probe):
            raise ValueError(f"unexpected HeadObject URL: {url!r}")
        self._url_prefix = url[:-len(quoted_probe)]
        user_agent = probe.headers.get("User-Agent")
        self._headers = {"User-Agent": user_agent} if user_agent else {}
        self._context = {name: probe.context[name] for name in ("signing", "auth_type")
                         if name in probe.context}
        # Lower-case names, as _SigV4 sends them: a header must not go out twice.
        signed_headers = {name.lower(): value for name, value in (signed_headers or {}).items()}
        self._headers.update(signed_headers)
        self._path_prefix = urlsplit(self._url_prefix).path
        config = client.meta.config
        self._kept: _KeptConnections | None = None
        if (self._http._proxy_config.proxy_url_for(self._url_prefix) is None
                and config.client_cert is None):
            self._kept = _KeptConnections(
                self._url_prefix, verify=self._http._verify,
                connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                limit=config.max_pool_connections)
        self._sigv4: _SigV4 | None = None
        signing = self._context.get("signing", {})
        credentials = getattr(self._signer, "_credentials", None)
        if (self._signer.signature_version == "s3v4" and credentials is not None
                and self._context.get("auth_type") in ("s3v4", "v4")
                and set(signing) <= _PLAIN_SIGNING and signing.get("signing_name") == "s3"
                and signing.get("region")):
            self._sigv4 = _SigV4(credentials, signing["region"], self._url_prefix,
                                 signed_headers)

    def __call__(self, key: str) -> tuple[int, Mapping[str, str]]:
        """(HTTP status, headers) of a HEAD of ``key``. A failure to get an answer
        raises botocore's exceptions, as a call through the client would."""
        quoted = percent_encode(key, safe="/~")
        url = self._url_prefix + quoted
        target = self._path_prefix + quoted
        if self._sigv4 is not None:
            headers = {**self._headers, **self._sigv4.headers(target)}
            if self._kept is not None:
                return self._kept.head(target, headers)
            prepared = AWSPreparedRequest("HEAD", url, headers, None, False)
        else:
            request = AWSRequest(method="HEAD", url=url, headers=dict(self._headers))
            request.context.update(self._context)
            self._signer.sign("HeadObject", request)
            prepared = request.prepare()
            if self._kept is not None and prepared.url == url:
                return self._kept.head(target, dict(prepared.headers))
        response = self._http.send(prepared)
        return response.status_code, response.headers


def head_fields(headers: Mapping[str, str],
                parse_time: Callable[[str], datetime.datetime]) -> dict[str, Any]:
    """The fields of botocore's HeadObject response that s3mount reads, from the
    answer's headers (``parse_time``: the parser of Last-Modified). Names are
    looked up in lower case: _KeptConnections gives them so, and the client's
    pool a mapping that ignores case."""
    fields: dict[str, Any] = {
        "ContentLength": int(headers.get("content-length", 0)),
        "LastModified": parse_time(headers["last-modified"]),
        "Metadata": {name[11:]: value for name, value in headers.items()
                     if name[:11].lower() == "x-amz-meta-"},
    }
    for field, header in (("ETag", "etag"), ("ContentType", "content-type")):
        if header in headers:
            fields[field] = headers[header]
    return fields
