"""HeadObject with a fraction of botocore's CPU per call.

A cold ``ls -l`` costs one HEAD per entry, and the daemon's CPU per HEAD
bounds how many it can make per second. botocore's call path (parameter
validation, serialization, endpoint rules, a score of event hooks, the
response parser) costs about 3.5 ms of CPU per HEAD on a small machine; the
HTTP exchange and the signature alone cost about half of that.

LeanHead asks botocore once, at start, how it sends a HEAD in this bucket
(URL, User-Agent, signing context) by stopping a probe request just before
it is signed, so the probe needs neither credentials nor the network. Each
HEAD then builds that request for its key, signs it with the client's own
signer (so credentials are refreshed, anonymous access stays unsigned, and
every before-sign handler runs), and sends it on the client's own connection
pool (same TLS settings, proxies and time-outs).

The caller handles the answers whose meaning does not depend on the path
(200, 404, 403, 429 and 5xx: a HEAD answer has no body, so its error code is
the bare status), and leaves any other one (a region redirect, 400) to
botocore's full call path, which knows what each means.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from botocore.awsrequest import AWSRequest
from botocore.utils import percent_encode

_PROBE_KEY = "s3mount-probe"
_PROBE_HOOK = "s3mount-lean-head-probe"


class _Probed(Exception):
    def __init__(self, request: AWSRequest) -> None:
        super().__init__("probe")
        self.request = request


class LeanHead:
    """Sends HeadObject requests for keys of one bucket as ``client`` would."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._signer = client._request_signer
        self._http = client._endpoint.http_session

        def capture(request: AWSRequest, **_: Any) -> None:
            raise _Probed(request)

        events = client.meta.events
        events.register_first("before-sign.s3.HeadObject", capture, unique_id=_PROBE_HOOK)
        try:
            client.head_object(Bucket=bucket, Key=_PROBE_KEY)
        except _Probed as probed:
            probe = probed.request
        else:
            raise ValueError("botocore sent a HeadObject without signing it")
        finally:
            events.unregister("before-sign.s3.HeadObject", unique_id=_PROBE_HOOK)
        url: str = probe.url
        quoted_probe = percent_encode(_PROBE_KEY, safe="/~")
        if not url.endswith("/" + quoted_probe):
            raise ValueError(f"unexpected HeadObject URL: {url!r}")
        self._url_prefix = url[:-len(quoted_probe)]
        user_agent = probe.headers.get("User-Agent")
        self._headers = {"User-Agent": user_agent} if user_agent else {}
        self._context = {name: probe.context[name] for name in ("signing", "auth_type")
                         if name in probe.context}

    def __call__(self, key: str) -> tuple[int, Mapping[str, str]]:
        """(HTTP status, headers) of a HEAD of ``key``. A failure to get an answer
        raises botocore's exceptions, as a call through the client would."""
        request = AWSRequest(method="HEAD",
                             url=self._url_prefix + percent_encode(key, safe="/~"),
                             headers=dict(self._headers))
        request.context.update(self._context)
        self._signer.sign("HeadObject", request)
        response = self._http.send(request.prepare())
        return response.status_code, response.headers


def head_fields(headers: Mapping[str, str],
                parse_time: Callable[[str], datetime.datetime]) -> dict[str, Any]:
    """The fields of botocore's HeadObject response that s3mount reads, from the
    answer's headers (``parse_time``: the parser of Last-Modified)."""
    fields: dict[str, Any] = {
        "ContentLength": int(headers.get("Content-Length", 0)),
        "LastModified": parse_time(headers["Last-Modified"]),
        "Metadata": {name[11:]: value for name, value in headers.items()
                     if name[:11].lower() == "x-amz-meta-"},
    }
    for field, header in (("ETag", "ETag"), ("ContentType", "Content-Type")):
        if header in headers:
            fields[field] = headers[header]
    return fields
