"""The content of a file while it is open for writing, held in a local cache file.

The cache file is sparse and filled block by block: a block is fetched from
the object only when it is read, or partly overwritten. Blocks that were
written are *dirty*; a range with no dirty block that lies within the original
object is *unchanged*, so an upload can copy it server-side instead of sending
it (s3fs's mixupload). This object is the ``DataSource`` of transfer.upload.

The cache file is a named file of the mount's journal session (see
journal.py): while the file has changes not yet in the bucket, a journal
record next to it describes them, so a mount started after a crash can upload
them. Disk space is accounted in a CacheSpace (max_cache_size, ensure_diskfree).

Locking: ``lock`` (one per file) is held by whoever changes the content or
uploads it, and by readers. The upload's part threads read through
``read_range`` without it (the uploader holds it for them); they only touch the
block sets, under ``_blocks_lock``, which is never held across I/O.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
import time

from .cache_space import CacheSpace
from .errors import FsError
from .journal import Journal, Record, block_ranges, block_set, data_blocks
from .meta import Attr
from .store import Store
from .transfer import Original

BLOCK = 1024 * 1024


def _disk_error(exc: OSError, what: str) -> FsError:
    """The cache file's own errno (ENOSPC, EDQUOT, ...), not a generic EIO."""
    return FsError(exc.errno or errno.EIO, f"cache file {what}: {exc.strerror}")


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    # pwrite may write less than asked when the disk fills; the rest then fails
    # with ENOSPC instead of being dropped.
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _written_blocks(record: Record, fd: int) -> set[int]:
    return data_blocks(fd, BLOCK) | block_set(record.loaded)


def _complete(record: Record, written: set[int]) -> bool:
    return all(block in written for block in range(-(-record.original_limit // BLOCK)))


def complete_without_original(record: Record, data_path: str) -> bool:
    """True when a journaled file's data file holds all of its content, so that it
    can be uploaded although the object it replaced changed or is gone."""
    fd = os.open(data_path, os.O_RDONLY)
    try:
        return _complete(record, _written_blocks(record, fd))
    finally:
        os.close(fd)


class OpenFile:
    def __init__(self, store: Store, journal: Journal, space: CacheSpace, *, ino: int,
                 key: str, attr: Attr, original: Original | None, xattrs: dict[str, bytes],
                 keep: dict[str, str], content_type: str,
                 data_file: tuple[str, int] | None = None) -> None:
        """``data_file``: (name, descriptor) of an existing data file to continue
        (recovery); else a new, empty one is made."""
        self.store = store
        self.journal = journal
        self.space = space
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
        # A background upload failed; reported by the next flush or fsync.
        self.upload_failed = False
        self.retries = 0  # background uploads failed in a row
        # Changes since the file was opened; the journal record is current when
        # it was written at this count.
        self._changes = 0
        self._journaled_at: int | None = None
        self.upload_id: tuple[str, str] | None = None  # (key, id) of a running multipart
        # Closed in close(), when the file leaves the open-file table.
        try:
            self.name, self._fd = data_file or journal.new_data_file()
        except OSError as exc:
            raise _disk_error(exc, "creation") from None
        self._data_size = os.fstat(self._fd).st_size

    @property
    def size(self) -> int:
        return self.attr.size

    @property
    def dirty(self) -> bool:
        return self.data_dirty or self.meta_dirty

    def close(self, *, keep_data: bool = False) -> None:
        """Called with ``lock`` held, so no reader is inside read_range.

        ``keep_data``: leave the data file and its journal record for the next mount.
        A second call does nothing (a release and a setattr may both drop the file).
        """
        if self.closed:
            return
        self.closed = True
        os.close(self._fd)
        self.space.release(id(self))
        if not keep_data:
            self.journal.remove(self.name)
            self.journal.remove_data(self.name)

    # The journal

    @property
    def journaled(self) -> bool:
        return self._journaled_at is not None

    def record(self) -> Record:
        with self._blocks_lock:
            loaded = block_ranges(self._loaded)
        return Record(key=self.key, attr=self.attr, original=self.original,
                      original_limit=self.original_limit, loaded=loaded,
                      xattrs=dict(self.xattrs), keep=dict(self.keep),
                      content_type=self.content_type,
                      upload_key=self.upload_id[0] if self.upload_id else None,
                      upload_id=self.upload_id[1] if self.upload_id else None)

    def persist(self, *, force: bool = False) -> None:
        """Make the content and a record of it durable in the journal (with ``lock``
        held). Skipped when the record is current."""
        if not self.journal.durable or (self._journaled_at == self._changes and not force):
            return
        try:
            self.journal.write(self.name, self.record(), self._fd)
        except OSError as exc:
            raise _disk_error(exc, "journal") from None
        self._journaled_at = self._changes

    def unjournal(self) -> None:
        """The record is void (the file was unlinked, or its content committed)."""
        if self._journaled_at is not None:
            self.journal.remove(self.name)
            self._journaled_at = None

    def set_upload(self, upload: tuple[str, str] | None) -> None:
        """A multipart upload (key, id) started, or ended: recorded so that a later
        mount can abort the upload of a killed one."""
        self.upload_id = upload
        if self.journaled:
            self.persist(force=True)

    @classmethod
    def recovered(cls, store: Store, journal: Journal, space: CacheSpace, ino: int,
                  record: Record, data_file: tuple[str, int], *, key: str,
                  original: Original | None) -> OpenFile:
        """A dirty file from a dead mount's journal, to be uploaded to ``key``.

        Blocks that hold data in the data file count as written: writes made
        after the record was last written show up there too.
        """
        written = _written_blocks(record, data_file[1])
        if original is None and not _complete(record, written):
            raise FsError(errno.ESTALE, "part of the content was only in the object it "
                          "replaced, which changed or is gone")
        file = cls(store, journal, space, ino=ino, key=key, attr=record.attr,
                   original=original, xattrs=record.xattrs, keep=record.keep,
                   content_type=record.content_type, data_file=data_file)
        file.original_limit = min(record.original_limit, original.size) if original else 0
        size = max(record.attr.size, file._data_size)
        file.attr = dataclasses.replace(record.attr, size=size)
        file._loaded = set(written)
        file._dirty = set(written)
        file.data_dirty = True
        file.space.update(id(file), os.fstat(file._fd).st_blocks * 512)
        return file

    def _account(self) -> None:
        self.space.update(id(self), os.fstat(self._fd).st_blocks * 512)

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
                self.space.reserve(len(data))
                try:
                    _pwrite_all(self._fd, data, first)
                except OSError as exc:
                    raise _disk_error(exc, "write") from None
                finally:
                    self._account()
                self._data_size = max(self._data_size, last)
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
        blocks = self._blocks(offset, end)
        with self._blocks_lock:
            new_blocks = sum(1 for block in blocks if block not in self._loaded)
        self.space.reserve(max(end - self._data_size, 0) + new_blocks * BLOCK)
        try:
            _pwrite_all(self._fd, data, offset)
        except OSError as exc:
            # Blocks that held content may hold part of the new bytes now.
            with self._blocks_lock:
                self._dirty.update(block for block in blocks if block in self._loaded)
            self._changes += 1
            raise _disk_error(exc, "write") from None
        finally:
            self._account()
        self._data_size = max(self._data_size, end)
        with self._blocks_lock:
            self._loaded.update(blocks)
            self._dirty.update(blocks)
        self._content_changed(max(self.size, end))

    def truncate(self, size: int) -> None:
        if size < self.size:
            if size % BLOCK:
                self._load(size - 1, size)
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                raise _disk_error(exc, "truncate") from None
            self._data_size = min(self._data_size, size)
            self._account()
            self.original_limit = min(self.original_limit, size)
            boundary = size // BLOCK
            with self._blocks_lock:
                self._loaded = {b for b in self._loaded if b <= boundary}
                self._dirty = {b for b in self._dirty if b <= boundary}
                if size % BLOCK:
                    self._dirty.add(boundary)
        if size != self.size:
            self._content_changed(size)
            if self.journaled:
                # The record's size and original_limit are too large now: a crash
                # would fill the cut range from the old object.
                self.persist()

    def _content_changed(self, size: int) -> None:
        now = time.time_ns()
        self.attr = dataclasses.replace(self.attr, size=size, mtime_ns=now, ctime_ns=now)
        self.data_dirty = True
        self._changes += 1

    def changed(self) -> None:
        """Attributes, xattrs or the key changed (the caller set meta_dirty)."""
        self._changes += 1

    def evict(self) -> None:
        """Drop the cached content if all of it is in the bucket (with ``lock``
        held): it is fetched again from the object when needed."""
        if self.dirty or self.unlinked or self.original is None or self._data_size == 0:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            return
        with self._blocks_lock:
            self._loaded.clear()
        self._data_size = 0
        self.original_limit = self.original.size
        self._account()

    def detach_from_object(self) -> None:
        """Fetch everything still only in the object, which is about to be deleted."""
        self._load(0, self.original_limit)
        self.original_limit = 0
        self._changes += 1

    def committed(self, etag: str) -> None:
        """The bucket now holds exactly this content and these attributes."""
        self.original = Original(self.key, etag, self.size)
        self.original_limit = self.size
        with self._blocks_lock:
            self._dirty.clear()
        self.data_dirty = self.meta_dirty = False
        self.upload_failed = False
        self.unjournal()
