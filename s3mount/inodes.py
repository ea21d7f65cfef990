"""The inode table: inode number ↔ path, with the kernel's lookup counts.

Paths are relative to the mount root ("" is the root, "a/b" a child of "a").
Numbers are never reused while the process lives, so the kernel can never
confuse an old inode with a new one.

Entries the kernel holds (lookup count > 0) stay until ``forget``. Entries
created for readdir, which the kernel does not count, are kept in a bounded
LRU so that ``ls -i`` and a later lookup agree on the number; when the LRU
overflows the oldest uncounted entries are dropped.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

ROOT_INODE = 1


class InodeTable:
    def __init__(self, max_uncounted: int = 100_000) -> None:
        self._lock = threading.Lock()
        # None: the inode's name was removed while the kernel still knows it.
        self._paths: dict[int, str | None] = {ROOT_INODE: ""}
        self._inodes: dict[str, int] = {"": ROOT_INODE}
        self._lookups: dict[int, int] = {ROOT_INODE: 1}
        self._uncounted: OrderedDict[int, None] = OrderedDict()
        self._max_uncounted = max_uncounted
        self._numbers = itertools.count(ROOT_INODE + 1)

    def path(self, ino: int) -> str | None:
        with self._lock:
            return self._paths.get(ino)

    def find(self, path: str) -> int | None:
        with self._lock:
            return self._inodes.get(path)

    def number(self, path: str, *, counted: bool) -> int:
        """The inode number for ``path``; ``counted`` adds one kernel lookup."""
        with self._lock:
            ino = self._inodes.get(path)
            if ino is None:
                ino = next(self._numbers)
                self._inodes[path] = ino
                self._paths[ino] = path
                self._lookups[ino] = 0
            if counted:
                self._lookups[ino] += 1
                self._uncounted.pop(ino, None)
            elif self._lookups[ino] == 0:
                self._uncounted[ino] = None
                self._uncounted.move_to_end(ino)
                self._trim()
            return ino

    def move(self, old: str, new: str) -> None:
        """Rename ``old`` and everything below it to ``new``; numbers stay the same."""
        with self._lock:
            below = old + "/"
            moved = [(path, ino) for path, ino in self._inodes.items()
                     if path == old or path.startswith(below)]
            for path, _ in moved:
                del self._inodes[path]
            for path, ino in moved:
                target = new + path[len(old):]
                replaced = self._inodes.get(target)
                if replaced is not None:
                    self._paths[replaced] = None
                self._inodes[target] = ino
                self._paths[ino] = target

    def detach(self, path: str) -> None:
        """The name is gone; the kernel may still hold the inode until ``forget``."""
        with self._lock:
            ino = self._inodes.pop(path, None)
            if ino is not None:
                self._paths[ino] = None

    def forget(self, ino: int, count: int) -> bool:
        """Whether the kernel's last lookup of ``ino`` is gone (so is the entry)."""
        with self._lock:
            if ino == ROOT_INODE or ino not in self._lookups:
                return False
            remaining = self._lookups[ino] - count
            if remaining > 0:
                self._lookups[ino] = remaining
                return False
            self._drop(ino)
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._paths)

    def _trim(self) -> None:
        while len(self._uncounted) > self._max_uncounted:
            ino, _ = self._uncounted.popitem(last=False)
            self._drop(ino)

    def _drop(self, ino: int) -> None:
        path = self._paths.pop(ino)
        del self._lookups[ino]
        self._uncounted.pop(ino, None)
        if path is not None and self._inodes.get(path) == ino:
            del self._inodes[path]
