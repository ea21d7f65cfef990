"""Write-back mode (-o async_upload): close() returns once the data is in the
journal, uploads run in the background, fsync() waits for the upload, failures
are retried and reported by a later fsync()/close(), and the new content is
what reads, stats and listings show meanwhile."""

from __future__ import annotations

import errno
import os

import pytest
from helpers import wait_until
from s3proxy import Answer, Rule, operation_is


def in_bucket(s3, bucket: str, key: str) -> bytes | None:
    try:
        return s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None


def test_close_returns_before_the_upload_and_failures_are_retried(
        s3, bucket, mount, proxy, tmp_path):
    refused = proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown")))
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "async_upload", "retries=0",
              url=proxy.url)
    path = m.path / "report.txt"
    path.write_bytes(b"written while S3 refuses\n")  # close() succeeds
    wait_until(lambda: refused.fired > 0, 30, "a background upload")
    assert in_bucket(s3, bucket, "report.txt") is None
    # Meanwhile the mount shows the new file and its content.
    assert path.read_bytes() == b"written while S3 refuses\n"
    assert os.stat(path).st_size == 25
    assert "report.txt" in os.listdir(m.path)
    # fsync() waits for an upload, which fails: EIO, as does the next close().
    fd = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as caught:
            os.fsync(fd)
        assert caught.value.errno == errno.EIO
    finally:
        with pytest.raises(OSError) as caught:
            os.close(fd)
        assert caught.value.errno == errno.EIO
    assert "upload of report.txt failed" in m.log()
    proxy.rules.clear()
    wait_until(lambda: in_bucket(s3, bucket, "report.txt") is not None, 60,
               "the retried upload")
    assert in_bucket(s3, bucket, "report.txt") == b"written while S3 refuses\n"


def test_fsync_waits_for_the_upload(s3, bucket, mount, tmp_path):
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "async_upload")
    fd = os.open(m.path / "db.log", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"committed\n")
        os.fsync(fd)
        assert in_bucket(s3, bucket, "db.log") == b"committed\n"  # before close()
    finally:
        os.close(fd)


def test_unmount_waits_for_pending_uploads(s3, bucket, mount, tmp_path):
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "async_upload")
    expected = {f"f{n}.txt": f"content {n}\n".encode() * (n + 1) for n in range(30)}
    for name, data in expected.items():
        (m.path / name).write_bytes(data)
    assert m.stop() == 0
    for name, data in expected.items():
        assert in_bucket(s3, bucket, name) == data
    assert list((tmp_path / "cache").glob("*/journal/*/*.json")) == []


def test_async_upload_without_use_cache_warns(s3, bucket, mount):
    m = mount(bucket, "async_upload")
    (m.path / "x").write_bytes(b"x")
    assert "async_upload without use_cache" in m.log()
    wait_until(lambda: in_bucket(s3, bucket, "x") == b"x", 30, "the upload")
