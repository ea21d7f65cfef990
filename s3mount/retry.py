"""When a failed S3 request is worth another try, and how long to wait before it.

This is the only retry mechanism: botocore's own retries are off (see
store.Store), so that a request and the reading of its answer's body are
retried together, and every attempt is counted and logged in one place.

Retried: answers 5xx (except 501 Not Implemented) and 429, S3's throttling and
transient error codes (SlowDown, RequestTimeout, ...), connections that cannot
be opened, are reset or closed, time-outs (``connect_timeout``,
``readwrite_timeout``), answer bodies that are cut short or fail their
checksum, and credentials that could not be fetched (instance metadata, a
credential process). Not retried: every other answer (404, 403, 412 ...), TLS
certificate failures, bad parameters, and any other error.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import botocore.exceptions
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    MetadataRetrievalError,
    SSLError,
)

# Error codes of S3 and S3-compatible servers for throttling and passing trouble.
TRANSIENT_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequests", "TooManyRequestsException",
    "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "ServiceUnavailable", "PriorRequestNotComplete",
    # A body that reached the server damaged (its Content-MD5 or signed SHA-256 does
    # not match): sent again from the same bytes.
    "BadDigest", "XAmzContentSHA256Mismatch",
})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, with exponential backoff.

    The wait before retry n is drawn from [step/2, step], step = base_delay *
    2**(n-1) capped at max_delay ("equal jitter"): mounts that fail together
    spread out, and every wait is at least half its step, so the time a request
    keeps trying is bounded below as well as above.
    """

    retries: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (from 1)."""
        step = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return step / 2 + rng.uniform(0, step / 2)

    def longest_wait(self) -> float:
        """The most time all retries of one request can spend waiting (time-outs aside)."""
        return sum(min(self.max_delay, self.base_delay * 2 ** n) for n in range(self.retries))


def transient_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth a retry (a short text for the log), or None when it is not.

    Knows botocore's exceptions, OSError, and any exception with a true
    ``transient`` attribute (store.S3Error, bodies cut short or corrupted).
    """
    if getattr(exc, "transient", False):
        return str(getattr(exc, "detail", "") or type(exc).__name__)
    if isinstance(exc, ClientError):
        return transient_answer(http_status(exc), error_code(exc))
    if isinstance(exc, SSLError):
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            return None
        return "SSLError"
    if isinstance(exc, (botocore.exceptions.ConnectionError, HTTPClientError, IncompleteReadError,
                        FlexibleChecksumError, CredentialRetrievalError,
                        MetadataRetrievalError, OSError)):
        return type(exc).__name__
    return None


def transient_answer(status: int | None, code: str) -> str | None:
    """The reason to retry an error answer with this HTTP status and S3 code, or None."""
    if code in TRANSIENT_CODES:
        return code
    if status is not None and (status == 429 or (status >= 500 and status != 501)):
        return f"{code} ({status})" if code != str(status) else f"HTTP {status}"
    return None


def http_status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def error_code(exc: ClientError) -> str:
    """S3's error code; the bare HTTP status for answers without a body (HEAD)."""
    error: dict[str, Any] = exc.response.get("Error", {})
    return str(error.get("Code") or http_status(exc))
