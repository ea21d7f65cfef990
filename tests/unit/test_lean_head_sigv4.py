"""lean_head._SigV4 signs a HEAD exactly as botocore's S3SigV4Auth does: the same
Authorization header for the same request, time and credentials."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from botocore.utils import percent_encode

from s3mount.lean_head import _SigV4

KEYS = ["plain", "dir/sub/file.txt", "space in name", "plus+sign", "per%cent", "tilde~",
        "question?mark", "hash#tag", "amp&eq=", "ünïcödé/名前", "dots/../x", "trailing/"]
URL_PREFIXES = [
    "http://127.0.0.1:9000/bucket/",  # path style, a port of its own
    "https://bucket.s3.eu-west-3.amazonaws.com/",  # virtual host
    "https://s3.example.com:443/bucket/",  # the default port, which is not signed
    "http://[::1]:9000/bucket/prefix%20dir/",  # IPv6, an encoded prefix
]


def botocore_signed(url: str, credentials: BotoCredentials, region: str,
                    extra: dict[str, str]) -> AWSRequest:
    request = AWSRequest(method="HEAD", url=url, headers=dict(extra))
    S3SigV4Auth(credentials, "s3", region).add_auth(request)
    return request


@pytest.mark.parametrize("url_prefix", URL_PREFIXES)
@pytest.mark.parametrize(("token", "extra"), [
    (None, {}),
    ("session/token+with=odd chars", {}),
    (None, {"x-amz-request-payer": "requester"}),
])
def test_signature_is_botocores(url_prefix: str, token: str | None,
                                extra: dict[str, str]) -> None:
    credentials = BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                                  token)
    signer = _SigV4(credentials, "eu-west-3", url_prefix, extra)
    for key in KEYS:
        url = url_prefix + percent_encode(key, safe="/~")
        expected = botocore_signed(url, credentials, "eu-west-3", extra)
        timestamp = expected.headers["X-Amz-Date"]
        ours = signer.headers(urlsplit(url).path, timestamp)
        assert ours["Authorization"] == expected.headers["Authorization"], key
        assert ours["x-amz-content-sha256"] == expected.headers["X-Amz-Content-SHA256"]
        assert ours.get("x-amz-security-token") == expected.headers.get("X-Amz-Security-Token")
        assert "host" not in ours  # sent by urllib3 from the URL, as for botocore


def test_signing_key_follows_the_day_and_refreshed_credentials() -> None:
    """A new day, or a secret changed by a credential refresh, gets a new key."""
    credentials = BotoCredentials("AKID", "first-secret")
    url_prefix = URL_PREFIXES[0]
    signer = _SigV4(credentials, "us-east-1", url_prefix, {})
    for secret, timestamp in [("first-secret", "20261130T235959Z"),
                              ("first-secret", "20261201T000001Z"),
                              ("second-secret", "20261201T000002Z")]:
        credentials.secret_key = secret
        url = url_prefix + "k"
        expected = S3SigV4Auth(credentials, "s3", "us-east-1")
        request = AWSRequest(method="HEAD", url=url)
        expected.add_auth(request)
        # Same time as botocore's signature, but the key must be for `timestamp`'s day:
        ours = signer.headers("/bucket/k", timestamp)
        same_time = signer.headers("/bucket/k", request.headers["X-Amz-Date"])
        assert same_time["Authorization"] == request.headers["Authorization"]
        assert f"/{timestamp[:8]}/us-east-1/s3/aws4_request" in ours["Authorization"]
        reference = _SigV4(BotoCredentials("AKID", secret), "us-east-1", url_prefix, {})
        assert ours == reference.headers("/bucket/k", timestamp)
