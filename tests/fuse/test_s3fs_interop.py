"""s3fs-fuse and s3mount on one bucket: what one writes, the other reads back
identically (s3fs-format §2).

The s3fs is Debian 12's (1.90), run in the foreground in a subprocess with an
explicit environment, like the s3mount daemons of the ``mount`` fixture. Both
sides run with ``stat_cache_expire=1``; where a test needs a fresh view it
unmounts and mounts again instead of sleeping, and where it waits for a change
made through the other mount it polls with a deadline.

Known s3fs 1.90 differences, asserted as s3fs's actual behaviour:

* A directory's ``st_size`` is 0 in s3fs 1.90 (4096 from s3fs 1.94 on, and in
  s3mount).
* s3fs 1.90's mkdir stores ``x-amz-meta-mode`` without the S_IFDIR bit (``493``);
  s3mount stores the whole st_mode (``16877``). Each reads the other's form.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import random
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import READY_TIMEOUT, Mount, wait_until

# Eventual visibility through the other mount: both caches expire after 1 s.
VISIBLE_TIMEOUT = 20.0

UID, GID = 1234, 5678


def epoch_ns(text: str) -> int:
    """'2001-02-03 04:05:06.123456789' (UTC) as nanoseconds since the epoch."""
    whole, _, fraction = text.partition(".")
    moment = datetime.strptime(whole, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return int(moment.timestamp()) * 10**9 + int((fraction or "0").ljust(9, "0"))


# touch -d times: one with nanoseconds, one whole second, one half second.
T_NS = "2001-02-03 04:05:06.123456789"
T_SEC = "2010-05-06 07:08:09"
T_HALF = "1999-12-31 23:59:59.5"


# --- s3fs ------------------------------------------------------------------------


@pytest.fixture
def s3fs_mount(tmp_path: Path, s3_server, passwd_file: Path,
               daemon_env: dict[str, str]) -> Iterator[Callable[..., Mount]]:
    """Start ``s3fs BUCKET MOUNTPOINT -f`` and wait until it is mounted.

    At teardown every s3fs is unmounted and must exit 0.
    """
    program = shutil.which("s3fs")
    if program is None:
        pytest.fail("s3fs is not installed: 'make test' installs it (Debian package s3fs)")
    # s3fs refuses a passwd file with any group or other permission bits.
    assert stat.S_IMODE(passwd_file.stat().st_mode) == 0o600
    mounts: list[Mount] = []

    def start(bucket: str, *options: str) -> Mount:
        path = tmp_path / f"s3fs{len(mounts)}"
        path.mkdir()
        # s3fs 1.90 wants -o nonempty only for a mount point that is not empty.
        base = [f"url={s3_server.url}", "use_path_request_style", f"passwd_file={passwd_file}",
                "use_xattr", "dbglevel=warn", "stat_cache_expire=1"]
        log_path = tmp_path / f"s3fs{len(mounts)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [program, bucket, str(path), "-f", "-o", ",".join([*base, *options])],
                env=daemon_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        result = Mount(path, process, log_path)

        def mounted() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"s3fs exited with {process.returncode}: {result.log()}")
            return os.path.ismount(path)

        mounts.append(result)
        wait_until(mounted, READY_TIMEOUT, f"the s3fs mount at {path}")
        return result

    yield start
    failures = []
    for m in mounts:
        status = m.stop() if m.process.poll() is None else m.process.returncode
        if status != 0:
            failures.append(f"{m.path}: s3fs exited with {status}:\n{m.log()}")
    assert not failures, "\n".join(failures)


# --- Trees and their snapshots ----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int
    body: bytes | None = None  # file content, or the symlink's target
    xattrs: tuple[tuple[str, bytes], ...] = ()


KINDS = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "link",
         stat.S_IFIFO: "fifo"}


def entry(path: Path) -> Entry:
    st = os.lstat(path)
    kind = KINDS[stat.S_IFMT(st.st_mode)]
    body = None
    if kind == "file":
        body = path.read_bytes()
    elif kind == "link":
        body = os.fsencode(os.readlink(path))
    xattrs: tuple[tuple[str, bytes], ...] = ()
    if kind in ("file", "dir"):
        xattrs = tuple(sorted((name, os.getxattr(path, name))
                              for name in os.listxattr(path)))
    return Entry(kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_size,
                 st.st_mtime_ns, st.st_atime_ns, body, xattrs)


def snapshot(root: Path) -> dict[str, Entry]:
    """Every entry below root (not root itself), by relative path."""
    result: dict[str, Entry] = {}

    def walk(directory: Path) -> None:
        for name in sorted(os.listdir(directory)):
            path = directory / name
            result[str(path.relative_to(root))] = found = entry(path)
            if found.kind == "dir":
                walk(path)

    walk(root)
    return result


def sh(*argv: str, cwd: Path) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"{argv}: {result.stderr}"


@dataclasses.dataclass
class Expected:
    """What build_tree made: the fields a snapshot entry must have (None: not checked)."""

    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    mtime_ns: int | None = None
    body: bytes | None = None
    xattrs: dict[str, bytes] = dataclasses.field(default_factory=dict)


def build_tree(root: Path) -> dict[str, Expected]:
    """Make the test tree through a mount, with shell tools; return what it must hold."""
    umask = os.umask(0o022)
    os.umask(umask)
    rng = random.Random(1234)
    data = rng.randbytes(200 * 1024)
    big = rng.randbytes(3 * 1024 * 1024 + 17)
    sh("mkdir", "-p", "tree/sub/deeper", "tree/mode600", cwd=root)
    (root / "tree/hello.txt").write_bytes(b"hello\n")
    (root / "tree/sub/data.bin").write_bytes(data)
    (root / "tree/sub/deeper/empty.sh").write_bytes(b"")
    (root / "tree/big.bin").write_bytes(big)
    sh("ln", "-s", "sub/data.bin", "tree/link", cwd=root)
    sh("mkfifo", "tree/fifo", cwd=root)
    sh("chmod", "0640", "tree/hello.txt", cwd=root)
    sh("chmod", "0600", "tree/sub/data.bin", "tree/fifo", "tree/mode600", cwd=root)
    sh("chmod", "0755", "tree/sub/deeper/empty.sh", cwd=root)
    sh("chmod", "0750", "tree/sub", cwd=root)
    sh("chown", f"{UID}:{GID}", "tree/hello.txt", "tree/sub", "tree/fifo", cwd=root)
    sh("chown", "-h", f"{UID}:{GID}", "tree/link", cwd=root)
    sh("setfattr", "-n", "user.k1", "-v", "v1", "tree/hello.txt", cwd=root)
    sh("setfattr", "-n", "user.bin", "-v", "0x00ff10", "tree/hello.txt", cwd=root)
    sh("setfattr", "-n", "user.dir", "-v", "0x0a0b", "tree/sub", cwd=root)
    # Times last: nothing after them may touch the entries.
    sh("touch", "-d", f"{T_NS} UTC", "tree/hello.txt", "tree/fifo", cwd=root)
    sh("touch", "-d", f"{T_SEC} UTC", "tree/sub/data.bin", cwd=root)
    sh("touch", "-h", "-d", f"{T_SEC} UTC", "tree/link", cwd=root)
    sh("touch", "-d", f"{T_HALF} UTC", "tree/sub", cwd=root)
    dir_mode = 0o777 & ~umask
    return {
        "tree": Expected("dir", dir_mode),
        "tree/big.bin": Expected("file", 0o666 & ~umask, body=big),
        "tree/fifo": Expected("fifo", 0o600, UID, GID, epoch_ns(T_NS)),
        "tree/hello.txt": Expected("file", 0o640, UID, GID, epoch_ns(T_NS), b"hello\n",
                                   {"user.k1": b"v1", "user.bin": b"\x00\xff\x10"}),
        "tree/link": Expected("link", 0o777, UID, GID, epoch_ns(T_SEC), b"sub/data.bin"),
        "tree/mode600": Expected("dir", 0o600),
        "tree/sub": Expected("dir", 0o750, UID, GID, epoch_ns(T_HALF),
                             xattrs={"user.dir": b"\n\x0b"}),
        "tree/sub/data.bin": Expected("file", 0o600, mtime_ns=epoch_ns(T_SEC), body=data),
        "tree/sub/deeper": Expected("dir", dir_mode),
        "tree/sub/deeper/empty.sh": Expected("file", 0o755, body=b""),
    }


def check_tree(seen: dict[str, Entry], expected: dict[str, Expected], who: str,
               dir_size: int) -> None:
    assert sorted(seen) == sorted(expected), who
    for name, want in expected.items():
        got = seen[name]
        where = f"{who}: {name}"
        assert (got.kind, got.mode, got.uid, got.gid) == (
            want.kind, want.mode, want.uid, want.gid), where
        if want.mtime_ns is not None:
            # touch -d sets both times.
            assert (got.mtime_ns, got.atime_ns) == (want.mtime_ns, want.mtime_ns), where
        if want.kind == "dir":
            assert got.size == dir_size, where
        else:
            assert got.body == want.body, where
            assert got.size == len(want.body or b""), where
        assert dict(got.xattrs) == want.xattrs, where


def same_view(through_s3mount: dict[str, Entry], through_s3fs: dict[str, Entry]) -> None:
    """Both mounts show every field identically, but a directory's size (see above)."""
    assert sorted(through_s3mount) == sorted(through_s3fs)
    for name, mine in through_s3mount.items():
        theirs = through_s3fs[name]
        if mine.kind == "dir":
            mine = dataclasses.replace(mine, size=0)
        assert mine == theirs, name


# --- Tests ------------------------------------------------------------------------


def test_tree_made_by_s3fs_reads_back_through_s3mount(s3, bucket, mount, s3fs_mount):
    writer = s3fs_mount(bucket)
    expected = build_tree(writer.path)
    assert writer.stop() == 0
    # What s3fs 1.90 stored, for the record: mkdir writes a mode without S_IFDIR.
    assert s3.head_object(Bucket=bucket, Key="tree/sub/deeper/")["Metadata"]["mode"] == "493"

    m = mount(bucket, "stat_cache_expire=1")
    reader = s3fs_mount(bucket)
    through_s3mount, through_s3fs = snapshot(m.path), snapshot(reader.path)
    check_tree(through_s3fs, expected, "s3fs", dir_size=0)
    check_tree(through_s3mount, expected, "s3mount", dir_size=4096)
    same_view(through_s3mount, through_s3fs)


def test_tree_made_by_s3mount_reads_back_through_s3fs(s3, bucket, mount, s3fs_mount):
    writer = mount(bucket, "stat_cache_expire=1")
    expected = build_tree(writer.path)
    check_tree(snapshot(writer.path), expected, "s3mount (writer)", dir_size=4096)
    assert writer.stop() == 0

    reader = s3fs_mount(bucket)
    m = mount(bucket, "stat_cache_expire=1")
    through_s3fs, through_s3mount = snapshot(reader.path), snapshot(m.path)
    check_tree(through_s3fs, expected, "s3fs", dir_size=0)
    check_tree(through_s3mount, expected, "s3mount", dir_size=4096)
    same_view(through_s3mount, through_s3fs)


def bucket_objects(s3, bucket: str) -> dict[str, dict]:
    """Every object of a bucket: its body, Content-Type and user metadata."""
    objects = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=item["Key"])
            objects[item["Key"]] = {"body": got["Body"].read(), "type": got["ContentType"],
                                    "meta": got["Metadata"]}
    return objects


def test_both_write_the_same_objects(s3, bucket, mount, s3fs_mount):
    """The same operations through s3fs and through s3mount leave the same objects:
    keys, bodies, Content-Types and x-amz-meta-* headers (s3fs-format §2.1)."""
    s3fs_bucket = f"{bucket}-s3fs"
    s3.create_bucket(Bucket=s3fs_bucket)
    theirs = s3fs_mount(s3fs_bucket)
    build_tree(theirs.path)
    assert theirs.stop() == 0
    mine = mount(bucket)
    build_tree(mine.path)
    assert mine.stop() == 0

    written_by_s3fs, written_by_s3mount = (bucket_objects(s3, s3fs_bucket),
                                           bucket_objects(s3, bucket))
    assert sorted(written_by_s3mount) == sorted(written_by_s3fs)
    explicit_times = {"tree/hello.txt", "tree/fifo", "tree/sub/data.bin", "tree/link",
                      "tree/sub"}
    for key, theirs_obj in written_by_s3fs.items():
        mine_obj = written_by_s3mount[key]
        assert mine_obj["body"] == theirs_obj["body"], key
        assert mine_obj["type"] == theirs_obj["type"], key
        assert sorted(mine_obj["meta"]) == sorted(theirs_obj["meta"]), key
        for header in ("uid", "gid", "xattr"):
            assert mine_obj["meta"].get(header) == theirs_obj["meta"].get(header), (key, header)
        if key.rstrip("/") in explicit_times:
            for header in ("mtime", "atime"):
                assert mine_obj["meta"][header] == theirs_obj["meta"][header], (key, header)
        if key.endswith("/") and stat.S_IFMT(int(theirs_obj["meta"]["mode"])) == 0:
            # s3fs 1.90's mkdir stores the permission bits without S_IFDIR (fixed in
            # later versions); s3mount stores the whole st_mode, which s3fs reads too.
            assert int(mine_obj["meta"]["mode"]) == stat.S_IFDIR | int(
                theirs_obj["meta"]["mode"]), key
        else:
            assert mine_obj["meta"]["mode"] == theirs_obj["meta"]["mode"], key
    assert written_by_s3fs["tree/sub/"]["meta"]["mtime"] == "946684799.500000000"
    assert written_by_s3fs["tree/sub/data.bin"]["meta"]["mtime"] == "1273129689"


def test_multipart_files_both_ways(bucket, mount, s3fs_mount):
    """Files above both programs' multipart threshold (25 MB), written by one and
    read by the other."""
    data = random.Random(99).randbytes(26 * 1024 * 1024 + 5)
    theirs = s3fs_mount(bucket).path
    mine = mount(bucket, "stat_cache_expire=1").path
    (theirs / "from-s3fs.bin").write_bytes(data)
    (mine / "from-s3mount.bin").write_bytes(data[::-1])
    eventually(lambda: os.stat(mine / "from-s3fs.bin").st_size == len(data),
               "s3fs's multipart file through s3mount")
    eventually(lambda: os.stat(theirs / "from-s3mount.bin").st_size == len(data),
               "s3mount's multipart file through s3fs")
    assert hashlib.sha256((mine / "from-s3fs.bin").read_bytes()).digest() == hashlib.sha256(
        data).digest()
    assert hashlib.sha256((theirs / "from-s3mount.bin").read_bytes()).digest() == hashlib.sha256(
        data[::-1]).digest()


def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll until the other mount shows a change (its caches expire after 1 s)."""

    def holds() -> bool:
        try:
            return condition()
        except FileNotFoundError:
            return False

    wait_until(holds, VISIBLE_TIMEOUT, what)


def test_changes_through_one_mount_are_seen_through_the_other(bucket, mount, s3fs_mount):
    theirs = s3fs_mount(bucket).path
    mine = mount(bucket, "stat_cache_expire=1").path

    # Created through s3fs.
    (theirs / "shared.txt").write_bytes(b"one\n")
    eventually(lambda: (mine / "shared.txt").read_bytes() == b"one\n",
               "s3fs's new file through s3mount")
    # Overwritten through s3fs with a different size, then with the same size.
    (theirs / "shared.txt").write_bytes(b"two, longer\n")
    eventually(lambda: (mine / "shared.txt").read_bytes() == b"two, longer\n",
               "s3fs's longer content through s3mount")
    assert os.stat(mine / "shared.txt").st_size == len(b"two, longer\n")
    (theirs / "shared.txt").write_bytes(b"TWO, LONGER\n")
    eventually(lambda: (mine / "shared.txt").read_bytes() == b"TWO, LONGER\n",
               "s3fs's same-size overwrite through s3mount")

    # Appended to through s3mount.
    with open(mine / "shared.txt", "ab") as f:
        f.write(b"three\n")
    eventually(lambda: (theirs / "shared.txt").read_bytes() == b"TWO, LONGER\nthree\n",
               "s3mount's append through s3fs")
    # Rewritten in place through s3mount, same size.
    with open(mine / "shared.txt", "r+b") as f:
        f.write(b"two")
    eventually(lambda: (theirs / "shared.txt").read_bytes() == b"two, LONGER\nthree\n",
               "s3mount's in-place write through s3fs")

    # Attributes, both ways.
    os.chmod(mine / "shared.txt", 0o604)
    os.utime(mine / "shared.txt", ns=(1_500_000_000_123_456_789,) * 2)
    eventually(lambda: (stat.S_IMODE(os.stat(theirs / "shared.txt").st_mode) == 0o604
                        and os.stat(theirs / "shared.txt").st_mtime_ns
                        == 1_500_000_000_123_456_789),
               "s3mount's chmod and utime through s3fs")
    os.chown(theirs / "shared.txt", UID, GID)
    os.setxattr(theirs / "shared.txt", "user.from", b"s3fs")
    eventually(lambda: (os.stat(mine / "shared.txt").st_uid == UID
                        and os.getxattr(mine / "shared.txt", "user.from") == b"s3fs"),
               "s3fs's chown and setxattr through s3mount")
    assert stat.S_IMODE(os.stat(mine / "shared.txt").st_mode) == 0o604
    assert (mine / "shared.txt").read_bytes() == b"two, LONGER\nthree\n"

    # Namespace changes, both ways.
    os.mkdir(mine / "made-by-s3mount")
    (mine / "made-by-s3mount/inner").write_bytes(b"inner")
    eventually(lambda: (theirs / "made-by-s3mount/inner").read_bytes() == b"inner",
               "s3mount's new directory through s3fs")
    os.rename(theirs / "shared.txt", theirs / "made-by-s3mount/moved.txt")
    eventually(lambda: (not os.path.lexists(mine / "shared.txt")
                        and (mine / "made-by-s3mount/moved.txt").read_bytes()
                        == b"two, LONGER\nthree\n"),
               "s3fs's rename through s3mount")
    assert os.getxattr(mine / "made-by-s3mount/moved.txt", "user.from") == b"s3fs"
    os.unlink(mine / "made-by-s3mount/inner")
    eventually(lambda: sorted(os.listdir(theirs / "made-by-s3mount")) == ["moved.txt"],
               "s3mount's unlink through s3fs")
    os.unlink(theirs / "made-by-s3mount/moved.txt")
    os.rmdir(theirs / "made-by-s3mount")
    eventually(lambda: os.listdir(mine) == [] and not os.path.lexists(mine / "made-by-s3mount"),
               "s3fs's rmdir through s3mount")
    with pytest.raises(OSError) as gone:
        os.stat(mine / "made-by-s3mount")
    assert gone.value.errno == errno.ENOENT


def test_fresh_open_after_an_overwrite_by_s3fs_is_not_stale(bucket, mount, s3fs_mount):
    """A descriptor opened after s3fs finished overwriting a file reads either the
    cached old content or the new content; ESTALE is for an object overwritten while
    a descriptor is open, not before (README: "A read, end to end")."""
    theirs = s3fs_mount(bucket).path
    (theirs / "f.txt").write_bytes(b"AAAA")
    mine = mount(bucket).path  # the default stat_cache_expire (60 s)
    assert os.stat(mine / "f.txt").st_size == 4  # s3mount caches the node and its ETag
    (theirs / "f.txt").write_bytes(b"BBBB")  # s3fs has uploaded when close returns
    try:
        seen = (mine / "f.txt").read_bytes()
    except OSError as error:
        seen = os.strerror(error.errno).encode()
    assert seen in (b"AAAA", b"BBBB")
