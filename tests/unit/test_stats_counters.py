"""The counters of stats.py and the per-process snapshot of the virtual attribute."""

from __future__ import annotations

import json

from s3mount.stats import Stats, StatsXattr, api_name


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_api_names():
    assert api_name("put_object") == "PutObject"
    assert api_name("list_objects_v2") == "ListObjectsV2"
    assert api_name("upload_part_copy") == "UploadPartCopy"


def test_requests_bytes_retries_and_errors():
    stats = Stats(Clock())
    stats.request("put_object", {"Key": "k", "Body": b"12345"})
    stats.answered("put_object", {})
    stats.count("retries", 3)
    stats.request("upload_part", {"Key": "k", "Body": object(), "ContentLength": 7})
    stats.answered("upload_part", {})
    stats.request("get_object", {"Key": "k", "Range": "bytes=0-9"})
    stats.answered("get_object", {"ContentLength": 10, "ResponseMetadata": {}})
    stats.request("head_object", {"Key": "gone"})
    stats.failed("head_object", "404")
    stats.request("get_object", {"Key": "k"})
    stats.failed("get_object", "PreconditionFailed")
    stats.request("list_objects_v2", {"Prefix": ""})
    stats.failed("list_objects_v2", "EndpointConnectionError")
    stats.count("stat_cache_hits", 3)
    snap = stats.snapshot()
    assert snap["requests"] == {"GetObject": 2, "HeadObject": 1, "ListObjectsV2": 1,
                                "PutObject": 1, "UploadPart": 1}
    assert snap["requests_total"] == 6
    assert (snap["bytes_up"], snap["bytes_down"], snap["retries"]) == (12, 10, 3)
    assert snap["not_found"] == 1
    assert snap["errors"] == {"GetObject PreconditionFailed": 1,
                              "ListObjectsV2 EndpointConnectionError": 1}
    assert snap["stat_cache"]["hits"] == 3
    assert json.loads(stats.to_json()) == snap
    assert stats.requests() == {"put_object": 1, "get_object": 2, "head_object": 1,
                                "list_objects_v2": 1, "upload_part": 1}


def test_a_process_reading_twice_at_once_gets_the_same_snapshot():
    clock = Clock()
    stats = Stats(clock)
    xattr = StatsXattr(stats, reuse=0.5, clock=clock)
    first = xattr.value(pid=7)
    stats.request("put_object", {"Body": b"x" * 1000})  # the value grows meanwhile
    assert xattr.value(pid=7) == first  # size probe and read agree
    assert xattr.value(pid=8) != first  # another process sees the change
    clock.now += 1
    assert json.loads(xattr.value(pid=7))["bytes_up"] == 1000
