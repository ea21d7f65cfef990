"""The reader's read-ahead against the moto server: what a sequential read
requests (parallel ranged GETs in a growing window), what a random read
requests (only its bytes), the memory budget, and a change of the object
during a read (ESTALE or the new data, never a mix).

The Store is real; a thin wrapper around its ranged GETs records the ranges and
how many GETs were running at once.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import random
import threading
from collections.abc import Iterator

import pytest
from helpers import ACCESS_KEY, SECRET_KEY, MotoServer, wait_until

from s3mount.credentials import Credentials
from s3mount.errors import FsError
from s3mount.reader import READ_AHEAD_FIRST, READ_BACK, READ_PART, MiB, ObjectReader, ReadPool
from s3mount.store import Store, StoreSettings

KERNEL_READ = 128 * 1024  # what the kernel asks for at a time


class RecordingStore(Store):
    """Records every ranged GET; each waits (up to a quarter of a second) for
    another to run beside it, so GETs issued together are seen together, and
    GETs issued one after another never are."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ranges: list[tuple[int, int]] = []
        self.running = 0
        self.most_running = 0
        self._changed = threading.Condition()

    def get_range(self, key: str, start: int, end: int, etag: str | None = None) -> bytes:
        with self._recorded(start, end):
            return super().get_range(key, start, end, etag)

    def get_range_into(self, key: str, start: int, end: int, etag: str | None,
                       into: memoryview) -> int:
        with self._recorded(start, end):
            return super().get_range_into(key, start, end, etag, into)

    @contextlib.contextmanager
    def _recorded(self, start: int, end: int) -> Iterator[None]:
        with self._changed:
            self.ranges.append((start, end + 1))
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            self._changed.notify_all()
            self._changed.wait_for(lambda: self.running > 1, timeout=0.25)
        try:
            yield
        finally:
            with self._changed:
                self.running -= 1


@pytest.fixture
def store(s3_server: MotoServer, bucket: str) -> RecordingStore:
    settings = StoreSettings(bucket=bucket, url=s3_server.url, region="us-east-1",
                             path_style=True, max_connections=20)
    return RecordingStore(settings, Credentials(ACCESS_KEY, SECRET_KEY))


@pytest.fixture
def pool() -> Iterator[ReadPool]:
    running = ReadPool(10)
    yield running
    running.close()


def put(s3, bucket: str, key: str, size: int, seed: int = 1) -> tuple[bytes, str]:
    data = random.Random(seed).randbytes(size)
    etag = s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]
    return data, etag


def reader_of(store: Store, pool: ReadPool, key: str, etag: str, size: int) -> ObjectReader:
    def refresh() -> tuple[str, str, int]:
        info = store.head(key)
        assert info is not None
        return key, info.etag, info.size

    return ObjectReader(store, pool, key, etag, size, refresh, lambda: None)


def test_sequential_read_uses_parallel_ranges_in_a_growing_window(s3, bucket, store, pool):
    data, etag = put(s3, bucket, "big", 40 * MiB)
    reader = reader_of(store, pool, "big", etag, len(data))
    got = b"".join(reader.read(offset, KERNEL_READ)
                   for offset in range(0, len(data), KERNEL_READ))
    assert got == data
    ranges = sorted(store.ranges)
    # The parts tile the object exactly once: nothing fetched twice, nothing missed.
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    assert store.ranges[0] == (0, READ_AHEAD_FIRST)  # the first request, alone
    assert max(end - start for start, end in ranges) <= READ_PART
    assert store.most_running >= 2
    assert 6 <= len(ranges) <= 14  # whole parts once the window has grown
    reader.close()
    wait_until(lambda: pool.held == 0, 30, "the read-ahead to be given back")


def test_parts_are_received_into_reused_buffers_given_back_at_close(s3, bucket, store, pool,
                                                                   monkeypatch):
    """The parts of one stream take turns in a few buffers (memory already
    faulted in), and a closed reader leaves the pool nothing to hold."""
    data, etag = put(s3, bucket, "big", 128 * MiB)
    lent = []
    acquire = pool.buffers.acquire

    def recording_acquire(size: int):
        buffer = acquire(size)
        lent.append(id(buffer))
        return buffer

    monkeypatch.setattr(pool.buffers, "acquire", recording_acquire)
    reader = reader_of(store, pool, "big", etag, len(data))
    got = b"".join(reader.read(offset, KERNEL_READ)
                   for offset in range(0, len(data), KERNEL_READ))
    assert got == data
    assert len(lent) >= 16  # 128 MiB in parts of at most 8 MiB
    assert len(set(lent)) <= len(lent) // 2
    reader.close()
    wait_until(lambda: pool.held == 0, 30, "the read-ahead to be given back")
    assert pool.buffers.kept == 0


def test_the_window_of_a_stream_from_the_start_doubles_at_each_read(s3, bucket, store, pool):
    """Not once per window consumed: a whole-file reader that waited one round
    trip per doubling would read a big file slowly for its first megabytes."""
    data, etag = put(s3, bucket, "big", 40 * MiB)
    reader = reader_of(store, pool, "big", etag, len(data))
    assert reader.read(0, KERNEL_READ) == data[:KERNEL_READ]
    assert store.ranges == [(0, READ_AHEAD_FIRST)]  # a first read alone asks for little
    for offset in range(KERNEL_READ, 6 * KERNEL_READ, KERNEL_READ):
        assert reader.read(offset, KERNEL_READ) == data[offset:offset + KERNEL_READ]
    # Five reads later (768 KiB read, all within the first request), the window
    # has doubled five times, to its maximum, and is requested. (The GETs are
    # recorded when a pool thread starts them: on a busy machine that may be a
    # little after the read that requested them returned.)
    wait_until(lambda: max(end for _, end in store.ranges) >= pool.window - READ_PART, 10,
               "the whole window to be requested")
    reader.close()
    wait_until(lambda: pool.held == 0, 30, "the read-ahead to be given back")


def test_a_stream_in_the_middle_doubles_once_half_its_window_is_read(s3, bucket, store,
                                                                     pool):
    """A 1 MiB read in the middle of a big file (a column chunk, a database page)
    fetches a few MiB, not the whole window."""
    data, etag = put(s3, bucket, "big", 40 * MiB)
    reader = reader_of(store, pool, "big", etag, len(data))
    start = 16 * MiB
    for offset in range(start, start + MiB, KERNEL_READ):
        assert reader.read(offset, KERNEL_READ) == data[offset:offset + KERNEL_READ]
    assert max(end for _, end in store.ranges) <= start + MiB + 2 * READ_AHEAD_FIRST
    reader.close()
    wait_until(lambda: pool.held == 0, 30, "the read-ahead to be given back")


def test_random_reads_fetch_only_what_they_ask_for(s3, bucket, store, pool):
    data, etag = put(s3, bucket, "big", 24 * MiB)
    reader = reader_of(store, pool, "big", etag, len(data))
    rng = random.Random(5)
    offsets = [(2 * MiB * block + rng.randrange(MiB)) // 4096 * 4096 for block in range(1, 11)]
    rng.shuffle(offsets)
    for offset in offsets:
        assert reader.read(offset, 4096) == data[offset:offset + 4096]
    assert sorted(store.ranges) == sorted((offset, offset + 4096) for offset in offsets)
    assert store.most_running == 1
    assert pool.held == 0


def test_small_jumps_are_served_from_the_window(s3, bucket, store, pool):
    data, etag = put(s3, bucket, "f", 12 * MiB)
    reader = reader_of(store, pool, "f", etag, len(data))
    for offset in range(0, 2 * MiB, KERNEL_READ):
        assert reader.read(offset, KERNEL_READ) == data[offset:offset + KERNEL_READ]
    fetched = list(store.ranges)
    # The kernel's reads of one stream may come a little out of order.
    for offset in (2 * MiB + KERNEL_READ, 2 * MiB, 2 * MiB - READ_BACK // 2):
        assert reader.read(offset, KERNEL_READ) == data[offset:offset + KERNEL_READ]
    assert all(start >= 2 * MiB for start, _ in store.ranges[len(fetched):])
    assert sorted(store.ranges) == sorted(set(store.ranges))  # nothing asked twice
    # A jump far back starts over with only the bytes asked for (read-ahead parts
    # that were running when it came may still be recorded: they start at 2 MiB+).
    count = len(store.ranges)
    assert reader.read(0, 4096) == data[:4096]
    assert [r for r in store.ranges[count:] if r[0] < 2 * MiB] == [(0, 4096)]
    # Reads that follow it start a new stream.
    assert reader.read(4096, KERNEL_READ) == data[4096:4096 + KERNEL_READ]
    assert [r for r in store.ranges[count:] if r[0] < 2 * MiB] == [
        (0, 4096), (4096, 4096 + READ_AHEAD_FIRST)]
    reader.close()
    wait_until(lambda: pool.held == 0, 30, "the read-ahead to be given back")


def test_reads_past_the_end_and_small_objects(s3, bucket, store, pool):
    data, etag = put(s3, bucket, "small", 1000)
    reader = reader_of(store, pool, "small", etag, len(data))
    assert reader.read(0, KERNEL_READ) == data
    assert reader.read(1000, KERNEL_READ) == b""
    assert reader.read(990, KERNEL_READ) == data[990:]
    assert store.ranges == [(0, 1000)]


def test_read_ahead_stops_at_the_memory_budget(s3, bucket, store):
    data, etag = put(s3, bucket, "big", 24 * MiB)
    small_pool = ReadPool(10, total=3 * MiB)
    try:
        readers = [reader_of(store, small_pool, "big", etag, len(data)) for _ in range(3)]
        for offset in range(0, 4 * MiB, KERNEL_READ):
            for reader in readers:
                assert reader.read(offset, KERNEL_READ) == data[offset:offset + KERNEL_READ]
                # Needed bytes may go past the budget, read-ahead never does.
                assert small_pool.held <= 3 * MiB + 2 * len(readers) * READ_PART
        for reader in readers:
            reader.close()
        wait_until(lambda: small_pool.held == 0, 30, "the read-ahead to be given back")
    finally:
        small_pool.close()


def test_an_overwrite_during_a_sequential_read_is_estale_never_a_mix(s3, bucket, store, pool):
    old, etag = put(s3, bucket, "changing", 24 * MiB, seed=1)
    reader = reader_of(store, pool, "changing", etag, len(old))
    got = reader.read(0, KERNEL_READ)
    put(s3, bucket, "changing", len(old), seed=2)
    with pytest.raises(FsError) as stale:
        for offset in range(KERNEL_READ, len(old), KERNEL_READ):
            got += reader.read(offset, KERNEL_READ)
    assert stale.value.errno == errno.ESTALE
    assert got == old[:len(got)]  # what was served is all of the old version


def test_a_change_before_the_first_read_gives_the_new_data(s3, bucket, store, pool):
    old, etag = put(s3, bucket, "replaced", 3 * MiB, seed=1)
    new, _ = put(s3, bucket, "replaced", 5 * MiB, seed=2)
    reader = reader_of(store, pool, "replaced", etag, len(old))
    got = b"".join(reader.read(offset, KERNEL_READ) for offset in range(0, len(new), KERNEL_READ))
    assert got == new
