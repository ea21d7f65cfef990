"""The pool of transfer buffers (s3mount/buffers.py): reuse while transfers run,
nothing kept once none does, its bound, and the upload body over a buffer."""

from __future__ import annotations

import pytest

from s3mount.buffers import GRAIN, BufferBody, BufferPool

MiB = 1024 * 1024


def test_a_buffer_given_back_serves_the_next_transfer_while_another_runs() -> None:
    pool = BufferPool(keep=64 * MiB)
    running = pool.acquire(8 * MiB)
    first = pool.acquire(8 * MiB)
    pool.release(first)
    assert pool.kept == len(first)
    assert pool.acquire(5 * MiB) is first  # big enough: reused, not made anew
    assert pool.kept == 0
    pool.release(first)
    pool.release(running)


def test_nothing_is_kept_once_no_buffer_is_out() -> None:
    pool = BufferPool(keep=64 * MiB)
    buffers = [pool.acquire(8 * MiB) for _ in range(3)]
    for buffer in buffers[:-1]:
        pool.release(buffer)
    assert pool.kept == 2 * 8 * MiB
    pool.release(buffers[-1])
    assert pool.kept == 0
    assert all(pool.acquire(8 * MiB) is not buffer for buffer in buffers)


def test_the_smallest_buffer_that_fits_is_taken() -> None:
    pool = BufferPool(keep=64 * MiB)
    running = pool.acquire(1)
    small, big = pool.acquire(2 * MiB), pool.acquire(10 * MiB)
    pool.release(big)
    pool.release(small)
    assert pool.acquire(3 * MiB) is big  # small is too small
    assert pool.acquire(MiB) is small
    assert len(pool.acquire(MiB + 1)) == 2 * MiB  # none left: a new one, in whole MiB
    assert len(running) == GRAIN


def test_buffers_out_and_kept_stay_within_the_bound() -> None:
    pool = BufferPool(keep=10 * MiB)
    running = pool.acquire(1)
    buffers = [pool.acquire(4 * MiB) for _ in range(4)]  # 17 MiB out: more than keep
    pool.release(buffers[0])
    pool.release(buffers[1])
    assert pool.kept == 0  # 13, then 9 MiB still out: none of them fits beside
    pool.release(buffers[2])
    pool.release(buffers[3])
    assert pool.kept == 8 * MiB  # 1 MiB out and 8 kept
    pool.release(running)


def test_borrow_lends_exactly_the_size_and_takes_the_view_back() -> None:
    pool = BufferPool(keep=64 * MiB)
    running = pool.acquire(1)
    with pool.borrow(3 * MiB + 5) as view:
        assert len(view) == 3 * MiB + 5
        view[:] = b"x" * len(view)
    with pytest.raises(ValueError):
        view[0]  # released: a late use fails instead of reading a reused buffer
    assert pool.kept == 4 * MiB
    with pytest.raises(RuntimeError), pool.borrow(MiB):
        raise RuntimeError("the transfer failed")
    assert pool.kept == 4 * MiB  # given back after a failure too
    pool.release(running)


def test_buffer_body_reads_views_and_rewinds() -> None:
    data = bytes(range(256)) * 100
    body = BufferBody(memoryview(data))
    assert len(body) == len(data)
    first = body.read(1000)
    assert isinstance(first, memoryview) and first == data[:1000]
    assert body.tell() == 1000
    assert body.read() == data[1000:]
    assert body.read(10) == b""
    assert body.seek(0) == 0
    assert b"".join(iter(lambda: body.read(4096), b"")) == data  # botocore's loop
    assert body.seek(-10, 2) == len(data) - 10 and body.read() == data[-10:]
    assert body.seek(5) == 5 and body.seek(5, 1) == 10
