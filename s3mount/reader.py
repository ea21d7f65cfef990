"""Reading an object that is not open for writing: ranged GETs pinned to the
ETag seen at open, with a read-ahead window for sequential reads.

The window works like mountpoint-s3's prefetcher. A read where the previous
one ended (or at the start of the file) begins a sequential stream: a first
request of READ_AHEAD_FIRST bytes, then a window that doubles up to the
maximum, requested in parts of at most READ_PART bytes that are fetched in
parallel (by the shared ReadPool's threads). The window of a stream from the
start of the file doubles at each read that continues it: such a stream is
most likely a whole-file read (cp, cat, dd; the kernel's own read-ahead
assumes as much), and doubling once per window consumed would make it wait
one round trip per doubling. Any other stream doubles once half of its window
is consumed, so that a 1 MiB read in the middle of a big file fetches a few
MiB, not the whole window. Reads that jump
forward within what was requested, or back by at most READ_BACK bytes, are
served from it; any other read drops it and fetches only the bytes it asks
for (a random read), and a read that continues it begins a new stream.

With a disk cache (BlockCache), every range is fetched in whole blocks of it
(parts end on block boundaries; random reads fetch only their bytes), blocks
that are cached are read from disk instead of S3, and fetched blocks are
stored. A range is either all cached or fetched with If-Match from its first
missing block, so a read never mixes two versions.

Memory: a stream holds at most its window ahead of the reader plus READ_BACK
behind, and all streams together at most the pool's total: beyond it a stream
does not read ahead (the bytes a read needs are always fetched).
"""

from __future__ import annotations

import dataclasses
import errno
import mmap
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .block_cache import BlockCache
from .buffers import BufferPool
from .errors import FsError
from .stats import Stats
from .store import Store

MiB = 1024 * 1024
READ_AHEAD_FIRST = MiB + 128 * 1024
READ_AHEAD_MAX = 32 * MiB
READ_AHEAD_TOTAL = 64 * MiB
READ_PART = 8 * MiB
READ_BACK = MiB


class ReadPool:
    """The threads that fetch read-ahead parts for every open file, and the
    budget of bytes that all read-ahead windows may hold together."""

    def __init__(self, threads: int, *, window: int = READ_AHEAD_MAX,
                 total: int = READ_AHEAD_TOTAL) -> None:
        self.window = max(window, READ_AHEAD_FIRST)
        self.total = total
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="s3mount-read")
        self._lock = threading.Lock()
        self._held = 0
        # The parts' bodies: as many bytes as the windows may hold are kept for reuse.
        self.buffers = BufferPool(keep=total)

    @property
    def held(self) -> int:
        """Bytes reserved by read-ahead windows now."""
        with self._lock:
            return self._held

    def reserve(self, size: int, *, needed: bool) -> bool:
        """Count ``size`` bytes against the total; read-ahead (not ``needed``) is
        refused when it would exceed it."""
        with self._lock:
            if not needed and self._held + size > self.total:
                return False
            self._held += size
            return True

    def release(self, size: int) -> None:
        with self._lock:
            self._held -= size

    def submit(self, fetch: Callable[[], memoryview]) -> Future[memoryview]:
        return self._executor.submit(fetch)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclasses.dataclass(eq=False)
class _Part:
    """Bytes [start, end) of the object, being fetched or fetched: the future's
    result, in ``buffer`` (of the pool's buffers) once the fetch has begun."""

    start: int
    end: int
    future: Future[memoryview] = dataclasses.field(init=False)
    buffer: mmap.mmap | None = None


class ObjectReader:
    """``refresh`` gives the object's current (key, etag, size). It is used when
    this mount itself wrote, renamed or copied the file (``latest_version`` says
    which (key, etag) to read), and when the ETag known at open is outdated
    before any data was read, so that a file that another client replaced is
    read afresh. Once data
    was served, a change by another client is ESTALE: never a mix of two versions;
    ``changed`` is then called, so that the next open does not mix either."""

    def __init__(self, store: Store, pool: ReadPool, key: str, etag: str, size: int,
                 refresh: Callable[[], tuple[str, str, int]],
                 latest_version: Callable[[], tuple[str, str] | None],
                 changed: Callable[[], None] = lambda: None,
                 cache: BlockCache | None = None) -> None:
        self._store = store
        self._cache = cache
        self._align = cache.block if cache is not None else 1
        self._stats: Stats = store.stats
        self._pool = pool
        self.key = key
        self.etag = etag
        self.size = size
        self._refresh = refresh
        self._latest_version = latest_version
        self._changed = changed
        self._served = False
        self._lock = threading.Lock()
        # The stream: contiguous parts from _parts[0].start to _fetched_to.
        self._parts: list[_Part] = []
        self._fetched_to = 0
        self._window = 0
        self._from_start = False  # the stream began at offset 0
        self._next_offset = 0
        if cache is not None:
            cache.open_version(key, etag, size)

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            latest = self._latest_version()
            if latest is not None and latest != (self.key, self.etag):
                self._follow()
            try:
                data = self._read(offset, size)
            except FsError as exc:
                self._drop_parts()
                if exc.errno != errno.ESTALE:
                    raise
                if self._served:
                    self._changed()
                    raise
                self._follow()
                data = self._read(offset, size)
            self._served = True
            self._stats.count("read_bytes", len(data))
            return data

    def close(self) -> None:
        """Drop the read-ahead (the handle is released)."""
        with self._lock:
            self._drop_parts()
            if self._cache is not None:
                self._cache.save(self.key)

    def _follow(self) -> None:
        self._drop_parts()
        self.key, self.etag, self.size = self._refresh()
        self._next_offset = 0
        if self._cache is not None:
            self._cache.open_version(self.key, self.etag, self.size)

    def _read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        if offset >= end:
            return b""
        continued = bool(self._parts) and self._parts[0].start <= offset < self._fetched_to
        if continued:
            self._stats.count("read_hits" if end <= self._fetched_to else "read_misses")
        else:
            self._drop_parts()
            self._stats.count("read_misses")
            if not self._continues(offset):
                # A random read: only what it asks for, and no stream until reads
                # follow each other again.
                self._next_offset = end
                self._window = 0
                return self._get(self.key, self.etag, offset, end)
            self._window = READ_AHEAD_FIRST
            self._from_start = offset == 0
            self._fetched_to = offset
            self._request(offset, max(end, offset + self._window), needed_to=end)
        if end > self._fetched_to:
            self._request(self._fetched_to, end, needed_to=end)
        data = self._collect(offset, end)
        self._next_offset = end
        self._forget_before(offset - READ_BACK)
        self._read_ahead(end, grow=continued and self._from_start)
        return data

    def _continues(self, offset: int) -> bool:
        """Whether a read at ``offset`` continues the previous one (the kernel may
        deliver the reads of one sequential stream a little out of order)."""
        return self._next_offset - READ_BACK <= offset <= self._next_offset

    def _read_ahead(self, position: int, *, grow: bool) -> None:
        """Keep the window requested ahead of ``position``, while the pool's budget
        allows: more is requested once half of it, or a whole part, is free, and
        the window doubles each time; with ``grow``, below its maximum, it doubles
        at this read whatever is free."""
        ahead = self._fetched_to - position
        if self._fetched_to >= self.size:
            return
        ramping = grow and self._window < self._pool.window
        if not ramping and ahead >= self._window // 2 and ahead + READ_PART > self._window:
            return
        self._window = min(self._window * 2, self._pool.window)
        end = min(position + self._window, self.size)
        if end < self.size and end - self._fetched_to >= READ_PART:
            end -= (end - self._fetched_to) % READ_PART  # whole parts only
        self._request(self._fetched_to, end, needed_to=0)

    def _request(self, start: int, end: int, *, needed_to: int) -> None:
        """Request [start, end) in parts of at most READ_PART; parts below
        ``needed_to`` are needed now, the others are read-ahead and stop at the
        pool's budget."""
        end = min(-(-end // self._align) * self._align, self.size)
        while start < end:
            part_end = min(start + READ_PART, end)
            if not self._pool.reserve(part_end - start, needed=start < needed_to):
                return
            part = _Part(start, part_end)
            part.future = self._pool.submit(self._fetcher(part))
            self._parts.append(part)
            self._fetched_to = start = part_end

    def _fetcher(self, part: _Part) -> Callable[[], memoryview]:
        key, etag, size = self.key, self.etag, self.size
        buffers = self._pool.buffers

        def fetch() -> memoryview:
            # The disk cache fetches and stores whole blocks: the buffer holds them.
            low = part.start - part.start % self._align
            high = min(-(-part.end // self._align) * self._align, size)
            part.buffer = buffers.acquire(high - low)
            try:
                return self._get_into(memoryview(part.buffer)[:high - low], key, etag,
                                      low, part.start, part.end)
            except BaseException:
                buffers.release(part.buffer)
                part.buffer = None
                raise

        return fetch

    def _get_into(self, into: memoryview, key: str, etag: str, low: int, start: int,
                  end: int) -> memoryview:
        """Bytes [start, end) of that version, received into ``into`` (the whole
        blocks from ``low``): from the disk cache when all its blocks are there,
        else the cached blocks at the start and a GET of the rest, which is
        stored; the part of ``into`` that holds [start, end)."""
        cache = self._cache
        high = low + len(into)
        cached_to = low if cache is None else cache.cached_prefix(key, etag, low, high)
        if (cache is not None and cached_to > low
                and not cache.get_into(key, etag, low, into[:cached_to - low])):
            cached_to = low  # evicted meanwhile
        if cached_to < high:
            fetched = into[cached_to - low:]
            got = self._store.get_range_into(key, cached_to, high - 1, etag, fetched)
            if cache is not None:
                self._stats.count("disk_cache_misses", -(-(high - cached_to) // cache.block))
                if got == len(fetched):
                    cache.put(key, etag, cached_to, fetched)
            high = cached_to + got
        return into[start - low:max(min(end, high), start) - low]

    def _get(self, key: str, etag: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of that version for a random read: from the disk
        cache when all its blocks are there, else fetched (only these bytes) and
        stored."""
        cache = self._cache
        if cache is None:
            return self._store.get_range(key, start, end - 1, etag)
        data = cache.get(key, etag, start, end)
        if data is not None:
            return data
        self._stats.count("disk_cache_misses")
        data = self._store.get_range(key, start, end - 1, etag)
        cache.put(key, etag, start, data)
        return data

    def _collect(self, offset: int, end: int) -> bytes:
        pieces = []
        for part in self._parts:
            if part.end <= offset or part.start >= end:
                continue
            data = part.future.result()
            if len(data) != part.end - part.start:
                raise FsError(errno.EIO, f"get_object: {len(data)} bytes for a range of "
                                         f"{part.end - part.start}")
            pieces.append(data[max(offset, part.start) - part.start:
                               min(end, part.end) - part.start])
        return b"".join(pieces)

    def _forget_before(self, offset: int) -> None:
        while self._parts and self._parts[0].end <= offset:
            self._discard(self._parts.pop(0))

    def _drop_parts(self) -> None:
        for part in self._parts:
            self._discard(part)
        self._parts = []
        self._fetched_to = 0

    def _discard(self, part: _Part) -> None:
        """Give the part's bytes back to the budget, and its buffer to the pool,
        once no request holds them (nothing reads a part once it is discarded)."""
        part.future.cancel()  # if it has not started
        pool = self._pool

        def done(_future: Future[memoryview]) -> None:
            pool.release(part.end - part.start)
            if part.buffer is not None:
                pool.buffers.release(part.buffer)
                part.buffer = None

        part.future.add_done_callback(done)
