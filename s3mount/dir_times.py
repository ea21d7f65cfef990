"""Delayed, coalesced updates of directory times in the bucket.

Creating, removing or renaming an entry changes its directory's mtime and
ctime. Storing that at once would cost a request per change (a self-copy of
the directory marker); instead a directory's newest change time is stored once
it has been quiet for a moment, or after a few seconds of steady changes, so
untarring a thousand files into one directory costs a handful of requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

QUIET_SECONDS = 1.0
LONGEST_DELAY_SECONDS = 5.0


class DirTimeUpdates:
    """Pending directory time changes, persisted by a thread of their own.

    ``persist(path, time_ns)`` runs without any lock of this class held; a
    failure is logged and dropped (the time is shown until the cache expires).
    """

    def __init__(self, persist: Callable[[str, int], None], *, enabled: bool = True,
                 quiet: float = QUIET_SECONDS, longest: float = LONGEST_DELAY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._persist = persist
        self._enabled = enabled
        self._quiet = quiet
        self._longest = longest
        self._clock = clock
        self._lock = threading.Condition()
        # path → (time_ns to store, first change, last change) in clock seconds
        self._pending: dict[str, tuple[int, float, float]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="s3mount-dir-times",
                                        daemon=True)
        self._thread.start()

    def touch(self, path: str, time_ns: int) -> None:
        if not self._enabled:
            return  # update_parent_dir_stat=0: times stay in memory
        now = self._clock()
        with self._lock:
            _, first, _ = self._pending.get(path, (0, now, now))
            self._pending[path] = (time_ns, first, now)
            self._lock.notify()

    def discard(self, path: str) -> None:
        """Drop a pending update of ``path``: its whole attributes were just stored."""
        with self._lock:
            self._pending.pop(path, None)

    def discard_tree(self, path: str) -> None:
        """Drop pending updates of ``path`` and below (removed or renamed away)."""
        prefix = path + "/"
        with self._lock:
            for pending in [p for p in self._pending if p == path or p.startswith(prefix)]:
                del self._pending[pending]

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)

    def close(self) -> None:
        """Persist everything still pending, then stop the thread."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()

    def _due(self, now: float) -> tuple[list[tuple[str, int]], float | None]:
        due, wait = [], None
        for path, (time_ns, first, last) in list(self._pending.items()):
            at = min(last + self._quiet, first + self._longest)
            if self._closed or at <= now:
                due.append((path, time_ns))
                del self._pending[path]
            else:
                wait = at - now if wait is None else min(wait, at - now)
        return due, wait

    def _run(self) -> None:
        while True:
            with self._lock:
                due, wait = self._due(self._clock())
                if not due:
                    if self._closed:
                        return
                    self._lock.wait(wait)
                    continue
            for path, time_ns in due:
                try:
                    self._persist(path, time_ns)
                except Exception as exc:  # the loop must survive any single failure
                    log.warning("could not store the times of directory /%s: %s", path, exc)
