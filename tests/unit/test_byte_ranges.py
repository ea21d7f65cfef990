"""The byte-range helpers of partial blocks (files.add_range, files.gaps)."""

from __future__ import annotations

import random

from s3mount.files import add_range, gaps


def test_add_range_merges_touching_and_overlapping_ranges():
    assert add_range([], 5, 10) == [(5, 10)]
    assert add_range([(0, 5)], 5, 10) == [(0, 10)]
    assert add_range([(0, 3), (8, 12)], 2, 9) == [(0, 12)]
    assert add_range([(0, 3), (8, 12)], 4, 6) == [(0, 3), (4, 6), (8, 12)]


def test_gaps_are_the_uncovered_parts():
    assert gaps([], 0, 10) == [(0, 10)]
    assert gaps([(2, 4), (6, 8)], 0, 10) == [(0, 2), (4, 6), (8, 10)]
    assert gaps([(0, 10)], 0, 10) == []
    assert gaps([(-5, 3), (9, 20)], 0, 10) == [(3, 9)]


def test_ranges_and_gaps_agree_with_a_byte_map():
    rng = random.Random(7)
    for _ in range(200):
        covered = [False] * 64
        ranges: list[tuple[int, int]] = []
        for _ in range(rng.randrange(6)):
            start = rng.randrange(64)
            end = rng.randrange(start, 65)
            ranges = add_range(ranges, start, end)
            covered[start:end] = [True] * (end - start)
        start, end = sorted((rng.randrange(65), rng.randrange(65)))
        uncovered = {i for a, b in gaps(ranges, start, end) for i in range(a, b)}
        assert uncovered == {i for i in range(start, end) if not covered[i]}
        assert all(a < b for a, b in ranges)
        assert all(ranges[i][1] < ranges[i + 1][0] for i in range(len(ranges) - 1))
