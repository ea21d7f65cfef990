"""moto's S3 server for the benchmark, with ranged reads that cost what the range costs.

moto (5.x) answers a ranged GET, and copies a range with UploadPartCopy, by
reading the whole object and slicing it: each such request on a 256 MiB object
costs about 0.3 s of server time, whatever the range. Real S3 does not, and a
client that reads in ranges (as both s3mount and s3fs do) would be measured
against an artefact of the test server. This launcher patches those two paths
to read only the range from moto's buffer.

moto also answers every CompleteMultipartUpload by computing a full-object
checksum (CRC64NVME, or CRC32 without awscrt) over a further copy of the whole
object, also when the client asked for no checksum: about 2 s of a 256 MiB
upload's 4 s Complete on a 2-CPU machine, the same for every client. Real S3
answers a Complete in well under a second. The launcher skips that checksum
when the upload was created without a checksum algorithm (neither s3mount nor
s3fs asks for one).

Last, moto's dispatcher spends about 3 ms of CPU per request, under a lock,
finding the backend of the request's host anew (patch_dispatch). That patch
alone, which changes no answer, is also what the tests' moto runs with
(``--dispatch-only``, see tests/helpers.py). Then the launcher runs moto's
own server, or with ``--keep-connections`` (the bench) moto's application in
the same Werkzeug server with HTTP/1.1 connections kept open, as S3 keeps
them (serve_keeping_connections):

    python bench/moto_server.py [--dispatch-only] [--keep-connections] -H 127.0.0.1 -p PORT

Everything else is moto unchanged. If moto's internals differ from what the
patches expect, they are not applied and a line on stderr says so.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import selectors
import sys
import threading
import types

_state = threading.local()  # .span: (begin, end or None) to read; .served: what was read


def _simple_range(header: str | None) -> tuple[int, int | None] | None:
    """(begin, end) of 'bytes=BEGIN-[END]'; None for anything else (served unpatched)."""
    match = re.fullmatch(r"\s*bytes=(\d+)-(\d*)\s*", header or "")
    if not match:
        return None
    begin, end = int(match[1]), int(match[2]) if match[2] else None
    if end is not None and end < begin:
        return None
    return begin, end


def patch() -> str:
    from moto.s3 import models, responses

    full_value = models.FakeKey.value  # a property
    original_get_object = responses.S3Response.get_object
    original_upload_part_copy = models.S3Backend.upload_part_copy
    if not isinstance(full_value, property) or not hasattr(models.FakeKey, "size"):
        return "not applied (moto's FakeKey changed)"

    def value(self):
        span = getattr(_state, "span", None)
        if span is None:
            return full_value.fget(self)
        begin, end = span
        size = self.size
        end = size - 1 if end is None else min(end, size - 1)
        if begin > end:
            return full_value.fget(self)  # moto's own answer (InvalidRange)
        with self.lock:
            self._value_buffer.seek(begin)
            data = self._value_buffer.read(end - begin + 1)
        _state.served = (begin, end, size)
        return data

    def get_object(self):
        span = _simple_range(self.headers.get("range"))
        if span is None or self._get_int_param("partNumber"):
            return original_get_object(self)
        _state.span, _state.served = span, None
        try:
            status, headers, body = original_get_object(self)
        finally:
            served, _state.span, _state.served = _state.served, None, None
        if status != 200 or served is None:
            return status, headers, body  # moto's range handling applies
        begin, end, size = served
        if begin or end < size - 1:  # range answers carry no checksum
            for name in [h for h in headers if h.lower().startswith("x-amz-checksum-")]:
                del headers[name]
        headers["content-range"] = f"bytes {begin}-{end}/{size}"
        headers["content-length"] = str(len(body))
        return 206, headers, body

    def upload_part_copy(self, dest_bucket_name, multipart_id, part_id, src_bucket_name,
                         src_key_name, src_version_id, start_byte, end_byte):
        if start_byte is None:
            return original_upload_part_copy(self, dest_bucket_name, multipart_id, part_id,
                                             src_bucket_name, src_key_name, src_version_id,
                                             start_byte, end_byte)
        multipart = self.get_bucket(dest_bucket_name).multiparts[multipart_id]
        source = self.get_object(src_bucket_name, src_key_name, version_id=src_version_id)
        _state.span = (start_byte, end_byte)
        try:
            data = source.value
        finally:
            _state.span = _state.served = None
        return multipart.set_part(part_id, data)

    builder = getattr(models, "MultipartChecksumBuilder", None)
    if builder is None:
        return "not applied (moto's MultipartChecksumBuilder changed)"
    original_builder_init, original_add_part = builder.__init__, builder.addPart
    original_build = builder.build

    def builder_init(self, checksum_algorithm, checksum_type):
        original_builder_init(self, checksum_algorithm, checksum_type)
        self.requested = checksum_algorithm is not None

    def add_part(self, part):
        if self.requested:
            original_add_part(self, part)
        else:
            self.part_count += 1

    def build(self):
        return original_build(self) if self.requested else None

    models.FakeKey.value = property(value, full_value.fset)
    responses.S3Response.get_object = get_object
    models.S3Backend.upload_part_copy = upload_part_copy
    builder.__init__, builder.addPart, builder.build = builder_init, add_part, build
    return ("applied (ranged GetObject and UploadPartCopy read only the range; "
            "CompleteMultipartUpload computes no checksum the client did not ask for)")


def patch_dispatch() -> str:
    """moto finds the backend of every request anew, by listing its package
    directory and trying hundreds of URL patterns, under one lock; and werkzeug
    logs a line per request. Together about 3 ms of server CPU per request,
    serialized. The backend depends on the request's host alone: look it up once
    per host, and log only warnings (the relay counts the requests)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = getattr(DomainDispatcherApplication, "get_backend_for_host", None)
    if original is None:
        return "not applied (moto's dispatcher changed)"
    backend_by_host: dict = {}

    def backend_for_host(self, host):
        if host not in backend_by_host:
            backend_by_host[host] = original(self, host)
        return backend_by_host[host]

    DomainDispatcherApplication.get_backend_for_host = backend_for_host
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    return "applied (the backend of a request's host is looked up once; no log line per request)"


class _Body(io.RawIOBase):
    """A request's body as the application reads it: at most Content-Length bytes.
    What the application leaves is read off after the answer (drain), so that the
    next request on the connection starts where it should."""

    def __init__(self, stream: io.BufferedIOBase, length: int) -> None:
        super().__init__()
        self._stream, self.left = stream, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        size = min(len(buffer), self.left)
        if size <= 0:
            return 0
        got = self._stream.readinto(memoryview(buffer)[:size]) or 0
        self.left = self.left - got if got else 0  # 0: the client went away
        return got

    def drain(self) -> None:
        while self.left > 0 and self.readinto(bytearray(min(self.left, 1 << 20))):
            pass


class _NoStraySelector:
    """Stands in for the selector with which Werkzeug, after every answer, reads
    whatever the client sends within 10 ms and throws it away: it can, because it
    closes every connection. On a kept connection that would be the next request."""

    def register(self, *args: object) -> None:
        pass

    def select(self, timeout: float | None = None) -> list:
        return []

    def close(self) -> None:
        pass


def serve_keeping_connections(host: str, port: int) -> None:
    """moto's application under Werkzeug's threaded server, with connections kept.

    Werkzeug (3.1) answers every request with ``Connection: close`` and then
    waits 10 ms for stray bytes, so each request costs the server a new
    connection and a new thread, which real S3 does not cost its clients. Here
    a connection stays open for the next request unless HTTP says otherwise
    (HTTP/1.0, ``Connection: close``, or a chunked request body, which is
    read only as far as the application reads it).
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug import serving

    class KeepingHandler(MotoRequestHandler):
        # An answer goes out in several writes (a 100 Continue, the head, the
        # body): with Nagle's algorithm the last waits for the client's delayed
        # ACK, 40 ms, which a closed connection flushes but a kept one does not.
        disable_nagle_algorithm = True
        body: _Body | None = None

        def make_environ(self) -> dict:
            environ = super().make_environ()
            if not environ.get("wsgi.input_terminated"):  # not chunked
                self.body = _Body(environ["wsgi.input"], int(environ.get("CONTENT_LENGTH") or 0))
                environ["wsgi.input"] = self.body
            return environ

        def send_header(self, keyword: str, value: str) -> None:
            closing = (keyword.lower(), value.lower()) == ("connection", "close")
            if closing and self.body is not None:
                return  # the request's own Connection header decides (http.server)
            super().send_header(keyword, value)

        def run_wsgi(self) -> None:
            self.body = None
            super().run_wsgi()
            if self.body is None:
                self.close_connection = True
            else:
                self.body.drain()

    serving.selectors = types.SimpleNamespace(DefaultSelector=_NoStraySelector,
                                              EVENT_READ=selectors.EVENT_READ)
    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server does: its URLs name it
    serving.run_simple(host, port, DomainDispatcherApplication(create_backend_app),
                       threaded=True, request_handler=KeepingHandler)


def main() -> None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dispatch-only", action="store_true")
    parser.add_argument("--keep-connections", action="store_true")
    ours, argv = parser.parse_known_args()
    applied = [] if ours.dispatch_only else [patch()]
    applied.append(f"dispatch {patch_dispatch()}")
    if ours.keep_connections:
        applied.append("connections kept (not closed after each answer)")
    print(f"bench/moto_server.py: patches {'; '.join(applied)}", file=sys.stderr, flush=True)
    if ours.keep_connections:
        address = argparse.ArgumentParser(add_help=False)
        address.add_argument("-H", "--host", default="127.0.0.1")
        address.add_argument("-p", "--port", type=int, required=True)
        where = address.parse_args(argv)
        serve_keeping_connections(where.host, where.port)
        return
    from moto.server import main as moto_main

    moto_main(argv)


if __name__ == "__main__":
    main()
