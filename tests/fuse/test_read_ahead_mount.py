"""Reads of large files through a real mount: sequential, random and mixed
reads return the bucket's bytes; a sequential read is served by parallel
ranged GETs (of at most READ_PART bytes, tiling the file), random reads fetch
no read-ahead window; an overwrite during a read is ESTALE or the new data,
never a mix. Requests are recorded at the proxy in front of the server.
"""

from __future__ import annotations

import errno
import itertools
import os
import random

from s3proxy import Answer, Rule

from s3mount.block_cache import BLOCK
from s3mount.reader import READ_AHEAD_FIRST, READ_PART

MiB = 1024 * 1024


def record_gets(proxy) -> list[tuple[int, int]]:
    """The byte ranges [start, end) of every GetObject that passes the proxy."""
    ranges: list[tuple[int, int]] = []

    def watch(request) -> bool:
        if request.operation == "GetObject":
            first, _, last = request.headers["range"].removeprefix("bytes=").partition("-")
            ranges.append((int(first), int(last) + 1))
        return False

    proxy.add(Rule(watch, Answer(500, "InternalError")))
    return ranges


def put_random(s3, bucket: str, key: str, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def test_sequential_read_is_parallel_ranges_that_tile_the_file(s3, bucket, mount, proxy):
    data = put_random(s3, bucket, "big", 40 * MiB + 12345, seed=1)
    m = mount(bucket, url=proxy.url)
    ranges = record_gets(proxy)
    with open(m.path / "big", "rb") as f:
        assert f.read() == data
    ordered = sorted(ranges)
    assert ordered[0][0] == 0 and ordered[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ordered)), ordered
    # The first request, rounded up to whole blocks of the disk cache.
    assert ranges[0] == (0, -(-READ_AHEAD_FIRST // BLOCK) * BLOCK)
    assert max(end - start for start, end in ranges) <= READ_PART
    assert len(ranges) >= 6  # the window grows, in parts (fetched in parallel: see
    # tests/store/test_read_ahead.py, which watches them run)


def test_random_reads_fetch_only_their_bytes(s3, bucket, mount, proxy):
    data = put_random(s3, bucket, "big", 32 * MiB, seed=2)
    m = mount(bucket, url=proxy.url)
    ranges = record_gets(proxy)
    rng = random.Random(3)
    # Far apart and out of order, so no two reads continue each other.
    offsets = [(3 * MiB * block + rng.randrange(MiB)) // 4096 * 4096 for block in range(1, 10)]
    rng.shuffle(offsets)
    fd = os.open(m.path / "big", os.O_RDONLY)
    try:
        for offset in offsets:
            assert os.pread(fd, 4096, offset) == data[offset:offset + 4096]
    finally:
        os.close(fd)
    assert len(ranges) == len(offsets)
    # The kernel may round a read up to its own read-ahead (128 KiB at most), but
    # no read-ahead window of the daemon is fetched.
    assert all(end - start <= 128 * 1024 for start, end in ranges), ranges
    assert sum(end - start for start, end in ranges) < READ_AHEAD_FIRST


def test_mixed_reads_return_the_bucket_bytes(s3, bucket, mount):
    data = put_random(s3, bucket, "big", 30 * MiB + 777, seed=4)
    m = mount(bucket)
    rng = random.Random(5)
    fd = os.open(m.path / "big", os.O_RDONLY)
    try:
        position = 0
        for _ in range(60):
            choice = rng.random()
            if choice < 0.5:  # go on sequentially
                size = rng.choice([4096, 65536, 131072, 1 << 20])
            elif choice < 0.7:  # a small jump forward
                position += rng.randrange(1, 4 * MiB)
                size = rng.randrange(1, 300_000)
            elif choice < 0.85:  # a small jump back
                position = max(0, position - rng.randrange(1, MiB))
                size = rng.randrange(1, 300_000)
            else:  # anywhere
                position = rng.randrange(len(data) + 100)
                size = rng.randrange(1, 2 * MiB)
            got = os.pread(fd, size, position)
            assert got == data[position:position + size], (position, size)
            position += len(got)
    finally:
        os.close(fd)
    # Several descriptors reading the same file at once.
    handles = [open(m.path / "big", "rb") for _ in range(3)]  # noqa: SIM115
    try:
        for offset in range(0, len(data), 3 * MiB):
            for number, f in enumerate(handles):
                start = offset + number * 4096
                f.seek(start)
                assert f.read(MiB) == data[start:start + MiB]
    finally:
        for f in handles:
            f.close()


def test_overwrite_during_a_sequential_read_is_estale_or_new_never_a_mix(s3, bucket, mount):
    old = put_random(s3, bucket, "changing", 24 * MiB, seed=6)
    new = random.Random(7).randbytes(len(old))
    # A window smaller than the file, so that reading on fetches after the overwrite.
    m = mount(bucket, "read_ahead_max=8")
    got = b""
    fd = os.open(m.path / "changing", os.O_RDONLY)
    try:
        got += os.read(fd, MiB)
        s3.put_object(Bucket=bucket, Key="changing", Body=new)
        try:
            while chunk := os.read(fd, MiB):
                got += chunk
        except OSError as exc:
            assert exc.errno == errno.ESTALE
        else:
            raise AssertionError("the whole old version was read after it was replaced")
    finally:
        os.close(fd)
    assert got == old[:len(got)]
    # A new open reads the new version.
    with open(m.path / "changing", "rb") as f:
        assert f.read() == new
