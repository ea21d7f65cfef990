"""The written-prefix tracking of streaming uploads (pure logic of s3mount/streaming.py)."""

from __future__ import annotations

import random

from s3mount.streaming import MAX_RANGES, Stream, remember_written


def prefix_after(writes: list[tuple[int, int]]) -> int:
    stream = Stream("key", 10)
    for start, end in writes:
        stream._written = remember_written(stream._written, start, end)
    return stream.prefix


def test_sequential_writes_make_a_prefix():
    assert prefix_after([(0, 4), (4, 8), (8, 9)]) == 9


def test_writes_out_of_order_join_the_prefix_once_the_gap_is_filled():
    """Several FUSE workers may hand the writes of one writer over out of order."""
    assert prefix_after([(4, 8), (8, 12)]) == 0
    assert prefix_after([(4, 8), (8, 12), (0, 4)]) == 12


def test_a_hole_stops_the_prefix():
    assert prefix_after([(0, 4), (6, 8)]) == 4


def test_shuffled_chunks_give_the_whole_prefix():
    chunks = [(n * 3, n * 3 + 3) for n in range(200)]
    random.Random(1).shuffle(chunks)
    assert prefix_after(chunks) == 600


def test_ranges_past_the_limit_are_dropped_from_the_far_end():
    ranges: list[tuple[int, int]] = []
    for n in range(1, 3 * MAX_RANGES):
        ranges = remember_written(ranges, n * 10, n * 10 + 5)
    assert len(ranges) == MAX_RANGES
    assert ranges[0] == (10, 15)
    ranges = remember_written(ranges, 0, 10)
    assert ranges[0] == (0, 15)
