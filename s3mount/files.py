"""The content of a file while it is open for writing, held in a local cache file.

The cache file is sparse and filled block by block: a block is fetched from
the object only when it is read, or uploaded while only part of it was
written. A write never waits for a download: a block that is written only in
part is *partial*, and the byte ranges written are recorded; its other bytes
are filled in from the object when it is first read or uploaded (only the
gaps are written, so the new bytes stay). Filling takes runs of blocks from
the read cache (block_cache.py) when it holds them for the same ETag, else
fetches each run with one ranged GET. Blocks that were written are *dirty*; a range with no
dirty block that lies within the original object is *unchanged*, so an upload
can copy it server-side instead of sending it (s3fs's mixupload). This object
is the ``DataSource`` of transfer.upload.

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
from typing import TYPE_CHECKING

from .block_cache import BlockCache, punch_hole, pwrite_all
from .cache_space import CacheSpace
from .errors import FsError
from .journal import Journal, Record, block_ranges, block_set, data_blocks
from .meta import Attr
from .store import Store
from .transfer import Original

if TYPE_CHECKING:
    from .streaming import Stream

BLOCK = 1024 * 1024
# The longest range of the original object that one GET fetches to fill blocks
# (an upload part of the default 10 MiB takes one).
MAX_FETCH = 16 * BLOCK


def _disk_error(exc: OSError, what: str) -> FsError:
    """The cache file's own errno (ENOSPC, EDQUOT, ...), not a generic EIO."""
    return FsError(exc.errno or errno.EIO, f"cache file {what}: {exc.strerror}")


def _written_blocks(record: Record, fd: int) -> set[int]:
    """Blocks whose content is all in the data file (partial ones are not)."""
    return (data_blocks(fd, BLOCK) | block_set(record.loaded)) - set(record.partial)


def add_range(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """``ranges`` (sorted, disjoint) with [start, end) added, merged where they touch."""
    if start >= end:
        return list(ranges)
    merged: list[tuple[int, int]] = []
    for first, last in sorted([*ranges, (start, end)]):
        if merged and first <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def gaps(ranges: list[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that ``ranges`` (sorted, disjoint) do not cover."""
    found: list[tuple[int, int]] = []
    for first, last in ranges:
        if first > start:
            found.append((start, min(first, end)))
        start = max(start, last)
        if start >= end:
            break
    if start < end:
        found.append((start, end))
    return [(a, b) for a, b in found if a < b]


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
                 data_file: tuple[str, int] | None = None,
                 read_cache: BlockCache | None = None) -> None:
        """``data_file``: (name, descriptor) of an existing data file to continue
        (recovery); else a new, empty one is made. ``read_cache``: where bytes of
        the original object may be found before they are fetched."""
        self.store = store
        self.read_cache = read_cache
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
        self._loaded: set[int] = set()  # blocks whose whole content the cache file holds
        self._dirty: set[int] = set()
        # Partial blocks: block → the byte ranges written (see the module's doc).
        self._partial: dict[int, list[tuple[int, int]]] = {}
        # Blocks dropped from the cache file because they are in the parts of the
        # running streaming upload (max_dirty_data): readable again only once
        # that upload is completed, from the object it makes.
        self._punched: set[int] = set()
        # A new file must reach the bucket even when nothing is written to it.
        self.data_dirty = original is None
        self.meta_dirty = False
        # Writable descriptors; guarded by the file table's lock, not by ``lock``,
        # which an upload holds for long.
        self.handles = 0
        self.unlinked = False
        self.closed = False
        # Another descriptor read the file, or wrote it, while it was written: the
        # kernel's page cache may hold pages of a state between two versions.
        self.raced = False
        # A background upload failed; reported by the next flush or fsync.
        self.upload_failed = False
        self.retries = 0  # background uploads failed in a row
        # Changes since the file was opened; the journal record is current when
        # it was written at this count.
        self._changes = 0
        self._journaled_at: int | None = None
        self.upload_id: tuple[str, str] | None = None  # (key, id) of a running multipart
        # The multipart upload running while the file is written (see streaming.py);
        # guarded by ``lock``.
        self.stream: Stream | None = None
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
        # Adopted before the file's space is released, so the total never grows.
        if not keep_data and not self.dirty and not self.unlinked:
            self._hand_to_read_cache()
        self.space.release(id(self))
        if not keep_data:
            self.journal.remove(self.name)
            self.journal.remove_upload(self.name)
            self.journal.remove_data(self.name)

    def _hand_to_read_cache(self) -> None:
        """The bucket holds this content: its whole blocks join the read cache."""
        if self.read_cache is None or self.original is None:
            return
        with self._blocks_lock:
            blocks = {b for b in self._loaded if b * BLOCK < self.size}
        self.read_cache.adopt(self.key, self.original.etag, self.original.size,
                              self.journal.data_path(self.name), blocks)

    def duplicate_fd(self) -> int:
        """A descriptor of the cache file for a streaming upload's parts, which
        read it without ``lock`` and may outlive close() (the stream closes it)."""
        return os.dup(self._fd)

    # The journal

    @property
    def journaled(self) -> bool:
        return self._journaled_at is not None

    def record(self) -> Record:
        with self._blocks_lock:
            loaded = block_ranges(self._loaded)
            partial = {block: list(ranges) for block, ranges in self._partial.items()}
        return Record(key=self.key, attr=self.attr, original=self.original,
                      original_limit=self.original_limit, loaded=loaded,
                      xattrs=dict(self.xattrs), keep=dict(self.keep),
                      content_type=self.content_type,
                      upload_key=self.upload_id[0] if self.upload_id else None,
                      upload_id=self.upload_id[1] if self.upload_id else None,
                      partial=partial)

    def persist(self, *, force: bool = False) -> None:
        """Make the content and a record of it durable in the journal (with ``lock``
        held). Skipped when the record is current, and while blocks are only in a
        streaming upload: no record could describe them, and the journal's note of
        that upload has a later mount abort it."""
        if (not self.journal.durable or self._punched
                or (self._journaled_at == self._changes and not force)):
            return
        try:
            self.journal.write(self.name, self.record(), self._fd)
        except OSError as exc:
            raise _disk_error(exc, "journal") from None
        if self._journaled_at is None:
            self.journal.remove_upload(self.name)  # the record names the upload now
        self._journaled_at = self._changes

    def unjournal(self) -> None:
        """The record is void (the file was unlinked, or its content committed)."""
        if self._journaled_at is not None:
            self.journal.remove(self.name)
            self._journaled_at = None

    def set_upload(self, upload: tuple[str, str] | None) -> None:
        """A multipart upload (key, id) started, or ended: recorded so that a later
        mount can abort the upload of a killed one. Without a record (a streaming
        upload before the first flush), only the upload is noted."""
        self.upload_id = upload
        if self.journaled:
            self.persist(force=True)
        elif upload is not None:
            try:
                self.journal.write_upload(self.name, *upload)
            except OSError as exc:
                raise _disk_error(exc, "journal") from None
        else:
            self.journal.remove_upload(self.name)

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
        if original is not None:
            file._partial = {block: list(ranges) for block, ranges in record.partial.items()
                             if block * BLOCK < file.original_limit}
        file._dirty = written | set(file._partial)
        file.data_dirty = True
        file.space.update(id(file), os.fstat(file._fd).st_blocks * 512)
        return file

    def _account(self) -> None:
        self.space.update(id(self), os.fstat(self._fd).st_blocks * 512)

    def _blocks(self, start: int, end: int) -> range:
        return range(start // BLOCK, (end + BLOCK - 1) // BLOCK)

    def _needs_original(self, block: int) -> bool:
        return self.original is not None and block * BLOCK < self.original_limit

    # Blocks in a streaming upload (see streaming.py, max_dirty_data)

    @property
    def punched(self) -> bool:
        return bool(self._punched)

    @property
    def punched_size(self) -> int:
        """Bytes of the content that are only in the streaming upload's parts."""
        return len(self._punched) * BLOCK

    def _only_in_upload(self, start: int, end: int) -> FsError:
        # Callers finish the streaming upload first (fs.py): reading or writing
        # into a punched block would lose bytes or give zeros.
        return FsError(errno.EIO, f"bytes {start}-{end} of {self.key} are only in an "
                       "unfinished multipart upload")

    def punched_in(self, start: int, end: int) -> bool:
        """Some block of [start, end) is only in the streaming upload's parts."""
        if not self._punched:
            return False
        with self._blocks_lock:
            return any(block in self._punched for block in self._blocks(start, end))

    def punch(self, start: int, end: int) -> bool:
        """Drop the blocks of [start, end) (whole blocks, all written) from the cache
        file, with ``lock`` held: a streamed part holds them. False when the cache
        file's filesystem cannot punch holes."""
        if not punch_hole(self._fd, start, end - start):
            return False
        blocks = self._blocks(start, end)
        with self._blocks_lock:
            self._loaded.difference_update(blocks)
            self._punched.update(blocks)
        self._account()
        return True

    def _load(self, start: int, end: int) -> None:
        """Make the cache file hold the content of every block in [start, end):
        what was never written is filled in from the original object, with one
        GET per run of such blocks (up to MAX_FETCH bytes; blocks held already
        inside a run are fetched along rather than splitting it)."""
        with self._blocks_lock:
            missing = [block for block in self._blocks(start, end) if block not in self._loaded]
            if any(block in self._punched for block in missing):
                raise self._only_in_upload(start, end)
            for block in missing:
                if not self._needs_original(block):
                    # Past the original: bytes never written read as zeros.
                    self._loaded.add(block)
                    self._partial.pop(block, None)
        fetch = [block for block in missing if self._needs_original(block)]
        while fetch:
            run = [block for block in fetch if (block - fetch[0] + 1) * BLOCK <= MAX_FETCH]
            fetch = fetch[len(run):]
            self._fill(run)

    def _fill(self, blocks: list[int]) -> None:
        """Fetch the original bytes of ``blocks`` (ascending) in one GET; write the
        bytes of each that were not written since."""
        assert self.original is not None
        first = blocks[0] * BLOCK
        last = min((blocks[-1] + 1) * BLOCK, self.original_limit)
        # A file read before it is changed (or a second edit) finds its blocks in the
        # read cache: the GET of a whole part for a 4 KiB write goes.
        cached = (self.read_cache.get(self.original.key, self.original.etag, first, last)
                  if self.read_cache is not None else None)
        data = memoryview(cached if cached is not None else self.store.get_range(
            self.original.key, first, last - 1, self.original.etag))
        pieces: list[tuple[int, int]] = []
        with self._blocks_lock:
            for block in blocks:
                if block in self._loaded:
                    continue
                block_end = min((block + 1) * BLOCK, last)
                pieces += gaps(self._partial.get(block, []), block * BLOCK, block_end)
        self.space.reserve(sum(b - a for a, b in pieces))
        try:
            for a, b in pieces:
                pwrite_all(self._fd, data[a - first:b - first], a)
        except OSError as exc:
            raise _disk_error(exc, "write") from None
        finally:
            self._account()
        if pieces:
            self._data_size = max(self._data_size, pieces[-1][1])
        with self._blocks_lock:
            for block in blocks:
                self._loaded.add(block)
                self._partial.pop(block, None)

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

    def read_into(self, offset: int, into: memoryview) -> int:
        end = min(offset + len(into), self.size)
        if offset >= end:
            return 0
        self._load(offset, end)
        got = os.preadv(self._fd, [into[:end - offset]], offset)
        # A sparse tail that was never written reads as zeros.
        into[got:end - offset] = bytes(end - offset - got)
        return end - offset

    def unchanged(self, offset: int, length: int) -> bool:
        if offset + length > self.original_limit:
            return False
        with self._blocks_lock:
            return not any(block in self._dirty for block in self._blocks(offset, offset + length))

    def write(self, offset: int, data: bytes) -> None:
        end = offset + len(data)
        if self.punched_in(offset, end):
            raise self._only_in_upload(offset, end)
        blocks = self._blocks(offset, end)
        # Blocks only partly overwritten that still lack original bytes.
        edges = sorted({offset // BLOCK, (end - 1) // BLOCK}) if end > offset else []
        with self._blocks_lock:
            edges = [block for block in edges
                     if (block * BLOCK < offset or end < (block + 1) * BLOCK)
                     and block not in self._loaded and self._needs_original(block)]
            partial = [block for block in self._partial if block in blocks]
        if (edges or partial) and self.journaled:
            # The journal record lists partial blocks as they were: bytes written
            # now into their gaps would be filled from the object by a recovery.
            # While a record exists, such blocks are filled before the write,
            # and the record renewed when it named them partial.
            for block in sorted({*edges, *partial}):
                self._load(block * BLOCK, block * BLOCK + 1)
            if partial:
                self.persist(force=True)
            edges = []
        with self._blocks_lock:
            new_blocks = sum(1 for block in blocks if block not in self._loaded)
        self.space.reserve(max(end - self._data_size, 0) + new_blocks * BLOCK)
        with self._blocks_lock:
            # Recorded before the bytes land: after a failed write the range holds
            # some of them, and must not be filled from the object later.
            for block in edges:
                ranges = add_range(self._partial.get(block, []), max(offset, block * BLOCK),
                                   min(end, (block + 1) * BLOCK))
                self._partial[block] = ranges
        try:
            pwrite_all(self._fd, data, offset)
        except OSError as exc:
            # Blocks that held content may hold part of the new bytes now.
            with self._blocks_lock:
                self._dirty.update(block for block in blocks
                                   if block in self._loaded or block in self._partial)
            self._changes += 1
            raise _disk_error(exc, "write") from None
        finally:
            self._account()
        self._data_size = max(self._data_size, end)
        with self._blocks_lock:
            for block in blocks:
                if block in edges and gaps(self._partial[block], block * BLOCK,
                                           min((block + 1) * BLOCK, self.original_limit)):
                    continue  # still partial
                self._partial.pop(block, None)
                self._loaded.add(block)
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
                # The boundary block was filled above, so it is not partial.
                self._partial = {b: r for b, r in self._partial.items() if b < boundary}
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
            self._partial.clear()
        self._data_size = 0
        self.original_limit = self.original.size
        self._account()

    def detach_from_object(self) -> None:
        """Fetch everything still only in the object, which is about to be deleted."""
        self._load(0, self.original_limit)
        self.original_limit = 0
        self._changes += 1

    def data_committed(self, etag: str) -> None:
        """The bucket now holds exactly this content (under this ETag); blocks not
        in the cache file are fetched from that object when needed."""
        self.original = Original(self.key, etag, self.size)
        self.original_limit = self.size
        with self._blocks_lock:
            self._dirty.clear()
            self._punched.clear()
        self.data_dirty = False

    def committed(self, etag: str) -> None:
        """The bucket now holds exactly this content and these attributes."""
        self.data_committed(etag)
        self.meta_dirty = False
        self.upload_failed = False
        self.unjournal()
