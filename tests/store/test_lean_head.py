"""Store.head's lean path (lean_head.py) against moto: the same answer as
botocore's call path, requests signed as botocore signs them, and anything but
200 and 404 left to botocore."""

from __future__ import annotations

import errno
import http.server
import io
import threading

import pytest
from botocore.awsrequest import HeadersDict
from emulating_proxy import EmulatingProxy
from helpers import ACCESS_KEY, SECRET_KEY, AuthServer, MotoServer
from s3proxy import Answer, Rule, S3Proxy, operation_is

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.lean_head import _NoAnswer, _read_answer, head_fields
from s3mount.store import Store, StoreSettings, parse_s3_timestamp

# Characters that botocore percent-encodes in a path, and those it does not.
AWKWARD_KEYS = ["plain", "dir/sub/file.txt", "space in name", "plus+sign", "per%cent",
                "tilde~", "semi;colon", "question?mark", "hash#tag", "amp&eq=",
                "ünïcödé/名前", "dots/../x", "trailing/"]


def make_store(url: str, bucket: str, access_key: str = ACCESS_KEY,
               secret_key: str = SECRET_KEY) -> Store:
    return Store(StoreSettings(bucket=bucket, url=url, region="us-east-1", path_style=True,
                               retries=0),
                 Credentials(access_key, secret_key))


def test_lean_head_answers_as_botocore_does(s3, bucket: str, s3_server: MotoServer) -> None:
    store = make_store(s3_server.url, bucket)
    assert store._lean_head is not None
    for index, key in enumerate(AWKWARD_KEYS):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x" * index, ContentType="text/x-test",
                      Metadata={"mode": "33188", "Mixed-Case": "Value %41", "uid": "7"})
        info = store.head(key)
        expected = s3.head_object(Bucket=bucket, Key=key)
        assert info is not None, key
        assert (info.key, info.size, info.etag, info.content_type) == (
            key, index, expected["ETag"], "text/x-test")
        assert info.metadata == expected["Metadata"], key
        assert info.last_modified_ns == int(expected["LastModified"].timestamp()) * 10**9
    assert store.request_counts()["head_object"] == len(AWKWARD_KEYS)


def test_lean_head_of_a_missing_key_is_none_after_one_request(bucket: str,
                                                              s3_server: MotoServer) -> None:
    store = make_store(s3_server.url, bucket)
    assert store.head("no/such key") is None
    assert store.request_counts()["head_object"] == 1
    assert store.stats.snapshot()["not_found"] == 1


def test_lean_head_is_signed_as_botocore_signs(auth_server: AuthServer) -> None:
    """The signature-checking moto accepts the lean HEADs of awkward keys, and
    refuses them with a wrong secret: EACCES, after one request."""
    client = auth_server.server.client(access_key=auth_server.access_key,
                                       secret_key=auth_server.secret_key)
    with EmulatingProxy(auth_server.server.url) as proxy:
        store = make_store(proxy.url, auth_server.bucket, auth_server.access_key,
                           auth_server.secret_key)
        for key in AWKWARD_KEYS:
            client.put_object(Bucket=auth_server.bucket, Key=f"lean/{key}", Body=b"data")
            info = store.head(f"lean/{key}")
            assert info is not None and info.size == 4, key
        heads = [r for r in proxy.requests if r.operation == "HeadObject"]
        assert len(heads) == len(AWKWARD_KEYS)
        assert all("s3mount/" in r.headers["user-agent"] for r in heads)

        wrong = make_store(proxy.url, auth_server.bucket, auth_server.access_key, "wrong")
        before = len(proxy.requests)
        with pytest.raises(FsError) as caught:
            wrong.head(f"lean/{AWKWARD_KEYS[0]}")
        assert caught.value.errno == errno.EACCES
        assert [r.method for r in proxy.requests[before:]] == ["HEAD"]


@pytest.mark.parametrize(("status", "code", "heads"), [
    (400, "BadRequest", 2),  # left to botocore's path, which asks again
    (503, "SlowDown", 2),  # retried, as any transient answer
])
def test_lean_head_answers_it_does_not_own(s3, bucket: str, s3_server: MotoServer,
                                           proxy: S3Proxy, status: int, code: str,
                                           heads: int) -> None:
    rule = proxy.add(Rule(operation_is("HeadObject"), Answer(status, code), times=1))
    s3.put_object(Bucket=bucket, Key="k", Body=b"abc", Metadata={"mode": "33188"})
    store = Store(StoreSettings(bucket=bucket, url=proxy.url, region="us-east-1",
                                path_style=True, retries=2, retry_base_delay=0.01),
                  Credentials(ACCESS_KEY, SECRET_KEY))
    info = store.head("k")
    assert info is not None and info.size == 3 and info.metadata == {"mode": "33188"}
    assert rule.fired == 1
    assert proxy.counts() == {"HeadObject": heads}


HEADERS = {"Content-Length": "12", "ETag": '"abc"', "Content-Type": "text/plain",
           "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
           "x-amz-meta-mode": "33188", "X-Amz-Meta-Uid": "5", "x-amz-request-id": "1"}


@pytest.mark.parametrize("shape", ["kept connections", "client's pool"])
def test_head_fields_reads_the_headers_botocore_reads(shape: str) -> None:
    """As _KeptConnections gives them (lower-case names) and as the client's pool
    does (a mapping that ignores case)."""
    if shape == "kept connections":
        headers = {name.lower(): value for name, value in HEADERS.items()}
        uid = "uid"
    else:
        headers = HeadersDict(HEADERS)
        uid = "Uid"
    fields = head_fields(headers, parse_s3_timestamp)
    assert fields["ContentLength"] == 12 and fields["ETag"] == '"abc"'
    assert fields["ContentType"] == "text/plain"
    assert fields["Metadata"] == {"mode": "33188", uid: "5"}
    assert fields["LastModified"].year == 2015
    assert "ContentType" not in head_fields({"last-modified": HEADERS["Last-Modified"]},
                                            parse_s3_timestamp)


def read_answer(raw: bytes) -> tuple[int, dict[str, str], bool]:
    return _read_answer(io.BufferedReader(io.BytesIO(raw)))


def test_an_answer_head_is_read_by_lower_case_name() -> None:
    status, headers, keep = read_answer(
        b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nx-amz-meta-Mode:  33188 \r\n"
        b"X-Amz-Meta-Mode: 0\r\nContent-Length: 3\r\n\r\nnext answer")
    assert (status, keep) == (200, True)
    # Values stripped; of a repeated header the first, as http.client's get().
    assert headers == {"etag": '"e"', "x-amz-meta-mode": "33188", "content-length": "3"}


@pytest.mark.parametrize(("raw", "keep"), [
    (b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n", False),
    (b"HTTP/1.1 404 Not Found\r\nconnection: Close\r\n\r\n", False),
    (b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive, close\r\n\r\n", False),
    (b"HTTP/1.0 404 Not Found\r\n\r\n", False),
    (b"HTTP/1.1 404\n\n", True),  # no reason phrase, bare line feeds
])
def test_an_answer_says_whether_its_connection_stays_open(raw: bytes, keep: bool) -> None:
    status, _, kept = read_answer(raw)
    assert (status, kept) == (404, keep)


def test_interim_answers_are_skipped() -> None:
    status, headers, _ = read_answer(b"HTTP/1.1 100 Continue\r\n\r\n"
                                     b"HTTP/1.1 200 OK\r\nETag: x\r\n\r\n")
    assert (status, headers) == (200, {"etag": "x"})


@pytest.mark.parametrize("raw", [
    b"",  # the server closed the connection
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nETag: x\r\n",  # cut short before the end of the head
    b"HTTP/1.1 200 OK\r\nX: " + b"y" * 70000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
])
def test_what_is_not_an_answer_is_refused(raw: bytes) -> None:
    with pytest.raises(_NoAnswer):
        read_answer(raw)


class KeepAliveServer:
    """An HTTP/1.1 server on loopback that answers every HEAD with an object's
    headers (Content-Length too: a HEAD answer has no body all the same) and
    keeps connections open, or drops each one after its answer without saying
    so (as a server whose idle time-out has passed)."""

    def __init__(self, *, drop_after_answer: bool = False, say_close: bool = False) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner.connections += 1

            def do_HEAD(self) -> None:
                with owner.lock:
                    owner.heads += 1
                self.send_response(200)
                for name, value in (("Content-Length", "3"), ("ETag", '"e"'),
                                    ("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
                                    ("x-amz-meta-mode", "33188")):
                    self.send_header(name, value)
                if say_close:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = drop_after_answer

            def log_message(self, *args: object) -> None:
                pass

        self.lock = threading.Lock()
        self.connections = self.heads = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("ending", ["kept", "dropped", "closed"])
def test_lean_heads_keep_their_connection(ending: str) -> None:
    """Answers without Connection: close leave the connection open for the next
    HEAD; one the server dropped meanwhile is replaced without an error, and
    one whose answer said Connection: close is not used again."""
    drop = ending != "kept"
    server = KeepAliveServer(drop_after_answer=ending == "dropped", say_close=ending == "closed")
    try:
        store = make_store(server.url, "bucket")
        for _ in range(5):
            info = store.head("k")
            assert info is not None and info.size == 3 and info.metadata == {"mode": "33188"}
            # A connection the server said it closes is not kept for the next HEAD.
            assert len(store._lean_head._kept._idle) == (0 if ending == "closed" else 1)
        assert server.heads == 5
        assert server.connections == (5 if drop else 1)
        assert store.request_counts()["head_object"] == 5
    finally:
        server.close()


def test_lean_heads_go_through_a_proxy_on_the_clients_pool(bucket: str,
                                                           s3_server: MotoServer) -> None:
    store = Store(StoreSettings(bucket=bucket, url=s3_server.url, region="us-east-1",
                                path_style=True, proxy="http://127.0.0.1:9", retries=0),
                  Credentials(ACCESS_KEY, SECRET_KEY))
    assert store._lean_head is not None and store._lean_head._kept is None
    with pytest.raises(FsError) as caught:
        store.head("k")  # the proxy's port refuses: the HEAD did go to the proxy
    assert caught.value.errno == errno.EIO
