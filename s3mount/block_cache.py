"""The disk cache of data read from objects, block by block.

Each object has at most one cached version: a sparse data file holding the
blocks read so far (BLOCK bytes each, the last one shorter; a file written
through the mount brings its cache file, ``adopt``) and an index (JSON:
key, ETag, size, the blocks present), both named by a hash of the key, in the
``blocks`` directory below the cache directory. A version is used only by a
reader that opened the object with the same ETag and size (the attributes
the mount already has, so checking costs no request); opening another version
empties the entry.

Crash safety: the index is written (atomically, after the data is flushed to
disk) when a reader closes and at unmount, and before blocks are evicted, so
an index never names a block that is not on disk. Blocks written after the
last index write are simply not known to the next mount. Without use_cache
the directory goes with the mount: no index is written, and nothing flushed.

One mount at a time owns ``blocks`` (a lock on ``blocks.lock``); a second mount
of the same bucket with the same use_cache gets a directory of its own that
goes at unmount.

Space: the data files' disk usage counts in the CacheSpace as one owner,
BLOCKS_OWNER. Before a block is stored it must fit (max_cache_size,
ensure_diskfree / free_space_ratio, and never the last MIN_DISK_FREE_RATIO of
the disk); otherwise the least recently used blocks are evicted (holes are
punched into the data files), and a block that still does not fit is not
cached. Writers short of space evict read blocks first (``evict``).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import logging
import mmap
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .cache_space import CacheSpace
from .stats import Stats

log = logging.getLogger(__name__)

BLOCK = 1024 * 1024
BLOCKS_DIR = "blocks"
BLOCKS_OWNER = -1  # the read cache's id in the CacheSpace (open files use inode numbers)
# Without limits given, the read cache still leaves this part of the disk free.
MIN_DISK_FREE_RATIO = 5

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


# One pwrite of several MiB costs the kernel 3 to 4 times the CPU of the same
# bytes written 1 MiB at a time (measured on ext4, Linux 6.18, after
# drop_caches: 8 MiB writes 0.4-0.6 s of system time per 256 MiB, 1 MiB ones
# 0.14 s).
_WRITE_SLICE = 1024 * 1024


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset``, in slices of at most 1 MiB. A short
    write (the disk filling) is continued, so the rest fails with ENOSPC
    instead of being dropped."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view[:_WRITE_SLICE], offset)
        view = view[written:]
        offset += written


# Fetched blocks are written with O_DIRECT, from a reused buffer: through the
# page cache, every MiB stored costs new memory, which on the VMs we measured
# made storing a sequential read's blocks cost a third of the read's time
# (seq_read_cold at 0 ms: 0.75 s with buffered writes, 0.51 s with these,
# 0.44 s without storing at all). Direct I/O needs the file offset, the length
# and the memory aligned: read-ahead parts arrive in page-aligned buffers
# (buffers.py) and are written from there; other bytes are copied first.
_DIRECT_ALIGN = 4096
_DIRECT_BUFFER = 1024 * 1024
# What a filesystem without direct I/O (or with other alignment rules) answers.
_NO_DIRECT_IO = (errno.EINVAL, errno.EOPNOTSUPP)


class _DirectWrites:
    """Aligned stretches of data written with O_DIRECT, through one reused buffer
    per thread; ``enabled`` goes false on a filesystem without direct I/O."""

    def __init__(self) -> None:
        self.enabled = True
        self._buffers = threading.local()

    def open(self, path: str) -> int | None:
        """A descriptor of ``path`` for direct writes, or None: then the caller
        writes buffered (direct I/O is off, refused, or the open failed)."""
        if not self.enabled:
            return None
        try:
            return os.open(path, os.O_WRONLY | os.O_DIRECT)
        except OSError as exc:
            if exc.errno in _NO_DIRECT_IO:
                self._disable()
            return None

    def write(self, fd: int | None, data: memoryview, offset: int) -> memoryview:
        """Write the longest aligned start of ``data`` at ``offset`` through ``fd``
        (from ``open``); return the rest, for a buffered write (all of it without
        ``fd`` or at an unaligned offset)."""
        whole = len(data) - len(data) % _DIRECT_ALIGN
        if fd is None or not whole or offset % _DIRECT_ALIGN:
            return data
        done = 0
        try:
            if _is_aligned(data):
                pwrite_all(fd, data[:whole], offset)
                return data[whole:]
            buffer = self._buffer()
            while done < whole:
                length = min(whole - done, _DIRECT_BUFFER)
                buffer[:length] = data[done:done + length]
                pwrite_all(fd, memoryview(buffer)[:length], offset + done)
                done += length
        except OSError as exc:
            if exc.errno not in _NO_DIRECT_IO:
                raise
            self._disable()
        return data[done:]

    def _buffer(self) -> mmap.mmap:
        buffer = getattr(self._buffers, "buffer", None)
        if buffer is None:
            buffer = self._buffers.buffer = mmap.mmap(-1, _DIRECT_BUFFER)  # page-aligned
        return buffer

    def _disable(self) -> None:
        log.debug("the read cache's filesystem has no direct I/O: buffered writes")
        self.enabled = False


def _is_aligned(data: memoryview) -> bool:
    """Whether ``data`` starts at an address direct I/O accepts (never known for
    read-only bytes: ctypes gives the address of writable buffers only)."""
    return (not data.readonly
            and ctypes.addressof(ctypes.c_char.from_buffer(data)) % _DIRECT_ALIGN == 0)


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Free [offset, offset+length) of the file on disk (it reads as zeros then);
    False if the filesystem cannot."""
    result = _libc.fallocate(ctypes.c_int(fd),
                             ctypes.c_int(_FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE),
                             ctypes.c_int64(offset), ctypes.c_int64(length))
    return result == 0


class _Entry:
    """The cached version of one object."""

    def __init__(self, name: str, key: str, etag: str, size: int,
                 blocks: set[int] | None = None) -> None:
        self.name = name
        self.key = key
        self.etag = etag
        self.size = size
        self.blocks: set[int] = blocks or set()
        self.usage = 0  # bytes the data file takes on disk
        self.unsaved = False  # blocks stored since the index was written
        self.evictions = 0  # times blocks were evicted (see save)


class BlockCache:
    def __init__(self, cache_dir: str, space: CacheSpace, stats: Stats, *,
                 wipe: bool = False, block: int = BLOCK, durable: bool = True) -> None:
        """``durable``: the cache directory outlives the mount (use_cache); else no
        index is written, and no block flushed to disk, for a next mount."""
        self._lock_fd = os.open(os.path.join(cache_dir, BLOCKS_DIR + ".lock"),
                                os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.directory = os.path.join(cache_dir, BLOCKS_DIR)
            self._persistent = durable
        except BlockingIOError:
            log.info("another mount uses the read cache in %s: this one keeps its own "
                     "until unmount", cache_dir)
            self.directory = os.path.join(cache_dir, f"{BLOCKS_DIR}-{os.getpid()}")
            self._persistent = False
            wipe = True
        self.block = block
        self._space = space
        self._stats = stats
        self._lock = threading.Lock()
        self._direct = _DirectWrites()
        self._entries: dict[str, _Entry] = {}
        self._lru: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._used = 0
        # Bytes of runs given room and being written: parallel read-ahead parts
        # must not all be given the same room.
        self._reserved = 0
        disk = os.statvfs(cache_dir)
        self._floor = disk.f_blocks * disk.f_frsize * MIN_DISK_FREE_RATIO // 100
        if wipe:
            self.wipe()
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._load()

    # Reading and storing

    def open_version(self, key: str, etag: str, size: int) -> None:
        """A reader opens ``key`` at this version (ETag and size as the mount knows
        them): a cached other version goes, and blocks of this one are kept."""
        with self._lock:
            name = self._name(key)
            entry = self._entries.get(name)
            if entry is not None and (entry.etag, entry.size) == (etag, size):
                return
            if entry is not None:
                self._remove(entry)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._data_path(name))
            if etag:  # without an ETag a version cannot be told from another
                self._entries[name] = _Entry(name, key, etag, size)

    def get(self, key: str, etag: str, start: int, end: int) -> bytes | None:
        """Bytes [start, end) of that version when all their blocks are cached."""
        pieces: list[bytes] = []

        def read(fd: int) -> int:
            pieces.append(os.pread(fd, end - start, start))
            return len(pieces[0])

        return pieces[0] if self._read_blocks(key, etag, start, end, read) else None

    def get_into(self, key: str, etag: str, start: int, into: memoryview) -> bool:
        """``get`` of ``len(into)`` bytes into ``into``: False when not all their
        blocks are cached (``into`` may then hold anything)."""
        return self._read_blocks(key, etag, start, start + len(into),
                                 lambda fd: os.preadv(fd, [into], start))

    def _read_blocks(self, key: str, etag: str, start: int, end: int,
                     read: Callable[[int], int]) -> bool:
        """Whether all blocks of [start, end) are cached and ``read`` (given the
        data file, returning the bytes it read) read them all."""
        with self._lock:
            entry = self._entry(key, etag)
            if entry is None:
                return False
            first, last = start // self.block, (end - 1) // self.block
            if any(b not in entry.blocks for b in range(first, last + 1)):
                return False
            try:
                fd = os.open(self._data_path(entry.name), os.O_RDONLY)
                try:
                    got = read(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                log.warning("read cache of %s unreadable (%s): dropped", key, exc.strerror)
                self._remove(entry)
                return False
            if got != end - start:
                self._remove(entry)
                return False
            for b in range(first, last + 1):
                self._lru.move_to_end((entry.name, b))
            self._stats.count("disk_cache_hits", last - first + 1)
            return True

    def cached_prefix(self, key: str, etag: str, start: int, end: int) -> int:
        """Where the run of cached blocks from ``start`` ends (``start`` if none),
        at most ``end``."""
        with self._lock:
            entry = self._entry(key, etag)
            if entry is None:
                return start
            position = start
            while position < end and position // self.block in entry.blocks:
                position = (position // self.block + 1) * self.block
            return min(position, end)

    def put(self, key: str, etag: str, start: int, data: bytes) -> None:
        """Store the whole blocks in ``data`` (bytes from ``start`` of that version):
        blocks it covers completely, and the object's last block if it ends there."""
        position, end = start, start + len(data)
        while position < end:
            position = self._put_run(key, etag, start, data, position)

    def _put_run(self, key: str, etag: str, start: int, data: bytes, position: int) -> int:
        """Store the first run of new blocks of ``data`` from ``position``; return
        where the next run may begin (the end of ``data`` when nothing more fits).

        The run is written with one pwrite outside the cache's lock (readers of
        other objects must not wait for this disk write); its blocks join the
        entry afterwards, so no reader sees them before.
        """
        end = start + len(data)
        with self._lock:
            entry = self._entry(key, etag)
            if entry is None:
                return end
            first, last = self._new_run(entry, position, end)
            if last <= first:
                return end
            while last > first and not self._make_room((last - first) * self.block):
                last -= 1
            if last <= first or self._entries.get(entry.name) is not entry:
                # Making room may have evicted all of this entry's blocks, and with
                # them the entry: a data file made now would be counted by nobody.
                return end
            path = self._data_path(entry.name)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            except OSError as exc:
                log.warning("cannot write the read cache (%s)", exc.strerror)
                return end
            # Opened under the lock as well: once it is released, another version
            # may replace the file at this path.
            direct_fd = self._direct.open(path)
            room = (last - first) * self.block
            self._reserved += room
            self._publish()
        try:
            offset = first * self.block
            run = memoryview(data)[offset - start:min(last * self.block, entry.size) - start]
            rest = self._direct.write(direct_fd, run, offset)
            pwrite_all(fd, rest, offset + len(run) - len(rest))
        except OSError as exc:
            log.warning("cannot write the read cache (%s)", exc.strerror)
            with self._lock:
                self._reserved -= room
                self._publish()
            return end
        finally:
            os.close(fd)
            if direct_fd is not None:
                os.close(direct_fd)
        with self._lock:
            self._reserved -= room
            if self._entries.get(entry.name) is not entry:
                self._publish()
                return end  # another version was opened meanwhile: its file is new
            for b in range(first, last):
                entry.blocks.add(b)
                self._lru[(entry.name, b)] = None
            entry.unsaved = True
            self._account(entry)
        self._stats.count("disk_cache_stored", last - first)
        return last * self.block

    def _new_run(self, entry: _Entry, start: int, end: int) -> tuple[int, int]:
        """The first run [first, last) of blocks wholly inside [start, end) (or
        ending the object there) that are not cached yet."""
        first = -(-start // self.block)
        while first in entry.blocks:
            first += 1
        last = first
        while True:
            block_start = last * self.block
            block_end = min(block_start + self.block, entry.size)
            if block_start >= block_end or block_end > end or last in entry.blocks:
                return first, last
            last += 1

    def adopt(self, key: str, etag: str, size: int, path: str, blocks: set[int]) -> bool:
        """Take the data file at ``path`` (object offsets, as a data file here) as
        the cached version (key, etag, size), with ``blocks`` whole in it: a file
        just uploaded is then read back without a request. Only a cache that
        outlives the mount (use_cache) takes files: without one, a file's disk
        space is freed once it is uploaded, as before (a job writing much more
        than it reads back must not fill the temporary directory's disk). False
        when it is not taken; the file then stays where it is."""
        if not etag or not blocks or not self._persistent:
            return False
        with self._lock:
            name = self._name(key)
            entry = self._entries.get(name)
            if entry is not None:
                self._remove(entry)
            try:
                os.rename(path, self._data_path(name))
            except OSError as exc:
                log.debug("the data of %s stays out of the read cache (%s)", key, exc.strerror)
                return False
            entry = self._entries[name] = _Entry(name, key, etag, size, set(blocks))
            entry.unsaved = True
            for b in sorted(blocks):
                self._lru[(name, b)] = None
            self._account(entry)
            # Only the disk's floor is enforced here. The caller still counts these
            # bytes as its own and releases them next, so max_cache_size holds; and
            # evicting (index writes) under the caller's locks holds back writers.
            floor_shortfall = self._floor_shortfall(0)
            if floor_shortfall > 0:
                self._evict(floor_shortfall)
        self._stats.count("disk_cache_stored", len(blocks))
        return True

    def save(self, key: str) -> None:
        """Write the index of ``key``'s entry if blocks were added (a reader closed).

        The data is flushed outside the cache's lock, so that readers of other
        objects do not wait for the disk; the index then names the blocks that
        were there before the flush. If blocks were evicted meanwhile (and maybe
        fetched again, after the flush) nothing is written: the eviction wrote
        the index."""
        with self._lock:
            entry = self._entries.get(self._name(key))
            if entry is None or not entry.unsaved or not self._persistent:
                return
            blocks, evictions = set(entry.blocks), entry.evictions
        try:
            self._flush_data(entry.name)
            with self._lock:
                if self._entries.get(entry.name) is entry and entry.evictions == evictions:
                    self._write_index(entry, blocks)
        except OSError as exc:
            log.warning("cannot write the read cache's index (%s)", exc.strerror)

    def close(self, *, wipe: bool = False) -> None:
        with self._lock:
            if wipe or not self._persistent:
                self.wipe()
            else:
                unsaved = [entry for entry in self._entries.values() if entry.unsaved]
                # One syncfs for all data files instead of an fdatasync per entry:
                # a session that wrote many small files has an entry for each.
                flushed = bool(unsaved) and self._sync_filesystem()
                for entry in unsaved:
                    self._save(entry, flushed=flushed)
                self._stamp_recency()
            os.close(self._lock_fd)

    def _stamp_recency(self) -> None:
        """Set the indexes' mtimes in LRU order (least recently used oldest): the
        next mount's eviction order, entry by entry (see _load)."""
        recent_first = dict.fromkeys(name for name, _block in reversed(self._lru))
        stamp = time.time_ns() - len(recent_first) * 1000
        for age, name in enumerate(reversed(recent_first)):
            with contextlib.suppress(OSError):
                os.utime(self._index_path(name), ns=(stamp + age * 1000,) * 2)

    def wipe(self) -> None:
        """Remove every cached block (del_cache)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self._entries.clear()
        self._lru.clear()
        self._used = 0
        self._publish()

    # Space

    def evict(self, wanted: int) -> int:
        """Free at least ``wanted`` bytes of least recently used blocks if there
        are that many; return the bytes freed."""
        with self._lock:
            return self._evict(wanted)

    @property
    def used(self) -> int:
        with self._lock:
            return self._used

    def _make_room(self, extra: int) -> bool:
        for _attempt in range(2):
            wanted = max(self._space.shortfall(extra), self._floor_shortfall(extra))
            if wanted <= 0:
                return True
            if not self._evict(wanted):
                return False
        return False

    def _floor_shortfall(self, extra: int) -> int:
        disk = os.statvfs(self.directory)
        return self._floor - (disk.f_bavail * disk.f_frsize - extra - self._reserved)

    def _evict(self, wanted: int) -> int:
        victims: dict[str, list[int]] = {}
        planned = 0
        for name, b in self._lru:
            if planned >= wanted:
                break
            victims.setdefault(name, []).append(b)
            planned += self.block
        freed = 0
        for name, blocks in victims.items():
            entry = self._entries[name]
            entry.blocks.difference_update(blocks)
            entry.evictions += 1
            for b in blocks:
                self._lru.pop((name, b), None)
            before = entry.usage
            if not entry.blocks:
                self._remove(entry)
                freed += before
                continue
            # The index first: it must never name a block that is gone.
            self._save(entry)
            try:
                fd = os.open(self._data_path(name), os.O_WRONLY)
                try:
                    punched = all(punch_hole(fd, b * self.block, self.block) for b in blocks)
                finally:
                    os.close(fd)
            except OSError:
                punched = False
            if not punched:
                self._remove(entry)  # no hole punching here: the whole entry goes
                freed += before
                continue
            self._account(entry)
            freed += before - entry.usage
        if freed:
            self._stats.count("disk_cache_evicted_bytes", freed)
        return freed

    def _account(self, entry: _Entry) -> None:
        try:
            usage = os.stat(self._data_path(entry.name)).st_blocks * 512
        except OSError:
            usage = 0
        self._used += usage - entry.usage
        entry.usage = usage
        self._publish()

    def _publish(self) -> None:
        """Tell the CacheSpace what the read cache holds, runs being written included."""
        self._space.update(BLOCKS_OWNER, self._used + self._reserved)

    # Files

    def _name(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:40]

    def _data_path(self, name: str) -> str:
        return os.path.join(self.directory, name + ".data")

    def _index_path(self, name: str) -> str:
        return os.path.join(self.directory, name + ".json")

    def _entry(self, key: str, etag: str) -> _Entry | None:
        """The entry of that version; None when another version is cached (a
        reader of an older version then reads without the cache)."""
        entry = self._entries.get(self._name(key))
        return entry if entry is not None and etag and entry.etag == etag else None

    def _sync_filesystem(self) -> bool:
        """Flush every file of the cache's filesystem to disk (syncfs)."""
        try:
            fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return False
        try:
            return _libc.syncfs(fd) == 0
        finally:
            os.close(fd)

    def _save(self, entry: _Entry, *, flushed: bool = False) -> None:
        """Flush the data (unless ``flushed`` already), then replace the index
        atomically."""
        if not self._persistent:
            return
        try:
            if not flushed:
                self._flush_data(entry.name)
            self._write_index(entry, entry.blocks)
        except OSError as exc:
            log.warning("cannot write the read cache's index (%s)", exc.strerror)

    def _flush_data(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self._data_path(name), os.O_WRONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    def _write_index(self, entry: _Entry, blocks: set[int]) -> None:
        """Replace the index atomically, naming ``blocks`` (all flushed to disk)."""
        temporary = self._index_path(entry.name) + ".tmp"
        with open(temporary, "w") as index:
            json.dump({"key": entry.key, "etag": entry.etag, "size": entry.size,
                       "blocks": sorted(blocks)}, index)
        os.replace(temporary, self._index_path(entry.name))
        entry.unsaved = not entry.blocks <= blocks

    def _remove(self, entry: _Entry) -> None:
        for path in (self._index_path(entry.name), self._data_path(entry.name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        for b in entry.blocks:
            self._lru.pop((entry.name, b), None)
        self._entries.pop(entry.name, None)
        self._used -= entry.usage
        self._publish()

    def _load(self) -> None:
        """The entries a previous mount left, least recently used first (the
        indexes' mtimes, see _stamp_recency)."""
        found = []
        for file_name in os.listdir(self.directory):
            path = os.path.join(self.directory, file_name)
            name, _, suffix = file_name.partition(".")
            if suffix != "json":
                if suffix != "data" or not os.path.exists(self._index_path(name)):
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # no index: its blocks are unknown
                continue
            try:
                with open(path) as index:
                    saved = json.load(index)
                entry = _Entry(name, str(saved["key"]), str(saved["etag"]),
                               int(saved["size"]), {int(b) for b in saved["blocks"]})
                found.append((os.stat(path).st_mtime_ns, entry))
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                with contextlib.suppress(OSError):
                    os.unlink(self._data_path(name))
        for _mtime, entry in sorted(found, key=lambda item: item[0]):
            if entry.name != self._name(entry.key):
                continue
            self._entries[entry.name] = entry
            for b in sorted(entry.blocks):
                self._lru[(entry.name, b)] = None
            self._account(entry)
