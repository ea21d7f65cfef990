"""Limits of the cache directory: a full disk, max_cache_size and
ensure_diskfree give the writer ENOSPC (never EIO, never a silently short
file), and with async_upload writers wait for uploads to free space first."""

from __future__ import annotations

import errno
import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import body
from s3proxy import Answer, Rule

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path):
    """An 8 MiB tmpfs as the cache directory's disk (the tests run as root).

    Requested before ``mount``, so it is unmounted after the daemon is gone."""
    path = tmp_path / "small-disk"
    path.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=True)


def write_until_error(path: Path, data: bytes, chunk: int = 128 * 1024) -> tuple[int, int]:
    """Write ``data`` in chunks; return (bytes written, errno of the failure or 0).
    The failure may also come from close()."""
    written, failure = 0, 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while written < len(data):
            try:
                written += os.write(fd, data[written:written + chunk])
            except OSError as exc:
                failure = exc.errno
                break
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            failure = failure or exc.errno
    return written, failure


def test_a_full_cache_disk_is_enospc_and_never_a_short_file(small_disk, s3, bucket, mount):
    m = mount(bucket, f"use_cache={small_disk}")
    data = random.Random(1).randbytes(16 * MiB)
    written, failure = write_until_error(m.path / "big.bin", data)
    assert failure == errno.ENOSPC
    assert 0 < written < len(data)
    # What the writer was told is there, byte for byte; nothing beyond.
    assert os.stat(m.path / "big.bin").st_size == written
    assert body(s3, bucket, "big.bin") == data[:written]
    # The disk is free again once the file is uploaded and closed.
    (m.path / "small.txt").write_bytes(b"still works\n")
    assert body(s3, bucket, "small.txt") == b"still works\n"


def test_max_cache_size_gives_enospc_when_nothing_can_be_freed(s3, bucket, mount, tmp_path):
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "max_cache_size=2")
    data = random.Random(2).randbytes(3 * MiB)
    written, failure = write_until_error(m.path / "big.bin", data)
    assert failure == errno.ENOSPC
    assert 0 < written <= 2 * MiB
    assert body(s3, bucket, "big.bin") == data[:written]


def test_ensure_diskfree_keeps_space_free(small_disk, s3, bucket, mount):
    m = mount(bucket, f"use_cache={small_disk}", "ensure_diskfree=5")
    data = random.Random(3).randbytes(6 * MiB)
    written, failure = write_until_error(m.path / "big.bin", data)
    assert failure == errno.ENOSPC
    assert written <= 3 * MiB
    statvfs = os.statvfs(small_disk)
    assert statvfs.f_bavail * statvfs.f_frsize >= 5 * MiB - 128 * 1024


def test_async_writers_wait_for_uploads_to_free_space(s3, bucket, mount, proxy, tmp_path):
    def slow_put(request) -> bool:
        # Holds every upload back a while (the proxy decides one request at a time),
        # so the writers surely outrun them.
        if request.operation == "PutObject":
            time.sleep(0.3)
        return False

    proxy.add(Rule(slow_put, Answer(500, "InternalError")))
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "async_upload", "max_cache_size=3",
              "dbglevel=debug", url=proxy.url)
    rng = random.Random(4)
    expected = {f"f{n}.bin": rng.randbytes(2 * MiB) for n in range(5)}
    # With the listing cached, creating the files needs no request (which the slow
    # proxy would hold back too).
    assert os.listdir(m.path) == []
    for name, data in expected.items():
        written, failure = write_until_error(m.path / name, data)
        assert (written, failure) == (len(data), 0), name
    assert "a write waits for uploads to free cache space" in m.log()
    assert m.stop() == 0
    for name, data in expected.items():
        assert body(s3, bucket, name) == data


def test_a_writer_waits_for_the_upload_at_another_files_close(s3, bucket, mount, proxy,
                                                              tmp_path):
    # Without async_upload the close of a.bin uploads it; b.bin's writer, short of
    # space meanwhile, must wait until a.bin is out of the open files (its blocks
    # move to the read cache, which can be evicted), not fail once the upload ends.
    put_started = threading.Event()

    def slow_put_of_a(request) -> bool:
        if request.operation == "PutObject" and request.target.endswith("/a.bin"):
            put_started.set()
            time.sleep(0.5)
        return False

    proxy.add(Rule(slow_put_of_a, Answer(500, "InternalError")))
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "max_cache_size=3",
              "dbglevel=debug", url=proxy.url)
    assert os.listdir(m.path) == []
    rng = random.Random(5)
    a, b = rng.randbytes(2 * MiB), rng.randbytes(2 * MiB)
    outcome: list[tuple[int, int]] = []
    writer_a = threading.Thread(
        target=lambda: outcome.append(write_until_error(m.path / "a.bin", a)))
    writer_a.start()
    assert put_started.wait(30)
    assert write_until_error(m.path / "b.bin", b) == (len(b), 0)
    writer_a.join(30)
    assert outcome == [(len(a), 0)]
    assert "a write waits for uploads to free cache space" in m.log()
    assert body(s3, bucket, "a.bin") == a
    assert body(s3, bucket, "b.bin") == b
