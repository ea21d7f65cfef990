"""Garbage metadata from other tools, and what a bucket must not be able to do to the
machine that mounts it: sane defaults with one warning each, never an exception; no
set-user-ID program and no device file unless the suid/dev options ask for them."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess

import pytest
from helpers import wait_until

REG, LNK, CHR = stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR
# key: (metadata, the warning it earns)
GARBAGE = {
    "mode-abc": ({"mode": "abc"}, "ignoring x-amz-meta-mode='abc' (not a mode); using 0o640"),
    "mode-huge": ({"mode": "99999999999"}, "ignoring x-amz-meta-mode='99999999999'"),
    "uid-negative": ({"uid": "-1"}, "ignoring x-amz-meta-uid='-1'"),
    "gid-negative": ({"gid": "-5"}, "ignoring x-amz-meta-gid='-5'"),
    "mtime-1e99": ({"mtime": "1e99"}, "ignoring x-amz-meta-mtime='1e99' (not a time)"),
    "xattr-huge": ({"xattr": "{" + ",".join(["junk"] * 1500) + "}"},
                   "skipping 1500 malformed pairs, the first: malformed pair 'junk'"),
    "xattr-nonsense": ({"xattr": "%%%{"}, "is not a {...} object"),
}


def test_garbage_metadata_gives_defaults_and_one_warning_each(s3, bucket, mount, proxy):
    for key, (metadata, _) in GARBAGE.items():
        s3.put_object(Bucket=bucket, Key=key, Body=b"data", Metadata=metadata)
    m = mount(bucket, "stat_cache_expire=0.2", url=proxy.url)
    modified = {key: s3.head_object(Bucket=bucket, Key=key)["LastModified"].timestamp()
                for key in GARBAGE}

    def check_all() -> None:
        for key in GARBAGE:
            st = os.lstat(m.path / key)
            assert st.st_mode == REG | 0o640, key
            assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid()), key
            assert st.st_mtime == modified[key], key
            assert os.listxattr(m.path / key) == [], key
            assert (m.path / key).read_bytes() == b"data"

    check_all()
    # Once the cached attributes expired, the same objects are decoded again:
    # still one warning each.
    heads = proxy.counts()["HeadObject"]

    def decoded_again() -> bool:
        check_all()
        return proxy.counts()["HeadObject"] >= heads + 2 * len(GARBAGE)
    wait_until(decoded_again, 30, "the cached attributes to expire")
    assert m.process.poll() is None
    log = m.log()
    for key, (_, warning) in GARBAGE.items():
        lines = [line for line in log.splitlines() if repr(key) in line]
        assert len(lines) == 1 and warning in lines[0], (key, lines)


def test_megabyte_symlink_body_is_refused_with_one_warning(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="huge-link", Body=b"x" * (2 * 1024 * 1024),
                  Metadata={"mode": str(LNK | 0o777)})
    s3.put_object(Bucket=bucket, Key="link", Body=b"target", Metadata={"mode": str(LNK | 0o777)})
    m = mount(bucket)
    assert stat.S_ISLNK(os.lstat(m.path / "huge-link").st_mode)
    for _ in range(3):
        with pytest.raises(OSError) as refused:
            os.readlink(m.path / "huge-link")
        assert refused.value.errno == errno.ENAMETOOLONG
    assert os.readlink(m.path / "link") == "target"
    assert m.log().count("'huge-link': symlink target of 2097152 bytes is too long") == 1
    assert m.process.poll() is None


def mount_flags(path) -> set[str]:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(path):
                return set(fields[3].split(","))
    raise AssertionError(f"{path} is not in /proc/self/mounts")


def put_setuid_id(s3, bucket: str) -> None:
    """A copy of id(1), set-user-ID to nobody, as another tool might have stored it."""
    with open(shutil.which("id"), "rb") as f:
        s3.put_object(Bucket=bucket, Key="id", Body=f.read(),
                      Metadata={"mode": str(REG | stat.S_ISUID | 0o755), "uid": "65534",
                                "gid": "65534"})


@pytest.mark.skipif(os.geteuid() != 0, reason="a set-user-ID program changes nothing for "
                    "a user who is not root (only root may mount with suid)")
@pytest.mark.parametrize("honoured", [False, True], ids=["default", "suid"])
def test_setuid_bits_from_the_bucket_need_the_suid_option(s3, bucket, mount, honoured):
    put_setuid_id(s3, bucket)
    m = mount(bucket, *(["suid"] if honoured else []))
    assert ("nosuid" in mount_flags(m.path)) is not honoured
    st = os.stat(m.path / "id")
    assert st.st_mode & stat.S_ISUID and st.st_uid == 65534  # shown as stored
    result = subprocess.run([str(m.path / "id"), "-u"], capture_output=True, text=True,
                            check=True, timeout=30)
    assert result.stdout.strip() == ("65534" if honoured else str(os.geteuid()))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may mount with dev")
@pytest.mark.parametrize("honoured", [False, True], ids=["default", "dev"])
def test_device_files_from_the_bucket_need_the_dev_option(s3, bucket, mount, honoured):
    # /dev/zero is character device 1,5.
    s3.put_object(Bucket=bucket, Key="zero", Body=b"",
                  Metadata={"mode": str(CHR | 0o666), "rdev": str(os.makedev(1, 5))})
    m = mount(bucket, *(["dev"] if honoured else []))
    assert ("nodev" in mount_flags(m.path)) is not honoured
    st = os.stat(m.path / "zero")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 5)
    if honoured:
        with open(m.path / "zero", "rb") as f:
            assert f.read(4) == b"\0\0\0\0"
    else:
        with pytest.raises(PermissionError):
            open(m.path / "zero", "rb")  # noqa: SIM115 - must fail
