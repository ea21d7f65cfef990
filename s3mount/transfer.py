"""Uploads and server-side copies: one PUT, parallel multipart, mixupload, copy fallbacks.

An object is written either with one PutObject or as a multipart upload whose
parts run in parallel on this module's own thread pool. When the new content
replaces an existing object and only some ranges changed, unchanged parts are
copied server-side with UploadPartCopy ("mixupload" in s3fs), so a small edit
to a big file does not send the whole file again.

Some S3-compatible servers answer NotImplemented to CopyObject or
UploadPartCopy. The first such answer switches server-side copies off for the
life of the Transfer: data is sent instead, and the write never fails because
of it (s3fs answers EIO there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Protocol

from .buffers import BufferPool
from .errors import FsError
from .store import Store

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MAX_PARTS = 10_000
MIN_PART = 5 * MiB
MAX_SINGLE_COPY = 5 * 1024**3  # S3's CopyObject limit
MAX_SINGLE_PUT = 5 * 1024**3  # S3's PutObject limit
MAX_OBJECT = 5 * 1024**4  # S3's object size limit


@dataclasses.dataclass(frozen=True)
class TransferSettings:
    multipart_threshold: int = 25 * MiB  # bytes; multipart at or above this
    multipart_size: int = 10 * MiB  # bytes; part size before growth
    multipart_copy_size: int = 512 * MiB  # part size for multipart copies
    singlepart_copy_limit: int = 512 * MiB  # largest single CopyObject (capped at MAX_SINGLE_COPY)
    nomultipart: bool = False
    streamupload: bool = False  # upload big files while they are written (streaming.py)
    # Bytes of a streamed file kept on local disk at most (None: all of it).
    max_dirty_data: int | None = 5120 * MiB
    nocopyapi: bool = False  # never use CopyObject/UploadPartCopy: download and re-upload
    nomixupload: bool = False  # uploads of changed files send every part (no UploadPartCopy)
    norenameapi: bool = False  # renames download and re-upload; implies nomixupload (as s3fs)
    max_thread_count: int = 10  # parallel part requests
    # Bytes of content held in memory by all uploads of the mount together.
    max_bytes_in_flight: int = 48 * MiB

    @property
    def mixupload(self) -> bool:
        """Whether uploads may copy unchanged ranges server-side (UploadPartCopy)."""
        return not (self.nocopyapi or self.nomixupload or self.norenameapi)


class ByteBudget:
    """Bytes that uploads may hold in memory at once, shared by all of them.

    Parallel parts of several files would otherwise hold max_thread_count part
    bodies each (100 MiB with the defaults). One request larger than the whole
    budget (a part of a huge file) gets it all, alone.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(capacity, 1)
        self._used = 0
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int) -> Iterator[None]:
        amount = min(amount, self.capacity)
        with self._changed:
            while self._used and self._used + amount > self.capacity:
                self._changed.wait()
            self._used += amount
        try:
            yield
        finally:
            with self._changed:
                self._used -= amount
                self._changed.notify_all()

    @property
    def used(self) -> int:
        with self._changed:
            return self._used


class DataSource(Protocol):
    """The content to upload."""

    size: int

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes (fewer only at EOF).

        May block; called from several threads at once for different ranges.
        """
        ...

    def read_into(self, offset: int, into: memoryview) -> int:
        """``read`` of ``len(into)`` bytes into ``into``; how many were read."""
        ...

    def unchanged(self, offset: int, length: int) -> bool:
        """True when the range equals the same range of the original object."""
        ...


@dataclasses.dataclass(frozen=True)
class Original:
    """The object that the new content replaces, or that a copy reads."""

    key: str
    etag: str
    size: int


def part_size(total: int, wanted: int) -> int:
    """``wanted``, grown to whole MiB when ``total`` would need more than MAX_PARTS parts.

    Never below MIN_PART, S3's smallest part (except the last).
    """
    size = max(wanted, MIN_PART)
    if total > size * MAX_PARTS:
        needed = -(-total // MAX_PARTS)
        size = -(-needed // MiB) * MiB
    return size


def _copyable(source: DataSource, original: Original, offset: int, length: int) -> bool:
    """The part [offset, offset+length) is unchanged within ``original``: it can be
    copied server-side instead of sent."""
    return offset + length <= original.size and source.unchanged(offset, length)


def _least_sending_part(size: int, part: int, source: DataSource, original: Original) -> int:
    """The part size for an upload that copies its unchanged parts: ``part``, or the
    smallest allowed when that sends at least one ``part`` less (a big file
    edited in a few places). Parts stay of one size: some servers (Cloudflare
    R2) refuse parts of unequal sizes."""
    smallest = part_size(size, MIN_PART)
    if smallest >= part:
        return part

    def sent(candidate: int) -> int:
        return sum(length for _, offset, length in part_ranges(size, candidate)
                   if not _copyable(source, original, offset, length))

    return smallest if sent(part) - sent(smallest) >= part else part


def part_ranges(total: int, part: int) -> list[tuple[int, int, int]]:
    """(part number, offset, length) of every part, numbered from 1."""
    return [(index + 1, offset, min(part, total - offset))
            for index, offset in enumerate(range(0, total, part))]


def _read_exactly(source: DataSource, offset: int, length: int) -> bytes:
    data = source.read(offset, length)
    _check_read(len(data), length, offset)
    return data


def _check_read(got: int, length: int, offset: int) -> None:
    if got != length:
        # A short read inside the announced size would silently truncate the object.
        raise FsError(errno.EIO, f"source gave {got} of {length} bytes at {offset}")


class _ObjectSource:
    """An existing object as a DataSource, read in ranges pinned to its ETag."""

    def __init__(self, store: Store, original: Original) -> None:
        self._store = store
        self._original = original
        self.size = original.size

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size)
        if end <= offset:
            return b""
        return self._store.get_range(self._original.key, offset, end - 1, self._original.etag)

    def read_into(self, offset: int, into: memoryview) -> int:
        end = min(offset + len(into), self.size)
        if end <= offset:
            return 0
        return self._store.get_range_into(self._original.key, offset, end - 1,
                                          self._original.etag, into[:end - offset])

    def unchanged(self, offset: int, length: int) -> bool:
        # Only used when server-side copies are off, so there is nothing to copy from.
        return False


# Sends part (number, offset, length) of an upload and returns its ETag.
_PartSender = Callable[[str, int, int, int], str]
# Told "" before a multipart upload starts, its id once it exists, None when it ends.
UploadWatcher = Callable[[str | None], None]


class Transfer:
    """Uploads and copies objects of one Store.

    Owns a thread pool used only for part requests, so a caller running on
    another pool never waits for a slot of its own pool.
    """

    def __init__(self, store: Store, settings: TransferSettings) -> None:
        self._store = store
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=settings.max_thread_count,
                                        thread_name_prefix="s3mount-part")
        self._lock = threading.Lock()
        self._copy_supported = True
        self.budget = ByteBudget(settings.max_bytes_in_flight)
        # The parts' bodies, within the budget.
        self.buffers = BufferPool(keep=settings.max_bytes_in_flight)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    @property
    def settings(self) -> TransferSettings:
        return self._settings

    def submit(self, task: Callable[..., None], *args: object) -> Future[None]:
        """Run ``task`` on the part pool (streaming uploads send their parts there);
        RuntimeError once the Transfer is closed."""
        return self._pool.submit(task, *args)

    @property
    def copy_supported(self) -> bool:
        """False once the server answered NotImplemented to a copy."""
        return self._copy_supported

    def upload(self, key: str, source: DataSource, *, metadata: Mapping[str, str],
               content_type: str, original: Original | None = None,
               on_multipart: UploadWatcher | None = None) -> str:
        """Write ``source`` to ``key``; return the new ETag.

        With ``original`` (the object being replaced), parts that lie within it and
        are unchanged are copied server-side. Blocks until done; on failure the
        multipart upload is aborted and the FsError raised (ESTALE when the
        original changed meanwhile). ``on_multipart`` is told "" before a multipart
        upload is started, its id once it exists, and None once it is completed or
        aborted.
        """
        size = source.size
        settings = self._settings
        if size > MAX_OBJECT or (settings.nomultipart and size > MAX_SINGLE_PUT):
            raise FsError(errno.EFBIG, f"{size} bytes is too large for one object")
        if size == 0 or size < settings.multipart_threshold or settings.nomultipart:
            log.debug("PUT %s (%d bytes)", key, size)
            with self.budget.hold(size):
                body = _read_exactly(source, 0, size) if size else b""
                return self._store.put(key, body, metadata=metadata,
                                       content_type=content_type)
        copy_from = original if settings.mixupload else None

        def send(upload_id: str, number: int, offset: int, length: int) -> str:
            if (copy_from is not None and self._copy_supported
                    and _copyable(source, copy_from, offset, length)):
                try:
                    return self._store.upload_part_copy(
                        key, upload_id, number, copy_from.key, offset, offset + length - 1,
                        source_etag=copy_from.etag)
                except FsError as exc:
                    if exc.errno != errno.ENOTSUP:
                        raise
                    self._copy_unsupported(exc)
            return self._send_part(key, upload_id, source, number, offset, length)

        part = part_size(size, settings.multipart_size)
        if copy_from is not None and self._copy_supported:
            part = _least_sending_part(size, part, source, copy_from)
        log.debug("multipart upload of %s (%d bytes, parts of %d)", key, size, part)
        return self._multipart(key, metadata, content_type, size, part, send,
                               on_multipart=on_multipart)

    def _send_part(self, key: str, upload_id: str, source: DataSource, number: int,
                   offset: int, length: int) -> str:
        with self.budget.hold(length), self.buffers.borrow(length) as body:
            _check_read(source.read_into(offset, body), length, offset)
            return self._store.upload_part(key, upload_id, number, body)

    def send_parts(self, key: str, upload_id: str, source: DataSource,
                   ranges: list[tuple[int, int, int]]) -> list[tuple[int, str]]:
        """Send parts (number, offset, length) of a running multipart upload from
        ``source`` in parallel; return (number, ETag) in part-number order. The
        caller completes or aborts the upload."""
        def send(upload_id: str, number: int, offset: int, length: int) -> str:
            return self._send_part(key, upload_id, source, number, offset, length)

        return self._run_parts(upload_id, ranges, send)

    def copy(self, source: Original, key: str, *, metadata: Mapping[str, str],
             content_type: str) -> str:
        """Copy ``source`` to ``key`` with new metadata (REPLACE); return the new ETag.

        ``key`` may be ``source.key``: that is how metadata are changed. Without
        server-side copies (nocopyapi, or norenameapi for a copy to another key,
        which s3mount makes only to rename) the object is downloaded and uploaded
        again, in parts when large.
        """
        if self._server_side(source, key):
            try:
                return self._server_copy(source, key, metadata, content_type)
            except FsError as exc:
                if exc.errno != errno.ENOTSUP:
                    raise
                self._copy_unsupported(exc)
        log.debug("copying %s to %s by download and upload", source.key, key)
        return self.upload(key, _ObjectSource(self._store, source), metadata=metadata,
                           content_type=content_type)

    def copy_keeping_metadata(self, source: Original, key: str) -> str:
        """Copy ``source`` to another key with its metadata and Content-Type as they are.

        One request (directive COPY) when the server copies and the object is
        small enough; else the metadata are read with a HEAD and ``copy`` does it.
        """
        settings = self._settings
        if (self._server_side(source, key)
                and source.size <= min(settings.singlepart_copy_limit, MAX_SINGLE_COPY)):
            try:
                return self._store.copy(source.key, key, metadata=None, content_type=None,
                                        source_etag=source.etag)
            except FsError as exc:
                if exc.errno != errno.ENOTSUP:
                    raise
                self._copy_unsupported(exc)
        info = self._store.head(source.key)
        if info is None:
            raise FsError(errno.ENOENT, f"{source.key} vanished during the copy")
        return self.copy(source, key, metadata=info.metadata,
                         content_type=info.content_type or "application/octet-stream")

    def _server_side(self, source: Original, key: str) -> bool:
        """Whether this copy is made by the server; a copy to another key is a
        rename's, by file, by directory or of an open file."""
        settings = self._settings
        return (self._copy_supported and not settings.nocopyapi
                and not (settings.norenameapi and key != source.key))

    def _server_copy(self, source: Original, key: str, metadata: Mapping[str, str],
                     content_type: str) -> str:
        settings = self._settings
        # A zero-byte object always gets here: no multipart upload can have zero parts.
        if source.size <= min(settings.singlepart_copy_limit, MAX_SINGLE_COPY):
            return self._store.copy(source.key, key, metadata=metadata,
                                    content_type=content_type, source_etag=source.etag)

        def send(upload_id: str, number: int, offset: int, length: int) -> str:
            return self._store.upload_part_copy(key, upload_id, number, source.key, offset,
                                                offset + length - 1, source_etag=source.etag)

        part = part_size(source.size, settings.multipart_copy_size)
        log.debug("multipart copy of %s to %s (%d bytes, parts of %d)",
                  source.key, key, source.size, part)
        return self._multipart(key, metadata, content_type, source.size, part, send,
                               copy_of=source)

    def _multipart(self, key: str, metadata: Mapping[str, str], content_type: str,
                   size: int, part: int, send: _PartSender,
                   copy_of: Original | None = None,
                   on_multipart: UploadWatcher | None = None) -> str:
        """``copy_of``: the object that the upload copies unchanged (for its SSE-C key)."""
        watch = on_multipart or (lambda _upload_id: None)
        watch("")
        upload_id = self._store.create_multipart(
            key, metadata=metadata, content_type=content_type,
            copy_of=(copy_of.key, copy_of.etag) if copy_of else None)
        try:
            watch(upload_id)
            parts = self._run_parts(upload_id, part_ranges(size, part), send)
            etag = self._store.complete_multipart(key, upload_id, parts, size=size)
        except BaseException:
            self.abort(key, upload_id)
            watch(None)
            raise
        watch(None)
        return etag

    def _run_parts(self, upload_id: str, ranges: list[tuple[int, int, int]],
                   send: _PartSender) -> list[tuple[int, str]]:
        """Send all parts; return (number, ETag) in part-number order.

        At most max_thread_count parts of this upload are queued or running at a
        time, so a large file neither floods the shared pool nor holds more than
        that many parts' bytes (each task reads its own data); the bytes held
        by all uploads together are bounded by ``budget``.
        """
        window = self._settings.max_thread_count
        waiting = iter(ranges)
        pending: dict[Future[str], int] = {}
        etags: dict[int, str] = {}
        try:
            while True:
                for number, offset, length in waiting:
                    pending[self._pool.submit(send, upload_id, number, offset, length)] = number
                    if len(pending) >= window:
                        break
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    etags[pending.pop(future)] = future.result()
        finally:
            # After a failure the parts still running must end before the abort:
            # a part that lands after it would be stored (and billed) again.
            for future in pending:
                future.cancel()
            wait(pending)
        return sorted(etags.items())

    def abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload; a failure is only logged (S3 lifecycle rules
        remove what is left)."""
        try:
            self._store.abort_multipart(key, upload_id)
        except FsError as exc:
            log.warning("could not abort the multipart upload %s of %s: %s",
                        upload_id, key, exc.detail)

    def _copy_unsupported(self, exc: FsError) -> None:
        with self._lock:
            if not self._copy_supported:
                return
            self._copy_supported = False
        # exc.detail names the operation, e.g. "upload_part_copy: NotImplemented".
        log.warning("%s does not support server-side copies (%s): sending data instead from "
                    "now on", self._store.endpoint, exc.detail)
