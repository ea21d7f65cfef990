"""The llfuse adapter: converts between llfuse's types and the filesystem core.

No filesystem logic lives here. Every handler releases llfuse's global lock
before calling the core (which does network and disk I/O and has its own
locks), and every error becomes a FUSEError: FsError keeps its errno,
anything else is logged with its traceback and becomes EIO, so no handler
can stop the FUSE main loop by accident; request_stop() makes the next
request stop it on purpose.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import llfuse

from .errors import FsError
from .fs import AttrChanges, DirEntry, Filesystem
from .inodes import ROOT_INODE
from .meta import Attr
from .stats import STATS_XATTR, StatsXattr

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Large, stable numbers for df: by default 2**32-1 blocks of 64 KiB (about 256
# TiB), like s3fs shows.
STATFS_BLOCK = 65536
STATFS_BLOCKS = 2**32 - 1
STATFS_FILES = 2**32 - 1


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


class StopRequested(BaseException):
    """Ends llfuse's main loop: an exception from a handler is the only way out
    that Python code has (llfuse then re-raises it from main())."""


def handler(method: F) -> F:
    """Run with the global lock released; map every failure to an errno."""

    @functools.wraps(method)
    def wrapper(self: FuseOperations, *args: Any, **kwargs: Any) -> Any:
        if self.stop_requested:
            raise StopRequested
        try:
            with llfuse.lock_released:
                return method(self, *args, **kwargs)
        except FsError as exc:
            if exc.errno == errno.EIO:
                log.error("%s failed: %s", method.__name__, exc.detail or "I/O error")
            raise llfuse.FUSEError(exc.errno) from None
        except llfuse.FUSEError:
            raise
        except Exception:
            log.exception("unexpected error in %s", method.__name__)
            raise llfuse.FUSEError(errno.EIO) from None

    return wrapper  # type: ignore[return-value]


class FuseOperations(llfuse.Operations):
    def __init__(self, fs: Filesystem, *, attr_timeout: float, bucket_size: int | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.fs = fs
        fs.on_stale = lambda ino: llfuse.invalidate_inode(ino, attr_only=False)
        self.attr_timeout = attr_timeout
        self.blocks = -(-bucket_size // STATFS_BLOCK) if bucket_size else STATFS_BLOCKS
        self._on_ready = on_ready
        self.stop_requested = False
        self._stats_xattr = StatsXattr(fs.stats)

    def _is_stats(self, inode: int, name: bytes) -> bool:
        """The mount root's virtual attribute with the statistics: computed, never stored."""
        return inode == ROOT_INODE and name == STATS_XATTR.encode()

    def request_stop(self) -> None:
        """Make the next request end the main loop (see StopRequested)."""
        self.stop_requested = True

    def init(self) -> None:
        # Runs when the kernel's INIT arrives: the mount is usable from here on.
        if self._on_ready is not None:
            try:
                self._on_ready()
            except Exception:
                log.exception("ready notification failed")

    def _entry(self, ino: int, attr: Attr | None) -> llfuse.EntryAttributes:
        entry = llfuse.EntryAttributes()
        entry.st_ino = ino
        entry.generation = 0
        entry.entry_timeout = self.attr_timeout
        entry.attr_timeout = self.attr_timeout
        if attr is None:
            return entry  # st_mode 0: readdir reports DT_UNKNOWN, the kernel will look it up
        entry.st_mode = attr.mode
        entry.st_nlink = 1
        entry.st_uid = attr.uid
        entry.st_gid = attr.gid
        entry.st_rdev = attr.rdev
        entry.st_size = attr.size
        entry.st_blksize = 4096
        entry.st_blocks = (attr.size + 511) // 512
        entry.st_atime_ns = attr.atime_ns
        entry.st_mtime_ns = attr.mtime_ns
        entry.st_ctime_ns = attr.ctime_ns
        return entry

    @handler
    def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> llfuse.EntryAttributes:
        ino, attr = self.fs.lookup(parent_inode, _name(name))
        return self._entry(ino, attr)

    def forget(self, inode_list: list[tuple[int, int]]) -> None:
        # Must never raise, and needs no lock release: it only touches memory.
        for ino, count in inode_list:
            self.fs.forget(ino, count)

    @handler
    def getattr(self, inode: int, ctx: Any = None) -> llfuse.EntryAttributes:
        return self._entry(inode, self.fs.getattr(inode))

    @handler
    def readlink(self, inode: int, ctx: Any = None) -> bytes:
        return self.fs.readlink(inode)

    @handler
    def opendir(self, inode: int, ctx: Any = None) -> int:
        return self.fs.opendir(inode)

    @handler
    def _readdir(self, fh: int, off: int) -> Iterator[tuple[DirEntry, int]]:
        return self.fs.readdir(fh, off)  # a rewind lists the directory again

    def readdir(self, fh: int, off: int) -> Iterator[tuple[bytes, llfuse.EntryAttributes, int]]:
        # A generator cannot release the lock around yields: only the call that may
        # list the directory again runs without it (and logs as every handler does).
        for entry, next_offset in self._readdir(fh, off):
            yield os.fsencode(entry.name), self._entry(entry.ino, entry.attr), next_offset

    @handler
    def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @handler
    def open(self, inode: int, flags: int, ctx: Any = None) -> int:
        return self.fs.open(inode, write=bool(flags & (os.O_WRONLY | os.O_RDWR)),
                            read=flags & os.O_ACCMODE != os.O_WRONLY)

    @handler
    def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
               ctx: Any) -> tuple[int, llfuse.EntryAttributes]:
        fh, ino, attr = self.fs.create(parent_inode, _name(name), mode, ctx.uid, ctx.gid,
                                       read=flags & os.O_ACCMODE != os.O_WRONLY)
        return fh, self._entry(ino, attr)

    @handler
    def read(self, fh: int, off: int, size: int) -> bytes:
        return self.fs.read(fh, off, size)

    @handler
    def write(self, fh: int, off: int, buf: bytes) -> int:
        return self.fs.write(fh, off, buf)

    @handler
    def flush(self, fh: int) -> None:
        self.fs.flush(fh)

    @handler
    def fsync(self, fh: int, datasync: bool) -> None:
        self.fs.fsync(fh)

    @handler
    def release(self, fh: int) -> None:
        self.fs.release(fh)

    @handler
    def setattr(self, inode: int, attr: llfuse.EntryAttributes, fields: Any, fh: int | None,
                ctx: Any) -> llfuse.EntryAttributes:
        changes = AttrChanges(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        return self._entry(inode, self.fs.setattr(inode, changes))

    @handler
    def mkdir(self, parent_inode: int, name: bytes, mode: int,
              ctx: Any) -> llfuse.EntryAttributes:
        return self._entry(*self.fs.mkdir(parent_inode, _name(name), mode, ctx.uid, ctx.gid))

    @handler
    def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
              ctx: Any) -> llfuse.EntryAttributes:
        return self._entry(*self.fs.mknod(parent_inode, _name(name), mode, rdev, ctx.uid,
                                          ctx.gid))

    @handler
    def symlink(self, parent_inode: int, name: bytes, target: bytes,
                ctx: Any) -> llfuse.EntryAttributes:
        return self._entry(*self.fs.symlink(parent_inode, _name(name), target, ctx.uid,
                                            ctx.gid))

    @handler
    def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.unlink(parent_inode, _name(name))

    @handler
    def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.rmdir(parent_inode, _name(name))

    @handler
    def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
               name_new: bytes, ctx: Any) -> None:
        self.fs.rename(parent_inode_old, _name(name_old), parent_inode_new, _name(name_new))

    @handler
    def link(self, inode: int, new_parent_inode: int, new_name: bytes, ctx: Any) -> NoReturn:
        self.fs.link()

    @handler
    def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        if self._is_stats(inode, name):
            raise llfuse.FUSEError(errno.EPERM)
        self.fs.setxattr(inode, _name(name), value)

    @handler
    def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        if self._is_stats(inode, name):
            raise llfuse.FUSEError(errno.EPERM)
        try:
            self.fs.removexattr(inode, _name(name))
        except FsError as exc:
            if exc.errno == errno.ENODATA:
                raise llfuse.FUSEError(llfuse.ENOATTR) from None
            raise

    @handler
    def access(self, inode: int, mode: int, ctx: Any = None) -> bool:
        # Permission checks are the kernel's (default_permissions) or nobody's.
        self.fs.getattr(inode)
        return True

    @handler
    def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        if self._is_stats(inode, name):
            return self._stats_xattr.value(ctx.pid if ctx is not None else 0)
        try:
            return self.fs.getxattr(inode, _name(name))
        except FsError as exc:
            if exc.errno == errno.ENODATA:
                raise llfuse.FUSEError(llfuse.ENOATTR) from None
            raise

    @handler
    def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [os.fsencode(name) for name in self.fs.listxattr(inode)
                if not self._is_stats(inode, os.fsencode(name))]

    @handler
    def statfs(self, ctx: Any = None) -> llfuse.StatvfsData:
        data = llfuse.StatvfsData()
        data.f_bsize = STATFS_BLOCK
        data.f_frsize = STATFS_BLOCK
        data.f_blocks = data.f_bfree = data.f_bavail = self.blocks
        data.f_files = data.f_ffree = data.f_favail = STATFS_FILES
        data.f_namemax = 255
        return data
