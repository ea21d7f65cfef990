"""Statistics through a real mount: the virtual extended attribute
user.s3mount.stats of the mount root, and the log line on SIGUSR1.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess

import pytest
from helpers import wait_until
from s3proxy import Answer, Rule, operation_is

STATS = "user.s3mount.stats"


def read_stats(mountpoint) -> dict:
    """As a user would: getfattr, in a process of its own (see StatsXattr)."""
    result = subprocess.run(["getfattr", "-n", STATS, "--only-values", str(mountpoint)],
                            capture_output=True, check=True)
    return json.loads(result.stdout)


def test_counters_follow_a_known_workload(s3, bucket, mount, proxy):
    s3.put_object(Bucket=bucket, Key="existing", Body=b"e" * 100_000)
    # No delayed directory-time update may slip a request in between.
    m = mount(bucket, "update_parent_dir_stat=0", url=proxy.url)
    before = read_stats(m.path)
    assert before["requests_total"] == sum(before["requests"].values())

    seen_before = proxy.counts()
    for number in range(3):
        (m.path / f"new{number}").write_bytes(b"n" * 50_000)
    after = read_stats(m.path)
    assert after["requests"].get("PutObject", 0) - before["requests"].get("PutObject", 0) == 3
    assert after["bytes_up"] - before["bytes_up"] >= 3 * 50_000
    # The statistics count what the server saw, and reading them costs nothing.
    assert (after["requests_total"] - before["requests_total"]
            == sum(proxy.counts().values()) - sum(seen_before.values()))

    assert (m.path / "existing").read_bytes() == b"e" * 100_000
    read = read_stats(m.path)
    assert read["requests"].get("GetObject", 0) > after["requests"].get("GetObject", 0)
    assert read["bytes_down"] - after["bytes_down"] >= 100_000
    assert read["data_reads"]["bytes"] - after["data_reads"]["bytes"] == 100_000

    # A second stat of the same name within the cache time is a hit; a name that
    # does not exist is a miss, then a negative hit.
    os.stat(m.path / "existing")
    for _ in range(2):
        assert not (m.path / "absent").exists()
    cached = read_stats(m.path)
    assert cached["stat_cache"]["hits"] > read["stat_cache"]["hits"]
    assert cached["stat_cache"]["negative_hits"] > read["stat_cache"]["negative_hits"]
    assert cached["not_found"] > read["not_found"]
    assert cached["errors"] == {}


def test_errors_and_listing_cache_are_counted(s3, bucket, mount, proxy):
    s3.put_object(Bucket=bucket, Key="dir/f", Body=b"x")
    m = mount(bucket, url=proxy.url)
    os.listdir(m.path / "dir")
    os.listdir(m.path / "dir")
    stats = read_stats(m.path)
    assert stats["listing_cache"]["misses"] >= 1
    assert stats["listing_cache"]["hits"] >= 1

    assert os.stat(m.path / "dir/f").st_size == 1  # its attributes, ETag included, cached
    s3.put_object(Bucket=bucket, Key="dir/f", Body=b"changed")  # a stale ETag on read
    fd = os.open(m.path / "dir/f", os.O_RDONLY)
    try:
        os.pread(fd, 1, 0)
    finally:
        os.close(fd)
    # moto answers the If-Match of a stale read with 412 PreconditionFailed.
    errors = read_stats(m.path)["errors"]
    assert errors.get("GetObject PreconditionFailed", 0) >= 1, errors


def test_the_attribute_is_virtual(s3, bucket, mount, proxy):
    m = mount(bucket, url=proxy.url)
    read_stats(m.path)
    before = proxy.counts()
    value = os.getxattr(m.path, STATS)
    assert json.loads(value)["uptime_seconds"] >= 0
    assert proxy.counts() == before  # no request
    assert STATS not in os.listxattr(m.path)
    for change in (lambda: os.setxattr(m.path, STATS, b"{}"),
                   lambda: os.removexattr(m.path, STATS)):
        with pytest.raises(OSError) as refused:
            change()
        assert refused.value.errno == errno.EPERM
    # Only the root has it; elsewhere it is an ordinary (here absent) attribute.
    (m.path / "file").write_bytes(b"x")
    with pytest.raises(OSError) as absent:
        os.getxattr(m.path / "file", STATS)
    assert absent.value.errno == errno.ENODATA
    # Nothing was stored for it (the root's own attributes would go to key "/").
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["file"]


def test_sigusr1_logs_the_statistics_and_the_mount_goes_on(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="f", Body=b"data")
    m = mount(bucket)  # the default dbglevel (warning): the statistics show anyway
    assert (m.path / "f").read_bytes() == b"data"
    for round_number in (1, 2):
        m.process.send_signal(signal.SIGUSR1)
        wait_until(lambda n=round_number: m.log().count("statistics: ") == n, 30,
                   "the statistics in the log")
    line = next(line for line in m.log().splitlines() if "statistics: " in line)
    stats = json.loads(line.split("statistics: ", 1)[1])
    assert stats["requests"]["GetObject"] >= 1
    assert stats["bytes_down"] >= 4
    # Still serving, and it stops cleanly (the fixture checks exit 0, no traceback).
    (m.path / "after").write_bytes(b"still mounted")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"still mounted"
    # llfuse's own SIGUSR1 to its workers as the loop ends logs nothing.
    assert m.stop() == 0
    assert m.log().count("statistics: ") == 2


def test_retries_are_counted(s3, bucket, mount, proxy):
    m = mount(bucket, "update_parent_dir_stat=0", url=proxy.url)
    before = read_stats(m.path)
    proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown"), times=2))
    (m.path / "retried").write_bytes(b"in the end")
    assert s3.get_object(Bucket=bucket, Key="retried")["Body"].read() == b"in the end"
    after = read_stats(m.path)
    assert after["retries"] - before["retries"] == 2
    assert after["errors"] == before["errors"]  # the request succeeded in the end
