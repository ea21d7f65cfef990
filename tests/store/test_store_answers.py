"""Store against servers that answer unusually: one that ignores Range, a
CompleteMultipartUpload whose answer is lost, and Requester Pays buckets.

The servers are moto behind tests/emulating_proxy.py, which can forward a GET
without its Range header (moto then answers 200 with the whole object, as a
server that ignores Range does) and forward a request but lose its answer.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import pytest
from emulating_proxy import EmulatingProxy, LoseReply
from helpers import ACCESS_KEY, SECRET_KEY, AuthServer, MemorySource, MotoServer, payload
from s3proxy import Answer, Rule, operation_is

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.store import SseC, Store, StoreSettings, multipart_etag
from s3mount.transfer import MiB, Transfer, TransferSettings

SMALL = TransferSettings(multipart_threshold=5 * MiB, multipart_size=5 * MiB)


StoreFactory = Callable[..., Store]


@pytest.fixture
def make_store(bucket: str) -> StoreFactory:
    def make(url: str, retries: int = 5, sse: SseC | None = None) -> Store:
        return Store(StoreSettings(bucket=bucket, url=url, region="us-east-1", path_style=True,
                                   retries=retries, sse_c=sse),
                     Credentials(ACCESS_KEY, SECRET_KEY))
    return make


def test_server_that_ignores_range(s3, bucket: str, s3_server: MotoServer,
                                   make_store: StoreFactory,
                                   caplog: pytest.LogCaptureFixture) -> None:
    data = payload(3 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    with EmulatingProxy(s3_server.url, ignore_range=True) as proxy:
        store = make_store(proxy.url)
        with caplog.at_level(logging.WARNING, logger="s3mount.store"):
            for start, end in [(0, 99), (MiB, 2 * MiB - 1), (3 * MiB, 3 * MiB + 4),
                               (3 * MiB, 4 * MiB)]:
                assert store.get_range("f", start, end) == data[start:end + 1], (start, end)
        etag = s3.head_object(Bucket=bucket, Key="f")["ETag"]
        assert store.get_range("f", 7, 8, etag) == data[7:9]
        gets = [r for r in proxy.requests if r.operation == "GetObject"]
        assert len(gets) == 5 and all("range" in r.headers for r in gets)
    warnings = [r for r in caplog.records if "ignores Range" in r.getMessage()]
    assert len(warnings) == 1


def test_range_answer_is_used_as_is(s3, bucket: str, s3_server: MotoServer,
                                    make_store: StoreFactory) -> None:
    data = payload(MiB)
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    with EmulatingProxy(s3_server.url) as proxy:
        assert make_store(proxy.url).get_range("f", 10, 20) == data[10:21]
        assert proxy.requests[-1].headers["range"] == "bytes=10-20"


def test_multipart_etag() -> None:
    # The ETag moto and S3 give an object of these parts.
    parts = ['"5d41402abc4b2a76b9719d911017c592"', '"7d793037a0760186574b0282f2f435e7"']
    assert multipart_etag(parts) == "065947336a2f2a95ba8899f3675c3be6-2"
    assert multipart_etag(['"not-hex"']) is None


@pytest.mark.parametrize("sse", [False, True], ids=["plain", "sse-c"])
def test_lost_answer_to_complete_multipart_upload(s3, bucket: str, s3_server: MotoServer,
                                                  make_store: StoreFactory,
                                                  transfers: list[Transfer], sse: bool) -> None:
    """The server completes the upload but the answer is lost; botocore sends the
    request again and gets NoSuchUpload (S3 does once the upload is gone; moto
    would complete it again, so the proxy answers). The object the parts made
    is accepted."""
    lose = LoseReply(operation_is("CompleteMultipartUpload"))
    gone = Rule(lambda r: r.operation == "CompleteMultipartUpload" and lose.fired > 0,
                Answer(404, "NoSuchUpload"))
    data = payload(12 * MiB)
    with EmulatingProxy(s3_server.url, sse_c=sse, lose_reply=[lose]) as proxy:
        proxy.add(gone)
        store = make_store(proxy.url, sse=SseC([b"k" * 32], encrypt=True) if sse else None)
        transfers.append(transfer := Transfer(store, SMALL))
        etag = transfer.upload("big", MemorySource(data), metadata={}, content_type="text/plain")
        assert (lose.fired, gone.fired) == (1, 1)
        assert proxy.counts()["CompleteMultipartUpload"] == 2
        assert store.request_counts()["head_object"] >= 1
        assert "abort_multipart_upload" not in store.request_counts()
        assert etag == s3.head_object(Bucket=bucket, Key="big")["ETag"]
        assert store.get_range("big", 0, len(data) - 1, etag) == data
        if sse:
            assert store.head("big").sse_c_md5 == proxy.objects[f"{bucket}/big"][1] is not None
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_no_such_upload_for_another_object_is_an_error(
        s3, bucket: str, s3_server: MotoServer, make_store: StoreFactory,
        transfers: list[Transfer]) -> None:
    """NoSuchUpload while the key holds some other object: not taken for success."""
    s3.put_object(Bucket=bucket, Key="big", Body=payload(12 * MiB, seed=2))
    with EmulatingProxy(s3_server.url) as proxy:
        proxy.add(Rule(operation_is("CompleteMultipartUpload"), Answer(404, "NoSuchUpload")))
        store = make_store(proxy.url, retries=0)
        transfers.append(transfer := Transfer(store, SMALL))
        with pytest.raises(FsError) as caught:
            transfer.upload("big", MemorySource(payload(12 * MiB)), metadata={},
                            content_type="text/plain")
        assert caught.value.errno == errno.ENOENT
        assert store.request_counts()["head_object"] == 1
        assert store.request_counts()["abort_multipart_upload"] == 1


def test_requester_pays_header_is_signed_on_every_request(
        auth_server: AuthServer, transfers: list[Transfer]) -> None:
    """Against the signature-checking moto: it accepts the requests, so the header
    is signed as sent; the proxy sees it, and in SignedHeaders, on each one."""
    with EmulatingProxy(auth_server.server.url) as proxy:
        store = Store(StoreSettings(bucket=auth_server.bucket, url=proxy.url,
                                    region="us-east-1", path_style=True, retries=0,
                                    requester_pays=True),
                      Credentials(auth_server.access_key, auth_server.secret_key))
        transfers.append(transfer := Transfer(store, SMALL))
        store.probe("")
        transfer.upload("rp/big", MemorySource(payload(11 * MiB)), metadata={},
                        content_type="text/plain")
        store.put("rp/small", b"x", metadata={}, content_type="text/plain")
        info = store.head("rp/small")
        store.copy("rp/small", "rp/copy", metadata={}, content_type="text/plain",
                   source_etag=info.etag)
        assert store.get_range("rp/copy", 0, 0) == b"x"
        list(store.list_all("rp/"))
        store.delete("rp/copy")
        store.delete_many(["rp/small", "rp/big"])
        operations = {r.operation for r in proxy.requests}
        assert operations >= {"ListObjects", "CreateMultipartUpload", "UploadPart",
                              "CompleteMultipartUpload", "PutObject", "HeadObject", "CopyObject",
                              "GetObject", "DeleteObject", "DeleteObjects"}
        for request in proxy.requests:
            assert request.headers.get("x-amz-request-payer") == "requester", request.operation
            signed = request.headers["authorization"].split("SignedHeaders=")[1].split(",")[0]
            assert "x-amz-request-payer" in signed.split(";"), request.operation
