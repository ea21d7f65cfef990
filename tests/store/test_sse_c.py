"""SSE-C in the Store: key files, the parameters of every request, and how an
object's key is found.

moto (5.2) ignores SSE-C: it stores no key MD5, returns no SSE-C headers and
serves an SSE-C object without its key. So what the Store sends is checked in
two ways: against moto, by recording the real client's request headers with
botocore's ``before-call`` event; and through tests/emulating_proxy.py, which
enforces SSE-C in front of moto the way AWS documents it (400 without the key
or with SSE-C headers for a plain object, 403 with a wrong key, the key MD5 in
the answers).
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from emulating_proxy import EmulatingProxy
from helpers import ACCESS_KEY, SECRET_KEY, MemorySource, MotoServer, payload

from s3mount.credentials import Credentials
from s3mount.errors import CredentialsError, FsError
from s3mount.store import (
    SseC,
    Store,
    StoreSettings,
    decode_sse_c_key,
    load_sse_c_keys,
    sse_c_key_md5,
)
from s3mount.transfer import MiB, Original, Transfer, TransferSettings

KEY_A = b"A" * 16 + b"0123456789abcdef"
KEY_B = bytes(range(32))  # not text: written to key files in base64
KEY_C = b"c" * 32
SMALL = TransferSettings(multipart_threshold=5 * MiB, multipart_size=5 * MiB,
                         singlepart_copy_limit=5 * MiB, multipart_copy_size=5 * MiB)
SSE_C_HEADERS = ("x-amz-server-side-encryption-customer-algorithm",
                 "x-amz-server-side-encryption-customer-key",
                 "x-amz-server-side-encryption-customer-key-md5")
COPY_SOURCE_HEADERS = tuple(h.replace("x-amz-", "x-amz-copy-source-") for h in SSE_C_HEADERS)


def md5_of(key: bytes) -> str:
    return base64.b64encode(hashlib.md5(key).digest()).decode()


def sse_headers(key: bytes, copy_source: bool = False) -> dict[str, str]:
    names = COPY_SOURCE_HEADERS if copy_source else SSE_C_HEADERS
    return dict(zip(names, ("AES256", base64.b64encode(key).decode(), md5_of(key)),
                    strict=True))


def key_file(path: Path, *lines: str, mode: int = 0o600) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    path.chmod(mode)
    return str(path)


# --------------------------------------------------------------------------
# Keys and key files (s3fs's format)


def test_key_forms() -> None:
    assert decode_sse_c_key(b"x" * 32) == b"x" * 32  # 32 characters: the raw key
    assert decode_sse_c_key(base64.b64encode(KEY_B)) == KEY_B  # longer: base64
    assert sse_c_key_md5(KEY_B) == md5_of(KEY_B)


@pytest.mark.parametrize(("text", "reason"), [
    (b"short-key", "too short (9 characters)"),
    (b"!" * 40, "not base64"),
    (base64.b64encode(b"x" * 31), "decodes from base64 to 31 bytes"),
    (base64.b64encode(b"x" * 33), "decodes from base64 to 33 bytes"),
])
def test_bad_keys(text: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        decode_sse_c_key(text)
    assert reason in str(caught.value)
    assert text.decode() not in str(caught.value)


def test_key_file(tmp_path: Path) -> None:
    path = key_file(tmp_path / "keys", "# written first, used for new objects", "",
                    "  " + KEY_A.decode() + "  ", base64.b64encode(KEY_B).decode())
    assert load_sse_c_keys(path) == [KEY_A, KEY_B]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = key_file(tmp_path / "keys", KEY_A.decode(), mode=mode)
    with pytest.raises(CredentialsError) as caught:
        load_sse_c_keys(path)
    assert caught.value.message == (
        f"SSE-C key file {path} is accessible by group or others (mode {mode:04o}); "
        f"run: chmod 600 {path}")


@pytest.mark.parametrize(("lines", "message"), [
    (("# only a comment", ""), "holds no key"),
    ((KEY_A.decode(), "too-short"), "line 2: the key is too short (9 characters)"),
])
def test_bad_key_file(tmp_path: Path, lines: tuple[str, ...], message: str) -> None:
    path = key_file(tmp_path / "keys", *lines)
    with pytest.raises(CredentialsError) as caught:
        load_sse_c_keys(path)
    assert caught.value.message.startswith(f"SSE-C key file {path}")
    assert message in caught.value.message
    assert KEY_A.decode() not in caught.value.message
    assert "\n" not in caught.value.message


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as caught:
        load_sse_c_keys(str(tmp_path / "nope"))
    assert caught.value.message == f"SSE-C key file {tmp_path / 'nope'} does not exist"


def test_options_give_keys_in_s3fs_order(tmp_path: Path) -> None:
    first = key_file(tmp_path / "first", KEY_C.decode())
    history = key_file(tmp_path / "history", base64.b64encode(KEY_B).decode(), KEY_A.decode())
    assert SseC.from_options(None, None, {}) is None
    assert SseC.from_options("1", None, {}) is None

    sse = SseC.from_options(f"custom:{first}", history, {})
    assert sse.encrypt and sse.write_md5 == md5_of(KEY_C)
    assert sse.md5s == [md5_of(KEY_C), md5_of(KEY_B), md5_of(KEY_A)]

    rotated = SseC.from_options("custom", history, {})  # s3fs: use_sse=custom + load_sse_c
    assert rotated.write_md5 == md5_of(KEY_B)

    read_only = SseC.from_options(None, history, {})
    assert not read_only.encrypt and read_only.write_md5 is None
    assert read_only.for_write() == {}
    assert read_only.keep_on_copy
    assert not SseC.from_options("kmsid:k", history, {}).keep_on_copy

    environment = SseC.from_options(
        "custom", None, {"AWSSSECKEYS": f"{KEY_A.decode()}:{base64.b64encode(KEY_B).decode()}"})
    assert environment.md5s == [md5_of(KEY_A), md5_of(KEY_B)]


def test_custom_without_keys_is_an_error() -> None:
    with pytest.raises(CredentialsError) as caught:
        SseC.from_options("custom", None, {})
    assert "load_sse_c=FILE" in caught.value.message


def test_parameters_are_decided_in_one_place() -> None:
    sse = SseC([KEY_A, KEY_B], encrypt=True)
    assert sse.for_write() == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY_A}
    assert sse.for_read(None) == {}
    assert sse.for_read(md5_of(KEY_B))["SSECustomerKey"] == KEY_B
    assert sse.for_copy_source(md5_of(KEY_B)) == {"CopySourceSSECustomerAlgorithm": "AES256",
                                                  "CopySourceSSECustomerKey": KEY_B}
    assert sse.for_copy_destination(md5_of(KEY_B)) == sse.for_write()
    with pytest.raises(FsError) as caught:
        sse.for_read(md5_of(KEY_C))
    assert caught.value.errno == errno.EACCES
    assert KEY_A.decode() not in repr(sse)


# --------------------------------------------------------------------------
# Requests


StoreFactory = Callable[..., Store]


@pytest.fixture
def sse_proxy(s3_server: MotoServer) -> Iterator[EmulatingProxy]:
    with EmulatingProxy(s3_server.url, sse_c=True) as running:
        yield running


@pytest.fixture
def make_store(s3_server: MotoServer, bucket: str) -> StoreFactory:
    def make(sse: SseC | None, url: str | None = None) -> Store:
        settings = StoreSettings(bucket=bucket, url=url or s3_server.url, region="us-east-1",
                                 path_style=True, sse_c=sse)
        return Store(settings, Credentials(ACCESS_KEY, SECRET_KEY))
    return make


def record_headers(store: Store) -> list[tuple[str, dict[str, str]]]:
    """(operation, request headers) of every request the store's real client signs,
    and of the HEADs of the lean path, which signs its own (lean_head._SigV4)."""
    sent: list[tuple[str, dict[str, str]]] = []

    def before_sign(request: Any, operation_name: str, **_: Any) -> None:
        sent.append((operation_name, {k.lower(): v for k, v in request.headers.items()}))

    store._client.meta.events.register("before-sign.s3", before_sign)
    lean = store._lean_head
    if lean is None:
        return sent

    def record(headers: Any) -> None:
        if lean._sigv4 is not None:  # else botocore's signer recorded it
            sent.append(("HeadObject", {k.lower(): v for k, v in headers.items()}))

    kept = lean._kept
    if kept is not None:
        kept_head = kept.head

        def head(target: str, headers: Any) -> Any:
            record(headers)
            return kept_head(target, headers)

        kept.head = head  # type: ignore[method-assign]
    else:
        http = lean._http

        class RecordingSession:
            def send(self, request: Any) -> Any:
                record(request.headers)
                return http.send(request)

        lean._http = RecordingSession()
    return sent


def sse_part(headers: dict[str, str], copy_source: bool = False) -> dict[str, str]:
    names = COPY_SOURCE_HEADERS if copy_source else SSE_C_HEADERS
    return {name: headers[name] for name in names if name in headers}


def test_every_request_on_an_sse_c_object_carries_the_key(
        s3, bucket: str, make_store: StoreFactory, transfers: list[Transfer]) -> None:
    """Against moto, which ignores SSE-C: the headers botocore actually sends."""
    store = make_store(SseC([KEY_A, KEY_B], encrypt=True))
    sent = record_headers(store)
    transfer = Transfer(store, SMALL)
    transfers.append(transfer)
    small, big = payload(1000), payload(11 * MiB)
    transfer.upload("small", MemorySource(small), metadata={}, content_type="text/plain")
    etag = transfer.upload("big", MemorySource(big), metadata={}, content_type="text/plain")
    info = store.head("big")
    assert info is not None and info.etag == etag
    assert store.get_range("big", 10, 19, etag) == big[10:20]
    transfer.copy(Original("small", store.head("small").etag, len(small)), "small",
                  metadata={"mode": "33188"}, content_type="text/plain")  # CopyObject
    transfer.copy(Original("big", etag, len(big)), "big2", metadata={},
                  content_type="text/plain")  # UploadPartCopy
    changed = big[:6 * MiB] + b"x" + big[6 * MiB + 1:]
    transfer.upload("big", MemorySource(changed, ((6 * MiB, 6 * MiB + 1),)), metadata={},
                    content_type="text/plain", original=Original("big", etag, len(big)))

    operations = {operation for operation, _ in sent}
    assert operations >= {"PutObject", "CreateMultipartUpload", "UploadPart",
                          "CompleteMultipartUpload", "HeadObject", "GetObject", "CopyObject",
                          "UploadPartCopy"}
    for operation, headers in sent:
        assert sse_part(headers) == sse_headers(KEY_A), operation
        if operation in ("CopyObject", "UploadPartCopy"):
            assert sse_part(headers, copy_source=True) == sse_headers(KEY_A, True), operation
        else:
            assert not sse_part(headers, copy_source=True), operation
    # moto stores the plain content, whatever the key.
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == changed


def test_without_sse_c_no_request_carries_a_key(make_store: StoreFactory) -> None:
    store = make_store(None)
    sent = record_headers(store)
    store.put("f", b"data", metadata={}, content_type="text/plain")
    assert store.head("f").sse_c_md5 is None
    assert store.get_range("f", 0, 3) == b"data"
    assert [op for op, _ in sent] == ["PutObject", "HeadObject", "GetObject"]
    assert not any(sse_part(h) or sse_part(h, True) for _, h in sent)




# --------------------------------------------------------------------------
# Against the SSE-C-enforcing proxy


def proxy_client(proxy: EmulatingProxy):
    """A plain botocore client that talks to moto through the SSE-C-enforcing proxy."""
    return botocore.session.get_session().create_client(
        "s3", endpoint_url=proxy.url, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1},
                      request_checksum_calculation="when_required"))


def test_the_key_of_each_object_is_found_by_its_md5(
        s3, bucket: str, s3_server: MotoServer, sse_proxy: EmulatingProxy,
        make_store: StoreFactory) -> None:
    client = proxy_client(sse_proxy)
    client.put_object(Bucket=bucket, Key="old", Body=b"old key", SSECustomerAlgorithm="AES256",
                      SSECustomerKey=KEY_B)
    s3.put_object(Bucket=bucket, Key="plain", Body=b"no key")
    client.put_object(Bucket=bucket, Key="foreign", Body=b"?", SSECustomerAlgorithm="AES256",
                      SSECustomerKey=KEY_C)
    store = make_store(SseC([KEY_A, KEY_B], encrypt=True), url=sse_proxy.url)

    old = store.head("old")
    assert old is not None and old.sse_c_md5 == md5_of(KEY_B)
    assert store.get_range("old", 0, 6, old.etag) == b"old key"
    plain = store.head("plain")
    assert plain is not None and plain.sse_c_md5 is None
    assert store.get_range("plain", 0, 5) == b"no key"
    assert store.head("missing") is None
    with pytest.raises(FsError) as caught:
        store.head("foreign")
    assert caught.value.errno == errno.EACCES
    # Tried: the write key, no key, the other key; never a HeadBucket (no region guessing).
    assert sse_proxy.counts()["HeadBucket"] == 0

    # Known now: one request each.
    before = sse_proxy.counts()
    assert store.get_range("old", 0, 2) == b"old"
    assert store.head("old").sse_c_md5 == md5_of(KEY_B)
    after = sse_proxy.counts()
    assert (after["GetObject"] - before["GetObject"], after["HeadObject"] - before["HeadObject"]) \
        == (1, 1)


def test_read_of_an_object_rewritten_with_another_key(
        s3_server: MotoServer, bucket: str, sse_proxy: EmulatingProxy,
        make_store: StoreFactory) -> None:
    client = proxy_client(sse_proxy)
    store = make_store(SseC([KEY_A, KEY_B], encrypt=True), url=sse_proxy.url)
    store.put("f", b"first", metadata={}, content_type="text/plain")
    client.put_object(Bucket=bucket, Key="f", Body=b"other", SSECustomerAlgorithm="AES256",
                      SSECustomerKey=KEY_B)
    # Unpinned, the remembered key is refused (403): the Store asks again.
    assert store.get_range("f", 0, 4) == b"other"


def test_copies_keep_or_change_the_key(
        s3_server: MotoServer, bucket: str, sse_proxy: EmulatingProxy,
        make_store: StoreFactory, transfers: list[Transfer]) -> None:
    client = proxy_client(sse_proxy)
    data = payload(11 * MiB)
    for key in ("small", "big"):
        client.put_object(Bucket=bucket, Key=key, Body=data[:100] if key == "small" else data,
                          SSECustomerAlgorithm="AES256", SSECustomerKey=KEY_B)

    def state(key: str) -> str | None:
        return sse_proxy.objects[f"{bucket}/{key}"][1]

    # use_sse=custom: copies are encrypted with the first key (s3fs does the same).
    writer = make_store(SseC([KEY_A, KEY_B], encrypt=True), url=sse_proxy.url)
    transfers.append(transfer := Transfer(writer, SMALL))
    info = writer.head("small")
    transfer.copy(Original("small", info.etag, info.size), "small-a", metadata={},
                  content_type="text/plain")
    assert state("small-a") == md5_of(KEY_A)
    info = writer.head("big")
    transfer.copy(Original("big", info.etag, info.size), "big-a", metadata={},
                  content_type="text/plain")
    assert state("big-a") == md5_of(KEY_A)
    assert writer.get_range("big-a", 0, len(data) - 1) == data

    # load_sse_c alone: copies keep the object's own key, new objects have none.
    reader = make_store(SseC([KEY_A, KEY_B], encrypt=False), url=sse_proxy.url)
    transfers.append(transfer := Transfer(reader, SMALL))
    info = reader.head("small")
    transfer.copy(Original("small", info.etag, info.size), "small", metadata={"mode": "1"},
                  content_type="text/plain")
    assert state("small") == md5_of(KEY_B)
    info = reader.head("big")
    transfer.copy(Original("big", info.etag, info.size), "big-b", metadata={},
                  content_type="text/plain")
    assert state("big-b") == md5_of(KEY_B)
    assert reader.get_range("big-b", 0, len(data) - 1) == data
    reader.put("new", b"x", metadata={}, content_type="text/plain")
    assert state("new") is None


def test_the_key_never_reaches_the_log(
        sse_proxy: EmulatingProxy, make_store: StoreFactory,
        caplog: pytest.LogCaptureFixture) -> None:
    """botocore's debug log shows request headers; the copy-source key header is
    not caught by the redactor's header pattern, so mount.py registers the keys."""
    from s3mount.log import RedactingFilter

    sse = SseC([KEY_A, KEY_B], encrypt=True)
    redactor = RedactingFilter()
    redactor.add_secrets(sse.secrets())
    store = make_store(sse, url=sse_proxy.url)
    with caplog.at_level(logging.DEBUG):
        store.put("f", b"x", metadata={}, content_type="text/plain")
        store.copy("f", "g", metadata={}, content_type="text/plain")
        store.get_range("g", 0, 0)
    text = "\n".join(redactor._clean(record.getMessage()) for record in caplog.records)
    assert "x-amz-copy-source-server-side-encryption-customer-key" in text.lower()
    for key in (KEY_A, KEY_B):
        assert base64.b64encode(key).decode() not in text
    assert KEY_A.decode() not in text
    assert os.fsencode(base64.b64encode(KEY_A).decode()) not in text.encode()


# --------------------------------------------------------------------------
# From the command line to the Store


def settings_for(tmp_path: Path, *options: str):
    from s3mount.config import build_config
    from s3mount.mount import store_settings

    config = build_config(["bucket", str(tmp_path)], [",".join(options)], foreground=True,
                          debug=False, single_threaded=False, environ={})
    return store_settings(config, {})


def test_options_reach_the_store_settings(tmp_path: Path) -> None:
    from s3mount.log import redactor

    keys = key_file(tmp_path / "keys", KEY_A.decode(), base64.b64encode(KEY_B).decode())
    settings = settings_for(tmp_path, f"use_sse=custom:{keys}", "requester_pays",
                            "storage_class=standard_ia")
    assert settings.sse_c.write_md5 == md5_of(KEY_A)
    assert settings.sse_c.md5s == [md5_of(KEY_A), md5_of(KEY_B)]
    assert settings.requester_pays
    assert settings.write_extras == {"StorageClass": "STANDARD_IA"}  # no SSE-S3/KMS header
    assert redactor._clean(f"x {base64.b64encode(KEY_B).decode()} {KEY_A.decode()}") == \
        "x [redacted] [redacted]"

    settings = settings_for(tmp_path, f"load_sse_c={keys}", "use_sse=1")
    assert not settings.sse_c.encrypt and not settings.sse_c.keep_on_copy
    assert settings.write_extras == {"ServerSideEncryption": "AES256"}
    assert not settings.requester_pays

    settings = settings_for(tmp_path, "use_sse=kmsid:my-key")
    assert settings.sse_c is None
    assert settings.write_extras == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "my-key"}
