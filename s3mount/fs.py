"""The filesystem core: resolves paths to S3 objects and serves reads.

Independent of llfuse (the adapter in fuse_ops.py calls it with llfuse's
global lock released), so every method is safe to call from several threads:
shared tables have their own short locks, and no lock is held across an S3
request except a file handle's own lock, which only its readers wait for.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .errors import FsError
from .inodes import ROOT_INODE, InodeTable
from .meta import (
    DIR_CONTENT_TYPE,
    FOLDER_SUFFIX,
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    Attr,
    decode_attr,
    decode_xattrs,
    skip_reason,
    split_key,
)
from .stat_cache import StatCache
from .store import ListedObject, ObjectInfo, Store

log = logging.getLogger(__name__)

# Sequential reads fetch ahead in a window that doubles from the first size to
# the maximum; random reads fetch only what was asked for.
READ_AHEAD_FIRST = 1024 * 1024 + 128 * 1024
READ_AHEAD_MAX = 8 * 1024 * 1024
SYMLINK_MAX = 4095
MAX_WARNED = 10_000


@dataclasses.dataclass(frozen=True)
class FsSettings:
    prefix: str = ""
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    mp_umask: int = 0
    allow_other: bool = False
    stat_cache_expire: float = 60.0
    max_stat_cache_size: int = 100_000
    enable_negative_cache: bool = True
    compat_dir: bool = True
    max_thread_count: int = 10
    default_uid: int = dataclasses.field(default_factory=os.geteuid)
    default_gid: int = dataclasses.field(default_factory=os.getegid)


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A resolved path: its attributes and where they live in the bucket."""

    attr: Attr
    key: str | None  # the object holding data and metadata; None for implicit directories
    etag: str = ""
    xattrs: dict[str, bytes] = dataclasses.field(default_factory=dict)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.attr.mode)


@dataclasses.dataclass(slots=True)
class ListedChild:
    """What one LIST told about a name in a directory."""

    is_dir: bool = False
    file: ListedObject | None = None
    folder_key: str | None = None  # an old-style "name_$folder$" object


@dataclasses.dataclass(frozen=True, slots=True)
class DirEntry:
    name: str
    ino: int
    attr: Attr | None  # None: type unknown until looked up


class ReadHandle:
    """An open file: the object's key pinned to the ETag seen at open."""

    def __init__(self, key: str, etag: str, size: int) -> None:
        self.key = key
        self.etag = etag
        self.size = size
        self.lock = threading.Lock()
        self.buffer_start = 0
        self.buffer = b""
        self.next_offset = 0
        self.window = 0


class Filesystem:
    def __init__(self, store: Store, settings: FsSettings,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.settings = settings
        self.inodes = InodeTable()
        self.cache: StatCache[Node] = StatCache(
            ttl=settings.stat_cache_expire,
            max_entries=settings.max_stat_cache_size,
            negative=settings.enable_negative_cache,
        )
        self._mount_time_ns = clock()
        self._executor = ThreadPoolExecutor(settings.max_thread_count,
                                            thread_name_prefix="s3mount-io")
        self._handles: dict[int, Any] = {}
        self._handles_lock = threading.Lock()
        self._handle_numbers = itertools.count(1)
        self._warned: set[str] = set()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # Paths and keys

    def _path(self, ino: int) -> str:
        path = self.inodes.path(ino)
        if path is None:
            raise FsError(errno.ESTALE, f"unknown inode {ino}")
        return path

    def _key(self, path: str) -> str:
        return self.settings.prefix + path

    def _dir_prefix(self, path: str) -> str:
        return self._key(path) + "/" if path else self.settings.prefix

    def _warn_once(self, message: str) -> None:
        if message in self._warned:
            return
        if len(self._warned) < MAX_WARNED:
            self._warned.add(message)
        log.warning("%s", message)

    # Attributes

    def _decode(self, info: ObjectInfo, *, force_dir: bool = False) -> Node:
        def warn(message: str) -> None:
            self._warn_once(f"{info.key}: {message}")

        attr = decode_attr(
            info.key,
            size=info.size,
            content_type=DIR_CONTENT_TYPE if force_dir else info.content_type,
            last_modified_ns=info.last_modified_ns,
            metadata=info.metadata,
            default_uid=self.settings.default_uid,
            default_gid=self.settings.default_gid,
            warn=warn,
        )
        if force_dir and not stat.S_ISDIR(attr.mode):
            attr = dataclasses.replace(attr, mode=stat.S_IFDIR | (attr.mode & 0o7777))
        xattrs = decode_xattrs(info.metadata.get("xattr"), warn)
        return Node(self._override(attr), info.key, info.etag, xattrs)

    def _implicit_dir(self, path: str) -> Node:
        attr = decode_attr(
            self._key(path) + "/", size=0, content_type=DIR_CONTENT_TYPE,
            last_modified_ns=self._mount_time_ns, metadata={},
            default_uid=self.settings.default_uid, default_gid=self.settings.default_gid,
        )
        return Node(self._override(attr), None)

    def _override(self, attr: Attr) -> Attr:
        """Apply the uid=, gid= and umask= options, as s3fs does."""
        s = self.settings
        changes: dict[str, int] = {}
        if s.uid is not None:
            changes["uid"] = s.uid
        if s.gid is not None:
            changes["gid"] = s.gid
        if s.umask is not None:
            changes["mode"] = stat.S_IFMT(attr.mode) | (0o777 & ~s.umask)
        return dataclasses.replace(attr, **changes) if changes else attr

    def _root_node(self) -> Node:
        # s3fs stores the mount root's attributes in key "/" (bucket root) or "prefix/".
        root_key = self.settings.prefix or "/"
        info = self.store.head(root_key)
        if info is not None:
            return self._decode(info, force_dir=True)
        s = self.settings
        perms = (0o777 & ~s.mp_umask) if s.allow_other else 0o700
        attr = Attr(
            mode=stat.S_IFDIR | perms,
            uid=s.default_uid, gid=s.default_gid, size=4096,
            mtime_ns=self._mount_time_ns, ctime_ns=self._mount_time_ns,
            atime_ns=self._mount_time_ns,
        )
        if s.uid is not None or s.gid is not None:
            attr = dataclasses.replace(attr, uid=s.uid if s.uid is not None else attr.uid,
                                       gid=s.gid if s.gid is not None else attr.gid)
        return Node(attr, None)

    def _resolve(self, path: str) -> Node:
        """The node at ``path``, from the cache or from S3 (releases nothing: no locks held)."""
        node = self.cache.get(path)
        if node is not None:
            return node
        if self.cache.is_missing(path):
            raise FsError(errno.ENOENT)
        if path == "":
            node = self._root_node()
        else:
            parent, _, name = path.rpartition("/")
            listing = self.cache.listing(parent)
            if listing is not None:
                node = self._resolve_listed(path, listing.get(name))
            else:
                node = self._probe(path)
        if node is None:
            self.cache.put_missing(path)
            raise FsError(errno.ENOENT)
        self.cache.put(path, node)
        return node

    def _resolve_listed(self, path: str, child: ListedChild | None) -> Node | None:
        if child is None:
            return None
        key = self._key(path)
        if child.is_dir:
            return self._directory(
                path,
                marker=self.store.head(key + "/"),
                same_name=lambda: self.store.head(key) if child.file else None,
                folder=lambda: self.store.head(child.folder_key) if child.folder_key else None,
            )
        info = self.store.head(key)
        return self._decode(info) if info else None

    def _directory(self, path: str, *, marker: ObjectInfo | None,
                   same_name: Callable[[], ObjectInfo | None],
                   folder: Callable[[], ObjectInfo | None]) -> Node:
        """A directory's attributes, from the first of its possible objects that exists.

        Order as s3fs: the "dir/" marker, an old-style "dir" object that is itself a
        directory, a "dir_$folder$" object; else it exists only as a key prefix.
        """
        if marker is not None:
            return self._decode(marker, force_dir=True)
        info = same_name()
        if info is not None:
            node = self._decode(info)
            if node.is_dir:
                return node
        info = folder()
        if info is not None:
            return self._decode(info, force_dir=True)
        return self._implicit_dir(path)

    def _probe(self, path: str) -> Node | None:
        """Find what ``path`` is without a listing of its parent.

        A directory shadows a file of the same name, so the prefix check decides;
        it runs in parallel with the HEAD of the file key.
        """
        key = self._key(path)
        if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        below = self._executor.submit(self.store.list_page, key + "/", delimiter="", max_keys=1)
        head = self._executor.submit(self.store.head, key)
        page = below.result()
        if page.objects:
            has_marker = page.objects[0].key == key + "/"
            return self._directory(
                path,
                marker=self.store.head(key + "/") if has_marker else None,
                same_name=head.result,
                # A "dir_$folder$" object only adds times to a directory with children.
                folder=lambda: None,
            )
        info = head.result()
        if info is not None:
            return self._decode(info)
        if self.settings.compat_dir:
            info = self.store.head(key + FOLDER_SUFFIX)
            if info is not None:
                return self._decode(info, force_dir=True)
        return None

    # Operations

    def lookup(self, parent_ino: int, name: str) -> tuple[int, Attr]:
        parent = self._path(parent_ino)
        if name == ".":
            path = parent
        elif name == "..":
            path = parent.rpartition("/")[0]
        else:
            if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise FsError(errno.ENAMETOOLONG)
            if skip_reason(name) is not None:
                raise FsError(errno.ENOENT)
            path = f"{parent}/{name}" if parent else name
        node = self._resolve(path)
        return self.inodes.number(path, counted=True), node.attr

    def forget(self, ino: int, count: int) -> None:
        self.inodes.forget(ino, count)

    def getattr(self, ino: int) -> Attr:
        return self._resolve(self._path(ino)).attr

    def readlink(self, ino: int) -> bytes:
        node = self._resolve(self._path(ino))
        if not stat.S_ISLNK(node.attr.mode) or node.key is None:
            raise FsError(errno.EINVAL)
        if node.attr.size > SYMLINK_MAX:
            self._warn_once(f"{node.key}: symlink target of {node.attr.size} bytes is too long")
            raise FsError(errno.ENAMETOOLONG)
        if node.attr.size == 0:
            raise FsError(errno.ENOENT, "empty symlink target")
        data = self.store.get_range(node.key, 0, node.attr.size - 1, node.etag)
        # s3fs trims whitespace around the target when it writes it and when it reads it.
        return data.strip()

    def getxattr(self, ino: int, name: str) -> bytes:
        node = self._resolve(self._path(ino))
        try:
            return node.xattrs[name]
        except KeyError:
            raise FsError(errno.ENODATA) from None

    def listxattr(self, ino: int) -> list[str]:
        return sorted(self._resolve(self._path(ino)).xattrs)

    # Directories

    def _list_children(self, path: str) -> dict[str, ListedChild]:
        prefix = self._dir_prefix(path)
        children: dict[str, ListedChild] = {}
        for page in self.store.list_all(prefix):
            for common in page.prefixes:
                self._add_child(children, prefix, common, None)
            for obj in page.objects:
                self._add_child(children, prefix, obj.key, obj)
        return dict(sorted(children.items()))

    def _add_child(self, children: dict[str, ListedChild], prefix: str, key: str,
                   obj: ListedObject | None) -> None:
        if key == prefix:
            return  # the directory's own marker
        split = split_key(prefix, key)
        if split is None:
            candidate = key[len(prefix):].rstrip("/")
            if candidate.endswith(FOLDER_SUFFIX):
                candidate = candidate[: -len(FOLDER_SUFFIX)]
            reason = skip_reason(candidate) or "not a usable file name"
            self._warn_once(f"skipping key {key!r}: {reason}")
            return
        name, dir_form = split
        child = children.setdefault(name, ListedChild())
        if obj is None:
            child.is_dir = True
        elif key.endswith(FOLDER_SUFFIX) and dir_form:
            if self.settings.compat_dir:
                child.is_dir = True
                child.folder_key = key
        else:
            child.file = obj

    def opendir(self, ino: int) -> int:
        path = self._path(ino)
        children = self._list_children(path)
        self.cache.put_listing(path, children)
        entries = [DirEntry(".", ino, None),
                   DirEntry("..", self.inodes.number(path.rpartition("/")[0], counted=False)
                            if path else ROOT_INODE, None)]
        for name, child in children.items():
            child_path = f"{path}/{name}" if path else name
            cached = self.cache.get(child_path)
            if cached is not None:
                attr: Attr | None = cached.attr
            elif child.is_dir:
                attr = self._implicit_dir(child_path).attr
            else:
                attr = None
            entries.append(DirEntry(name, self.inodes.number(child_path, counted=False), attr))
        return self._add_handle(entries)

    def readdir(self, fh: int, offset: int) -> list[tuple[DirEntry, int]]:
        entries: list[DirEntry] = self._handle(fh)
        return [(entry, index + 1) for index, entry in enumerate(entries) if index >= offset]

    # Files

    def open(self, ino: int, write: bool) -> int:
        if write:
            raise FsError(errno.EROFS)
        node = self._resolve(self._path(ino))
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if node.key is None:
            raise FsError(errno.ENOENT)
        return self._add_handle(ReadHandle(node.key, node.etag, node.attr.size))

    def read(self, fh: int, offset: int, size: int) -> bytes:
        handle: ReadHandle = self._handle(fh)
        with handle.lock:
            if offset >= handle.size or size <= 0:
                return b""
            end = min(offset + size, handle.size)
            start_in_buffer = offset - handle.buffer_start
            if start_in_buffer >= 0 and end <= handle.buffer_start + len(handle.buffer):
                data = handle.buffer[start_in_buffer:start_in_buffer + (end - offset)]
            else:
                if offset == handle.next_offset:
                    handle.window = min(max(handle.window * 2, READ_AHEAD_FIRST), READ_AHEAD_MAX)
                else:
                    handle.window = 0
                fetch_end = min(max(end, offset + handle.window), handle.size)
                fetched = self.store.get_range(handle.key, offset, fetch_end - 1, handle.etag)
                handle.buffer_start, handle.buffer = offset, fetched
                data = fetched[: end - offset]
            handle.next_offset = end
            return data

    def release(self, fh: int) -> None:
        with self._handles_lock:
            self._handles.pop(fh, None)

    def _add_handle(self, handle: Any) -> int:
        with self._handles_lock:
            fh = next(self._handle_numbers)
            self._handles[fh] = handle
            return fh

    def _handle(self, fh: int) -> Any:
        with self._handles_lock:
            try:
                return self._handles[fh]
            except KeyError:
                raise FsError(errno.EBADF) from None
