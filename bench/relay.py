"""A delaying, request-counting HTTP relay for the benchmark (standard library only).

It listens on 127.0.0.1 and forwards every request to an upstream HTTP/1.1
server (the local S3 server). Data is time-stamped when it arrives, in each
direction, and released RTT/2 later, in order; reading goes on while earlier
data waits, so the delay costs latency, not bandwidth. Every request and every
response pays the delay, as over a real network, and a new client connection
first pays one RTT (the TCP handshake).

Keep-alive is kept with the client even where the upstream closes the
connection after each answer (Werkzeug, moto's own server, always does:
without this, every request would pay a handshake that real S3 does not cost).
For that the relay splits both streams into HTTP/1.1 messages (request or
status line, headers, then a Content-Length, chunked or close-delimited body,
with interim 100-continue answers) and removes the upstream's
``Connection: close`` from the answer. Each client connection has one upstream
connection at a time, used again for the next request while the upstream
keeps it open (the bench's moto does, see moto_server.py), else opened anew
per request. Bodies are streamed, never held whole.

Every request is counted at arrival and classified (GET, HEAD, LIST, PUT, COPY,
POST, DELETE), with its S3 operation name (PutObject, UploadPartCopy, ...).

Standalone:

    python bench/relay.py --upstream http://127.0.0.1:9000 --rtt-ms 20 [--port 0]

It prints ``{"port": N}`` as its first line on stdout, then answers commands
read from stdin, one per line:

    stats        one JSON line: cumulative requests, per class and operation, bytes
    rtt MS       change the delay (for new connections); answers {"rtt_ms": MS}
    quit         stop (so does the end of stdin)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

READ_SIZE = 256 * 1024
QUEUE_ITEMS = 256  # at most about this many chunks (64 MiB) wait in one direction
MAX_HEAD = 256 * 1024


# --- Classifying requests -----------------------------------------------------------------

LIST_PARAMETERS = {"prefix", "delimiter", "max-keys", "marker", "encoding-type",
                   "continuation-token", "start-after", "fetch-owner", "list-type"}


def classify(method: str, target: str, headers: dict[str, str]) -> tuple[str, str]:
    """(class, S3 operation) of a path-style request."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    has_key = "/" in parts.path.strip("/")
    if method == "PUT":
        if "x-amz-copy-source" in headers:
            return "COPY", "UploadPartCopy" if "partNumber" in query else "CopyObject"
        if "partNumber" in query:
            return "PUT", "UploadPart"
        return "PUT", "PutObject" if has_key else "PutBucket"
    if method == "POST":
        if "delete" in query:
            return "DELETE", "DeleteObjects"
        if "uploads" in query:
            return "POST", "CreateMultipartUpload"
        if "uploadId" in query:
            return "POST", "CompleteMultipartUpload"
        return "POST", "Post"
    if method == "DELETE":
        if "uploadId" in query:
            return "DELETE", "AbortMultipartUpload"
        return "DELETE", "DeleteObject" if has_key else "DeleteBucket"
    if method == "GET":
        if "uploadId" in query:
            return "LIST", "ListParts"
        if "uploads" in query:
            return "LIST", "ListMultipartUploads"
        if has_key:
            return "GET", "GetObject"
        if query.get("list-type") == ["2"]:
            return "LIST", "ListObjectsV2"
        if subresources := set(query) - LIST_PARAMETERS:
            return "GET", "GetBucket" + "".join(sorted(s.capitalize() for s in subresources))
        return "LIST", "ListObjects"
    if method == "HEAD":
        return "HEAD", "HeadObject" if has_key else "HeadBucket"
    return method, method


class Stats:
    """Cumulative counters; only touched from the event loop's thread."""

    def __init__(self) -> None:
        self.requests = 0
        self.classes: Counter[str] = Counter()
        self.operations: Counter[str] = Counter()
        self.bytes_up = 0  # client to server
        self.bytes_down = 0
        self.connections = 0
        self.upstream_connections = 0
        self.expect_continue = 0  # requests that wait for "100 Continue" (one more RTT)
        self.errors: Counter[str] = Counter()

    def snapshot(self) -> dict:
        return {"requests": self.requests, "classes": dict(self.classes),
                "operations": dict(self.operations), "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down, "connections": self.connections,
                "upstream_connections": self.upstream_connections,
                "expect_continue": self.expect_continue, "errors": dict(self.errors)}


# --- Splitting HTTP/1.1 streams -----------------------------------------------------------


class ProtocolError(Exception):
    pass


class Head:
    """A parsed request or status line with its headers."""

    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        self.first = lines[0]
        self.fields: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.fields.append((name.strip(), value.strip()))
        self.headers = {name.lower(): value for name, value in self.fields}

    def keeps_connection(self) -> bool:
        """An answer's own say on keep-alive: HTTP/1.1 and no ``Connection: close``."""
        closes = "close" in self.headers.get("connection", "").lower()
        return self.first.startswith("HTTP/1.1 ") and not closes

    def encode(self, drop: frozenset[str] = frozenset()) -> bytes:
        lines = [self.first] + [f"{n}: {v}" for n, v in self.fields if n.lower() not in drop]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class MessageSplitter:
    """Splits an HTTP/1.1 byte stream into messages, incrementally.

    ``feed`` returns events: ("head", Head), ("data", bytes) for the raw bytes of
    a body (chunk framing included) and ("end", None) when a message is complete.
    For responses, ``methods`` supplies the request method of each final answer
    (a HEAD's answer has no body); an answer with neither length nor chunking
    lasts until the connection closes.
    """

    HEAD, LENGTH, CHUNK_SIZE, CHUNK_DATA, TRAILER, UNTIL_CLOSE = range(6)

    def __init__(self, response: bool = False, method: str = "GET") -> None:
        self.response = response
        self.method = method
        self.state = self.HEAD
        self.buffer = bytearray()
        self.remaining = 0

    def feed(self, data: bytes) -> list[tuple[str, object]]:
        events: list[tuple[str, object]] = []
        view = memoryview(data)
        position, end = 0, len(data)
        while position < end:
            if self.state == self.UNTIL_CLOSE:
                events.append(("data", bytes(view[position:])))
                break
            if self.state in (self.LENGTH, self.CHUNK_DATA):
                taken = min(self.remaining, end - position)
                events.append(("data", bytes(view[position:position + taken])))
                position += taken
                self.remaining -= taken
                if self.remaining == 0:
                    if self.state == self.LENGTH:
                        self.state = self.HEAD
                        events.append(("end", None))
                    else:
                        self.state = self.CHUNK_SIZE
                continue
            # Line-oriented states: collect up to the terminator, a slice at a time.
            terminator = b"\r\n\r\n" if self.state == self.HEAD else b"\r\n"
            old = len(self.buffer)
            piece = view[position:position + 64 * 1024]
            self.buffer += piece
            found = self.buffer.find(terminator, max(0, old - len(terminator) + 1))
            if found < 0:
                position += len(piece)
                if len(self.buffer) > MAX_HEAD:
                    raise ProtocolError("header or chunk line too long")
                continue
            used = found + len(terminator)
            position += used - old
            raw = bytes(self.buffer[:used])
            del self.buffer[:]
            self._line(raw, events)
        return events

    def _line(self, raw: bytes, events: list) -> None:
        if self.state == self.HEAD:
            if not raw.strip():  # a stray CRLF between messages
                return
            head = Head(raw[:-4])
            events.append(("head", head))
            self._body_of(head, events)
        elif self.state == self.CHUNK_SIZE:
            events.append(("data", raw))
            try:
                size = int(raw.split(b";", 1)[0].strip() or b"0", 16)
            except ValueError as error:
                raise ProtocolError(f"bad chunk size {raw[:40]!r}") from error
            if size == 0:
                self.state = self.TRAILER
            else:
                self.state, self.remaining = self.CHUNK_DATA, size + 2  # data + CRLF
        elif self.state == self.TRAILER:
            events.append(("data", raw))
            if raw == b"\r\n":
                self.state = self.HEAD
                events.append(("end", None))

    def _body_of(self, head: Head, events: list) -> None:
        headers = head.headers
        if self.response:
            try:
                status = int(head.first.split(" ", 2)[1])
            except (IndexError, ValueError) as error:
                raise ProtocolError(f"bad status line {head.first[:60]!r}") from error
            if 100 <= status < 200 or status in (204, 304) or self.method == "HEAD":
                events.append(("end", None))
                return
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self.state = self.CHUNK_SIZE
        elif "content-length" in headers:
            self.remaining = int(headers["content-length"])
            if self.remaining > 0:
                self.state = self.LENGTH
            else:
                events.append(("end", None))
        elif self.response:
            self.state = self.UNTIL_CLOSE
        else:
            events.append(("end", None))


# --- The relay ------------------------------------------------------------------------------


class DelayedSink:
    """Writes to a stream what it is given, each piece RTT/2 after it was given."""

    def __init__(self, writer: asyncio.StreamWriter, delay: float) -> None:
        self.writer = writer
        self.delay = delay
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_ITEMS)
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.ensure_future(self._run())
        self.closing = False  # no more answers after the current one
        self.finished = False

    async def send(self, data: bytes) -> None:
        if self.delay <= 0 and self.queue.empty():
            self.writer.write(data)
            await self.writer.drain()
        else:
            await self.queue.put((self.loop.time() + self.delay, data))

    async def finish(self) -> None:
        """Write what is queued, then close the stream."""
        self.closing = True
        if self.finished:
            return
        self.finished = True
        await self.queue.put((self.loop.time() + self.delay, None))
        with contextlib.suppress(ConnectionError, OSError):
            await self.task

    async def _run(self) -> None:
        while True:
            due, data = await self.queue.get()
            wait = due - self.loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                self.writer.close()
                return
            self.writer.write(data)
            await self.writer.drain()


class Relay:
    def __init__(self, upstream: str, rtt_ms: float = 0.0, log_path: str | None = None) -> None:
        parts = urlsplit(upstream if "//" in upstream else f"http://{upstream}")
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rtt = rtt_ms / 1000.0
        self.stats = Stats()
        self.log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", port,
                                                 backlog=1024)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def _count(self, head: Head) -> None:
        method, target = [*head.first.split(" "), "", ""][:2]
        kind, operation = classify(method, target, head.headers)
        self.stats.requests += 1
        self.stats.classes[kind] += 1
        self.stats.operations[operation] += 1
        if head.headers.get("expect", "").lower() == "100-continue":
            self.stats.expect_continue += 1
        if self.log:
            self.log.write(f"{self.stats.requests} {time.time():.6f} {kind} {operation} "
                           f"{method} {target}\n")

    async def _connection(self, client_reader: asyncio.StreamReader,
                          client_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        with contextlib.suppress(asyncio.CancelledError):  # cancelled at shutdown: quietly
            await self._serve_client(client_reader, client_writer)

    async def _serve_client(self, client_reader: asyncio.StreamReader,
                            client_writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        delay = self.rtt / 2  # fixed for the connection's life
        if delay > 0:
            await asyncio.sleep(2 * delay)  # SYN, SYN-ACK
        down = DelayedSink(client_writer, delay)
        events: asyncio.Queue = asyncio.Queue(QUEUE_ITEMS)
        splitter = MessageSplitter()

        async def read_client() -> None:
            try:
                while data := await client_reader.read(READ_SIZE):
                    self.stats.bytes_up += len(data)
                    due = loop.time() + delay
                    for event in splitter.feed(data):
                        if event[0] == "head":
                            self._count(event[1])
                        await events.put((due, event))
            except ProtocolError as error:
                self.stats.errors[f"request: {error}"] += 1
            except (ConnectionError, OSError):
                pass
            await events.put((loop.time() + delay, ("eof", None)))

        reading = asyncio.ensure_future(read_client())
        answering: asyncio.Task | None = None
        upstream_reader: asyncio.StreamReader | None = None
        upstream_writer: asyncio.StreamWriter | None = None
        request: dict = {}
        try:
            while True:
                due, (kind, value) = await events.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if kind == "head":
                    if answering is not None:
                        upstream_kept = await answering  # answers go back in order
                        if down.closing:
                            break
                        if not upstream_kept or (upstream_reader and upstream_reader.at_eof()):
                            upstream_writer.close()
                            upstream_writer = None
                    if upstream_writer is None:
                        upstream_reader, upstream_writer = await asyncio.open_connection(
                            *self.upstream)
                        self.stats.upstream_connections += 1
                    method = value.first.split(" ", 1)[0]
                    request = {"complete": False}
                    upstream_writer.write(value.encode())
                    answering = asyncio.ensure_future(self._answer(
                        upstream_reader, method, request, down))
                elif kind == "data":
                    if upstream_writer is not None and not upstream_writer.is_closing():
                        upstream_writer.write(value)
                        await upstream_writer.drain()
                elif kind == "end":
                    request["complete"] = True
                else:  # the client closed its side
                    break
            if answering is not None:
                await answering
        except (ConnectionError, OSError) as error:
            self.stats.errors[f"forward: {type(error).__name__}"] += 1
        finally:
            reading.cancel()
            if answering is not None and not answering.done():
                answering.cancel()
            if upstream_writer is not None:
                upstream_writer.close()
            await down.finish()

    async def _answer(self, reader: asyncio.StreamReader, method: str, request: dict,
                      down: DelayedSink) -> bool:
        """Relay the upstream's answer (interim ones included) to the client;
        True if the upstream connection may carry the next request."""
        splitter = MessageSplitter(response=True, method=method)
        final = upstream_kept = False
        try:
            while data := await reader.read(READ_SIZE):
                self.stats.bytes_down += len(data)
                for kind, value in splitter.feed(data):
                    if kind == "head":
                        status = int(value.first.split(" ", 2)[1])
                        final = status >= 200
                        keep = (final and request["complete"]
                                and splitter.state != splitter.UNTIL_CLOSE)
                        if final and not keep:
                            down.closing = True  # the client must not reuse the connection
                        if final:
                            upstream_kept = keep and value.keeps_connection()
                        await down.send(value.encode(
                            frozenset({"connection", "keep-alive"}) if keep else frozenset()))
                    elif kind == "data":
                        await down.send(value)
                    elif final:  # the end of the final answer
                        return upstream_kept
            if not final or splitter.state != splitter.UNTIL_CLOSE:
                self.stats.errors["upstream closed early"] += 1
            down.closing = True
        except ProtocolError as error:
            self.stats.errors[f"response: {error}"] += 1
            down.closing = True
        finally:
            if down.closing:  # the client sees the end of the answer, then the close
                await down.finish()
        return False

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.log:
            self.log.close()


# --- Command line -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://HOST:PORT of the S3 server")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any)")
    parser.add_argument("--log", help="append one line per request to this file")
    args = parser.parse_args(argv)

    async def serve() -> None:
        relay = Relay(args.upstream, args.rtt_ms, args.log)
        port = await relay.start(args.port)
        print(json.dumps({"port": port}), flush=True)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def stop() -> None:
            if not done.done():
                done.set_result(None)

        async def command(line: str) -> dict | None:
            words = line.split()
            if not words:
                return None
            if words[0] == "stats":
                return relay.stats.snapshot()
            if words[0] == "rtt" and len(words) == 2:
                relay.rtt = float(words[1]) / 1000.0
                return {"rtt_ms": float(words[1])}
            return {"error": f"unknown command {line.strip()!r}"}

        def read_commands() -> None:
            for line in sys.stdin:
                if line.strip() == "quit":
                    print(json.dumps({"bye": True}), flush=True)
                    break
                answer = asyncio.run_coroutine_threadsafe(command(line), loop).result()
                if answer is not None:
                    print(json.dumps(answer), flush=True)
            loop.call_soon_threadsafe(stop)

        threading.Thread(target=read_commands, daemon=True).start()
        await done
        await relay.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
