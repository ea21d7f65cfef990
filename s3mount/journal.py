"""The write journal: dirty file data that survives a killed daemon.

Every mount owns a *session* directory below ``<cache>/journal/``, locked with
flock(2) for the life of the process, so the kernel releases the lock when the
process dies in any way (SIGKILL, OOM, power loss). An open file's content
lives there as ``<name>.data``; while the file has changes that are not in the
bucket yet, ``<name>.json`` describes them (the key, the object it replaces,
attributes, the running multipart upload). Records are written to a temporary
name, fsynced and renamed, so a record is either the old or the new one, never
half of each. A record is removed once its upload is committed.

A file that has no record yet can still run a multipart upload: a streaming
upload (streaming.py) starts while the file is written, before its first
flush. ``<name>.upload`` then names that upload (key and id) and nothing
else: a mount started after a crash aborts it, and uploads nothing, as no
flush asked for the data to be kept.

A mount that starts finds the session directories of dead mounts (their lock
can be taken) and hands their records to recovery (see fs.Filesystem.recover).
Without a persistent cache directory (no ``use_cache``) the journal is off:
nothing could be found after a crash anyway.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import itertools
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import Any

from .meta import Attr
from .transfer import Original

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
UPLOAD_SUFFIX = ".upload"
LOCK_NAME = "lock"
VERSION = 2
# Version 1 records have no partly written blocks; they read the same way.
READABLE_VERSIONS = (1, 2)


@dataclasses.dataclass
class Record:
    """What must be uploaded for one dirty file."""

    key: str
    attr: Attr
    original: Original | None  # the object this content replaces (None: a new object)
    original_limit: int  # bytes below this offset not in the data file come from original
    loaded: list[tuple[int, int]]  # block ranges [first, last) held by the data file
    xattrs: dict[str, bytes]
    keep: dict[str, str]  # metadata of other tools, kept on upload
    content_type: str
    # A multipart upload running for this record; "" while one is being started.
    upload_id: str | None = None
    upload_key: str | None = None  # the key that upload writes
    # Blocks written only in part, whose other bytes are still in the original
    # object: block → written byte ranges [start, end) (offsets in the file).
    # Such a block holds data in the data file but is not complete.
    partial: dict[int, list[tuple[int, int]]] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "key": self.key,
            "attr": dataclasses.asdict(self.attr),
            "original": dataclasses.asdict(self.original) if self.original else None,
            "original_limit": self.original_limit,
            "loaded": [list(r) for r in self.loaded],
            "xattrs": {name: base64.b64encode(value).decode("ascii")
                       for name, value in self.xattrs.items()},
            "keep": self.keep,
            "content_type": self.content_type,
            "upload_id": self.upload_id,
            "upload_key": self.upload_key,
            "partial": {str(block): [list(r) for r in ranges]
                        for block, ranges in self.partial.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        if data.get("version") not in READABLE_VERSIONS:
            raise ValueError(f"unknown journal version {data.get('version')!r}")
        original = data["original"]
        return cls(
            key=data["key"],
            attr=Attr(**data["attr"]),
            original=Original(**original) if original else None,
            original_limit=int(data["original_limit"]),
            loaded=[(int(a), int(b)) for a, b in data["loaded"]],
            xattrs={name: base64.b64decode(value) for name, value in data["xattrs"].items()},
            keep=dict(data["keep"]),
            content_type=data["content_type"],
            upload_id=data.get("upload_id"),
            upload_key=data.get("upload_key"),
            partial={int(block): [(int(a), int(b)) for a, b in ranges]
                     for block, ranges in data.get("partial", {}).items()},
        )


def block_ranges(blocks: set[int]) -> list[tuple[int, int]]:
    """{0, 1, 2, 5} → [(0, 3), (5, 6)]."""
    ranges: list[tuple[int, int]] = []
    for block in sorted(blocks):
        if ranges and ranges[-1][1] == block:
            ranges[-1] = (ranges[-1][0], block + 1)
        else:
            ranges.append((block, block + 1))
    return ranges


def block_set(ranges: list[tuple[int, int]]) -> set[int]:
    return {block for first, last in ranges for block in range(first, last)}


def data_blocks(fd: int, block: int) -> set[int]:
    """Blocks of a sparse file that hold data (SEEK_DATA/SEEK_HOLE): those written
    after the record was made show up here even when the record does not list them."""
    size = os.fstat(fd).st_size
    found: set[int] = set()
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:
            break  # ENXIO: no data after offset
        end = os.lseek(fd, start, os.SEEK_HOLE)
        found.update(range(start // block, (end + block - 1) // block))
        offset = end
    return found


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The session directory of this mount: data files and, when ``durable``, records."""

    def __init__(self, cache_dir: str, *, durable: bool) -> None:
        self.durable = durable
        self.root = os.path.join(cache_dir, JOURNAL_DIR)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.directory = os.path.join(self.root, uuid.uuid4().hex)
        os.mkdir(self.directory, 0o700)
        self._lock_fd = os.open(os.path.join(self.directory, LOCK_NAME),
                                os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._names = itertools.count(1)

    def close(self, *, keep_records: bool) -> None:
        """Remove the session directory unless records must survive for the next mount."""
        if not keep_records:
            for name in os.listdir(self.directory):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)
        os.close(self._lock_fd)

    def new_data_file(self) -> tuple[str, int]:
        """(name, descriptor) of a new, empty data file."""
        name = str(next(self._names))
        fd = os.open(self.data_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        return name, fd

    def adopt(self, source_data: str) -> tuple[str, int]:
        """Move a data file of a dead session into this one."""
        name = str(next(self._names))
        target = self.data_path(name)
        os.rename(source_data, target)
        return name, os.open(target, os.O_RDWR)

    def remove_data(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.data_path(name))

    def data_path(self, name: str) -> str:
        return self._path(name, ".data")

    def has_record(self, name: str) -> bool:
        return os.path.exists(self._path(name, ".json"))

    def write(self, name: str, record: Record, data_fd: int) -> None:
        """Make the data file and the record durable (data first: a record never
        describes data that a power loss could take back)."""
        if not self.durable:
            return
        os.fsync(data_fd)
        self._write_json(self._path(name, ".json"), record.to_json())

    def write_upload(self, name: str, key: str, upload_id: str) -> None:
        """The multipart upload of a file without a record, for a later mount to
        abort (see the module's doc)."""
        if self.durable:
            self._write_json(self._path(name, UPLOAD_SUFFIX), {"key": key, "upload_id": upload_id})

    def remove_upload(self, name: str) -> None:
        if self.durable:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path(name, UPLOAD_SUFFIX))

    def _write_json(self, path: str, value: dict[str, Any]) -> None:
        temporary = path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(value, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temporary, path)
        _fsync_dir(self.directory)

    def remove(self, name: str) -> None:
        if not self.durable:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name, ".json"))

    def _path(self, name: str, suffix: str) -> str:
        return os.path.join(self.directory, name + suffix)

    def abandoned(self) -> Iterator[Abandoned]:
        """Sessions of mounts that are gone, locked for this process while in use."""
        for entry in sorted(os.listdir(self.root)):
            directory = os.path.join(self.root, entry)
            if directory == self.directory or not os.path.isdir(directory):
                continue
            try:
                fd = os.open(os.path.join(directory, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                log.warning("cannot open the journal %s: %s", directory, exc.strerror)
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # a running mount owns it
                continue
            yield Abandoned(directory, fd)


@dataclasses.dataclass
class Abandoned:
    """The session directory of a dead mount."""

    directory: str
    lock_fd: int

    def records(self) -> Iterator[tuple[str, Record | None]]:
        """(data file path, record); a record that cannot be read is None (logged)."""
        for entry in sorted(os.listdir(self.directory)):
            if not entry.endswith(".json"):
                continue
            path = os.path.join(self.directory, entry)
            data_path = path[: -len(".json")] + ".data"
            try:
                with open(path, encoding="utf-8") as f:
                    record = Record.from_json(json.load(f))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("cannot read the journal record %s (%s); its data stays in %s",
                          path, exc, data_path)
                yield data_path, None
                continue
            yield data_path, record

    def uploads(self) -> Iterator[tuple[str, str, str]]:
        """(path, key, upload id) of the uploads of files that had no record."""
        for entry in sorted(os.listdir(self.directory)):
            if not entry.endswith(UPLOAD_SUFFIX):
                continue
            path = os.path.join(self.directory, entry)
            try:
                with open(path, encoding="utf-8") as f:
                    value = json.load(f)
                yield path, str(value["key"]), str(value["upload_id"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("cannot read the journal's upload note %s (%s)", path, exc)

    def forget_upload(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def forget(self, data_path: str) -> None:
        """The record of this data file is done (its data file was adopted or is useless)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(data_path[: -len(".data")] + ".json")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(data_path)

    def close(self) -> None:
        """Remove the directory if nothing is left in it but data without records."""
        left = False
        for entry in os.listdir(self.directory):
            path = os.path.join(self.directory, entry)
            if entry.endswith((".json", UPLOAD_SUFFIX)):
                left = True
            elif entry.endswith(".data") and not os.path.exists(path[:-5] + ".json"):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # an open file's cache that was never dirty
            elif entry.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if not left:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.directory, LOCK_NAME))
            with contextlib.suppress(OSError):
                os.rmdir(self.directory)
        os.close(self.lock_fd)
