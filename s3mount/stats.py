"""Per-mount statistics: S3 requests by operation, bytes sent and received,
retries, error answers, and the hits and misses of the caches.

Counters only ever grow. They are read as one JSON object: through the
virtual extended attribute ``user.s3mount.stats`` of the mount root (see
``StatsXattr``), and in the log on SIGUSR1 and at unmount.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sized
from typing import Any

log = logging.getLogger(__name__)
# Statistics asked for with SIGUSR1 are logged whatever dbglevel says.
log.setLevel(logging.INFO)

STATS_XATTR = "user.s3mount.stats"
# Answers that are how S3 says "no such object"; a lookup of a new name gets one,
# so they are counted apart from real errors.
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def api_name(operation: str) -> str:
    """botocore's method name as S3 names the operation: put_object -> PutObject."""
    return "".join(word[:1].upper() + word[1:] for word in operation.split("_"))


class Stats:
    """The counters of one mount; every method is safe to call from any thread."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._requests: Counter[str] = Counter()
        self._errors: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()

    # The store's hook: one call per request, one per answer.

    def request(self, operation: str, params: Mapping[str, Any]) -> None:
        """A request is about to be sent (``params``: botocore's parameters)."""
        body = params.get("Body")
        # Bytes, or a body file that knows its length; any other stream comes with it.
        size = len(body) if isinstance(body, Sized) else params.get("ContentLength", 0)
        with self._lock:
            self._requests[operation] += 1
            self._counts["bytes_up"] += size

    def answered(self, operation: str, response: Mapping[str, Any]) -> None:
        """A successful answer: the body length of a GET."""
        length = response.get("ContentLength", 0) if operation == "get_object" else 0
        with self._lock:
            self._counts["bytes_down"] += length

    def failed(self, operation: str, code: str) -> None:
        """An error answer with S3's ``code``, or a failure without an answer."""
        with self._lock:
            if code in NOT_FOUND_CODES:
                self._counts["not_found"] += 1
            else:
                self._errors[f"{api_name(operation)} {code}"] += 1

    # Caches.

    def count(self, name: str, amount: int = 1) -> None:
        """Add to a named counter, e.g. "stat_cache_hits"."""
        with self._lock:
            self._counts[name] += amount

    def requests(self) -> dict[str, int]:
        """Requests by botocore operation name (put_object, ...)."""
        with self._lock:
            return dict(self._requests)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            counts = Counter(self._counts)
            requests = {api_name(op): n for op, n in sorted(self._requests.items())}
            errors = dict(sorted(self._errors.items()))
        return {
            "uptime_seconds": round(self._clock() - self._started, 3),
            "requests": requests,
            "requests_total": sum(requests.values()),
            "bytes_up": counts["bytes_up"],
            "bytes_down": counts["bytes_down"],
            "retries": counts["retries"],
            "not_found": counts["not_found"],
            "errors": errors,
            "stat_cache": {"hits": counts["stat_cache_hits"],
                           "negative_hits": counts["stat_cache_negative_hits"],
                           "listed": counts["stat_cache_listed"],
                           "misses": counts["stat_cache_misses"]},
            "listing_cache": {"hits": counts["listing_cache_hits"],
                              "misses": counts["listing_cache_misses"]},
            "data_reads": {"hits": counts["read_hits"],
                           "misses": counts["read_misses"],
                           "bytes": counts["read_bytes"]},
            "disk_cache": {"hits": counts["disk_cache_hits"],
                           "misses": counts["disk_cache_misses"],
                           "stored": counts["disk_cache_stored"],
                           "evicted_bytes": counts["disk_cache_evicted_bytes"]},
        }

    def to_json(self) -> str:
        return json.dumps(self.snapshot(), separators=(",", ":"))


class StatsXattr:
    """The value of the virtual extended attribute, per reading process.

    The kernel asks for an extended attribute twice (its size, then its value)
    and refuses the second answer if it grew meanwhile, as counters do on a
    busy mount. So a process that asks again within ``reuse`` seconds gets the
    same snapshot.
    """

    def __init__(self, stats: Stats, reuse: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._stats = stats
        self._reuse = reuse
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[int, tuple[float, bytes]] = {}

    def value(self, pid: int) -> bytes:
        now = self._clock()
        with self._lock:
            self._recent = {p: (t, v) for p, (t, v) in self._recent.items()
                            if now - t < self._reuse}
            if pid in self._recent:
                return self._recent[pid][1]
            value = (self._stats.to_json() + "\n").encode()
            self._recent[pid] = (now, value)
            return value


def log_stats(stats: Stats) -> None:
    """Log the statistics (on SIGUSR1)."""
    log.info("statistics: %s", stats.to_json())
