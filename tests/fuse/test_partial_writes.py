"""Writes into part of a block of an existing object do not wait for a download:
the written ranges are recorded, and the object's other bytes are filled in
when the block is read or uploaded, with one ranged GET per run of blocks, in
the part's own upload thread. Checked in the bucket and by the requests the
rule proxy saw."""

from __future__ import annotations

import contextlib
import os
import random

from daemons import Daemons
from helpers import wait_until
from s3proxy import Answer, Rule, operation_is

MiB = 1024 * 1024
SMALL_PARTS = ("multipart_threshold=5", "multipart_size=5")


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_random_small_writes_download_nothing_until_the_upload(s3, bucket, mount, proxy):
    size = 40 * MiB  # 8 parts of 5 MiB
    data = bytearray(random.Random(1).randbytes(size))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    m = mount(bucket, *SMALL_PARTS, url=proxy.url)
    rng = random.Random(2)
    # 12 writes into parts 1, 3 and 6 (numbered from 0); the others are untouched.
    offsets = [part * 5 * MiB + rng.randrange(5 * MiB // 4096) * 4096
               for part in (1, 1, 1, 3, 3, 3, 3, 6, 6, 6, 6, 6)]
    fd = os.open(m.path / "big", os.O_RDWR)
    try:
        for offset in offsets:
            chunk = rng.randbytes(4096)
            os.pwrite(fd, chunk, offset)
            data[offset:offset + 4096] = chunk
        assert proxy.counts()["GetObject"] == 0, "a partial write waited for a download"
    finally:
        os.close(fd)
    assert body(s3, bucket, "big") == bytes(data)
    counts = proxy.counts()
    # The rest of each dirty part comes with at most two GETs (one, unless the
    # written blocks leave gaps that a single range would not be worth).
    assert counts["GetObject"] <= 3, counts
    assert counts["UploadPart"] == 3, counts
    assert counts["UploadPartCopy"] == 5, counts


def test_small_writes_into_a_file_read_before_take_its_bytes_from_the_read_cache(
        s3, bucket, mount, proxy):
    size = 20 * MiB  # 4 parts of 5 MiB
    data = bytearray(random.Random(5).randbytes(size))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    m = mount(bucket, *SMALL_PARTS, url=proxy.url)
    assert (m.path / "big").read_bytes() == bytes(data)
    gets_of_the_read = proxy.counts()["GetObject"]
    assert gets_of_the_read > 0
    fd = os.open(m.path / "big", os.O_RDWR)
    try:
        for offset in (5 * MiB + 4096, 5 * MiB + 3 * MiB + 10, 15 * MiB + 77):
            os.pwrite(fd, b"X" * 100, offset)
            data[offset:offset + 100] = b"X" * 100
    finally:
        os.close(fd)
    assert body(s3, bucket, "big") == bytes(data)
    counts = proxy.counts()
    # The parts 1 and 3 were filled from the blocks cached by the read.
    assert counts["GetObject"] == gets_of_the_read, counts
    assert counts["UploadPart"] == 2, counts
    assert counts["UploadPartCopy"] == 2, counts


def test_a_partly_written_block_reads_back_merged(s3, bucket, mount, proxy):
    size = 12 * MiB
    data = bytearray(random.Random(3).randbytes(size))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    m = mount(bucket, *SMALL_PARTS, url=proxy.url)
    fd = os.open(m.path / "big", os.O_RDWR)
    try:
        # Two writes into one block, a third across a block boundary.
        for offset, chunk in ((MiB + 100, b"A" * 10), (MiB + 5000, b"B" * 300),
                              (3 * MiB - 7, b"C" * 20)):
            os.pwrite(fd, chunk, offset)
            data[offset:offset + len(chunk)] = chunk
        assert os.pread(fd, 2 * MiB, MiB) == bytes(data[MiB:3 * MiB])
        assert os.pread(fd, 4096, 3 * MiB - 2048) == bytes(data[3 * MiB - 2048:3 * MiB + 2048])
        # Written again after the fill: the block is whole now.
        os.pwrite(fd, b"D" * 5, MiB + 102)
        data[MiB + 102:MiB + 107] = b"D" * 5
        assert os.pread(fd, 64, MiB + 90) == bytes(data[MiB + 90:MiB + 154])
    finally:
        os.close(fd)
    assert body(s3, bucket, "big") == bytes(data)


def test_partial_writes_then_truncate_and_extend(s3, bucket, mount):
    size = 8 * MiB
    data = bytearray(random.Random(4).randbytes(size))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    m = mount(bucket, *SMALL_PARTS)
    fd = os.open(m.path / "big", os.O_RDWR)
    try:
        os.pwrite(fd, b"x" * 10, 2 * MiB + 10)
        os.pwrite(fd, b"y" * 10, 5 * MiB + 10)
        os.ftruncate(fd, 5 * MiB + 15)  # cuts through the second partial block
        os.pwrite(fd, b"z" * 10, 6 * MiB)  # past the end: a hole before it
    finally:
        os.close(fd)
    data[2 * MiB + 10:2 * MiB + 20] = b"x" * 10
    data[5 * MiB + 10:5 * MiB + 20] = b"y" * 10
    expected = bytes(data[:5 * MiB + 15]) + bytes(6 * MiB - (5 * MiB + 15)) + b"z" * 10
    assert body(s3, bucket, "big") == expected


def test_a_write_into_a_journaled_partial_block_survives_a_kill(
        s3, bucket, proxy, tmp_path, s3_server, passwd_file, daemon_env):
    """The journal record names block 6 partial (only "first" written); a later
    write into its gap must not be filled from the object by the recovery."""
    data = bytearray(random.Random(5).randbytes(12 * MiB))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    proxy.add(Rule(operation_is("CreateMultipartUpload"), Answer(503, "SlowDown")))
    cache = tmp_path / "cache"
    daemons = Daemons(tmp_path, s3_server.url, passwd_file, daemon_env)
    try:
        m = daemons.start(bucket, f"use_cache={cache}", "async_upload", "retries=0",
                          *SMALL_PARTS, url=proxy.url)
        with open(m.path / "big", "r+b") as f:
            f.seek(6 * MiB + 5)
            f.write(b"first")
        wait_until(lambda: bool(list(cache.glob("*/journal/*/*.json"))), 10,
                   "the journal record")
        fd = os.open(m.path / "big", os.O_RDWR)
        os.pwrite(fd, b"second", 6 * MiB + 50)
        daemons.kill(m)
        with contextlib.suppress(OSError):
            os.close(fd)  # the mount is gone
        daemons.start(bucket, f"use_cache={cache}", *SMALL_PARTS)
    finally:
        failures = daemons.close()
    assert not failures, "\n".join(failures)
    data[6 * MiB + 5:6 * MiB + 10] = b"first"
    data[6 * MiB + 50:6 * MiB + 56] = b"second"
    assert body(s3, bucket, "big") == bytes(data)
