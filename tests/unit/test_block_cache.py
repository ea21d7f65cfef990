"""The disk read cache without a mount: whole blocks only, versions by ETag and
size, the index across instances (remounts), LRU eviction within the limit, and
one owner of the directory at a time."""

from __future__ import annotations

import errno
import mmap
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from s3mount import block_cache
from s3mount.block_cache import BlockCache, pwrite_all
from s3mount.cache_space import CacheSpace
from s3mount.stats import Stats

BLOCK = 4096


def make(directory: Path, max_bytes: int | None = None, wipe: bool = False) -> BlockCache:
    space = CacheSpace(str(directory), max_bytes=max_bytes)
    return BlockCache(str(directory), space, Stats(), wipe=wipe, block=BLOCK)


def data_usage(cache: BlockCache) -> int:
    return sum(os.stat(os.path.join(cache.directory, name)).st_blocks * 512
               for name in os.listdir(cache.directory) if name.endswith(".data"))


def test_only_whole_blocks_and_the_last_one_are_stored(tmp_path: Path) -> None:
    cache = make(tmp_path)
    body = os.urandom(3 * BLOCK + 100)
    cache.open_version("k", "e1", len(body))
    cache.put("k", "e1", 100, body[100:2 * BLOCK + 50])  # block 1 only is whole
    assert cache.get("k", "e1", BLOCK, 2 * BLOCK) == body[BLOCK:2 * BLOCK]
    assert cache.get("k", "e1", 0, BLOCK) is None
    assert cache.get("k", "e1", BLOCK, 2 * BLOCK + 1) is None
    cache.put("k", "e1", 3 * BLOCK, body[3 * BLOCK:])  # the short last block
    assert cache.get("k", "e1", 3 * BLOCK + 10, len(body)) == body[3 * BLOCK + 10:]
    assert cache.cached_prefix("k", "e1", BLOCK, len(body)) == 2 * BLOCK
    assert cache.get("k", "other-etag", BLOCK, 2 * BLOCK) is None
    cache.close()


def test_the_index_survives_a_remount_and_a_new_version_replaces_it(tmp_path: Path) -> None:
    body = os.urandom(2 * BLOCK)
    first = make(tmp_path)
    first.open_version("k", "e1", len(body))
    first.put("k", "e1", 0, body)
    first.close()
    second = make(tmp_path)
    second.open_version("k", "e1", len(body))
    assert second.get("k", "e1", 0, len(body)) == body
    second.open_version("k", "e2", len(body))  # changed by another client
    assert second.get("k", "e2", 0, BLOCK) is None
    assert second.get("k", "e1", 0, BLOCK) is None
    second.close()
    third = make(tmp_path)
    assert third.used == 0
    third.close()


def test_blocks_stored_after_the_last_index_write_are_not_trusted(tmp_path: Path) -> None:
    body = os.urandom(2 * BLOCK)
    first = make(tmp_path)
    first.open_version("k", "e1", len(body))
    first.put("k", "e1", 0, body[:BLOCK])
    first.save("k")
    first.put("k", "e1", BLOCK, body[BLOCK:])
    os.close(first._lock_fd)  # the daemon is killed: no close(), no index write
    second = make(tmp_path)
    second.open_version("k", "e1", len(body))
    assert second.get("k", "e1", 0, BLOCK) == body[:BLOCK]
    assert second.get("k", "e1", BLOCK, 2 * BLOCK) is None
    second.close()


def test_eviction_keeps_the_limit_and_the_recently_read_blocks(tmp_path: Path) -> None:
    limit = 4 * BLOCK
    cache = make(tmp_path, max_bytes=limit)
    bodies = {f"k{n}": os.urandom(2 * BLOCK) for n in range(4)}
    for key, body in list(bodies.items())[:2]:
        cache.open_version(key, "e", len(body))
        cache.put(key, "e", 0, body)
    assert cache.get("k0", "e", 0, 2 * BLOCK) == bodies["k0"]  # k0 is now the most recent
    for key, body in list(bodies.items())[2:]:
        cache.open_version(key, "e", len(body))
        cache.put(key, "e", 0, body)
        assert data_usage(cache) <= limit
    assert cache.get("k1", "e", 0, BLOCK) is None
    assert cache.get("k3", "e", 0, 2 * BLOCK) == bodies["k3"]
    assert cache.used <= limit
    cache.close()


def test_a_second_instance_keeps_its_own_directory_and_removes_it(tmp_path: Path) -> None:
    first = make(tmp_path)
    second = make(tmp_path)
    assert first.directory != second.directory
    second.open_version("k", "e", BLOCK)
    second.put("k", "e", 0, b"x" * BLOCK)
    second.close()
    assert not os.path.exists(second.directory)
    first.close()


def test_wipe_at_start(tmp_path: Path) -> None:
    first = make(tmp_path)
    first.open_version("k", "e", BLOCK)
    first.put("k", "e", 0, b"x" * BLOCK)
    first.close()
    second = make(tmp_path, wipe=True)
    second.open_version("k", "e", BLOCK)
    assert second.get("k", "e", 0, BLOCK) is None
    second.close()


def test_an_object_without_etag_is_not_cached(tmp_path: Path) -> None:
    cache = make(tmp_path)
    cache.open_version("k", "", BLOCK)
    cache.put("k", "", 0, b"x" * BLOCK)
    assert cache.get("k", "", 0, BLOCK) is None
    assert cache.used == 0
    cache.close()


def test_pwrite_all_writes_everything_in_slices(tmp_path: Path) -> None:
    """More than one slice (1 MiB), not aligned: every byte lands at its offset."""
    data = os.urandom(2 * 1024 * 1024 + 12345)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        pwrite_all(fd, data, 7)
        pwrite_all(fd, memoryview(data)[:3], 0)
        assert os.pread(fd, len(data) + 100, 0) == data[:3] + bytes(4) + data
    finally:
        os.close(fd)


def _resident_bytes(path: str) -> int:
    """The bytes of ``path`` in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", path],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


@pytest.mark.parametrize("kind", ["bytes", "aligned-buffer", "unaligned-buffer"])
def test_stored_blocks_bypass_the_page_cache_where_direct_io_works(tmp_path: Path,
                                                                   kind: str) -> None:
    """Runs longer than the direct-write buffer, ending in a short last block:
    the bytes read back are the bytes stored, and only the unaligned tail went
    through the page cache. Bytes in a page-aligned buffer (a read-ahead part's)
    are written from it; others are copied into the thread's aligned buffer."""
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed: cannot see the page cache")
    body = os.urandom(2 * block_cache._DIRECT_BUFFER + 3 * BLOCK + 100)
    data: bytes | memoryview = body
    if kind != "bytes":
        skew = 0 if kind == "aligned-buffer" else 512
        buffer = mmap.mmap(-1, len(body) + skew)
        buffer[skew:] = body
        data = memoryview(buffer)[skew:]
    cache = make(tmp_path)
    cache.open_version("k", "e1", len(body))
    cache.put("k", "e1", 0, data)
    assert cache._direct.enabled, "the test directory's filesystem refused O_DIRECT"
    path = cache._data_path(cache._name("k"))
    assert _resident_bytes(path) <= 4096
    assert cache.get("k", "e1", 0, len(body)) == body
    copied = getattr(cache._direct._buffers, "buffer", None) is not None
    assert copied == (kind != "aligned-buffer")
    cache.close()


def test_a_run_written_while_another_version_replaces_the_file_stays_out_of_it(
        tmp_path: Path) -> None:
    """The direct write of a run of version e1 starts after e2 replaced the data
    file at the same path (the cache's lock is not held while writing): e2's
    bytes stay as stored."""
    size = 4 * BLOCK
    old, new = os.urandom(size), os.urandom(size)
    cache = make(tmp_path)
    cache.open_version("k", "e1", size)
    direct_write = cache._direct.write

    def replaced_first(*args):
        cache._direct.write = direct_write
        cache.open_version("k", "e2", size)
        cache.put("k", "e2", 0, new)
        return direct_write(*args)

    cache._direct.write = replaced_first
    cache.put("k", "e1", 0, old)
    assert cache._direct.write is direct_write, "the run was not written directly"
    assert cache.get("k", "e2", 0, size) == new
    assert cache.get("k", "e1", 0, size) is None
    cache.close()


@pytest.mark.parametrize("refusal", [errno.EINVAL, errno.EOPNOTSUPP])
def test_without_direct_io_blocks_are_written_through_the_page_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int) -> None:
    real_open = os.open

    def open_without_direct_io(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(refusal, os.strerror(refusal))
        return real_open(path, flags, *args)

    monkeypatch.setattr(block_cache.os, "open", open_without_direct_io)
    body = os.urandom(5 * BLOCK + 100)
    cache = make(tmp_path)
    cache.open_version("k", "e1", len(body))
    cache.put("k", "e1", 0, body[:2 * BLOCK])
    assert not cache._direct.enabled
    cache.put("k", "e1", 2 * BLOCK, body[2 * BLOCK:])
    assert cache.get("k", "e1", 0, len(body)) == body
    cache.close()


def test_an_adopted_data_file_replaces_the_cached_version_and_counts_as_used(
        tmp_path: Path) -> None:
    cache = make(tmp_path, max_bytes=64 * BLOCK)
    old = os.urandom(2 * BLOCK)
    cache.open_version("k", "e1", len(old))
    cache.put("k", "e1", 0, old)
    new = os.urandom(3 * BLOCK + 10)
    uploaded = tmp_path / "uploaded.data"
    uploaded.write_bytes(new)
    # Block 1 is not whole in the file (say, never fetched): it is not listed.
    assert cache.adopt("k", "e2", len(new), str(uploaded), {0, 2, 3})
    assert not uploaded.exists()
    assert cache.get("k", "e1", 0, BLOCK) is None
    assert cache.get("k", "e2", 0, BLOCK) == new[:BLOCK]
    assert cache.get("k", "e2", 2 * BLOCK, len(new)) == new[2 * BLOCK:]
    assert cache.get("k", "e2", BLOCK, 2 * BLOCK) is None
    assert cache.used == data_usage(cache) > 0
    cache.close()
    again = make(tmp_path)
    again.open_version("k", "e2", len(new))
    assert again.get("k", "e2", 2 * BLOCK, 3 * BLOCK) == new[2 * BLOCK:3 * BLOCK]
    again.close()


def test_a_data_file_that_cannot_be_moved_stays_out(tmp_path: Path) -> None:
    cache = make(tmp_path)
    assert not cache.adopt("k", "e1", BLOCK, str(tmp_path / "missing.data"), {0})
    assert cache.get("k", "e1", 0, BLOCK) is None
    assert cache.used == 0
    cache.close()


def test_unmount_flushes_the_data_of_many_entries_once(tmp_path: Path, monkeypatch) -> None:
    cache = make(tmp_path)
    bodies = {f"k{n}": os.urandom(BLOCK + n) for n in range(20)}
    for key, body in bodies.items():
        written = tmp_path / f"{key}.written"
        written.write_bytes(body)
        assert cache.adopt(key, "e-" + key, len(body), str(written), {0, 1})
    flushes = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: flushes.append(fd) or real_fdatasync(fd))
    cache.close()
    assert flushes == []  # one syncfs instead of 20 fdatasync
    again = make(tmp_path)
    for key, body in bodies.items():
        again.open_version(key, "e-" + key, len(body))
        assert again.get(key, "e-" + key, 0, len(body)) == body
    again.close()


def test_the_next_mount_evicts_the_least_recently_read_entry_first(tmp_path: Path) -> None:
    bodies = {key: os.urandom(BLOCK) for key in ("a", "b", "c", "d")}
    first = make(tmp_path)
    for key in ("a", "b", "c"):
        first.open_version(key, "e", BLOCK)
        first.put(key, "e", 0, bodies[key])
    first.save("a")
    assert first.get("a", "e", 0, BLOCK) == bodies["a"]  # "b" is now the least recent
    first.close()
    second = make(tmp_path, max_bytes=3 * BLOCK)
    second.open_version("d", "e", BLOCK)
    second.put("d", "e", 0, bodies["d"])
    assert second.get("b", "e", 0, BLOCK) is None
    for key in ("a", "c", "d"):
        assert second.get(key, "e", 0, BLOCK) == bodies[key], key
    second.close()


def test_a_reader_closing_flushes_without_holding_back_other_readers(
        tmp_path: Path, monkeypatch) -> None:
    cache = make(tmp_path)
    body = os.urandom(BLOCK)
    for key in ("saved", "other"):
        cache.open_version(key, "e", BLOCK)
        cache.put(key, "e", 0, body)
    other_reads: list[bytes | None] = []
    reader_done_during_flush = []
    real_fdatasync = os.fdatasync

    def fdatasync_while_another_reader_reads(fd: int) -> None:
        reader = threading.Thread(target=lambda: other_reads.append(
            cache.get("other", "e", 0, BLOCK)))
        reader.start()
        reader.join(10)  # with the cache's lock held during the flush: never done
        reader_done_during_flush.append(not reader.is_alive())
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync_while_another_reader_reads)
    cache.save("saved")
    assert reader_done_during_flush == [True]
    assert other_reads == [body]
    monkeypatch.setattr(os, "fdatasync", real_fdatasync)
    cache.close()
    again = make(tmp_path)
    again.open_version("saved", "e", BLOCK)
    assert again.get("saved", "e", 0, BLOCK) == body
    again.close()


def test_blocks_evicted_during_a_flush_are_not_in_the_index(
        tmp_path: Path, monkeypatch) -> None:
    cache = make(tmp_path)
    body = os.urandom(3 * BLOCK)
    cache.open_version("k", "e", len(body))
    cache.put("k", "e", 0, body)
    real_fdatasync = os.fdatasync
    freed = []

    def fdatasync_during_an_eviction(fd: int) -> None:
        monkeypatch.setattr(os, "fdatasync", real_fdatasync)  # the eviction's own flush
        freed.append(cache.evict(BLOCK))  # block 0, the least recently used
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync_during_an_eviction)
    cache.save("k")
    assert freed == [BLOCK]
    os.close(cache._lock_fd)  # killed: the index is what save and evict wrote
    again = make(tmp_path)
    again.open_version("k", "e", len(body))
    assert again.get("k", "e", 0, BLOCK) is None
    assert again.get("k", "e", BLOCK, len(body)) == body[BLOCK:]
    again.close()


def test_parallel_puts_share_the_room_instead_of_each_taking_it(
        tmp_path: Path, monkeypatch) -> None:
    """Read-ahead parts are stored by several threads at once: a run being
    written counts against the limit, so a second run does not get its room."""
    import s3mount.block_cache as block_cache

    limit = 4 * BLOCK
    cache = make(tmp_path, max_bytes=limit)
    bodies = {key: os.urandom(4 * BLOCK) for key in ("first", "second")}
    for key, body in bodies.items():
        cache.open_version(key, "e", len(body))
    writing, may_finish = threading.Event(), threading.Event()
    real_pwrite_all = block_cache.pwrite_all

    def slow_pwrite_all(fd: int, data, offset: int) -> None:
        if not writing.is_set():
            writing.set()
            assert may_finish.wait(10)
        real_pwrite_all(fd, data, offset)

    monkeypatch.setattr(block_cache, "pwrite_all", slow_pwrite_all)
    first = threading.Thread(target=cache.put, args=("first", "e", 0, bodies["first"]))
    first.start()
    assert writing.wait(10)
    cache.put("second", "e", 0, bodies["second"])  # while the first run is written
    may_finish.set()
    first.join(10)
    assert data_usage(cache) <= limit
    assert cache.used <= limit
    assert cache.get("first", "e", 0, 4 * BLOCK) == bodies["first"]
    cache.close()


def test_a_run_that_evicts_its_own_entry_leaves_no_uncounted_file(tmp_path: Path) -> None:
    """A file read from its start that is bigger than the cache evicts its own
    first blocks; when that empties the entry, the entry goes, and the run must
    not make a new data file that nothing counts."""
    limit = 2 * BLOCK
    cache = make(tmp_path, max_bytes=limit)
    body = os.urandom(4 * BLOCK)
    cache.open_version("k", "e", len(body))
    cache.put("k", "e", 0, body[:2 * BLOCK])
    cache.put("k", "e", 2 * BLOCK, body[2 * BLOCK:])
    assert data_usage(cache) == cache.used <= limit
    cache.close()
