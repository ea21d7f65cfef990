"""Transfer against the moto server: single PUT, multipart, mixupload, copies and their fallbacks.

Servers without UploadPartCopy/CopyObject and failing requests are simulated by
the rule-based proxy in tests/s3proxy.py. Part sizes are 5 MiB (S3's minimum)
so every test moves a few tens of MiB at most.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import threading
from collections.abc import Callable, Iterator

import pytest
from helpers import ACCESS_KEY, SECRET_KEY, MemorySource, MotoServer, payload
from s3proxy import Answer, Drop, Rule, S3Proxy, is_copy_object, is_upload_part_copy, operation_is

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.store import Store, StoreSettings
from s3mount.transfer import (
    MIN_PART,
    MiB,
    Original,
    Transfer,
    TransferSettings,
    part_size,
)

SMALL = TransferSettings(multipart_threshold=5 * MiB, multipart_size=5 * MiB)


StoreFactory = Callable[..., Store]
TransferFactory = Callable[..., Transfer]


@pytest.fixture
def make_store(s3_server: MotoServer, bucket: str) -> StoreFactory:
    def make(url: str | None = None, retries: int = 5) -> Store:
        settings = StoreSettings(bucket=bucket, url=url or s3_server.url, region="us-east-1",
                                 path_style=True, retries=retries)
        return Store(settings, Credentials(ACCESS_KEY, SECRET_KEY))
    return make


@pytest.fixture
def store(make_store: StoreFactory) -> Store:
    return make_store()


@pytest.fixture
def make_transfer() -> Iterator[TransferFactory]:
    transfers: list[Transfer] = []

    def make(store: Store, settings: TransferSettings = SMALL) -> Transfer:
        transfers.append(Transfer(store, settings))
        return transfers[-1]

    yield make
    for transfer in transfers:
        transfer.close()


@pytest.fixture
def proxy(s3_server: MotoServer) -> Iterator[S3Proxy]:
    with S3Proxy(s3_server.url) as running:
        yield running


def body_of(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def put_original(s3, bucket: str, key: str, data: bytes) -> Original:
    response = s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={"old": "1"})
    return Original(key, response["ETag"], len(data))


def assert_no_uploads_left(s3, bucket: str) -> None:
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_small_file_is_one_put(s3, bucket: str, store: Store,
                               make_transfer: TransferFactory) -> None:
    data = payload(MiB)
    etag = make_transfer(store).upload("small", MemorySource(data), metadata={"mode": "33188"},
                                       content_type="text/plain")
    assert store.request_counts() == {"put_object": 1}
    response = s3.get_object(Bucket=bucket, Key="small")
    assert response["Body"].read() == data
    assert response["Metadata"] == {"mode": "33188"}
    assert response["ContentType"] == "text/plain"
    assert response["ETag"] == etag


def test_empty_file_is_one_put(s3, bucket: str, store: Store,
                               make_transfer: TransferFactory) -> None:
    make_transfer(store, TransferSettings(multipart_threshold=0)).upload(
        "empty", MemorySource(b""), metadata={}, content_type="application/octet-stream")
    assert store.request_counts() == {"put_object": 1}
    assert body_of(s3, bucket, "empty") == b""


def test_multipart_upload(s3, bucket: str, store: Store, make_transfer: TransferFactory) -> None:
    data = payload(17 * MiB)
    etag = make_transfer(store).upload("big", MemorySource(data), metadata={"uid": "1000"},
                                       content_type="video/mp4")
    counts = store.request_counts()
    assert counts["upload_part"] == 4
    assert counts["create_multipart_upload"] == counts["complete_multipart_upload"] == 1
    response = s3.get_object(Bucket=bucket, Key="big")
    assert response["Body"].read() == data
    assert response["Metadata"] == {"uid": "1000"}
    assert response["ContentType"] == "video/mp4"
    assert response["ETag"] == etag
    assert response["ETag"].endswith('-4"')


def test_parts_run_in_parallel_up_to_max_thread_count(s3, bucket: str, store: Store,
                                                      make_transfer: TransferFactory) -> None:
    data = payload(20 * MiB)
    # Each read waits until a second one runs: only parallel parts get past it.
    barrier = threading.Barrier(2, timeout=20)
    lock = threading.Lock()
    active = peak = 0

    class ParallelSource(MemorySource):
        def read(self, offset: int, length: int) -> bytes:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            barrier.wait()
            with lock:
                active -= 1
            return super().read(offset, length)

    settings = TransferSettings(multipart_threshold=5 * MiB, multipart_size=5 * MiB,
                                max_thread_count=2)
    make_transfer(store, settings).upload("parallel", ParallelSource(data), metadata={},
                                          content_type="application/octet-stream")
    assert peak == 2
    assert body_of(s3, bucket, "parallel") == data


def test_mixupload_sends_only_the_changed_part(s3, bucket: str, store: Store,
                                               make_transfer: TransferFactory) -> None:
    old = payload(20 * MiB)
    original = put_original(s3, bucket, "file", old)
    offset = 5 * MiB + 1000  # in part 2
    new = old[:offset] + b"x" * 4096 + old[offset + 4096:]
    source = MemorySource(new, changed=((offset, offset + 4096),))
    make_transfer(store).upload("file", source, metadata={"new": "1"},
                                content_type="text/plain", original=original)
    counts = store.request_counts()
    assert counts["upload_part"] == 1
    assert counts["upload_part_copy"] == 3
    assert source.reads == [(5 * MiB, 5 * MiB)]
    response = s3.get_object(Bucket=bucket, Key="file")
    assert response["Body"].read() == new
    assert response["Metadata"] == {"new": "1"}


def test_nomixupload_sends_every_part_of_a_changed_file(s3, bucket: str, store: Store,
                                                       make_transfer: TransferFactory) -> None:
    old = payload(20 * MiB)
    original = put_original(s3, bucket, "file", old)
    offset = 5 * MiB + 1000
    new = old[:offset] + b"x" * 4096 + old[offset + 4096:]
    source = MemorySource(new, changed=((offset, offset + 4096),))
    settings = dataclasses.replace(SMALL, nomixupload=True)
    make_transfer(store, settings).upload("file", source, metadata={}, content_type="text/plain",
                                          original=original)
    counts = store.request_counts()
    assert counts["upload_part"] == 4
    assert "upload_part_copy" not in counts
    assert body_of(s3, bucket, "file") == new


@pytest.mark.parametrize(("changes", "sent", "copied"), [
    # In two 10 MiB parts, but in only 10 MiB of 5 MiB parts: 5 MiB parts send less.
    ((1 * MiB, 21 * MiB), 2, 6),
    # Both in the first 10 MiB part: 5 MiB parts would send as much, in more requests.
    ((1 * MiB, 6 * MiB), 1, 3),
])
def test_a_file_edited_in_few_places_is_sent_in_the_parts_that_send_least(
        s3, bucket: str, store: Store, make_transfer: TransferFactory,
        changes: tuple[int, ...], sent: int, copied: int) -> None:
    old = payload(40 * MiB)
    original = put_original(s3, bucket, "big", old)
    new = bytearray(old)
    for offset in changes:
        new[offset:offset + 4096] = b"x" * 4096
    source = MemorySource(bytes(new), changed=tuple((o, o + 4096) for o in changes))
    settings = TransferSettings(multipart_threshold=5 * MiB, multipart_size=10 * MiB)
    make_transfer(store, settings).upload("big", source, metadata={}, content_type="text/plain",
                                          original=original)
    counts = store.request_counts()
    assert (counts["upload_part"], counts["upload_part_copy"]) == (sent, copied), counts
    assert body_of(s3, bucket, "big") == bytes(new)


def test_mixupload_of_a_grown_file_copies_only_whole_old_parts(
        s3, bucket: str, store: Store, make_transfer: TransferFactory) -> None:
    old = payload(18 * MiB)
    original = put_original(s3, bucket, "log", old)
    new = old + payload(5 * MiB, seed=2)
    # The source claims nothing changed: the Transfer itself must not copy past the old end.
    make_transfer(store).upload("log", MemorySource(new), metadata={}, content_type="text/plain",
                                original=original)
    counts = store.request_counts()
    assert counts["upload_part_copy"] == 3  # 0-5, 5-10, 10-15 MiB
    assert counts["upload_part"] == 2  # 15-20 straddles the old end; 20-23 is new
    assert body_of(s3, bucket, "log") == new


def test_mixupload_to_another_key(s3, bucket: str, store: Store,
                                  make_transfer: TransferFactory) -> None:
    old = payload(10 * MiB)
    original = put_original(s3, bucket, "a", old)
    make_transfer(store).upload("b", MemorySource(old), metadata={}, content_type="text/plain",
                                original=original)
    assert store.request_counts()["upload_part_copy"] == 2
    assert "upload_part" not in store.request_counts()
    assert body_of(s3, bucket, "b") == old
    assert body_of(s3, bucket, "a") == old


def test_proxy_passes_unmatched_requests_through(s3, bucket: str, make_store: StoreFactory,
                                                proxy: S3Proxy) -> None:
    rule = proxy.add(Rule(operation_is("HeadObject"), Answer(403, "AccessDenied"), times=1))
    store = make_store(proxy.url)
    data = payload(MiB)
    put_original(s3, bucket, "file", data)
    with pytest.raises(FsError) as caught:
        store.head("file")
    assert caught.value.errno == errno.EACCES
    info = store.head("file")  # a HEAD answer keeps its Content-Length without a body
    assert info is not None and info.size == MiB and info.metadata == {"old": "1"}
    assert store.head("missing") is None
    assert store.get_range("file", 10, 19) == data[10:20]
    assert proxy.counts() == {"HeadObject": 3, "GetObject": 1}
    assert rule.fired == 1


def test_upload_part_copy_not_implemented_falls_back_to_data(
        s3, bucket: str, make_store: StoreFactory, proxy: S3Proxy,
        make_transfer: TransferFactory, caplog: pytest.LogCaptureFixture) -> None:
    rule = proxy.add(Rule(is_upload_part_copy, Answer(501, "NotImplemented")))
    store = make_store(proxy.url)
    transfer = make_transfer(store)
    old = payload(20 * MiB)
    original = put_original(s3, bucket, "file", old)
    offset = 5 * MiB
    new = old[:offset] + b"y" * 10 + old[offset + 10:]
    with caplog.at_level(logging.WARNING, logger="s3mount.transfer"):
        transfer.upload("file", MemorySource(new, changed=((offset, offset + 10),)),
                        metadata={}, content_type="text/plain", original=original)
    assert transfer.copy_supported is False
    assert store.request_counts()["upload_part"] == 4
    assert 1 <= rule.fired <= 3
    assert body_of(s3, bucket, "file") == new
    assert len([r for r in caplog.records if "upload_part_copy" in r.getMessage()]) == 1

    # Remembered: the next upload does not even try.
    original = Original("file", s3.head_object(Bucket=bucket, Key="file")["ETag"], len(new))
    transfer.upload("file", MemorySource(new), metadata={}, content_type="text/plain",
                    original=original)
    assert proxy.counts()["UploadPartCopy"] == rule.fired
    assert body_of(s3, bucket, "file") == new
    assert_no_uploads_left(s3, bucket)


def test_copy_object_not_implemented_falls_back_to_download_and_upload(
        s3, bucket: str, make_store: StoreFactory, proxy: S3Proxy,
        make_transfer: TransferFactory) -> None:
    proxy.add(Rule(is_copy_object, Answer(501, "NotImplemented")))
    store = make_store(proxy.url)
    transfer = make_transfer(store)
    data = payload(7 * MiB)
    original = put_original(s3, bucket, "src", data)
    transfer.copy(original, "dst", metadata={"new": "2"}, content_type="image/png")
    assert transfer.copy_supported is False
    counts = store.request_counts()
    assert counts["copy_object"] == 1
    assert counts["get_object"] == 2  # in parts: never the whole object in memory
    assert counts["upload_part"] == 2
    response = s3.get_object(Bucket=bucket, Key="dst")
    assert response["Body"].read() == data
    assert response["Metadata"] == {"new": "2"}
    assert response["ContentType"] == "image/png"


def test_norenameapi_renames_by_download_and_upload_and_copies_the_rest(
        s3, bucket: str, store: Store, make_transfer: TransferFactory) -> None:
    transfer = make_transfer(store, dataclasses.replace(SMALL, norenameapi=True))
    data = payload(MiB)
    original = put_original(s3, bucket, "src", data)
    transfer.copy(original, "moved", metadata={"new": "1"}, content_type="text/plain")
    transfer.copy_keeping_metadata(original, "moved-too")
    counts = store.request_counts()
    assert "copy_object" not in counts
    assert counts["get_object"] == 2 and counts["put_object"] == 2, counts
    transfer.copy(original, "src", metadata={"mode": "33188"}, content_type="text/plain")
    assert store.request_counts()["copy_object"] == 1  # same key, not a rename: server-side
    assert body_of(s3, bucket, "moved") == body_of(s3, bucket, "moved-too") == data
    assert s3.head_object(Bucket=bucket, Key="moved-too")["Metadata"] == {"old": "1"}
    assert transfer.settings.mixupload is False  # as in s3fs: no UploadPartCopy either


def test_copy_to_the_same_key_replaces_metadata(s3, bucket: str, store: Store,
                                                make_transfer: TransferFactory) -> None:
    data = payload(MiB)
    original = put_original(s3, bucket, "file", data)
    make_transfer(store).copy(original, "file", metadata={"mode": "33261"},
                              content_type="text/x-script")
    assert store.request_counts() == {"copy_object": 1}
    response = s3.get_object(Bucket=bucket, Key="file")
    assert response["Body"].read() == data
    assert response["Metadata"] == {"mode": "33261"}
    assert response["ContentType"] == "text/x-script"


def test_copy_to_another_key(s3, bucket: str, store: Store,
                             make_transfer: TransferFactory) -> None:
    data = payload(MiB)
    original = put_original(s3, bucket, "src", data)
    make_transfer(store).copy(original, "dst", metadata={"new": "1"}, content_type="text/plain")
    assert store.request_counts() == {"copy_object": 1}
    assert body_of(s3, bucket, "dst") == data
    assert s3.head_object(Bucket=bucket, Key="dst")["Metadata"] == {"new": "1"}
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"old": "1"}


def test_copy_of_an_empty_object_is_one_copy(s3, bucket: str, store: Store,
                                             make_transfer: TransferFactory) -> None:
    original = put_original(s3, bucket, "empty", b"")
    settings = TransferSettings(singlepart_copy_limit=0, multipart_copy_size=5 * MiB)
    make_transfer(store, settings).copy(original, "copy", metadata={}, content_type="text/plain")
    assert store.request_counts() == {"copy_object": 1}
    assert body_of(s3, bucket, "copy") == b""


def test_multipart_copy(s3, bucket: str, store: Store, make_transfer: TransferFactory) -> None:
    data = payload(12 * MiB)
    original = put_original(s3, bucket, "big", data)
    settings = TransferSettings(singlepart_copy_limit=5 * MiB, multipart_copy_size=5 * MiB)
    make_transfer(store, settings).copy(original, "big", metadata={"new": "1"},
                                        content_type="text/plain")
    counts = store.request_counts()
    assert counts["upload_part_copy"] == 3
    assert "copy_object" not in counts and "upload_part" not in counts
    response = s3.get_object(Bucket=bucket, Key="big")
    assert response["Body"].read() == data
    assert response["Metadata"] == {"new": "1"}


def test_download_copy_of_a_changed_source_is_stale(s3, bucket: str, store: Store,
                                                    make_transfer: TransferFactory) -> None:
    # moto (5.2) ignores x-amz-copy-source-if-match, so only the download path's
    # If-Match pin can be checked against it.
    original = put_original(s3, bucket, "src", payload(MiB))
    s3.put_object(Bucket=bucket, Key="src", Body=b"changed")
    transfer = make_transfer(store, TransferSettings(nocopyapi=True))
    with pytest.raises(FsError) as caught:
        transfer.copy(original, "dst", metadata={}, content_type="text/plain")
    assert caught.value.errno == errno.ESTALE
    assert "put_object" not in store.request_counts()


def test_failed_complete_aborts_the_upload(s3, bucket: str, make_store: StoreFactory,
                                           proxy: S3Proxy, make_transfer: TransferFactory) -> None:
    proxy.add(Rule(operation_is("CompleteMultipartUpload"), Answer(500, "InternalError")))
    store = make_store(proxy.url, retries=0)
    with pytest.raises(FsError) as caught:
        make_transfer(store).upload("big", MemorySource(payload(12 * MiB)), metadata={},
                                    content_type="text/plain")
    assert caught.value.errno == errno.EIO
    assert store.request_counts()["abort_multipart_upload"] == 1
    assert_no_uploads_left(s3, bucket)
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_dropped_part_aborts_the_upload(s3, bucket: str, make_store: StoreFactory,
                                        proxy: S3Proxy, make_transfer: TransferFactory) -> None:
    rule = proxy.add(Rule(operation_is("UploadPart"), Drop(), times=1))
    store = make_store(proxy.url, retries=0)
    with pytest.raises(FsError) as caught:
        make_transfer(store).upload("big", MemorySource(payload(12 * MiB)), metadata={},
                                    content_type="text/plain")
    assert caught.value.errno == errno.EIO
    assert rule.fired == 1
    assert "complete_multipart_upload" not in store.request_counts()
    assert_no_uploads_left(s3, bucket)


def test_short_read_fails_instead_of_truncating(s3, bucket: str, store: Store,
                                                make_transfer: TransferFactory) -> None:
    source = MemorySource(payload(12 * MiB))
    source.size = 13 * MiB  # announces more than it has
    with pytest.raises(FsError) as caught:
        make_transfer(store).upload("big", source, metadata={}, content_type="text/plain")
    assert caught.value.errno == errno.EIO
    assert_no_uploads_left(s3, bucket)


def test_nomultipart(s3, bucket: str, store: Store, make_transfer: TransferFactory) -> None:
    transfer = make_transfer(store, TransferSettings(multipart_threshold=5 * MiB,
                                                     nomultipart=True))
    data = payload(12 * MiB)
    transfer.upload("big", MemorySource(data), metadata={}, content_type="text/plain")
    assert store.request_counts() == {"put_object": 1}
    assert body_of(s3, bucket, "big") == data

    class Huge:
        size = 5 * 1024**3 + 1

        def read(self, offset: int, length: int) -> bytes:
            raise AssertionError("an object too large for one PUT must not be read")

        def unchanged(self, offset: int, length: int) -> bool:
            return False

    with pytest.raises(FsError) as caught:
        transfer.upload("huge", Huge(), metadata={}, content_type="text/plain")
    assert caught.value.errno == errno.EFBIG


def test_nocopyapi(s3, bucket: str, store: Store, make_transfer: TransferFactory) -> None:
    transfer = make_transfer(store, TransferSettings(multipart_threshold=5 * MiB,
                                                     multipart_size=5 * MiB, nocopyapi=True))
    old = payload(20 * MiB)
    original = put_original(s3, bucket, "file", old)
    transfer.upload("file", MemorySource(old), metadata={}, content_type="text/plain",
                    original=original)
    counts = store.request_counts()
    assert counts["upload_part"] == 4
    assert "upload_part_copy" not in counts

    etag = s3.head_object(Bucket=bucket, Key="file")["ETag"]
    transfer.copy(Original("file", etag, len(old)), "copy", metadata={"new": "1"},
                  content_type="text/plain")
    counts = store.request_counts()
    assert "copy_object" not in counts and "upload_part_copy" not in counts
    assert counts["get_object"] == 4
    response = s3.get_object(Bucket=bucket, Key="copy")
    assert response["Body"].read() == old
    assert response["Metadata"] == {"new": "1"}


@pytest.mark.parametrize(("total", "wanted", "expected"), [
    (0, 10 * MiB, 10 * MiB),
    (10_000 * 10 * MiB, 10 * MiB, 10 * MiB),  # exactly MAX_PARTS parts: no growth
    (10_000 * 10 * MiB + 1, 10 * MiB, 11 * MiB),
    (100 * 1024**3, 5 * MiB, 11 * MiB),  # ceil(100 GiB / 10000) = 10.24 MiB → 11 MiB
    (1024**4, 512 * MiB, 512 * MiB),
    (MiB, MiB, MIN_PART),  # never below S3's minimum
])
def test_part_size(total: int, wanted: int, expected: int) -> None:
    size = part_size(total, wanted)
    assert size == expected
    assert size % MiB == 0
    assert -(-total // size) <= 10_000
