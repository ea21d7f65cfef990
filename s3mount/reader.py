"""Reading an object that is not open for writing: ranged GETs pinned to the
ETag seen at open, with a read-ahead window for sequential reads.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from .errors import FsError
from .store import Store

# Sequential reads fetch ahead in a window that doubles from the first size to
# the maximum; random reads fetch only what was asked for.
READ_AHEAD_FIRST = 1024 * 1024 + 128 * 1024
READ_AHEAD_MAX = 8 * 1024 * 1024


class ObjectReader:
    """``refresh`` gives the object's current (key, etag, size). It is used when
    this mount itself changed the file (``latest_etag`` says which version it
    wrote last), and when the ETag known at open is outdated before any data was
    read, so that a file that another client replaced is read afresh. Once data
    was served, a change by another client is ESTALE: never a mix of two versions."""

    def __init__(self, store: Store, key: str, etag: str, size: int,
                 refresh: Callable[[], tuple[str, str, int]],
                 latest_etag: Callable[[], str | None]) -> None:
        self._store = store
        self.key = key
        self.etag = etag
        self.size = size
        self._refresh = refresh
        self._latest_etag = latest_etag
        self._served = False
        self._lock = threading.Lock()
        self._buffer_start = 0
        self._buffer = b""
        self._next_offset = 0
        self._window = 0

    def read(self, offset: int, size: int) -> bytes:
        with self._lock:
            latest = self._latest_etag()
            if latest is not None and latest != self.etag:
                self._follow()
            try:
                return self._read(offset, size)
            except FsError as exc:
                if exc.errno != errno.ESTALE or self._served:
                    raise
                self._follow()
                return self._read(offset, size)

    def _follow(self) -> None:
        self.key, self.etag, self.size = self._refresh()
        self._buffer_start, self._buffer = 0, b""

    def _read(self, offset: int, size: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        end = min(offset + size, self.size)
        start_in_buffer = offset - self._buffer_start
        if start_in_buffer >= 0 and end <= self._buffer_start + len(self._buffer):
            data = self._buffer[start_in_buffer:start_in_buffer + (end - offset)]
        else:
            if offset == self._next_offset:
                self._window = min(max(self._window * 2, READ_AHEAD_FIRST), READ_AHEAD_MAX)
            else:
                self._window = 0
            fetch_end = min(max(end, offset + self._window), self.size)
            fetched = self._store.get_range(self.key, offset, fetch_end - 1, self.etag)
            self._buffer_start, self._buffer = offset, fetched
            data = fetched[: end - offset]
        self._next_offset = end
        self._served = True
        return data
