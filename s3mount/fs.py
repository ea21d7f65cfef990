"""The filesystem core: maps paths to S3 objects, serves reads and applies changes.

Independent of llfuse (the adapter in fuse_ops.py calls it with llfuse's
global lock released), so every method is safe to call from several threads:
shared tables have their own short locks, and no lock is held across an S3
request except an open file's own lock, which only users of that file wait for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NoReturn

from .block_cache import BlockCache
from .cache_space import CacheSpace
from .dir_times import DirTimeUpdates
from .errors import FsError
from .files import OpenFile, complete_without_original
from .inodes import ROOT_INODE, InodeTable
from .journal import Abandoned, Journal, Record
from .meta import (
    DIR_CONTENT_TYPE,
    FOLDER_SUFFIX,
    MAX_KEY_BYTES,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    Attr,
    decode_attr,
    decode_xattrs,
    encode_metadata,
    format_time_ns,
    metadata_size,
    skip_reason,
    split_key,
    valid_name,
)
from .mime import MimeTypes
from .reader import READ_AHEAD_MAX, READ_AHEAD_TOTAL, ObjectReader, ReadPool
from .stat_cache import StatCache
from .store import ListedObject, ObjectInfo, Store
from .streaming import Streamer
from .transfer import Original, Transfer
from .tree import is_partial_copy, list_tree, move_tree

log = logging.getLogger(__name__)

SYMLINK_MAX = 4095
SYMLINK_CONTENT_TYPE = "application/octet-stream"
# Entries of one listing whose attributes are fetched ahead of the lookups.
PREFETCH_LIMIT = 5000
# Listed directories remembered until a first lookup starts their prefetches.
PREFETCH_WAITING_DIRS = 1024
# Background uploads that failed are tried again after this long, doubling.
RETRY_FIRST_SECONDS = 2.0
RETRY_MAX_SECONDS = 120.0
POSIX_ACL_XATTRS = frozenset({"system.posix_acl_access", "system.posix_acl_default"})
# What `ls -l` asks of every entry. Unset, they answer EOPNOTSUPP; with
# attrs_from_list, listed entries answer so without a HEAD (s3mount never
# stores an ACL, see setxattr).
LS_PROBED_XATTRS = POSIX_ACL_XATTRS | {"security.selinux"}


class OnceWarnings:
    """Problems with the bucket's data, logged once per mount. Past ``limit`` distinct
    problems, one last line says so: a bucket of hostile keys must not make every
    listing log them all again."""

    def __init__(self, logger: logging.Logger, limit: int = 10_000) -> None:
        self._log = logger
        self._limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def warn(self, message: str) -> None:
        with self._lock:
            if message in self._seen or len(self._seen) > self._limit:
                return
            self._seen.add(message)
            if len(self._seen) > self._limit:
                message = (f"more than {self._limit} problems with keys or metadata; "
                           "no more are logged")
        self._log.warning("%s", message)


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
    multireq_max: int = 64  # parallel attribute prefetches of a listing
    cache_dir: str = "/tmp"
    # Keep a journal of dirty files in cache_dir (a persistent use_cache directory).
    journal: bool = False
    # close() returns once the data is in the journal; uploads run in the background.
    async_upload: bool = False
    max_cache_size: int | None = None  # bytes of data files at most
    del_cache: bool = False  # wipe the read cache at start and at exit
    ensure_diskfree: int = 0  # bytes that must stay free on the cache directory's disk
    free_space_ratio: int = 0  # the same, in percent of that disk
    update_parent_dir_stat: bool = True
    read_ahead_max: int = READ_AHEAD_MAX  # bytes, per open file
    read_ahead_total: int = READ_AHEAD_TOTAL  # bytes, all open files together
    attrs_from_list: bool = False  # lookups take listed entries' attributes from LIST alone
    default_uid: int = dataclasses.field(default_factory=os.geteuid)
    default_gid: int = dataclasses.field(default_factory=os.getegid)


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A resolved path: its stored attributes and where they live in the bucket."""

    stored: Attr  # as in the bucket (uid=, gid=, umask= apply only to what stat shows)
    key: str | None  # the object holding data and metadata; None for implicit directories
    etag: str = ""
    xattrs: dict[str, bytes] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    content_type: str | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stored.mode)


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


@dataclasses.dataclass(slots=True)
class DirHandle:
    ino: int
    path: str
    entries: list[DirEntry]
    read: bool = False  # a readdir was served: a later one from offset 0 is a rewind


@dataclasses.dataclass(slots=True)
class FileHandle:
    ino: int
    reader: ObjectReader | None  # set for reads of a file that is not open for writing
    writable: bool
    readable: bool = True


@dataclasses.dataclass(frozen=True)
class AttrChanges:
    """What a setattr asks for; None leaves a field as it is."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


class Filesystem:
    def __init__(self, store: Store, settings: FsSettings, transfer: Transfer, mime: MimeTypes,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.store = store
        self.stats = store.stats
        self.settings = settings
        self.transfer = transfer
        # Multipart uploads of big files that run while the files are written.
        self.streams = Streamer(store, transfer)
        self.mime = mime
        self.inodes = InodeTable()
        self.cache: StatCache[Node] = StatCache(
            ttl=settings.stat_cache_expire,
            max_entries=settings.max_stat_cache_size,
            negative=settings.enable_negative_cache,
        )
        self._clock = clock
        self._mount_time_ns = clock()
        self._executor = ThreadPoolExecutor(settings.max_thread_count,
                                            thread_name_prefix="s3mount-io")
        # Attribute lookups started by a directory listing, by path.
        self._prefetcher = ThreadPoolExecutor(settings.multireq_max,
                                              thread_name_prefix="s3mount-prefetch")
        self._prefetches: dict[str, Future[tuple[Node | None, int]]] = {}
        # Listed directory → the kinds of entry (is_dir) whose prefetches wait for
        # a first lookup of that kind, oldest first.
        self._prefetches_waiting: OrderedDict[str, set[bool]] = OrderedDict()
        self._read_pool = ReadPool(settings.max_thread_count, window=settings.read_ahead_max,
                                   total=settings.read_ahead_total)
        self._prefetches_lock = threading.Lock()
        self._handles: dict[int, Any] = {}
        self._handles_lock = threading.Lock()
        self._handle_numbers = itertools.count(1)
        # Files open for writing (or dirty after a failed upload), by inode.
        self._files: dict[int, OpenFile] = {}
        self._files_lock = threading.Lock()
        # Inodes of files in the table that hold a lookup count of their own (_hold).
        self._held: set[int] = set()
        # The (key, ETag) that readers of an inode read. llfuse keeps the kernel's
        # page cache across opens; when a file is opened again and its ETag changed
        # (another client wrote it), the cache must go. This mount's own renames,
        # uploads and metadata copies update it, and open readers follow; an empty
        # ETag says "look it up again".
        self._opened_versions: dict[int, tuple[str, str]] = {}
        self.on_stale: Callable[[int], None] = lambda ino: None
        self._warnings = OnceWarnings(log)
        self._dir_times = DirTimeUpdates(self._persist_dir_times,
                                         enabled=settings.update_parent_dir_stat)
        self.journal = Journal(settings.cache_dir, durable=settings.journal)
        # A writer short of cache space waits while uploads are busy (see CacheSpace).
        self._queued: set[int] = set()  # background uploads not started yet
        self._busy = 0  # background uploads queued or running
        self._running = 0  # uploads running, in the background or not
        self._uploads_lock = threading.Lock()
        self.space = CacheSpace(settings.cache_dir, max_bytes=settings.max_cache_size,
                                min_free=settings.ensure_diskfree,
                                free_ratio=settings.free_space_ratio,
                                uploads_running=self._uploads_running,
                                evict=self._evict_clean_files,
                                evict_read_cache=lambda wanted: self.read_cache.evict(wanted))
        # Blocks read from objects, on disk (kept across mounts with use_cache).
        self.read_cache = BlockCache(settings.cache_dir, self.space, self.stats,
                                     wipe=settings.del_cache, durable=settings.journal)
        self._background = ThreadPoolExecutor(settings.max_thread_count,
                                              thread_name_prefix="s3mount-upload")
        self._retries: dict[int, threading.Timer] = {}
        self._closing = False

    def close(self) -> list[str]:
        """Upload what is still dirty; return the keys that could not be uploaded.

        Those stay in the journal (when there is one) for the next mount.
        """
        self._closing = True
        with self._uploads_lock:
            for timer in self._retries.values():
                timer.cancel()
            self._retries.clear()
        self._background.shutdown(wait=True)
        failed = []
        with self._files_lock:
            files = list(self._files.values())
        for file in files:
            try:
                self._upload(file)
            except FsError:
                failed.append(file.key)
            with file.lock:
                keep = file.dirty and not file.unlinked and file.journaled
                if not file.closed:
                    file.close(keep_data=keep)
        self.journal.close(keep_records=bool(failed) and self.journal.durable)
        self._dir_times.close()
        self._prefetcher.shutdown(wait=False, cancel_futures=True)
        self._read_pool.close()
        self.read_cache.close(wipe=self.settings.del_cache)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.transfer.close()
        return failed

    # Paths, keys and attributes

    def _path(self, ino: int) -> str:
        path = self.inodes.path(ino)
        if path is None:
            raise FsError(errno.ESTALE, f"inode {ino} has no name")
        return path

    def _key(self, path: str) -> str:
        return self.settings.prefix + path

    def _dir_prefix(self, path: str) -> str:
        return self._key(path) + "/" if path else self.settings.prefix

    def _child(self, parent_ino: int, name: str) -> str:
        parent = self._path(parent_ino)
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        if skip_reason(name) is not None:
            raise FsError(errno.EINVAL)
        path = f"{parent}/{name}" if parent else name
        if len(self._key(path).encode("utf-8", "surrogateescape")) + 1 > MAX_KEY_BYTES:
            raise FsError(errno.ENAMETOOLONG)
        return path

    def _warn_once(self, message: str) -> None:
        self._warnings.warn(message)

    def _decode(self, info: ObjectInfo, *, force_dir: bool = False) -> Node:
        def warn_xattrs(message: str) -> None:
            # repr: a key may hold newlines and control characters.
            self._warn_once(f"{info.key!r}: {message}")

        attr = decode_attr(
            info.key,
            size=info.size,
            content_type=DIR_CONTENT_TYPE if force_dir else info.content_type,
            last_modified_ns=info.last_modified_ns,
            metadata=info.metadata,
            default_uid=self.settings.default_uid,
            default_gid=self.settings.default_gid,
            warn=self._warn_once,  # its messages name the key already
        )
        if force_dir and not stat.S_ISDIR(attr.mode):
            attr = dataclasses.replace(attr, mode=stat.S_IFDIR | (attr.mode & 0o7777))
        xattrs = decode_xattrs(info.metadata.get("xattr"), warn_xattrs)
        return Node(attr, info.key, info.etag, xattrs, dict(info.metadata), info.content_type)

    def _implicit_dir(self, path: str) -> Node:
        attr = decode_attr(
            self._key(path) + "/", size=0, content_type=DIR_CONTENT_TYPE,
            last_modified_ns=self._mount_time_ns, metadata={},
            default_uid=self.settings.default_uid, default_gid=self.settings.default_gid,
        )
        return Node(attr, None)

    def shown(self, attr: Attr) -> Attr:
        """What stat shows: the uid=, gid= and umask= options override the bucket, as in s3fs."""
        s = self.settings
        changes: dict[str, int] = {}
        if s.uid is not None:
            changes["uid"] = s.uid
        if s.gid is not None:
            changes["gid"] = s.gid
        if s.umask is not None:
            changes["mode"] = stat.S_IFMT(attr.mode) | (0o777 & ~s.umask)
        return dataclasses.replace(attr, **changes) if changes else attr

    def _root_key(self) -> str:
        # s3fs stores the mount root's attributes in key "/" (bucket root) or "prefix/".
        return self.settings.prefix or "/"

    def _root_node(self) -> Node:
        info = self.store.head(self._root_key())
        if info is not None:
            return self._decode(info, force_dir=True)
        s = self.settings
        perms = (0o777 & ~s.mp_umask) if s.allow_other else 0o700
        now = self._mount_time_ns
        attr = Attr(mode=stat.S_IFDIR | perms, uid=s.default_uid, gid=s.default_gid,
                    size=4096, mtime_ns=now, ctime_ns=now, atime_ns=now)
        return Node(attr, None)

    def _open_file(self, path: str) -> OpenFile | None:
        ino = self.inodes.find(path)
        if ino is None:
            return None
        with self._files_lock:
            return self._files.get(ino)

    @staticmethod
    def _file_node(file: OpenFile) -> Node:
        etag = file.original.etag if file.original else ""
        return Node(file.attr, file.key, etag, dict(file.xattrs), dict(file.keep),
                    file.content_type)

    # Resolution

    def _resolve(self, path: str) -> Node:
        """The node at ``path``: an open file, the cache, or S3."""
        file = self._open_file(path)
        if file is not None and not file.unlinked:
            return self._file_node(file)
        node = self.cache.get(path)
        if node is not None:
            self.stats.count("stat_cache_hits")
            return node
        if self.cache.is_missing(path):
            self.stats.count("stat_cache_negative_hits")
            raise FsError(errno.ENOENT)
        self.stats.count("stat_cache_misses")
        since = self.cache.changes
        found, node = self._prefetched(path)
        if not found:
            if path == "":
                node = self._root_node()
            else:
                parent, _, name = path.rpartition("/")
                listing = self.cache.listing(parent)
                if listing is not None:
                    node = self._resolve_listed(path, listing.get(name))
                else:
                    node = self._probe(path)
        self.cache.put_fetched(path, node, since)
        if node is None:
            raise FsError(errno.ENOENT)
        return node

    def _prefetched(self, path: str) -> tuple[bool, Node | None]:
        """(True, result) of a prefetch of ``path`` that is running or just ran, if
        no change of ours came after it started; else (False, None)."""
        with self._prefetches_lock:
            future = self._prefetches.get(path)
        if future is None:
            return False, None
        try:
            node, since = future.result()
        except Exception:
            return False, None  # the caller's own request will report the error
        return (True, node) if since == self.cache.changes else (False, None)

    def _prefetch_siblings(self, parent: str, name: str) -> None:
        """The first lookup of a file (or of a directory) in a listed directory starts
        the attribute lookups of all its listed files (or directories): `ls -l`
        looks up every entry, `find` only the directories, a plain readdir
        (`os.listdir`, `ls` into a pipe, a glob) none, and none of them pays
        for lookups it does not make."""
        with self._prefetches_lock:
            if parent not in self._prefetches_waiting:
                return
        listing = self.cache.listing(parent)
        child = listing.get(name) if listing is not None else None
        if listing is None or child is None:
            return
        with self._prefetches_lock:
            kinds = self._prefetches_waiting.get(parent)
            if kinds is None or child.is_dir not in kinds:
                return
            kinds.discard(child.is_dir)
            if not kinds:
                del self._prefetches_waiting[parent]
        self._start_prefetches(parent, {other: listed for other, listed in listing.items()
                                        if listed.is_dir == child.is_dir})

    def _start_prefetches(self, path: str, children: Mapping[str, ListedChild]) -> None:
        """Look up the attributes of a listed directory's entries in parallel, so
        that the lookups of `ls -l` find them ready (one LIST + one HEAD each)."""
        started = 0
        for name, child in sorted(children.items()):
            if started >= PREFETCH_LIMIT:
                break
            child_path = f"{path}/{name}" if path else name
            if self.cache.get(child_path) is not None or self.cache.is_missing(child_path):
                continue
            with self._prefetches_lock:
                if child_path in self._prefetches:
                    continue
                self._prefetches[child_path] = self._prefetcher.submit(
                    self._prefetch, child_path, child)
            started += 1

    def _prefetch(self, path: str, child: ListedChild) -> tuple[Node | None, int]:
        since = self.cache.changes
        try:
            node = self._resolve_listed(path, child)
            self.cache.put_fetched(path, node, since)
            return node, since
        finally:
            with self._prefetches_lock:
                self._prefetches.pop(path, None)

    def _listed_node(self, path: str) -> Node | None:
        """With attrs_from_list: the attributes of ``path`` as its parent's cached
        listing gives them (no HEAD), unless something better is known here.

        Only what stat shows comes from here; everything that reads or changes
        the object resolves it in full (_resolve), so a change never rewrites
        metadata it has not seen.
        """
        if not self.settings.attrs_from_list or not path:
            return None
        if self._open_file(path) is not None or self.cache.get(path) is not None:
            return None
        parent, _, name = path.rpartition("/")
        listing = self.cache.listing(parent)
        child = listing.get(name) if listing is not None else None
        if child is None or (child.file is None and not child.is_dir):
            return None
        self.stats.count("stat_cache_listed")
        if child.is_dir:
            return self._implicit_dir(path)
        obj = child.file
        attr = decode_attr(obj.key, size=obj.size, content_type=None,
                           last_modified_ns=obj.last_modified_ns, metadata={},
                           default_uid=self.settings.default_uid,
                           default_gid=self.settings.default_gid)
        return Node(attr, obj.key, obj.etag)

    def _exists(self, path: str) -> Node | None:
        try:
            return self._resolve(path)
        except FsError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

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
            # s3fs shows the directory too; the file's data cannot be reached.
            self._warn_once(f"hiding the file {info.key!r}: a directory of the same name "
                            "exists (its keys start with the same name and '/')")
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

    # Reading the namespace

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
            self._prefetch_siblings(parent, name)
        node = self._listed_node(path) or self._resolve(path)
        return self.inodes.number(path, counted=True), self.shown(node.stored)

    def forget(self, ino: int, count: int) -> None:
        if self.inodes.forget(ino, count):
            with self._handles_lock:
                # The kernel dropped the inode, and its page cache with it.
                self._opened_versions.pop(ino, None)

    def getattr(self, ino: int) -> Attr:
        with self._files_lock:
            file = self._files.get(ino)
        if file is not None:
            return self.shown(file.attr)
        path = self._path(ino)
        return self.shown((self._listed_node(path) or self._resolve(path)).stored)

    def readlink(self, ino: int) -> bytes:
        node = self._resolve(self._path(ino))
        if not stat.S_ISLNK(node.stored.mode) or node.key is None:
            raise FsError(errno.EINVAL)
        if node.stored.size > SYMLINK_MAX:
            self._warn_once(f"{node.key!r}: symlink target of {node.stored.size} bytes "
                            "is too long")
            raise FsError(errno.ENAMETOOLONG)
        if node.stored.size == 0:
            raise FsError(errno.ENOENT, "empty symlink target")
        data = self.store.get_range(node.key, 0, node.stored.size - 1, node.etag)
        # s3fs trims whitespace around the target when it writes it and when it reads it.
        return data.strip()

    def getxattr(self, ino: int, name: str) -> bytes:
        # An unset ACL or SELinux label is "not supported", not "absent": ls -l
        # then stops asking for them on this filesystem (coreutils remembers the
        # device), two FUSE requests fewer per entry. s3mount keeps neither.
        absent = errno.EOPNOTSUPP if name in LS_PROBED_XATTRS else errno.ENODATA
        if absent != errno.ENODATA and self._listed_node(self._path(ino)) is not None:
            raise FsError(absent)
        try:
            return self._node_of(ino).xattrs[name]
        except KeyError:
            raise FsError(absent) from None

    def listxattr(self, ino: int) -> list[str]:
        return sorted(self._node_of(ino).xattrs)

    def _node_of(self, ino: int) -> Node:
        with self._files_lock:
            file = self._files.get(ino)
        if file is not None:
            return self._file_node(file)
        return self._resolve(self._path(ino))

    def _list_children(self, path: str) -> dict[str, ListedChild]:
        prefix = self._dir_prefix(path)
        children: dict[str, ListedChild] = {}
        for page in self.store.list_all(prefix):
            for common in page.prefixes:
                self._add_child(children, prefix, common, None)
            for obj in page.objects:
                self._add_child(children, prefix, obj.key, obj)
        return children

    def _add_child(self, children: dict[str, ListedChild], prefix: str, key: str,
                   obj: ListedObject | None) -> None:
        if key == prefix:
            return  # the directory's own marker
        if obj is None and key == "/" and prefix == "" and self._only_root_marker():
            return  # s3fs's object for the bucket root's attributes, no name of its own
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

    def _only_root_marker(self) -> bool:
        """True if the keys starting with '/' are only the root marker "/"; any
        others ("//x", "/x") have no usable name and earn a warning."""
        page = self.store.list_page("/", delimiter="", max_keys=2)
        return all(obj.key == "/" for obj in page.objects)

    def _open_files_below(self, path: str) -> list[tuple[OpenFile, str]]:
        """Open files (not unlinked) anywhere below directory ``path``, with their paths."""
        below = path + "/" if path else ""
        with self._files_lock:
            files = list(self._files.values())
        found = []
        for file in files:
            file_path = self.inodes.path(file.ino)
            if not file.unlinked and file_path is not None and file_path.startswith(below):
                found.append((file, file_path))
        return found

    def _unlisted_open_files(self, path: str, children: dict[str, ListedChild]) -> None:
        """New files not uploaded yet are not in the bucket's listing; add them."""
        for file, file_path in self._open_files_below(path):
            parent, _, name = file_path.rpartition("/")
            if parent == path and name not in children:
                children[name] = ListedChild(file=ListedObject(file.key, file.size, "", 0))

    def opendir(self, ino: int) -> int:
        path = self._path(ino)
        return self._add_handle(DirHandle(ino, path, self._dir_entries(ino, path)))

    def _dir_entries(self, ino: int, path: str) -> list[DirEntry]:
        """The directory as it is now: its listing within the TTL, else listed anew."""
        children = self.cache.listing_copy(path)
        self.stats.count("listing_cache_misses" if children is None else "listing_cache_hits")
        if children is None:
            since = self.cache.changes
            children = self._list_children(path)
            self._unlisted_open_files(path, children)
            self.cache.put_listing(path, dict(children), since)
        if not self.settings.attrs_from_list:
            with self._prefetches_lock:
                self._prefetches_waiting[path] = {False, True}
                self._prefetches_waiting.move_to_end(path)
                if len(self._prefetches_waiting) > PREFETCH_WAITING_DIRS:
                    self._prefetches_waiting.popitem(last=False)
        entries = [DirEntry(".", ino, None),
                   DirEntry("..", self.inodes.number(path.rpartition("/")[0], counted=False)
                            if path else ROOT_INODE, None)]
        for name, child in sorted(children.items()):
            child_path = f"{path}/{name}" if path else name
            cached = self.cache.get(child_path) or self._listed_node(child_path)
            if cached is not None:
                attr: Attr | None = self.shown(cached.stored)
            elif child.is_dir:
                attr = self.shown(self._implicit_dir(child_path).stored)
            else:
                attr = None
            entries.append(DirEntry(name, self.inodes.number(child_path, counted=False), attr))
        return entries

    def readdir(self, fh: int, offset: int) -> Iterator[tuple[DirEntry, int]]:
        """The entries from ``offset`` on, with the offset of the next; the kernel
        takes what fits in its buffer and asks again from there. A read from offset
        0 of a handle read before is a rewinddir(3), which POSIX makes see the
        directory as a new opendir would: it may list the directory (a request)."""
        handle: DirHandle = self._handle(fh)
        if offset > 0:
            self.cache.renew_listing(handle.path)
        elif handle.read:
            handle.entries = self._dir_entries(handle.ino, handle.path)
        handle.read = True
        entries = handle.entries
        return ((entries[index], index + 1) for index in range(offset, len(entries)))

    # Files: open, read, write, upload

    def _load_file(self, ino: int, path: str, claim: int) -> OpenFile:
        """The OpenFile of an inode, made from its node on first use, with ``claim``
        handles counted in the same step, so a racing release cannot drop it."""
        with self._files_lock:
            file = self._files.get(ino)
            if file is not None:
                file.handles += claim
                return file
        # The content is fetched (and later copied) pinned to this ETag, so it must be
        # current: another client may have replaced the object since it was cached.
        self.cache.forget_tree(path)
        node = self._resolve(path)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if node.key is None:
            raise FsError(errno.ENOENT)
        file = OpenFile(self.store, self.journal, self.space, ino=ino, key=node.key,
                        attr=node.stored, original=Original(node.key, node.etag, node.stored.size),
                        xattrs=dict(node.xattrs), keep=dict(node.metadata),
                        content_type=node.content_type or self.mime.content_type(node.key),
                        read_cache=self.read_cache)
        with self._files_lock:
            # Another thread may have made one meanwhile; keep the first.
            existing = self._files.setdefault(ino, file)
            existing.handles += claim
        if existing is not file:
            file.close()
        else:
            self._hold(ino)
        return existing

    def _hold(self, ino: int) -> None:
        """Keep the inode's name while the file is in the open-file table, also when
        the kernel forgets it: a dirty file waiting for its upload must stay the
        one that lookups find."""
        path = self.inodes.path(ino)
        if path is not None:
            self.inodes.number(path, counted=True)
            with self._files_lock:
                self._held.add(ino)

    def _drop(self, file: OpenFile) -> None:
        """Remove a file from the open-file table (with _files_lock and file.lock held)."""
        if self._files.get(file.ino) is file:
            del self._files[file.ino]
            if file.ino in self._held:
                self._held.discard(file.ino)
                self.forget(file.ino, 1)
        self.streams.abandon(file)
        file.close()

    def open(self, ino: int, write: bool, read: bool = True) -> int:
        path = self._path(ino)
        if write:
            self._load_file(ino, path, claim=1)
            return self._add_handle(FileHandle(ino, None, True, read))
        with self._files_lock:
            file = self._files.get(ino)
        if file is not None:
            return self._add_handle(FileHandle(ino, None, False))
        node = self._resolve(path)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        if node.key is None:
            raise FsError(errno.ENOENT)
        with self._handles_lock:
            previous = self._opened_versions.get(ino)
            self._opened_versions[ino] = (node.key, node.etag)
        if previous is not None and previous[1] != node.etag:
            self.on_stale(ino)
        return self._add_handle(FileHandle(ino, self._reader(ino, node), False))

    def _reader(self, ino: int, node: Node) -> ObjectReader:
        # The path is looked up at each use: the file may have been renamed.
        def refresh() -> tuple[str, str, int]:
            path = self._path(ino)
            self.cache.forget_tree(path)
            fresh = self._resolve(path)
            if fresh.key is None or fresh.is_dir:
                raise FsError(errno.ESTALE)
            with self._handles_lock:
                self._opened_versions[ino] = (fresh.key, fresh.etag)
            self.on_stale(ino)
            return fresh.key, fresh.etag, fresh.stored.size

        def latest_version() -> tuple[str, str] | None:
            with self._handles_lock:
                return self._opened_versions.get(ino)

        def changed() -> None:
            # Another client replaced the object: neither the cached attributes
            # nor the kernel's pages of this file are current any more.
            path = self.inodes.path(ino)
            if path is not None:
                self.cache.forget_tree(path)
            self.on_stale(ino)

        return ObjectReader(self.store, self._read_pool, node.key or "", node.etag,
                            node.stored.size, refresh, latest_version, changed,
                            cache=self.read_cache)

    def _version_changed(self, ino: int | None, key: str, etag: str) -> None:
        """A metadata copy of this mount gave the object of ``ino`` another ETag
        (same content): its open readers read that version from now on."""
        with self._handles_lock:
            if ino in self._opened_versions:
                self._opened_versions[ino] = (key, etag)

    def create(self, parent_ino: int, name: str, mode: int, uid: int,
               gid: int, read: bool = True) -> tuple[int, int, Attr]:
        path = self._child(parent_ino, name)
        if self._exists(path) is not None:
            raise FsError(errno.EEXIST)
        attr = self._new_attr(stat.S_IFREG | (mode & 0o7777), uid, gid)
        ino = self.inodes.number(path, counted=True)
        file = OpenFile(self.store, self.journal, self.space, ino=ino, key=self._key(path),
                        attr=attr, original=None, xattrs={}, keep={},
                        content_type=self.mime.content_type(path),
                        read_cache=self.read_cache)
        file.handles = 1
        with self._files_lock:
            self._files[ino] = file
        self._hold(ino)
        self._added(path, self._file_node(file), ListedChild(
            file=ListedObject(file.key, 0, "", attr.mtime_ns)))
        return self._add_handle(FileHandle(ino, None, True, read)), ino, self.shown(attr)

    def read(self, fh: int, offset: int, size: int) -> bytes:
        handle: FileHandle = self._handle(fh)
        with self._files_lock:
            file = self._files.get(handle.ino)
        if file is not None:
            # Read-your-writes, also through a descriptor opened before the writer's.
            with file.lock:
                if not file.closed:  # else the last writer's release just dropped it
                    if not handle.writable:
                        file.raced = True
                    if file.punched_in(offset, offset + size):
                        self._upload_held(file)
                    return file.read_range(offset, size)
        if handle.reader is None:
            # Opened while the file was open for writing; that writer is gone now.
            node = self._resolve(self._path(handle.ino))
            if node.key is None:
                raise FsError(errno.ENOENT)
            handle.reader = self._reader(handle.ino, node)
        return handle.reader.read(offset, size)

    def write(self, fh: int, offset: int, data: bytes) -> int:
        handle: FileHandle = self._handle(fh)
        with self._files_lock:
            file = self._files.get(handle.ino)
        if file is None or not handle.writable:
            raise FsError(errno.EBADF)
        with file.lock:
            if file.handles > 1:
                file.raced = True
            if self.streams.must_finish(file, offset, offset + len(data)):
                self._upload_held(file)
            try:
                file.write(offset, data)
            finally:
                # Also after a failed write: part of it may have landed.
                self.streams.wrote(file, offset, offset + len(data))
        return len(data)

    def flush(self, fh: int) -> None:
        """Upload a changed file at close; failures are EIO, and the data stays.

        With async_upload, only make it durable in the journal and queue the
        upload; an earlier background upload that failed is reported here.
        Closing a read-only descriptor uploads nothing: its writers will.
        """
        handle: FileHandle = self._handle(fh)
        if not handle.writable:
            return
        if not self.settings.async_upload:
            self.fsync(fh)
            return
        with self._files_lock:
            file = self._files.get(handle.ino)
        if file is None:
            return
        with file.lock:
            if file.unlinked or not file.dirty:
                return
            # Reported once, like a write-back error of the kernel's page cache.
            failed, file.upload_failed = file.upload_failed, False
            try:
                file.persist()
                # Content partly in a streaming upload only is safe once that is done.
                journaled = not file.punched
            except FsError as exc:
                log.warning("cannot journal %s (%s): uploading it now", file.key, exc.detail)
                journaled = False
        if not journaled:
            self._upload(file)
            return
        self._schedule(file)
        if failed:
            raise FsError(errno.EIO, f"an earlier upload of {file.key} failed; it is "
                          "retried in the background")

    def fsync(self, fh: int) -> None:
        """Upload the file's changes, whichever descriptor they were written through."""
        handle: FileHandle = self._handle(fh)
        with self._files_lock:
            file = self._files.get(handle.ino)
        if file is not None:
            self._upload(file)

    def release(self, fh: int) -> None:
        with self._handles_lock:
            handle = self._handles.pop(fh, None)
        if isinstance(handle, FileHandle) and handle.reader is not None:
            handle.reader.close()
        if not isinstance(handle, FileHandle) or not handle.writable:
            return
        with self._files_lock:
            file = self._files.get(handle.ino)
        if file is None:
            return
        with self._files_lock:
            file.handles -= 1
            last = file.handles == 0
        if not last:
            return
        if self.settings.async_upload:
            self._schedule(file)
            # A dirty file goes when its background upload is done; waiting for its
            # lock here would hold this worker for the upload.
            if not file.dirty:
                self._drop_if_done(file)
            return
        # Counted as running until the file is dropped, not only while it uploads:
        # a writer short of cache space must wait for its space (or its blocks in
        # the read cache), not fail with ENOSPC in between. No writer of this file
        # is left to hold its lock meanwhile.
        with self._upload_counted():
            try:
                self._upload(file)
            except FsError:
                return  # logged by _upload; the file stays, dirty, so nothing is lost
            self._drop_if_done(file)

    def _drop_if_done(self, file: OpenFile) -> None:
        with file.lock, self._files_lock:
            if file.handles == 0 and (not file.dirty or file.unlinked) and not file.closed:
                self._drop(file)
        # A metadata change that arrived during the upload is stored too.
        if not file.unlinked and file.dirty and not self.settings.async_upload:
            self._persist_if_closed(file)

    def releasedir(self, fh: int) -> None:
        with self._handles_lock:
            self._handles.pop(fh, None)

    # Background uploads (async_upload)

    def _uploads_running(self) -> bool:
        """Uploads are queued or running (not waiting to be retried): space may come."""
        return self._busy > 0 or self._running > 0

    def _evict_clean_files(self) -> None:
        """Drop the cached content of open files that are all in the bucket (for
        CacheSpace). Files whose lock is taken are busy and left alone."""
        with self._files_lock:
            files = list(self._files.values())
        for file in files:
            if not file.lock.acquire(blocking=False):
                continue
            try:
                if not file.closed:
                    file.evict()
            finally:
                file.lock.release()

    def _schedule(self, file: OpenFile) -> None:
        """Upload ``file`` in the background, unless that is queued already."""
        with self._uploads_lock:
            if self._closing or file.ino in self._queued:
                return
            timer = self._retries.pop(file.ino, None)
            if timer is not None:
                timer.cancel()
            self._queued.add(file.ino)
            self._busy += 1
        try:
            self._background.submit(self._background_upload, file)
        except RuntimeError:  # shut down: close() uploads what is left
            with self._uploads_lock:
                self._busy -= 1

    def _retry_later(self, file: OpenFile, delay: float) -> None:
        with self._uploads_lock:
            if self._closing or file.ino in self._retries:
                return
            timer = threading.Timer(delay, self._schedule, (file,))
            timer.daemon = True
            self._retries[file.ino] = timer
        timer.start()

    def _background_upload(self, file: OpenFile) -> None:
        """Counted busy until the file is dropped, so that a writer waiting for
        cache space waits for the space, not only for the upload."""
        with self._uploads_lock:
            self._queued.discard(file.ino)
        try:
            self._upload(file)
        except FsError:
            with file.lock:
                file.upload_failed = True
                file.retries += 1
                delay = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2 ** (file.retries - 1))
            log.info("the upload of %s is tried again in %.0f s", file.key, delay)
            self._retry_later(file, delay)
        else:
            with file.lock:
                file.retries = 0
            self._drop_if_done(file)
        finally:
            with self._uploads_lock:
                self._busy -= 1
            self.space.wake()

    def _upload(self, file: OpenFile) -> None:
        """Upload the file's changes; the journal record goes when they are committed."""
        with file.lock:
            self._upload_held(file)

    def _upload_held(self, file: OpenFile) -> None:
        """``_upload`` with file.lock held: also when an access needs the blocks of a
        streaming upload (see Streamer.must_finish)."""
        # Counted only once the lock is ours: a writer waiting for cache space
        # holds it, and must not wait for an upload of its own file.
        with self._upload_counted():
            path = self._upload_locked(file)
        if path is not None:
            self.cache.put(path, self._file_node(file))

    @contextlib.contextmanager
    def _upload_counted(self) -> Iterator[None]:
        """An upload is running (see _uploads_running) while in this block."""
        with self._uploads_lock:
            self._running += 1
        try:
            yield
        finally:
            with self._uploads_lock:
                self._running -= 1
            self.space.wake()

    def _upload_locked(self, file: OpenFile) -> str | None:
        """With file.lock held; return the file's path when something was uploaded."""
        if file.unlinked or not file.dirty:
            return None
        metadata = encode_metadata(file.attr, file.xattrs, keep=file.keep)

        def watch(upload_id: str | None) -> None:
            try:
                file.set_upload((file.key, upload_id) if upload_id is not None else None)
            except FsError as exc:
                log.warning("cannot journal the upload of %s: %s", file.key, exc.detail)

        try:
            try:
                file.persist()
            except FsError as exc:
                # The upload can still succeed; only a crash during it would lose it.
                log.warning("cannot journal %s: %s", file.key, exc.detail)
            if file.data_dirty or file.original is None:
                original = None
                if file.original is not None:
                    original = Original(file.original.key, file.original.etag,
                                        file.original_limit)
                # A multipart upload that runs since the file was written is
                # finished, else the content is uploaded now.
                completed = self.streams.finish(file, metadata, watch)
                if completed is None:
                    etag = self.transfer.upload(file.key, file, metadata=metadata,
                                                content_type=file.content_type,
                                                original=original, on_multipart=watch)
                elif completed.metadata_stale:
                    # The object holds the content now: if the copy that sets the
                    # final metadata fails, only that copy is tried again.
                    file.data_committed(completed.etag)
                    file.meta_dirty = True
                    etag = self.transfer.copy(file.original, file.key, metadata=metadata,
                                              content_type=file.content_type)
                else:
                    etag = completed.etag
            else:
                etag = self.transfer.copy(file.original, file.key, metadata=metadata,
                                          content_type=file.content_type)
        except FsError as exc:
            log.error("upload of %s failed (%s); the data stays in the cache and is "
                      "uploaded again at the next flush or close", file.key,
                      exc.detail or os.strerror(exc.errno))
            raise FsError(errno.EIO, exc.detail) from None
        file.committed(etag)
        file.keep = metadata
        with self._handles_lock:
            # Our own upload: the kernel's pages hold this content, unless reads or
            # other writers overlapped the writes (a read's answer can land in the
            # page cache after a write that changed its range).
            self._opened_versions[file.ino] = (file.key, etag)
        if file.raced:
            file.raced = False
            self.on_stale(file.ino)
        return self.inodes.path(file.ino)

    # Recovery of the journals of mounts that were killed

    def recover(self) -> None:
        """Upload the dirty files that journals of dead mounts hold (see journal.py).

        Runs before the mount serves. Multipart uploads those mounts had started
        are aborted. A file whose object changed in the bucket since is uploaded
        as ``NAME.s3mount-conflict-TIME`` beside it. A file that cannot be uploaded
        now stays in the open-file table, visible and dirty, and is uploaded later
        like any other (and is journaled again for the next mount).
        """
        with ThreadPoolExecutor(self.settings.max_thread_count,
                                thread_name_prefix="s3mount-recover") as pool:
            for session in self.journal.abandoned():
                try:
                    for path, key, upload_id in session.uploads():
                        self._recover_upload(session, path, key, upload_id)
                    list(pool.map(lambda item, session=session: self._recover_one(session, *item),
                                  list(session.records())))
                finally:
                    session.close()

    def _recover_one(self, session: Abandoned, data_path: str,
                     record: Record | None) -> None:
        if record is None:
            return  # unreadable: logged, and left where it is
        try:
            self._recover_record(session, data_path, record)
        except (FsError, OSError) as exc:
            detail = exc.detail if isinstance(exc, FsError) else exc.strerror
            log.error("could not recover %s from the journal (%s); it stays in %s for the "
                      "next mount", record.key, detail, data_path)

    def _abort_left_upload(self, key: str, upload_id: str) -> None:
        # "": killed while starting one, before its id was known: any upload of the
        # key in progress may be it.
        for each in [upload_id] if upload_id else self.store.multipart_uploads(key):
            try:
                self.store.abort_multipart(key, each)
                log.info("aborted the multipart upload of %s that a killed mount left", key)
            except FsError as exc:
                if exc.errno != errno.ENOENT:
                    raise

    def _recover_upload(self, session: Abandoned, path: str, key: str, upload_id: str) -> None:
        """A streaming upload of a file that was never flushed: only aborted."""
        try:
            self._abort_left_upload(key, upload_id)
        except FsError as exc:
            log.error("could not abort the multipart upload of %s that a killed mount left "
                      "(%s); the next mount tries again", key, exc.detail)
            return
        session.forget_upload(path)

    def _recover_record(self, session: Abandoned, data_path: str, record: Record) -> None:
        if record.upload_id is not None:
            self._abort_left_upload(record.upload_key or record.key, record.upload_id)
        if not os.path.exists(data_path):
            log.error("the journal record of %s has no data file; dropping it", record.key)
            session.forget(data_path)
            return
        info = self.store.head(record.key)
        if info is not None and self._uploaded_before(info, record):
            log.info("%s was uploaded before the previous mount ended", record.key)
            session.forget(data_path)
            return
        key, original = record.key, record.original
        if info is None and original is not None:
            log.warning("%s was deleted in the bucket after a killed mount changed it; "
                        "uploading the changed file", record.key)
            original = None
        elif info is not None and (original is None or info.etag != original.etag):
            key = record.key + time.strftime(".s3mount-conflict-%Y%m%dT%H%M%SZ", time.gmtime())
            log.warning("%s changed in the bucket after a killed mount changed it: keeping "
                        "both, the changes of this mount go to %s", record.key, key)
            original = None
        if original is None and not complete_without_original(record, data_path):
            raise FsError(errno.ESTALE, "part of its content was only in the object it "
                          "replaced, which changed or is gone")
        path = key[len(self.settings.prefix):] if key.startswith(self.settings.prefix) else None
        if path is not None and not all(valid_name(part) for part in path.split("/")):
            path = None
        ino = self.inodes.number(path, counted=False) if path is not None else 0
        file = OpenFile.recovered(self.store, self.journal, self.space, ino, record,
                                  self.journal.adopt(data_path), key=key, original=original)
        with file.lock:
            file.persist(force=True)
        session.forget(data_path)
        if not ino:
            try:
                self._upload(file)
            finally:
                with file.lock:
                    file.close(keep_data=file.dirty)
            return
        with self._files_lock:
            self._files[ino] = file
        self._hold(ino)
        try:
            self._upload(file)
        except FsError:
            if self.settings.async_upload:
                self._retry_later(file, RETRY_FIRST_SECONDS)
            return  # stays dirty in the table: uploaded at the next fsync or unmount
        log.info("uploaded %s from the journal of a killed mount", key)
        with file.lock, self._files_lock:
            self._drop(file)

    @staticmethod
    def _uploaded_before(info: ObjectInfo, record: Record) -> bool:
        """The object is this record's content: the killed mount committed it but
        was killed before it removed the record (same size and times)."""
        metadata = {name.lower(): value for name, value in info.metadata.items()}
        return (info.size == record.attr.size
                and metadata.get("mtime") == format_time_ns(record.attr.mtime_ns)
                and metadata.get("ctime") == format_time_ns(record.attr.ctime_ns))

    # Changing the namespace

    def _new_attr(self, mode: int, uid: int, gid: int, size: int = 0, rdev: int = 0) -> Attr:
        now = self._clock()
        if stat.S_ISDIR(mode):
            size = 4096
        return Attr(mode=mode, uid=uid, gid=gid, size=size, mtime_ns=now, ctime_ns=now,
                    atime_ns=now, rdev=rdev)

    def _added(self, path: str, node: Node, child: ListedChild) -> None:
        parent, _, name = path.rpartition("/")
        self.cache.put(path, node)
        self.cache.listing_set(parent, name, child)
        self._parent_changed(parent)

    def _removed(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        self._dir_times.discard_tree(path)
        self.inodes.detach(path)
        self.cache.forget_tree(path)
        self.cache.put_missing(path)
        self.cache.listing_set(parent, name, None)
        self._parent_changed(parent)

    def _parent_changed(self, parent: str) -> None:
        now = self._clock()
        node = self.cache.get(parent)
        if node is not None:
            self.cache.put(parent, dataclasses.replace(
                node, stored=dataclasses.replace(node.stored, mtime_ns=now, ctime_ns=now)))
        self._dir_times.touch(parent, now)

    def _persist_dir_times(self, path: str, time_ns: int) -> None:
        """Store a directory's new mtime and ctime in its marker (see dir_times)."""
        node = self._exists(path)
        if node is None or not node.is_dir or node.key != self._dir_marker(path):
            return  # gone, or implicit: storing its times would need a new marker
        stored = dataclasses.replace(node.stored, mtime_ns=max(time_ns, node.stored.mtime_ns),
                                     ctime_ns=max(time_ns, node.stored.ctime_ns))
        self._store_metadata(path, dataclasses.replace(node, stored=stored))

    def _put_new(self, path: str, key: str, body: bytes, attr: Attr, content_type: str,
                 child: ListedChild) -> int:
        if self._exists(path) is not None:
            raise FsError(errno.EEXIST)
        metadata = encode_metadata(attr)
        etag = self.store.put(key, body, metadata=metadata, content_type=content_type)
        self._added(path, Node(attr, key, etag, {}, metadata, content_type), child)
        return self.inodes.number(path, counted=True)

    def mkdir(self, parent_ino: int, name: str, mode: int, uid: int,
              gid: int) -> tuple[int, Attr]:
        path = self._child(parent_ino, name)
        attr = self._new_attr(stat.S_IFDIR | (mode & 0o7777), uid, gid)
        ino = self._put_new(path, self._key(path) + "/", b"", attr, DIR_CONTENT_TYPE,
                            ListedChild(is_dir=True))
        # Nothing was below it a moment ago: lookups of new names in it (tar,
        # cp -r, a build) need not ask the bucket while this listing lasts.
        self.cache.put_listing(path, {})
        return ino, self.shown(attr)

    def symlink(self, parent_ino: int, name: str, target: bytes, uid: int,
                gid: int) -> tuple[int, Attr]:
        path = self._child(parent_ino, name)
        if len(target) > SYMLINK_MAX:
            raise FsError(errno.ENAMETOOLONG)
        attr = self._new_attr(stat.S_IFLNK | 0o777, uid, gid, size=len(target))
        key = self._key(path)
        ino = self._put_new(path, key, target, attr, SYMLINK_CONTENT_TYPE,
                            ListedChild(file=ListedObject(key, len(target), "", attr.mtime_ns)))
        return ino, self.shown(attr)

    def mknod(self, parent_ino: int, name: str, mode: int, rdev: int, uid: int,
              gid: int) -> tuple[int, Attr]:
        path = self._child(parent_ino, name)
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind == stat.S_IFDIR:
            raise FsError(errno.EINVAL)
        keeps_rdev = kind in (stat.S_IFCHR, stat.S_IFBLK)
        attr = self._new_attr(kind | (mode & 0o7777), uid, gid, rdev=rdev if keeps_rdev else 0)
        key = self._key(path)
        ino = self._put_new(path, key, b"", attr, self.mime.content_type(path),
                            ListedChild(file=ListedObject(key, 0, "", attr.mtime_ns)))
        return ino, self.shown(attr)

    def unlink(self, parent_ino: int, name: str) -> None:
        path = self._child(parent_ino, name)
        node = self._resolve(path)
        if node.is_dir:
            raise FsError(errno.EISDIR)
        file = self._open_file(path)
        if file is not None:
            with file.lock:
                if file.punched and self._readable(file.ino):
                    # Its descriptors may still read what only the upload holds.
                    self._upload_held(file)
                # Open descriptors keep working on the cached content; their close must
                # not re-create the object.
                self.streams.abandon(file)
                file.detach_from_object()
                file.unlinked = True
                # A later mount must not bring it back.
                file.unjournal()
                in_bucket = file.original is not None
        else:
            in_bucket = node.key is not None
        if in_bucket and node.key is not None:
            self.store.delete(node.key)
        self._removed(path)

    def rmdir(self, parent_ino: int, name: str) -> None:
        path = self._child(parent_ino, name)
        node = self._resolve(path)
        if not node.is_dir:
            raise FsError(errno.ENOTDIR)
        self._check_empty(path)
        prefix = self._key(path) + "/"
        for key in {node.key, prefix}:
            if key is not None:
                self.store.delete(key)
        self._removed(path)

    def _check_empty(self, path: str) -> None:
        prefix = self._key(path) + "/"
        page = self.store.list_page(prefix, delimiter="", max_keys=2)
        if any(obj.key != prefix for obj in page.objects) or self._open_files_below(path):
            raise FsError(errno.ENOTEMPTY)

    def link(self) -> NoReturn:
        # S3 has no hard links; EPERM is what link(2) documents for a filesystem
        # that does not support them (s3fs answers ENOTSUP).
        raise FsError(errno.EPERM)

    def rename(self, parent_old: int, name_old: str, parent_new: int, name_new: str) -> None:
        old = self._child(parent_old, name_old)
        new = self._child(parent_new, name_new)
        if old == new:
            return
        node = self._resolve(old)
        if new.startswith(old + "/"):
            raise FsError(errno.EINVAL)
        target = self._exists(new)
        if node.is_dir:
            if target is not None and not target.is_dir:
                raise FsError(errno.ENOTDIR)
            self._rename_dir(old, new, node, target)
        else:
            if target is not None and target.is_dir:
                raise FsError(errno.EISDIR)
            self._rename_file(old, new, node)
        self._dir_times.discard_tree(old)
        # Also drops the negative entry the kernel's lookup of the new name left.
        self.cache.forget_tree(new)
        self.inodes.move(old, new)
        self._readers_moved(new)
        self.cache.forget_tree(old)
        self.cache.put_missing(old)
        old_parent, _, old_name = old.rpartition("/")
        new_parent, _, new_name = new.rpartition("/")
        self.cache.listing_set(old_parent, old_name, None)
        self.cache.listing_set(new_parent, new_name, ListedChild(
            is_dir=node.is_dir,
            file=None if node.is_dir else ListedObject(self._key(new), node.stored.size, "", 0)))
        self._parent_changed(old_parent)
        self._parent_changed(new_parent)

    def _readers_moved(self, path: str) -> None:
        """Open readers of ``path`` and below, just renamed, read the new keys; a
        copy may have changed the ETag, so they look the object up again."""
        below = path + "/"
        with self._handles_lock:
            for ino in list(self._opened_versions):
                current = self.inodes.path(ino)
                if current is not None and (current == path or current.startswith(below)):
                    self._opened_versions[ino] = (self._key(current), "")

    def _rename_file(self, old: str, new: str, node: Node) -> None:
        new_key = self._key(new)
        content_type = (SYMLINK_CONTENT_TYPE if stat.S_ISLNK(node.stored.mode)
                        else self.mime.content_type(new))
        file = self._open_file(old)
        if file is not None:
            with file.lock:
                if file.punched:
                    self._upload_held(file)  # under the old key, then copied
                # Its streaming upload writes the old key.
                self.streams.abandon(file)
                old_key, file.key, file.content_type = file.key, new_key, content_type
                file.attr = dataclasses.replace(file.attr, ctime_ns=self._clock())
                file.meta_dirty = True
                file.changed()
                uploaded = file.original is not None
                if not uploaded and file.journaled:
                    file.persist()  # a crash must not upload it under the old name
            if uploaded:
                self._upload(file)
                self.store.delete(old_key)
            return
        if node.key is None:
            raise FsError(errno.ENOENT)
        attr = dataclasses.replace(node.stored, ctime_ns=self._clock())
        metadata = encode_metadata(attr, node.xattrs, keep=node.metadata)
        self.transfer.copy(Original(node.key, node.etag, node.stored.size), new_key,
                           metadata=metadata, content_type=content_type)
        self.store.delete(node.key)

    def _rename_dir(self, old: str, new: str, node: Node, target: Node | None) -> None:
        # The objects that move must hold what open files below have written.
        open_files = self._open_files_below(old)
        for file, _ in open_files:
            self._upload(file)
        source_prefix, target_prefix = self._key(old) + "/", self._key(new) + "/"
        source = list_tree(self.store, source_prefix)
        if target is not None:
            existing = [o for o in list_tree(self.store, target_prefix)
                        if o.key != target_prefix]
            if not is_partial_copy(source, existing, source_prefix, target_prefix):
                raise FsError(errno.ENOTEMPTY)
        if node.key is not None and not node.key.endswith("/") and node.key != source_prefix:
            # An old-style "dir" or "dir_$folder$" object becomes a "dir/" marker.
            attr = dataclasses.replace(node.stored, ctime_ns=self._clock())
            self.store.put(target_prefix, b"", metadata=encode_metadata(
                attr, node.xattrs, keep=node.metadata), content_type=DIR_CONTENT_TYPE)
            self.store.delete(node.key)
        move_tree(self.store, self.transfer, self._executor, source, source_prefix,
                  target_prefix)
        for file, file_path in open_files:
            key = self._key(new + file_path[len(old):])
            with file.lock:
                self.streams.abandon(file)
                file.key = key
                if file.original is not None:
                    # A multipart copy has another ETag; later part copies need it.
                    info = self.store.head(key)
                    file.original = Original(key, info.etag, info.size) if info else None

    # Attributes and extended attributes

    def setattr(self, ino: int, changes: AttrChanges) -> Attr:
        now = self._clock()

        def apply(attr: Attr) -> Attr:
            fields: dict[str, int] = {"ctime_ns": now}
            if changes.mode is not None:
                fields["mode"] = stat.S_IFMT(attr.mode) | (changes.mode & 0o7777)
            for name in ("uid", "gid", "atime_ns", "mtime_ns"):
                value = getattr(changes, name)
                if value is not None:
                    fields[name] = value
            return dataclasses.replace(attr, **fields)

        with self._files_lock:
            file = self._files.get(ino)
        temporary = file is None and changes.size is not None
        if temporary:
            file = self._load_file(ino, self._path(ino), claim=0)
        if file is not None:
            with file.lock:
                if changes.size is not None:
                    if self.streams.must_finish(file, changes.size, file.size, truncate=True):
                        self._upload_held(file)
                    try:
                        file.truncate(changes.size)
                    finally:
                        self.streams.truncated(file, file.size)
                file.attr = apply(file.attr)
                file.meta_dirty = True
                file.changed()
                attr = file.attr
            self._persist_if_closed(file)
            return self.shown(attr)
        path = self._path(ino)
        node = self._resolve(path)
        updated = dataclasses.replace(node, stored=apply(node.stored))
        self._store_metadata(path, updated)
        return self.shown(updated.stored)

    def _persist_if_closed(self, file: OpenFile) -> None:
        """Store a metadata change now unless it can ride on an upload that is due.

        Only unsent content of a file still open for writing defers it. The kernel
        sends RELEASE after close() has returned, so a chmod or setxattr right after
        close() can find the writer's handle still counted.
        """
        with self._files_lock:
            open_for_writing = file.handles > 0
        with file.lock:
            deferred = open_for_writing and file.data_dirty
        if deferred:
            return
        self._upload(file)
        with file.lock, self._files_lock:
            # The release may have dropped (and closed) it meanwhile.
            if file.handles == 0 and not file.dirty and not file.closed:
                self._drop(file)

    def _store_metadata(self, path: str, node: Node) -> None:
        """Persist a node's attributes and xattrs (a self-copy with REPLACE, as s3fs)."""
        metadata = encode_metadata(node.stored, node.xattrs, keep=node.metadata)
        if metadata_size(metadata) > MAX_METADATA_BYTES:
            raise FsError(errno.E2BIG, "metadata larger than S3 allows")
        if node.is_dir:
            # These attributes include the latest times; and a pending update
            # must not overwrite an mtime set on purpose (tar sets it last).
            self._dir_times.discard(path)
            key = self._dir_marker(path)
            if node.key != key:
                # Implicit or old-style directory: s3fs replaces it with a "dir/" marker.
                etag = self.store.put(key, b"", metadata=metadata, content_type=DIR_CONTENT_TYPE)
                if node.key is not None:
                    self.store.delete(node.key)
                self.cache.put(path, dataclasses.replace(node, key=key, etag=etag,
                                                         metadata=metadata))
                return
        if node.key is None:
            raise FsError(errno.ENOENT)
        etag = self.transfer.copy(Original(node.key, node.etag, node.stored.size), node.key,
                                  metadata=metadata,
                                  content_type=node.content_type or DIR_CONTENT_TYPE)
        self.cache.put(path, dataclasses.replace(node, etag=etag, metadata=metadata))
        if etag != node.etag:  # a multipart object's copy has another ETag
            self._version_changed(self.inodes.find(path), node.key, etag)

    def _dir_marker(self, path: str) -> str:
        return self._key(path) + "/" if path else self._root_key()

    def setxattr(self, ino: int, name: str, value: bytes) -> None:
        if name in POSIX_ACL_XATTRS:
            # Stored as a plain xattr, an ACL would not change the mode, and cp -a,
            # which sets modes through the ACL, would leave 0600 everywhere. Refused,
            # tools fall back to chmod.
            raise FsError(errno.EOPNOTSUPP)
        self._change_xattrs(ino, lambda xattrs: xattrs.__setitem__(name, value))

    def removexattr(self, ino: int, name: str) -> None:
        def remove(xattrs: dict[str, bytes]) -> None:
            if xattrs.pop(name, None) is None:
                raise FsError(errno.ENODATA)

        self._change_xattrs(ino, remove)

    def _change_xattrs(self, ino: int, change: Callable[[dict[str, bytes]], None]) -> None:
        with self._files_lock:
            file = self._files.get(ino)
        if file is not None:
            with file.lock:
                xattrs = dict(file.xattrs)
                change(xattrs)
                self._check_xattrs(file.attr, xattrs, file.keep)
                file.xattrs = xattrs
                file.attr = dataclasses.replace(file.attr, ctime_ns=self._clock())
                file.meta_dirty = True
                file.changed()
            self._persist_if_closed(file)
            return
        path = self._path(ino)
        node = self._resolve(path)
        xattrs = dict(node.xattrs)
        change(xattrs)
        self._check_xattrs(node.stored, xattrs, node.metadata)
        stored = dataclasses.replace(node.stored, ctime_ns=self._clock())
        self._store_metadata(path, dataclasses.replace(node, stored=stored, xattrs=xattrs))

    @staticmethod
    def _check_xattrs(attr: Attr, xattrs: dict[str, bytes], keep: Mapping[str, str]) -> None:
        try:
            metadata = encode_metadata(attr, xattrs, keep=keep)
        except ValueError:
            raise FsError(errno.EINVAL, "xattr name cannot be stored in s3fs's format") from None
        if metadata_size(metadata) > MAX_METADATA_BYTES:
            raise FsError(errno.E2BIG, "extended attributes larger than S3 metadata allows")

    # Handles

    def _add_handle(self, handle: Any) -> int:
        with self._handles_lock:
            fh = next(self._handle_numbers)
            self._handles[fh] = handle
            return fh

    def _readable(self, ino: int) -> bool:
        """Some descriptor of the inode was opened for reading."""
        with self._handles_lock:
            return any(isinstance(handle, FileHandle) and handle.ino == ino and handle.readable
                       for handle in self._handles.values())

    def _handle(self, fh: int) -> Any:
        with self._handles_lock:
            try:
                return self._handles[fh]
            except KeyError:
                raise FsError(errno.EBADF) from None
