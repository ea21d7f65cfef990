"""The content of a file while it is open for writing, held in a local cache file.

The cache file is sparse and filled block by block: a block is fetched from
the object only when it is read, or partly overwritten. Blocks that were
written are *dirty*; a range with no dirty block that lies within the original
object is *unchanged*, so an upload can copy it server-side instead of sending
it (s3fs's mixupload). This object is the ``DataSource`` of transfer.upload.

Locking: ``lock`` (one per file) is held by whoever changes the content or
uploads it, and by readers. The upload's part threads read through
``read_range`` without it (the uploader holds it for them); they only touch the
block sets, under ``_blocks_lock``, which is never held across I/O.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time

from .meta import Attr
from .store import Store
from .transfer import Original

BLOCK = 1024 * 1024


class OpenFile:
    def __init__(self, store: Store, cache_dir: str, *, ino: int, key: str, attr: Attr,
                 original: Original | None, xattrs: dict[str, bytes],
                 keep: dict[str, str], content_type: str) -> None:
        self.store = store
        self.ino = ino
        self.key = key
        self.attr = attr
        self.original = original
        # Bytes below this offset may still be fetched from the original object.
        self.original_limit = original.size if original else 0
        self.xattrs = xattrs
        self.keep = keep
        self.content_type = content_type
        self.lock = threading.Lock()
        self._blocks_lock = threading.Lock()
        self._loaded: set[int] = set()
        self._dirty: set[int] = set()
        # A new file must reach the bucket even when nothing is written to it.
        self.data_dirty = original is None
        self.meta_dirty = False
        # Writable descriptors; guarded by the file table's lock, not by ``lock``,
        # which an upload holds for long.
        self.handles = 0
        self.unlinked = False
        self.closed = False
        # Closed in close(), when the file leaves the open-file table.
        self._cache = tempfile.TemporaryFile(dir=cache_dir, prefix="s3mount-")  # noqa: SIM115
        self._fd = self._cache.fileno()

    @property
    def size(self) -> int:
        return self.attr.size

    @property
    def dirty(self) -> bool:
        return self.data_dirty or self.meta_dirty

    def close(self) -> None:
        """Called with ``lock`` held, so no reader is inside read_range."""
        self.closed = True
        self._cache.close()

    def _blocks(self, start: int, end: int) -> range:
        return range(start // BLOCK, (end + BLOCK - 1) // BLOCK)

    def _load(self, start: int, end: int) -> None:
        """Make the cache file hold the original bytes of every block in [start, end)."""
        for block in self._blocks(start, end):
            with self._blocks_lock:
                if block in self._loaded:
                    continue
            first = block * BLOCK
            last = min(first + BLOCK, self.original_limit)
            if first < last and self.original is not None:
                data = self.store.get_range(self.original.key, first, last - 1,
                                            self.original.etag)
                os.pwrite(self._fd, data, first)
            with self._blocks_lock:
                self._loaded.add(block)

    def read_range(self, offset: int, length: int) -> bytes:
        """Bytes [offset, offset+length) of the current content (fewer only at EOF)."""
        end = min(offset + length, self.size)
        if offset >= end:
            return b""
        self._load(offset, end)
        data = os.pread(self._fd, end - offset, offset)
        # A sparse tail that was never written reads as zeros.
        return data + bytes(end - offset - len(data))

    # DataSource for transfer.upload
    def read(self, offset: int, length: int) -> bytes:
        return self.read_range(offset, length)

    def unchanged(self, offset: int, length: int) -> bool:
        if offset + length > self.original_limit:
            return False
        with self._blocks_lock:
            return not any(block in self._dirty for block in self._blocks(offset, offset + length))

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        # Blocks only partly overwritten must hold their other bytes first.
        if offset % BLOCK:
            self._load(offset, offset + 1)
        if end % BLOCK:
            self._load(end - 1, end)
        os.pwrite(self._fd, data, offset)
        with self._blocks_lock:
            blocks = self._blocks(offset, end)
            self._loaded.update(blocks)
            self._dirty.update(blocks)
        self._content_changed(max(self.size, end))

    def truncate(self, size: int) -> None:
        if size < self.size:
            if size % BLOCK:
                self._load(size - 1, size)
            os.ftruncate(self._fd, size)
            self.original_limit = min(self.original_limit, size)
            boundary = size // BLOCK
            with self._blocks_lock:
                self._loaded = {b for b in self._loaded if b <= boundary}
                self._dirty = {b for b in self._dirty if b <= boundary}
                if size % BLOCK:
                    self._dirty.add(boundary)
        if size != self.size:
            self._content_changed(size)

    def _content_changed(self, size: int) -> None:
        now = time.time_ns()
        self.attr = dataclasses.replace(self.attr, size=size, mtime_ns=now, ctime_ns=now)
        self.data_dirty = True

    def detach_from_object(self) -> None:
        """Fetch everything still only in the object, which is about to be deleted."""
        self._load(0, self.original_limit)
        self.original_limit = 0

    def committed(self, etag: str) -> None:
        """The bucket now holds exactly this content and these attributes."""
        self.original = Original(self.key, etag, self.size)
        self.original_limit = self.size
        with self._blocks_lock:
            self._dirty.clear()
        self.data_dirty = self.meta_dirty = False
