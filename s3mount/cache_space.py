"""Limits of the cache directory: ``max_cache_size`` and the free space to leave.

Every open file reports the disk space its data file takes (st_blocks). Before
data is added, ``reserve`` checks that it fits. When it does not, the cached
content of files that are all in the bucket is dropped (it can be fetched
again); if that is not enough, the writer waits as long as uploads are running
that may free space (a closed file's data goes when its upload commits); when
none is, it gets ENOSPC.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable

from .errors import FsError

log = logging.getLogger(__name__)

# How often a waiting writer looks again even without a notification
# (another process may have freed disk space).
RECHECK_SECONDS = 1.0


class CacheSpace:
    def __init__(self, directory: str, *, max_bytes: int | None = None, min_free: int = 0,
                 free_ratio: int = 0,
                 uploads_running: Callable[[], bool] = lambda: False,
                 evict: Callable[[], None] = lambda: None,
                 evict_read_cache: Callable[[int], int] = lambda wanted: 0) -> None:
        """``max_bytes``: limit of the data files together (None: none); ``min_free``:
        bytes that must stay free on the disk; ``free_ratio``: the same in percent of
        the disk's size (the larger one counts)."""
        self._directory = directory
        self._max_bytes = max_bytes
        self._min_free = min_free
        if free_ratio:
            disk = os.statvfs(directory)
            self._min_free = max(min_free, disk.f_blocks * disk.f_frsize * free_ratio // 100)
        self._uploads_running = uploads_running
        self._evict = evict
        self._evict_read_cache = evict_read_cache
        self._usage: dict[int, int] = {}
        self._total = 0
        self._changed = threading.Condition()

    @property
    def limited(self) -> bool:
        return self._max_bytes is not None or self._min_free > 0

    @property
    def used(self) -> int:
        with self._changed:
            return self._total

    def _fits(self, extra: int) -> bool:
        return self._shortfall(extra) <= 0

    def _shortfall(self, extra: int) -> int:
        short = 0
        if self._max_bytes is not None:
            short = self._total + extra - self._max_bytes
        if self._min_free:
            disk = os.statvfs(self._directory)
            short = max(short, self._min_free - (disk.f_bavail * disk.f_frsize - extra))
        return short

    def shortfall(self, extra: int) -> int:
        """Bytes to free before ``extra`` more fit (0 or less: they fit now)."""
        with self._changed:
            return self._shortfall(extra)

    def reserve(self, extra: int) -> None:
        """Return once ``extra`` more bytes fit; ENOSPC when they cannot.

        May block (waiting for uploads): call without locks that uploads need,
        other than the writer's own file lock.
        """
        if extra <= 0 or not self.limited:
            return
        waited = False
        while True:
            with self._changed:
                if self._fits(extra):
                    return
                # Sampled before evicting: an upload that ends during the evictions
                # may have moved its file's bytes into the read cache after that
                # was evicted, so only a pass that began with none running is final.
                uploads_were_running = self._uploads_running()
            # Outside the condition's lock: evicting takes file locks, and a file
            # that is closed takes this lock with those held. Blocks of the read
            # cache go first: open files' clean data is more likely read again.
            self._evict_read_cache(self.shortfall(extra))
            with self._changed:
                if self._fits(extra):
                    return
            self._evict()
            with self._changed:
                if self._fits(extra):
                    return
                if not uploads_were_running:
                    raise FsError(errno.ENOSPC, "the cache directory is full "
                                  "(max_cache_size / ensure_diskfree)")
                if not self._uploads_running():
                    continue  # one ended during this pass: evict again at once
                if not waited:
                    log.debug("a write waits for uploads to free cache space")
                    waited = True
                self._changed.wait(RECHECK_SECONDS)

    def update(self, owner: int, used: int) -> None:
        """``owner`` (an id) now takes ``used`` bytes."""
        with self._changed:
            self._total += used - self._usage.get(owner, 0)
            self._usage[owner] = used
            self._changed.notify_all()

    def release(self, owner: int) -> None:
        with self._changed:
            self._total -= self._usage.pop(owner, 0)
            self._changed.notify_all()

    def wake(self) -> None:
        """An upload ended: waiting writers look again (and give up if none is left)."""
        with self._changed:
            self._changed.notify_all()
