"""CacheSpace: the limits of the cache directory, eviction, back-pressure, ENOSPC."""

from __future__ import annotations

import errno
import threading

import pytest

from s3mount.block_cache import BLOCKS_OWNER
from s3mount.cache_space import CacheSpace
from s3mount.errors import FsError

MiB = 1024 * 1024


def test_unlimited_space_never_waits(tmp_path):
    space = CacheSpace(str(tmp_path))
    space.update(1, 10**15)
    space.reserve(10**15)
    assert not space.limited


def test_over_max_cache_size_without_uploads_is_enospc(tmp_path):
    space = CacheSpace(str(tmp_path), max_bytes=4 * MiB)
    space.update(1, 3 * MiB)
    space.reserve(1 * MiB)  # exactly at the limit
    with pytest.raises(FsError) as caught:
        space.reserve(1 * MiB + 1)
    assert caught.value.errno == errno.ENOSPC
    space.release(1)
    space.reserve(4 * MiB)
    assert space.used == 0


def test_eviction_is_tried_before_enospc(tmp_path):
    evicted = []

    def evict() -> None:
        evicted.append(True)
        space.update(1, 0)

    space = CacheSpace(str(tmp_path), max_bytes=2 * MiB, evict=evict)
    space.update(1, 2 * MiB)
    space.reserve(1 * MiB)
    assert evicted


def test_a_writer_waits_while_uploads_run_and_continues_when_space_is_freed(tmp_path):
    running = threading.Event()
    running.set()
    space = CacheSpace(str(tmp_path), max_bytes=2 * MiB, uploads_running=running.is_set)
    space.update(1, 2 * MiB)
    outcome: list[object] = []

    def writer() -> None:
        try:
            space.reserve(1 * MiB)
            outcome.append("reserved")
        except FsError as exc:
            outcome.append(exc.errno)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()  # waiting, not failed
    space.release(1)  # the upload committed and the file left the cache
    thread.join(10)
    assert outcome == ["reserved"]


def test_a_waiting_writer_gets_enospc_when_the_uploads_end_without_freeing(tmp_path):
    running = threading.Event()
    running.set()
    space = CacheSpace(str(tmp_path), max_bytes=2 * MiB, uploads_running=running.is_set)
    space.update(1, 2 * MiB)
    outcome: list[object] = []

    def writer() -> None:
        try:
            space.reserve(1 * MiB)
        except FsError as exc:
            outcome.append(exc.errno)

    thread = threading.Thread(target=writer)
    thread.start()
    thread.join(0.2)
    assert thread.is_alive()
    running.clear()
    space.wake()
    thread.join(10)
    assert outcome == [errno.ENOSPC]


def test_an_upload_that_ends_during_the_evictions_is_not_enospc(tmp_path):
    # The upload of file 1 ends while the writer evicts open files: its bytes move
    # into the read cache (BLOCKS_OWNER), which the writer had found empty a moment
    # before, and no upload runs any more. The writer must evict again, not fail.
    uploads = {"running": True}
    read_cache_evictions = []

    def evict_read_cache(wanted: int) -> int:
        read_cache_evictions.append(wanted)
        if uploads["running"]:
            return 0  # empty yet
        space.update(BLOCKS_OWNER, 0)
        return 2 * MiB

    def evict_open_files() -> None:
        if uploads["running"]:
            space.update(BLOCKS_OWNER, 2 * MiB)  # the uploaded file joins the read cache
            space.release(1)
            uploads["running"] = False

    space = CacheSpace(str(tmp_path), max_bytes=3 * MiB,
                       uploads_running=lambda: uploads["running"],
                       evict=evict_open_files, evict_read_cache=evict_read_cache)
    space.update(1, 2 * MiB)
    space.reserve(2 * MiB)
    assert len(read_cache_evictions) == 2
    assert space.used == 0


def test_ensure_diskfree_counts_the_disk(tmp_path):
    space = CacheSpace(str(tmp_path), min_free=2**62)  # more than any disk has
    with pytest.raises(FsError) as caught:
        space.reserve(1)
    assert caught.value.errno == errno.ENOSPC
    ratio = CacheSpace(str(tmp_path), free_ratio=100)
    with pytest.raises(FsError):
        ratio.reserve(1)
