"""rewinddir(3) on an open directory: POSIX makes the stream then see the
directory as a new opendir would, so changes made since it was opened show
(s3fs lists anew at every read from the start)."""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

_libc = ctypes.CDLL(None, use_errno=True)


class _Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc.opendir.restype = ctypes.c_void_p
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.rewinddir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]


@contextmanager
def opened_dir(path) -> Iterator[int]:
    stream = _libc.opendir(os.fsencode(path))
    assert stream, os.strerror(ctypes.get_errno())
    try:
        yield stream
    finally:
        _libc.closedir(stream)


def names(stream: int) -> list[str]:
    """Every name from the stream's position to its end, without . and .."""
    found = []
    while entry := _libc.readdir(stream):
        found.append(entry.contents.d_name.decode())
    return sorted(set(found) - {".", ".."})


def test_rewinddir_shows_what_this_mount_changed_since_opendir(s3, bucket, mount):
    for name in ("a", "b"):
        s3.put_object(Bucket=bucket, Key=f"d/{name}", Body=b"x")
    m = mount(bucket)
    with opened_dir(m.path / "d") as stream:
        assert names(stream) == ["a", "b"]
        (m.path / "d" / "c").write_bytes(b"new")
        (m.path / "d" / "a").unlink()
        assert names(stream) == []  # at its end, the stream stays there
        _libc.rewinddir(stream)
        assert names(stream) == ["b", "c"]


def test_rewinddir_after_the_ttl_lists_the_directory_again(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="d/a", Body=b"x")
    m = mount(bucket, "stat_cache_expire=1")
    with opened_dir(m.path / "d") as stream:
        assert names(stream) == ["a"]
        s3.put_object(Bucket=bucket, Key="d/other-client", Body=b"y")
        time.sleep(1.5)  # the listing taken at opendir is now older than the TTL
        _libc.rewinddir(stream)
        assert names(stream) == ["a", "other-client"]
