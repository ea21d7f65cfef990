"""Memory for transfer bodies (GET bodies, upload parts), reused between transfers.

The daemon's malloc hands every block of a MiB or more back to the kernel
when it is freed (daemon.tune_malloc, so that resident memory shrinks after
big transfers). A body received into new memory therefore pays a page fault
per 4 KiB page, and unmapping it again: a quarter of the daemon's CPU in a
sequential read. A pool keeps the buffers of finished transfers for the next
ones while transfers are under way, and lets them all go when the last
buffer out comes back, so an idle mount holds none.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Iterator

GRAIN = 1024 * 1024  # new buffers are made in whole MiB, so that they fit again


class BufferPool:
    """Page-aligned anonymous buffers, kept for reuse while those out and those
    kept total at most ``keep`` bytes.

    Callers bound the buffers out at once (the read-ahead budget, the upload
    budget); a buffer given back is kept only within ``keep``, so the pool never
    holds more than the larger of ``keep`` and what is out.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._free: list[mmap.mmap] = []
        self._kept = 0
        self._out = 0
        self._out_bytes = 0

    def acquire(self, size: int) -> mmap.mmap:
        """A buffer of at least ``size`` bytes (its old content is undefined): the
        smallest kept one that is big enough, else a new one."""
        with self._lock:
            self._out += 1
            fitting = [buffer for buffer in self._free if len(buffer) >= size]
            if fitting:
                buffer = min(fitting, key=len)
                self._free.remove(buffer)
                self._kept -= len(buffer)
            else:
                buffer = mmap.mmap(-1, max(-(-size // GRAIN), 1) * GRAIN)
            self._out_bytes += len(buffer)
            return buffer

    def release(self, buffer: mmap.mmap) -> None:
        """Give back a buffer from ``acquire``; nothing may use it afterwards."""
        with self._lock:
            self._out -= 1
            self._out_bytes -= len(buffer)
            if self._out == 0:
                self._free.clear()
                self._kept = 0
            elif self._out_bytes + self._kept + len(buffer) <= self._keep:
                self._free.append(buffer)
                self._kept += len(buffer)

    @contextlib.contextmanager
    def borrow(self, size: int) -> Iterator[memoryview]:
        """The first ``size`` bytes of a buffer, for the duration of the block."""
        buffer = self.acquire(size)
        try:
            with memoryview(buffer) as whole, whole[:size] as view:
                yield view
        finally:
            self.release(buffer)

    @property
    def kept(self) -> int:
        """Bytes kept for reuse now."""
        with self._lock:
            return self._kept


class BufferBody:
    """An upload body over a buffer: a seekable read-only file whose reads are
    views of the buffer, not copies. A file, not the memoryview itself, because
    botocore rewinds a body that it sends again and can rewind only a file."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._position = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int = -1) -> memoryview:
        start = self._position
        end = len(self._view) if size is None or size < 0 else min(start + size, len(self._view))
        self._position = max(end, start)
        return self._view[start:self._position]

    def seek(self, offset: int, whence: int = 0) -> int:
        base = (0, self._position, len(self._view))[whence]
        self._position = max(base + offset, 0)
        return self._position

    def tell(self) -> int:
        return self._position
