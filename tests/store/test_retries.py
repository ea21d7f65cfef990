"""The Store's retries, against moto behind the fault-injecting proxy (tests/s3proxy.py).

Every kind of fault, on every kind of request, is retried and the result is
right (checked in the bucket with botocore); bodies cut short or corrupted are
never returned; a server that stays down gives EIO after the configured number
of attempts; requests that are not idempotent come out right when their answer
is lost. Backoff delays are shortened (retry_base_delay) to keep the tests fast.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import random
from collections.abc import Callable

import pytest
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    EndpointConnectionError,
    SSLError,
)
from helpers import ACCESS_KEY, SECRET_KEY, MemorySource, MotoServer, payload
from s3proxy import (
    Answer,
    Corrupt,
    Drop,
    ProxyRequest,
    Reply,
    Rule,
    S3Proxy,
    SetHeader,
    any_request,
    body_faults,
    operation_is,
    request_faults,
)

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.retry import RetryPolicy, transient_answer, transient_reason
from s3mount.store import Store, StoreSettings, TransferError
from s3mount.transfer import MiB, Transfer, TransferSettings

TIMEOUT = 1.0  # connect and read time-out of the stores here; stalls last longer
STALL = 3.0
SMALL = TransferSettings(multipart_threshold=5 * MiB, multipart_size=5 * MiB)

FAULTS = request_faults(STALL)
BODY_FAULTS = body_faults(STALL)


StoreFactory = Callable[..., Store]


@pytest.fixture
def make_store(bucket: str) -> StoreFactory:
    def make(url: str, retries: int = 3) -> Store:
        return Store(StoreSettings(bucket=bucket, url=url, region="us-east-1", path_style=True,
                                   retries=retries, connect_timeout=TIMEOUT,
                                   read_timeout=TIMEOUT, retry_base_delay=0.02),
                     Credentials(ACCESS_KEY, SECRET_KEY))
    return make


def body_of(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


# What each operation does through the Store, and how its result is checked in the bucket.

def op_put(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    store.put("k", b"new content", metadata={"mode": "33188"}, content_type="text/plain")
    head = s3.head_object(Bucket=bucket, Key="k")
    assert body_of(s3, bucket, "k") == b"new content"
    assert head["Metadata"] == {"mode": "33188"}


def op_get(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    data = payload(300_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    assert store.get_range("k", 0, len(data) - 1) == data
    assert store.get_range("k", 1000, 1999) == data[1000:2000]


def get(store: Store, key: str, start: int, end: int, *, into: bool) -> bytes:
    """Bytes start..end of ``key`` through get_range, or get_range_into a buffer
    (bigger than the range: only the bytes received count)."""
    if not into:
        return store.get_range(key, start, end)
    buffer = bytearray(b"\xee" * (end - start + 1 + 100))
    got = store.get_range_into(key, start, end, None, memoryview(buffer)[:end - start + 1])
    assert buffer[end - start + 1:] == b"\xee" * 100  # nothing written past the range
    return bytes(buffer[:got])


def op_get_into(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    data = payload(300_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    assert get(store, "k", 0, len(data) - 1, into=True) == data
    assert get(store, "k", 1000, 1999, into=True) == data[1000:2000]


def op_head(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"12345")
    info = store.head("k")
    assert info is not None and info.size == 5
    assert store.head("missing") is None


def op_list(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    for name in ("a", "b/c", "d"):
        s3.put_object(Bucket=bucket, Key=name, Body=b"")
    page = store.list_page("", max_keys=1000)
    assert [o.key for o in page.objects] == ["a", "d"] and page.prefixes == ["b/"]


def op_delete(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    store.delete("k")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def op_copy(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    etag = s3.put_object(Bucket=bucket, Key="src", Body=b"copied")["ETag"]
    store.copy("src", "dst", metadata={"mode": "33261"}, content_type="text/x",
               source_etag=etag)
    assert body_of(s3, bucket, "dst") == b"copied"
    assert s3.head_object(Bucket=bucket, Key="dst")["Metadata"] == {"mode": "33261"}


def op_multipart(store: Store, s3, bucket: str, transfers: list[Transfer]) -> None:
    data = payload(11 * MiB)
    transfers.append(transfer := Transfer(store, SMALL))
    etag = transfer.upload("big", MemorySource(data), metadata={}, content_type="text/plain")
    assert body_of(s3, bucket, "big") == data
    assert s3.head_object(Bucket=bucket, Key="big")["ETag"] == etag


OPERATIONS = {
    "PutObject": op_put,
    "GetObject": op_get,
    "GetObject-into": op_get_into,
    "HeadObject": op_head,
    "ListObjects": op_list,
    "DeleteObject": op_delete,
    "CopyObject": op_copy,
    "UploadPart": op_multipart,
    "CreateMultipartUpload": op_multipart,
    "CompleteMultipartUpload": op_multipart,
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_fault_once_is_retried(operation: str, fault: str, s3, bucket: str,
                               proxy: S3Proxy, make_store: StoreFactory,
                               transfers: list[Transfer]) -> None:
    """The first request of the kind fails once (of the parts, the 2nd: the Nth
    request, not always the first); the operation succeeds. (A lost answer to
    CompleteMultipartUpload: moto completes the upload again where S3 answers
    NoSuchUpload; that case is in test_store_answers.)"""
    action = FAULTS[fault]
    rule = proxy.add(Rule(operation_is(operation.removesuffix("-into")), action, times=1,
                          skip=1 if operation == "UploadPart" else 0))
    store = make_store(proxy.url)
    OPERATIONS[operation](store, s3, bucket, transfers)
    assert rule.fired == 1
    # A CreateMultipartUpload whose answer is lost leaves an upload nobody knows:
    # aborting uploads of a key found by listing could abort another writer's.
    lost_create = operation == "CreateMultipartUpload" and getattr(action, "forward", False)
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == lost_create
    counts = store.request_counts()
    assert sum(counts.values()) == sum(proxy.counts().values())


# A part of an object has no checksum to check it against: only a whole object's
# body is checked (against its ETag), so corruption is tried on whole objects only.
DAMAGED_BODY_CASES = [pytest.param(fault, whole, id=f"{fault}-{'whole' if whole else 'range'}")
                      for fault, action in BODY_FAULTS.items()
                      for whole in (True, False)
                      if whole or not isinstance(action, Corrupt)]


@pytest.mark.parametrize("into", [False, True], ids=["bytes", "into"])
@pytest.mark.parametrize(("fault", "whole"), DAMAGED_BODY_CASES)
def test_damaged_body_is_retried(fault: str, whole: bool, into: bool, s3, bucket: str,
                                 proxy: S3Proxy, make_store: StoreFactory) -> None:
    action = BODY_FAULTS[fault]
    data = payload(200_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    rule = proxy.add(Rule(operation_is("GetObject"), action, times=1))
    store = make_store(proxy.url)
    start, end = (0, len(data) - 1) if whole else (5000, 150_000)
    assert get(store, "k", start, end, into=into) == data[start:end + 1]
    assert rule.fired == 1
    assert store.request_counts()["get_object"] == proxy.counts()["GetObject"] == 2


@pytest.mark.parametrize("into", [False, True], ids=["bytes", "into"])
def test_answer_for_another_range_is_retried(into: bool, s3, bucket: str, proxy: S3Proxy,
                                              make_store: StoreFactory) -> None:
    """A body as long as announced, but of another range than asked for."""
    data = payload(1000)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    rule = proxy.add(Rule(operation_is("GetObject"), SetHeader("Content-Range", "bytes 0-99/1000"),
                          times=1))
    assert get(make_store(proxy.url), "k", 100, 199, into=into) == data[100:200]
    assert rule.fired == 1 and proxy.counts()["GetObject"] == 2


@pytest.mark.parametrize("into", [False, True], ids=["bytes", "into"])
@pytest.mark.parametrize("fault", ["cut-half", "one-byte-flipped"])
def test_damaged_body_every_time_is_eio(fault: str, into: bool, s3, bucket: str,
                                        proxy: S3Proxy, make_store: StoreFactory,
                                        caplog: pytest.LogCaptureFixture) -> None:
    data = payload(100_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    proxy.add(Rule(operation_is("GetObject"), BODY_FAULTS[fault]))
    store = make_store(proxy.url, retries=2)
    with caplog.at_level(logging.INFO, logger="s3mount.store"), \
            pytest.raises(FsError) as caught:
        get(store, "k", 0, len(data) - 1, into=into)
    assert caught.value.errno == errno.EIO
    assert proxy.counts()["GetObject"] == 3
    assert "get_object of k on" in caplog.text and "gave up after 3 attempts" in caplog.text


def test_failure_after_all_retries_is_eio(s3, bucket: str, proxy: S3Proxy,
                                          make_store: StoreFactory,
                                          caplog: pytest.LogCaptureFixture) -> None:
    proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown")))
    store = make_store(proxy.url, retries=4)
    with caplog.at_level(logging.WARNING, logger="s3mount.store"), \
            pytest.raises(FsError) as caught:
        store.put("k", b"x", metadata={}, content_type="text/plain")
    assert caught.value.errno == errno.EIO
    assert proxy.counts()["PutObject"] == 5
    assert "put_object of k on" in caplog.text
    assert "gave up after 5 attempts: put_object: SlowDown" in caplog.text
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


@pytest.mark.parametrize("answer", [Answer(404, "NoSuchKey"), Answer(403, "AccessDenied"),
                                    Answer(501, "NotImplemented"), Answer(400, "InvalidArgument")],
                         ids=lambda a: a.code)
def test_final_answers_are_not_retried(answer: Answer, s3, bucket: str, proxy: S3Proxy,
                                       make_store: StoreFactory) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    proxy.add(Rule(operation_is("GetObject"), answer))
    with pytest.raises(FsError):
        make_store(proxy.url).get_range("k", 0, 0)
    assert proxy.counts()["GetObject"] == 1


def test_offline_server_then_back(s3, bucket: str, proxy: S3Proxy,
                                  make_store: StoreFactory) -> None:
    """Refused connections are retried up to the limit, then EIO; once the server
    is back the same store works at once."""
    store = make_store(proxy.url, retries=2)
    store.put("before", b"1", metadata={}, content_type="text/plain")
    proxy.offline()
    with pytest.raises(FsError) as caught:
        store.put("during", b"2", metadata={}, content_type="text/plain")
    assert caught.value.errno == errno.EIO
    assert "connection refused" in caught.value.detail
    assert store.request_counts()["put_object"] == 4  # 1 + 3 attempts
    proxy.online()
    store.put("after", b"3", metadata={}, content_type="text/plain")
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == [
        "after", "before"]


def test_short_outage_is_waited_out(s3, bucket: str, proxy: S3Proxy,
                                    make_store: StoreFactory) -> None:
    """An outage shorter than the retries' smallest total wait: the request succeeds."""
    store = Store(StoreSettings(bucket=bucket, url=proxy.url, region="us-east-1",
                                path_style=True, retries=5, retry_base_delay=0.2),
                  Credentials(ACCESS_KEY, SECRET_KEY))
    # Waits before the retries are at least 0.1 + 0.2 + 0.4 + 0.8 + 1.6 = 3.1 s.
    proxy.offline(1.0)
    store.put("k", b"through", metadata={}, content_type="text/plain")
    assert body_of(s3, bucket, "k") == b"through"
    assert store.request_counts()["put_object"] >= 2


def test_open_connections_are_reset_while_offline(s3, bucket: str, proxy: S3Proxy,
                                                  make_store: StoreFactory) -> None:
    store = make_store(proxy.url, retries=1)
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert store.get_range("k", 0, 0) == b"x"  # a kept-alive connection now exists
    proxy.offline()
    with pytest.raises(FsError):
        store.get_range("k", 0, 0)
    proxy.online()
    assert store.get_range("k", 0, 0) == b"x"


def test_a_body_read_into_a_buffer_gives_its_connection_back(s3, bucket: str, proxy: S3Proxy,
                                                            make_store: StoreFactory) -> None:
    """get_range_into reads below urllib3: the kept-alive connection must still go
    back to the pool, clean, for the next request (a body left unread on it
    would be taken for the next answer)."""
    data = payload(3 * MiB)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    store = make_store(proxy.url)
    for start in range(0, len(data), 256 * 1024):
        end = min(start + 300_000, len(data)) - 1
        assert get(store, "k", start, end, into=True) == data[start:end + 1]
        assert get(store, "k", end, end, into=False) == data[end:end + 1]
    assert proxy.counts()["GetObject"] == 2 * 12
    assert proxy.connections() == 1


def test_lost_answer_of_a_copy_onto_itself(s3, bucket: str, proxy: S3Proxy,
                                           make_store: StoreFactory,
                                           transfers: list[Transfer]) -> None:
    """A metadata change of a multipart object (a copy onto itself, pinned to its
    ETag) whose answer is lost: the retry finds another ETag (412; moto ignores
    CopySourceIfMatch, so the proxy answers as S3 does), and the object already
    has the new metadata, so the copy is done."""
    store = make_store(proxy.url)
    transfers.append(transfer := Transfer(store, SMALL))
    data = payload(11 * MiB)
    etag = transfer.upload("big", MemorySource(data), metadata={"mode": "33188"},
                           content_type="text/plain")
    lose = proxy.add(Rule(operation_is("CopyObject"), Drop(forward=True), times=1))
    proxy.add(Rule(operation_is("CopyObject"), Answer(412, "PreconditionFailed"), times=1))
    new_etag = store.copy("big", "big", metadata={"mode": "33216"}, content_type="text/plain",
                          source_etag=etag)
    assert lose.fired == 1 and proxy.counts()["CopyObject"] == 2
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["ETag"] == new_etag != etag
    assert head["Metadata"] == {"mode": "33216"}
    assert body_of(s3, bucket, "big") == data


def test_copy_onto_itself_changed_by_another_client_stays_an_error(
        s3, bucket: str, proxy: S3Proxy, make_store: StoreFactory) -> None:
    etag = s3.put_object(Bucket=bucket, Key="k", Body=b"old")["ETag"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"newer", Metadata={"mode": "1"})
    proxy.add(Rule(operation_is("CopyObject"), Answer(500, "InternalError"), times=1))
    proxy.add(Rule(operation_is("CopyObject"), Answer(412, "PreconditionFailed"), times=1))
    with pytest.raises(FsError) as caught:
        make_store(proxy.url).copy("k", "k", metadata={"mode": "33188"},
                                   content_type="text/plain", source_etag=etag)
    assert caught.value.errno == errno.ESTALE
    assert body_of(s3, bucket, "k") == b"newer"


def test_lost_answer_of_an_abort(s3, bucket: str, proxy: S3Proxy,
                                 make_store: StoreFactory) -> None:
    store = make_store(proxy.url)
    upload_id = store.create_multipart("k", metadata={}, content_type="text/plain")
    proxy.add(Rule(operation_is("AbortMultipartUpload"), Drop(forward=True), times=1))
    proxy.add(Rule(operation_is("AbortMultipartUpload"), Answer(404, "NoSuchUpload")))
    store.abort_multipart("k", upload_id)
    assert proxy.counts()["AbortMultipartUpload"] == 2
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def delete_errors(code: str, *keys: str) -> bytes:
    errors = "".join(f"<Error><Key>{key}</Key><Code>{code}</Code><Message>m</Message></Error>"
                     for key in keys)
    return f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult>{errors}</DeleteResult>'.encode()


def test_keys_that_fail_to_delete_for_a_passing_reason_are_retried(
        s3, bucket: str, proxy: S3Proxy, make_store: StoreFactory) -> None:
    """Only the keys that failed are sent again ("gone" never existed, so the
    answer that only a and b failed is true although nothing was forwarded)."""
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    bodies: list[bytes] = []

    def record(request: ProxyRequest) -> bool:  # a rule that only watches
        if request.operation == "DeleteObjects":
            bodies.append(request.body)
        return False

    proxy.add(Rule(record, Answer(500, "InternalError")))
    proxy.add(Rule(operation_is("DeleteObjects"), Reply(200, delete_errors("SlowDown", "a", "b")),
                   times=1))
    make_store(proxy.url).delete_many(["a", "gone", "b"])
    assert len(bodies) == 2 and b"<Key>gone</Key>" in bodies[0]
    assert b"<Key>a</Key>" in bodies[1] and b"<Key>b</Key>" in bodies[1]
    assert b"gone" not in bodies[1]
    assert keys_of(s3, bucket) == ["c"]


def test_keys_refused_deletion_are_an_error(s3, bucket: str, proxy: S3Proxy,
                                            make_store: StoreFactory) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    proxy.add(Rule(operation_is("DeleteObjects"), Reply(200, delete_errors("AccessDenied", "a"))))
    with pytest.raises(FsError) as caught:
        make_store(proxy.url).delete_many(["a"])
    assert caught.value.errno == errno.EACCES
    assert proxy.counts()["DeleteObjects"] == 1


def keys_of(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_server_whose_etags_are_not_md5s(s3, bucket: str, s3_server: MotoServer,
                                         make_store: StoreFactory,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Identical bodies twice that do not match the ETag: the ETag is not an MD5
    there; the body is taken, with one warning, and ETags are not checked again."""
    data = payload(10_000)
    s3.put_object(Bucket=bucket, Key="k", Body=data)
    fake = hashlib.md5(b"something else").hexdigest()
    with S3Proxy(s3_server.url, [Rule(operation_is("GetObject"),
                                      SetHeader("ETag", f'"{fake}"'))]) as proxy:
        store = make_store(proxy.url)
        with caplog.at_level(logging.WARNING, logger="s3mount.store"):
            assert store.get_range("k", 0, len(data) - 1) == data
            assert store.get_range("k", 0, len(data) - 1) == data
        assert proxy.counts()["GetObject"] == 3
    assert caplog.text.count("is not the MD5 of its content") == 1


def test_probe_retries_a_throttled_listing(proxy: S3Proxy, make_store: StoreFactory) -> None:
    proxy.add(Rule(any_request, Answer(503, "SlowDown"), times=2))
    make_store(proxy.url).probe("")
    assert proxy.counts()["ListObjects"] == 3


# The policy itself.

def test_backoff_grows_and_is_capped() -> None:
    policy = RetryPolicy(retries=8, base_delay=0.5, max_delay=4.0)
    rng = random.Random(7)
    for retry, step in enumerate([0.5, 1, 2, 4, 4, 4], start=1):
        delays = [policy.delay(retry, rng) for _ in range(200)]
        assert all(step / 2 <= d <= step for d in delays)
        assert max(delays) - min(delays) > step / 4  # jittered, not fixed
    assert policy.longest_wait() == 0.5 + 1 + 2 + 4 * 5


def test_what_is_transient() -> None:
    assert transient_answer(503, "SlowDown") == "SlowDown"
    assert transient_answer(400, "RequestTimeout") == "RequestTimeout"
    assert transient_answer(429, "429") == "HTTP 429"
    assert transient_answer(502, "BadGateway") == "BadGateway (502)"
    for status, code in [(501, "NotImplemented"), (404, "NoSuchKey"), (403, "AccessDenied"),
                         (412, "PreconditionFailed"), (400, "InvalidArgument")]:
        assert transient_answer(status, code) is None

    def client_error(status: int, code: str) -> ClientError:
        return ClientError({"Error": {"Code": code},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")

    assert transient_reason(client_error(500, "InternalError")) == "InternalError"
    assert transient_reason(client_error(404, "NoSuchKey")) is None
    assert transient_reason(EndpointConnectionError(endpoint_url="http://x")) is not None
    assert transient_reason(ConnectionResetError()) == "ConnectionResetError"
    assert transient_reason(SSLError(endpoint_url="https://x",
                                     error="certificate verify failed")) is None
    assert transient_reason(ValueError("bad parameter")) is None
    assert transient_reason(CredentialRetrievalError(provider="imds", error_msg="timed out"))
    # What a request raises on the way keeps that verdict: an untrusted
    # certificate is not tried again, a refused connection is.
    untrusted = TransferError.of("head_object", SSLError(
        endpoint_url="https://x", error="[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
        "failed: self-signed certificate"))
    assert untrusted.errno == errno.EIO and transient_reason(untrusted) is None
    assert "certificate verify failed" in untrusted.detail
    refused = TransferError.of("head_object", EndpointConnectionError(
        endpoint_url="http://x", error=ConnectionRefusedError(111, "Connection refused")))
    assert transient_reason(refused) is not None and "connection refused" in refused.detail
