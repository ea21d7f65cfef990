"""enable_content_md5, enable_unsigned_payload and "Expect: 100-continue": what an
upload's requests carry, seen by a proxy in front of the signature-checking moto,
which accepts them."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from collections.abc import Mapping

from emulating_proxy import EmulatingProxy
from helpers import AuthServer, MemorySource, payload
from s3proxy import Answer, ProxyRequest, Rule, operation_is

from s3mount.credentials import Credentials
from s3mount.store import Store, StoreSettings
from s3mount.transfer import MiB, Transfer, TransferSettings

SMALL = TransferSettings(multipart_threshold=5 * MiB, multipart_size=5 * MiB)
UPLOADS = ("PutObject", "UploadPart")


@dataclasses.dataclass(frozen=True)
class Sent:
    operation: str
    headers: Mapping[str, str]
    md5: str  # base64, as in Content-MD5
    sha256: str  # hex, as in x-amz-content-sha256
    size: int


class Recorder:
    """A proxy rule's matcher that never matches: it notes each upload as it passes
    (the proxy's own record drops big bodies)."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def __call__(self, request: ProxyRequest) -> bool:
        if request.operation in UPLOADS:
            self.sent.append(Sent(request.operation, dict(request.headers),
                                  base64.b64encode(hashlib.md5(request.body).digest()).decode(),
                                  hashlib.sha256(request.body).hexdigest(), len(request.body)))
        return False


def upload_both(auth_server: AuthServer, proxy: EmulatingProxy, transfers: list[Transfer],
                **options: bool) -> list[Sent]:
    """A multipart upload of 11 MiB and a small PUT, read back from the server; the
    uploads as the proxy saw them."""
    recorder = Recorder()
    proxy.add(Rule(recorder, Answer(500, "NeverSent")))
    store = Store(StoreSettings(bucket=auth_server.bucket, url=proxy.url, region="us-east-1",
                                path_style=True, retries=2, **options),
                  Credentials(auth_server.access_key, auth_server.secret_key))
    transfers.append(transfer := Transfer(store, SMALL))
    big = payload(11 * MiB, seed=5)
    transfer.upload("integrity/big", MemorySource(big), metadata={}, content_type="text/plain")
    store.put("integrity/small", b"small body", metadata={}, content_type="text/plain")
    assert store.get_range("integrity/big", 0, len(big) - 1) == big
    assert store.get_range("integrity/small", 0, 9) == b"small body"
    assert {sent.operation for sent in recorder.sent} == set(UPLOADS)
    return recorder.sent


def test_content_md5_goes_with_every_upload_body(auth_server: AuthServer,
                                                 transfers: list[Transfer]) -> None:
    with EmulatingProxy(auth_server.server.url) as proxy:
        sent = upload_both(auth_server, proxy, transfers, content_md5=True)
    assert len(sent) == 4  # three parts and the small PUT
    for request in sent:
        assert request.headers.get("content-md5") == request.md5, request.operation


def test_only_bodies_of_a_mib_or_more_wait_for_100_continue(auth_server: AuthServer,
                                                           transfers: list[Transfer]) -> None:
    """botocore asks for "100 Continue" before every upload body, a round trip more
    per request; s3mount only before big ones (an early 403 then spares the body)."""
    with EmulatingProxy(auth_server.server.url) as proxy:
        sent = upload_both(auth_server, proxy, transfers)
    expecting = sorted((request.size, request.headers.get("expect")) for request in sent)
    assert expecting == [(10, None), (MiB, "100-continue"),
                         (5 * MiB, "100-continue"), (5 * MiB, "100-continue")]


def test_without_content_md5_no_upload_carries_one(auth_server: AuthServer,
                                                   transfers: list[Transfer]) -> None:
    with EmulatingProxy(auth_server.server.url) as proxy:
        sent = upload_both(auth_server, proxy, transfers)
    assert all("content-md5" not in request.headers for request in sent)


def test_unsigned_payload_is_signed_without_the_body_hash(auth_server: AuthServer,
                                                          transfers: list[Transfer]) -> None:
    """The server checks every signature, so the requests are signed as sent."""
    with EmulatingProxy(auth_server.server.url) as proxy:
        sent = upload_both(auth_server, proxy, transfers, unsigned_payload=True)
    for request in sent:
        assert request.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD", request.operation


def test_by_default_the_body_hash_is_signed(auth_server: AuthServer,
                                            transfers: list[Transfer]) -> None:
    with EmulatingProxy(auth_server.server.url) as proxy:
        sent = upload_both(auth_server, proxy, transfers)
    for request in sent:
        assert request.headers["x-amz-content-sha256"] == request.sha256, request.operation


def test_a_body_refused_as_damaged_is_sent_again(auth_server: AuthServer,
                                                 transfers: list[Transfer]) -> None:
    """BadDigest (a Content-MD5 that does not match what arrived) is retried."""
    refuse = Rule(operation_is("UploadPart"), Answer(400, "BadDigest"), times=1)
    with EmulatingProxy(auth_server.server.url) as proxy:
        proxy.add(refuse)
        upload_both(auth_server, proxy, transfers, content_md5=True)
    assert refuse.fired == 1
    assert proxy.counts()["UploadPart"] == 4  # three parts, one of them twice
