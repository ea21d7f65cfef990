"""Store.head's lean path (lean_head.py) against moto: the same answer as
botocore's call path, requests signed as botocore signs them, and anything but
200 and 404 left to botocore."""

from __future__ import annotations

import errno

import pytest
from emulating_proxy import EmulatingProxy
from helpers import ACCESS_KEY, SECRET_KEY, AuthServer, MotoServer
from s3proxy import Answer, Rule, S3Proxy, operation_is

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.lean_head import head_fields
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


def test_head_fields_reads_the_headers_botocore_reads() -> None:
    headers = {"Content-Length": "12", "ETag": '"abc"', "Content-Type": "text/plain",
               "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
               "x-amz-meta-mode": "33188", "X-Amz-Meta-Uid": "5", "x-amz-request-id": "1"}
    fields = head_fields(headers, parse_s3_timestamp)
    assert fields["ContentLength"] == 12 and fields["ETag"] == '"abc"'
    assert fields["ContentType"] == "text/plain"
    assert fields["Metadata"] == {"mode": "33188", "Uid": "5"}
    assert fields["LastModified"].year == 2015
    assert "ContentType" not in head_fields({"Last-Modified": headers["Last-Modified"]},
                                            parse_s3_timestamp)
