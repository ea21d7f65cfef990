"""Streaming multipart uploads: the parts of a big file go up while it is written.

A file written from offset 0 with nothing of an older object to keep (a new
file, or one truncated to zero) is uploaded as it grows: once the contiguous
written prefix reaches ``multipart_threshold`` (-o streamupload) or else half
the dirty window, a multipart upload is started
in the background, and every part of ``multipart_size`` bytes that the prefix
covers is sent on Transfer's pool, read from the file's cache file (through a
descriptor of the stream's own, so a part may outlive the OpenFile). The
writer never waits for S3: it records what it wrote, with the file's lock
held as writes are; the part bodies in memory count against Transfer's
ByteBudget like those of any upload.

A write into a part handed out already makes that part stale: every part has a
generation, bumped after each write into it, and a send records the
generation it read before reading, so a part read while a write landed is
seen as stale. At flush/fsync/close the upload is finished (``finish``, with
the file's lock held): parts missing, stale or failed are sent, running ones
waited for, and the upload completed. CreateMultipartUpload took the metadata
of its start; when the final ones differ (the mtime nearly always does), the
caller sets them with one server-side self-copy (REPLACE), after it took the
completed object as the file's content: a failed copy leaves only metadata to
store.

The stream is abandoned (aborted in the background; the normal upload at
close does the work) when the file is truncated below parts handed out,
unlinked or renamed, or outgrows 10,000 parts; and not started when the
server cannot copy (the metadata could not be fixed without sending
everything again).

The dirty window (``max_dirty_data``): a writer that is more than the window
ahead of the upload waits for its parts, and once the file holds more than
the window on local disk, the oldest parts sent are punched out of its cache
file (not for a file with a journal record: a recovery could not rebuild
it). Their bytes are then only in the upload, so it is never abandoned any
more: what would abandon it (a read or write of a punched part, a truncation
below the parts sent, a rename, outgrowing 10,000 parts) first finishes it
(``must_finish``; fs.py then uploads as fsync does), and a finish that fails
keeps it for the next one instead of aborting it. An unlink still abandons
it when no descriptor can read the file any more.

Locking: a stream's own ``_lock`` guards its fields and is never held across
I/O. Part and create tasks never take the file's lock, so ``finish`` may wait
for them while holding it; the journal (``OpenFile.set_upload``) is updated
only by holders of the file's lock.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, NamedTuple

from .errors import FsError
from .files import add_range
from .meta import encode_metadata
from .store import Store
from .transfer import MAX_PARTS, MIN_PART, Transfer, part_ranges

if TYPE_CHECKING:
    from .files import OpenFile

log = logging.getLogger(__name__)

# Written ranges past the prefix that are remembered (writes arrive out of order
# when several FUSE workers serve one writer); more are dropped, which only
# delays the parts they would have completed.
MAX_RANGES = 64


class State(enum.Enum):
    WATCHING = "watching"  # no upload yet: the prefix is below the threshold
    STARTING = "starting"  # CreateMultipartUpload is running
    OPEN = "open"  # parts are sent as the prefix covers them
    DONE = "done"  # finished, abandoned, or could not start


class Stream:
    """The streaming upload of one file (see the module's doc)."""

    def __init__(self, key: str, part: int) -> None:
        self.key = key
        self.part = part
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self.state = State.WATCHING
        self.upload_id: str | None = None
        self.recorded = False  # the upload id was given to the file's journal record
        self.metadata: Mapping[str, str] = {}
        self.content_type = ""
        self._fd: int | None = None  # the cache file, while parts may read it
        # Written byte ranges (sorted, disjoint); the first one, when it starts at
        # 0, is the contiguous written prefix.
        self._written: list[tuple[int, int]] = []
        self._handed = 0  # parts 1.._handed were handed out to be sent
        self._finishing = False  # finish() sends the rest: hand out no more
        self._aborting = False  # someone took on the abort of the upload
        self._generation: dict[int, int] = {}
        self._sent: dict[int, tuple[int, str]] = {}  # number → (generation read, ETag)
        self._running: dict[int, Future[None]] = {}  # queued or sending
        self._punch_from = 1  # parts below were punched out of the cache file

    @property
    def prefix(self) -> int:
        with self._lock:
            return self._prefix()

    def _prefix(self) -> int:
        return self._written[0][1] if self._written and self._written[0][0] == 0 else 0

    def _good(self, number: int) -> bool:
        sent = self._sent.get(number)
        return sent is not None and sent[0] == self._generation.get(number, 0)

    def _claim_abort(self) -> bool:
        """With ``_lock`` held: True for the one caller that must abort the upload
        (the stream ended, no part runs any more)."""
        if (self.state is State.DONE and not self._running and self.upload_id is not None
                and not self._aborting):
            self._aborting = True
            return True
        return False

    def _release_fd(self) -> None:
        """With ``_lock`` held: close the descriptor once no part can read it."""
        if self._fd is not None and self.state is State.DONE and not self._running:
            os.close(self._fd)
            self._fd = None


def remember_written(ranges: list[tuple[int, int]], start: int,
                     end: int) -> list[tuple[int, int]]:
    """The written ranges with [start, end) added, at most MAX_RANGES of them (those
    nearest the start, which extend the prefix first)."""
    return add_range(ranges, start, end)[:MAX_RANGES]


class Completed(NamedTuple):
    """A finished stream: the object's ETag, and whether its metadata (those of the
    upload's start) must still be replaced by the final ones."""

    etag: str
    metadata_stale: bool


class Streamer:
    """Starts, feeds, finishes and abandons the streams of a mount's files."""

    def __init__(self, store: Store, transfer: Transfer) -> None:
        self._store = store
        self._transfer = transfer
        settings = transfer.settings
        self._dirty_limit = settings.max_dirty_data
        self._threshold = settings.multipart_threshold
        if not settings.streamupload and self._dirty_limit is not None:
            # Without streamupload a file streams only once it holds half the dirty
            # window, so no file needs more local disk than the window (s3fs too
            # uploads at max_dirty_data), while smaller ones avoid the self-copy.
            self._threshold = max(self._threshold, self._dirty_limit // 2)
        self._enabled = ((settings.streamupload or self._dirty_limit is not None)
                         and not settings.nomultipart and settings.mixupload)
        self._part = max(settings.multipart_size, MIN_PART)
        # Parts of one stream queued or running at a time, as for any upload (see
        # Transfer._run_parts): a fast writer does not fill the shared pool's queue.
        self._parallel = settings.max_thread_count

    def _eligible(self, file: OpenFile) -> bool:
        return (self._enabled and self._transfer.copy_supported and not file.unlinked
                and (file.original is None or file.original_limit == 0))

    # The write path (with file.lock held; never waits for S3)

    def wrote(self, file: OpenFile, offset: int, end: int) -> None:
        """Bytes [offset, end) of ``file`` were written (or a write of them failed
        midway): track the prefix, start the upload or send the parts it covers."""
        stream = file.stream
        if end <= offset:
            return
        if stream is None:
            if offset != 0 or not self._eligible(file):
                return
            stream = file.stream = Stream(file.key, self._part)
        if end > MAX_PARTS * stream.part:
            log.info("%s outgrows %d parts of %d bytes: it is uploaded at close instead "
                     "of while it is written", file.key, MAX_PARTS, stream.part)
            self.abandon(file)
            return
        with stream._lock:
            stream._written = remember_written(stream._written, offset, end)
            for number in range(offset // stream.part + 1,
                                min(-(-end // stream.part), stream._handed) + 1):
                stream._generation[number] = stream._generation.get(number, 0) + 1
            start = stream.state is State.WATCHING and stream._prefix() >= self._threshold
            if stream.state is State.OPEN:
                self._send_ready(stream)
            upload_id = stream.upload_id
        if start:
            self._start(file, stream)
        elif upload_id is not None and not stream.recorded:
            stream.recorded = True
            self._record(file, upload_id)
        if self._dirty_limit is not None:
            self._keep_window(file, stream, self._dirty_limit)

    def _keep_window(self, file: OpenFile, stream: Stream, limit: int) -> None:
        """Hold at most about ``limit`` bytes of the file on local disk (see the
        module's doc): wait for parts, then punch the oldest ones sent."""
        part = stream.part
        with stream._lock:
            # While the upload is created nothing can be sent or punched: the writer
            # waits (once past the window) for it, as it would for parts. Parts that
            # failed count as sent here: they go again at close, and nothing would
            # wake a writer waiting for them.
            stream._changed.wait_for(
                lambda: stream.state in (State.WATCHING, State.DONE)
                or (stream.state is State.STARTING and stream._prefix() <= limit)
                or (stream.state is State.OPEN and (
                    not stream._running
                    or stream._prefix() - (stream._handed - len(stream._running)) * part
                    <= limit)))
            if stream.state is not State.OPEN or file.journaled:
                return
            held = file.size - file.punched_size
            number, chosen = stream._punch_from, []
            while held > limit and number <= stream._handed:
                if (number not in stream._running and stream._good(number)
                        and not file.punched_in((number - 1) * part, number * part)):
                    chosen.append(number)
                    held -= part
                number += 1
        if not all(file.punch((n - 1) * part, n * part) for n in chosen):
            log.warning("the cache directory's filesystem cannot punch holes: streamed files "
                        "stay whole on local disk (max_dirty_data does not apply)")
            self._dirty_limit = None
        with stream._lock:
            while file.punched_in((stream._punch_from - 1) * part, stream._punch_from * part):
                stream._punch_from += 1

    def must_finish(self, file: OpenFile, start: int, end: int, *,
                    truncate: bool = False) -> bool:
        """True when the stream must be finished before a read or write of [start,
        end), or before a truncation to ``start``: it would touch punched parts,
        or abandon the upload that holds them."""
        stream = file.stream
        if stream is None or not file.punched:
            return False
        if truncate:
            with stream._lock:
                return start < stream._handed * stream.part
        return end > MAX_PARTS * stream.part or file.punched_in(start, end)

    def truncated(self, file: OpenFile, size: int) -> None:
        """``file`` was truncated (or extended) to ``size``."""
        stream = file.stream
        if stream is None:
            return
        with stream._lock:
            below_parts = size < stream._handed * stream.part
            if not below_parts:
                stream._written = [(a, min(b, size)) for a, b in stream._written if a < size]
        if below_parts:
            log.debug("%s truncated below the parts sent: its streaming upload is abandoned",
                      file.key)
            self.abandon(file)

    def abandon(self, file: OpenFile) -> None:
        """Give up the file's stream (unlink, rename, truncation): its upload is
        aborted in the background once its running parts end."""
        stream, file.stream = file.stream, None
        if stream is not None:
            self._end(stream, wait=False)

    def _record(self, file: OpenFile, upload_id: str) -> None:
        try:
            file.set_upload((file.key, upload_id))
        except FsError as exc:
            log.warning("cannot journal the upload of %s: %s", file.key, exc.detail)

    def _start(self, file: OpenFile, stream: Stream) -> None:
        stream.metadata = encode_metadata(file.attr, file.xattrs, keep=file.keep)
        stream.content_type = file.content_type
        try:
            stream._fd = file.duplicate_fd()
        except OSError as exc:
            log.info("cannot stream the upload of %s (%s): it is uploaded at close",
                     file.key, exc.strerror)
            with stream._lock:
                stream.state = State.DONE
            return
        # "" until the id is known: a mount started after a crash aborts any
        # upload of the key then (when the file has a journal record).
        self._record(file, "")
        with stream._lock:
            stream.state = State.STARTING
        log.debug("streaming upload of %s starts (parts of %d bytes)", file.key, stream.part)
        if not self._submit(self._create, stream):
            with stream._lock:
                stream.state = State.DONE
                stream._release_fd()

    def _submit(self, task: Callable[..., None], *args: object) -> Future[None] | None:
        try:
            return self._transfer.submit(task, *args)
        except RuntimeError:  # the pool is shut down: the mount is ending
            return None

    # Background tasks (never take the file's lock)

    def _create(self, stream: Stream) -> None:
        try:
            upload_id = self._store.create_multipart(stream.key, metadata=stream.metadata,
                                                     content_type=stream.content_type)
        except FsError as exc:
            log.info("cannot start the streaming upload of %s (%s): it is uploaded at close",
                     stream.key, exc.detail)
            upload_id = None
        with stream._lock:
            stream.upload_id = upload_id
            if stream.state is State.DONE:  # abandoned meanwhile
                abort = stream._claim_abort()
            else:
                abort = False
                stream.state = State.OPEN if upload_id is not None else State.DONE
                self._send_ready(stream)
            stream._release_fd()
            stream._changed.notify_all()
        if abort and upload_id is not None:
            self._transfer.abort(stream.key, upload_id)

    def _send_ready(self, stream: Stream) -> None:
        """With ``_lock`` held: hand out the parts the prefix covers, up to the window."""
        if stream._finishing:
            return
        covered = stream._prefix() // stream.part
        while stream._handed < covered and len(stream._running) < self._parallel:
            number = stream._handed + 1
            future = self._submit(self._send, stream, number)
            if future is None:
                return
            stream._handed = number
            stream._running[number] = future

    def _send(self, stream: Stream, number: int) -> None:
        offset, length = (number - 1) * stream.part, stream.part
        etag = None
        try:
            with (self._transfer.budget.hold(length),
                  self._transfer.buffers.borrow(length) as data):
                with stream._lock:
                    if stream.state is not State.OPEN or stream._fd is None:
                        return
                    generation = stream._generation.get(number, 0)
                    fd, upload_id = stream._fd, stream.upload_id
                assert upload_id is not None
                got = os.preadv(fd, [data], offset)
                if got != length:
                    raise FsError(errno.EIO, f"the cache file gave {got} of {length} "
                                  f"bytes at {offset}")
                etag = self._store.upload_part(stream.key, upload_id, number, data)
        except (FsError, OSError) as exc:
            detail = exc.detail if isinstance(exc, FsError) else exc.strerror
            log.info("streamed part %d of %s failed (%s); it is sent again at close",
                     number, stream.key, detail)
        except Exception:
            # A bug, not a network fault: shown, and the part is sent again at close.
            log.exception("streamed part %d of %s failed", number, stream.key)
        finally:
            with stream._lock:
                if etag is not None:
                    stream._sent[number] = (generation, etag)
                stream._running.pop(number, None)
                if stream.state is State.OPEN:
                    self._send_ready(stream)
                abort = stream._claim_abort()
                stream._release_fd()
                stream._changed.notify_all()
            if abort and stream.upload_id is not None:
                self._transfer.abort(stream.key, stream.upload_id)

    def _end(self, stream: Stream, *, wait: bool) -> None:
        """Stop the stream and abort its upload: here when ``wait`` (after its
        running parts ended), else by whichever task ends last."""
        with stream._lock:
            if stream.state is State.DONE and not wait:
                return
            stream.state = State.DONE
            for number, future in list(stream._running.items()):
                if future.cancel():
                    del stream._running[number]
            if wait:
                # Taken on here, not by the last part to end: done when this returns.
                abort = not stream._aborting and stream.upload_id is not None
                stream._aborting = True
                stream._changed.wait_for(lambda: not stream._running)
            else:
                abort = stream._claim_abort()
            stream._release_fd()
            stream._changed.notify_all()
        # A create still running aborts the upload it made itself.
        if abort and stream.upload_id is not None and (
                wait or self._submit(self._transfer.abort, stream.key, stream.upload_id) is None):
            self._transfer.abort(stream.key, stream.upload_id)

    # The upload at flush/fsync/close (with file.lock held)

    def finish(self, file: OpenFile, metadata: Mapping[str, str],
               watch: Callable[[str | None], None]) -> Completed | None:
        """Complete the file's stream; None when there is no stream to finish (the
        caller uploads the normal way). The caller replaces the metadata when
        they changed since the upload started.

        Raises FsError when the parts sent at close fail: the upload is aborted,
        unless it holds punched parts (it is kept for the next finish then).
        """
        stream, file.stream = file.stream, None
        if stream is None:
            return None
        with stream._lock:
            stream._changed.wait_for(lambda: stream.state is not State.STARTING)
            usable = stream.state is State.OPEN
        size = file.size
        changed = metadata != stream.metadata or file.content_type != stream.content_type
        # Below the threshold (truncated since) the file is one PUT; a multipart
        # upload could not even be completed without parts (size 0). A stream with
        # punched parts is never in these states (see must_finish).
        if not file.punched and (
                not usable or file.key != stream.key or size < stream._handed * stream.part
                or size < self._threshold or size > MAX_PARTS * stream.part
                or (changed and not self._transfer.copy_supported)):
            self._end(stream, wait=False)
            return None
        upload_id = stream.upload_id
        assert upload_id is not None
        watch(upload_id)
        ranges = part_ranges(size, stream.part)
        with stream._lock:
            stream._finishing = True
        try:
            # Parts not sent yet go now, beside those still running; a running part
            # that fails or comes back stale is sent once more after it.
            for wait_running in (False, True):
                with stream._lock:
                    if wait_running:
                        stream._changed.wait_for(lambda: not stream._running)
                    todo = [r for r in ranges
                            if not stream._good(r[0]) and r[0] not in stream._running]
                    # Under file.lock no write comes: what is read now is current.
                    generations = {r[0]: stream._generation.get(r[0], 0) for r in todo}
                if todo:
                    log.debug("streaming upload of %s: %d of %d parts sent at close",
                              file.key, len(todo), len(ranges))
                    sent = self._transfer.send_parts(stream.key, upload_id, file, todo)
                    with stream._lock:
                        for number, etag in sent:
                            stream._sent[number] = (generations[number], etag)
            with stream._lock:
                parts = [(number, stream._sent[number][1]) for number, _, _ in ranges]
            etag = self._store.complete_multipart(stream.key, upload_id, parts, size=size)
        except BaseException:
            if file.punched:
                # Parts that left the cache file are only in this upload.
                with stream._lock:
                    stream._finishing = False
                    stream._changed.wait_for(lambda: not stream._running)
                file.stream = stream
            else:
                self._end(stream, wait=True)
                watch(None)
            raise
        with stream._lock:
            stream.state = State.DONE
            stream._release_fd()
        watch(None)
        return Completed(etag, changed)
