"""The read path through a real mount: every on-bucket form of s3fs-format §2,
listings, ranged reads, odd keys, options that change what stat shows.

Objects are created directly with botocore, then read through the mount.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from s3mount.meta import encode_xattrs

DIR_TYPE = "application/x-directory"


def put(s3, bucket: str, key: str, body: bytes = b"", *, content_type: str | None = None,
        **metadata: str) -> None:
    params = {"Bucket": bucket, "Key": key, "Body": body, "Metadata": metadata}
    if content_type:
        params["ContentType"] = content_type
    s3.put_object(**params)


def last_modified_ns(s3, bucket: str, key: str) -> int:
    moment: datetime = s3.head_object(Bucket=bucket, Key=key)["LastModified"]
    return int(moment.timestamp()) * 1_000_000_000


def test_s3fs_written_objects(s3, bucket, mount):
    """The objects s3fs 1.90 wrote in the experiment of s3fs-format §2.1."""
    times = {"atime": "1795258094", "ctime": "1795258094", "mtime": "1795258094"}
    put(s3, bucket, "d1/", content_type=DIR_TYPE, gid="0", mode="493", uid="0", **times)
    put(s3, bucket, "d1/h.html", b"<p>hi", content_type="text/html", mode="33188", **times)
    put(s3, bucket, "d1/link", b"../f.txt", mode="41471", **times)
    put(s3, bucket, "f.txt", b"", content_type="text/plain", gid="5678", mode="33184",
        uid="1234", xattr="%7B%22user.bin%22%3A%22AP8Q%22%2C%22user.k1%22%3A%22djE%3D%22%7D")
    put(s3, bucket, "fifo1", mode="4516", **times)
    put(s3, bucket, "cdev", mode="8612", **times)
    put(s3, bucket, "noext", mode="33188", atime="1000000000.123456789",
        ctime="1000000000.123456789", mtime="1000000000.123456789")
    m = mount(bucket)

    d1 = os.stat(m.path / "d1")
    assert stat.S_ISDIR(d1.st_mode) and stat.S_IMODE(d1.st_mode) == 0o755
    assert d1.st_mtime_ns == 1795258094 * 10**9 and d1.st_size == 4096
    html = os.stat(m.path / "d1/h.html")
    assert stat.S_ISREG(html.st_mode) and stat.S_IMODE(html.st_mode) == 0o644
    assert html.st_size == 5
    link = os.lstat(m.path / "d1/link")
    assert stat.S_ISLNK(link.st_mode)
    assert os.readlink(m.path / "d1/link") == "../f.txt"
    f = os.stat(m.path / "f.txt")
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_gid) == (0o640, 1234, 5678)
    assert os.getxattr(m.path / "f.txt", "user.k1") == b"v1"
    assert os.getxattr(m.path / "f.txt", "user.bin") == b"\x00\xff\x10"
    assert sorted(os.listxattr(m.path / "f.txt")) == ["user.bin", "user.k1"]
    with pytest.raises(OSError) as missing:
        os.getxattr(m.path / "f.txt", "user.none")
    assert missing.value.errno == errno.ENODATA
    assert stat.S_ISFIFO(os.stat(m.path / "fifo1").st_mode)
    cdev = os.stat(m.path / "cdev")
    assert stat.S_ISCHR(cdev.st_mode) and cdev.st_rdev == 0
    noext = os.stat(m.path / "noext")
    assert noext.st_mtime_ns == noext.st_atime_ns == noext.st_ctime_ns == 1000000000123456789
    assert sorted(os.listdir(m.path)) == ["cdev", "d1", "f.txt", "fifo1", "noext"]
    assert sorted(os.listdir(m.path / "d1")) == ["h.html", "link"]
    # Through the symlink, relative to its directory.
    assert (m.path / "d1/link").read_bytes() == b""


def test_an_unset_acl_or_selinux_label_reads_as_unsupported(s3, bucket, mount):
    """ls -l asks every entry for its ACL and SELinux label. Unset, they answer
    EOPNOTSUPP, not ENODATA: coreutils then stops asking on this filesystem. A
    label that is stored (s3fs keeps any xattr) still reads back."""
    label = b"system_u:object_r:fusefs_t:s0"
    put(s3, bucket, "plain", b"x", mode="33188")
    put(s3, bucket, "labelled", b"x", mode="33188",
        xattr=encode_xattrs({"security.selinux": label}))
    put(s3, bucket, "d/", content_type=DIR_TYPE, mode="16877")
    m = mount(bucket)
    for path, name in [("plain", "security.selinux"), ("plain", "system.posix_acl_access"),
                       ("d", "system.posix_acl_default"), ("labelled", "system.posix_acl_access")]:
        with pytest.raises(OSError) as unset:
            os.getxattr(m.path / path, name, follow_symlinks=False)
        assert unset.value.errno == errno.EOPNOTSUPP, (path, name)
    assert os.getxattr(m.path / "labelled", "security.selinux") == label
    with pytest.raises(OSError) as other:
        os.getxattr(m.path / "plain", "security.ima")
    assert other.value.errno == errno.ENODATA  # only what ls asks for is "unsupported"


def test_objects_from_other_tools(s3, bucket, mount):
    """s3fs-format §2.5: objects without s3fs metadata get s3fs's defaults."""
    put(s3, bucket, "ext/plain.txt", b"plain")
    put(s3, bucket, "ext/olddir", content_type=DIR_TYPE)
    put(s3, bucket, "ext/olddir/inside", b"in")
    put(s3, bucket, "ext/slashdir/", content_type="binary/octet-stream")
    put(s3, bucket, "ext/fold_$folder$")
    put(s3, bucket, "ext/octal", b"o", mode="0755")
    put(s3, bucket, "ext/gcs", b"g", **{"goog-reserved-posix-mode": "750",
                                        "goog-reserved-posix-uid": "42",
                                        "goog-reserved-posix-gid": "43",
                                        "goog-reserved-file-mtime": "1600000000"})
    put(s3, bucket, "ext/s3sync", b"s", permissions="33261", owner="7", group="8")
    put(s3, bucket, "ext/implicit/deep/file", b"deep")
    m = mount(bucket)
    e = m.path / "ext"

    plain = os.stat(e / "plain.txt")
    assert stat.S_ISREG(plain.st_mode) and stat.S_IMODE(plain.st_mode) == 0o640
    assert (plain.st_uid, plain.st_gid) == (os.geteuid(), os.getegid())
    assert plain.st_mtime_ns == last_modified_ns(s3, bucket, "ext/plain.txt")
    assert (e / "plain.txt").read_bytes() == b"plain"
    olddir = os.stat(e / "olddir")
    assert stat.S_ISDIR(olddir.st_mode) and stat.S_IMODE(olddir.st_mode) == 0o640
    assert os.listdir(e / "olddir") == ["inside"]
    slashdir = os.stat(e / "slashdir")
    assert stat.S_ISDIR(slashdir.st_mode) and stat.S_IMODE(slashdir.st_mode) == 0o750
    assert stat.S_ISDIR(os.stat(e / "fold").st_mode)
    assert stat.S_IMODE(os.stat(e / "octal").st_mode) == 0o755
    gcs = os.stat(e / "gcs")
    assert (stat.S_IMODE(gcs.st_mode), gcs.st_uid, gcs.st_gid) == (0o750, 42, 43)
    assert gcs.st_mtime_ns == 1600000000 * 10**9
    s3sync = os.stat(e / "s3sync")
    assert (stat.S_IMODE(s3sync.st_mode), s3sync.st_uid, s3sync.st_gid) == (0o755, 7, 8)
    implicit = os.stat(e / "implicit")
    assert stat.S_ISDIR(implicit.st_mode) and stat.S_IMODE(implicit.st_mode) == 0o750
    assert (e / "implicit/deep/file").read_bytes() == b"deep"
    assert sorted(os.listdir(e)) == ["fold", "gcs", "implicit", "octal", "olddir", "plain.txt",
                                     "s3sync", "slashdir"]


def test_lookup_without_listing_finds_every_form(s3, bucket, mount):
    """stat of a path whose parent was never listed (the probe path of lookup)."""
    put(s3, bucket, "p/file", b"f")
    put(s3, bucket, "p/marker/", content_type=DIR_TYPE, mode="16877")
    put(s3, bucket, "p/implicit/x", b"x")
    put(s3, bucket, "p/old_$folder$")
    m = mount(bucket)
    assert stat.S_ISREG(os.stat(m.path / "p/file").st_mode)
    assert stat.S_IMODE(os.stat(m.path / "p/marker").st_mode) == 0o755
    assert stat.S_ISDIR(os.stat(m.path / "p/implicit").st_mode)
    assert stat.S_ISDIR(os.stat(m.path / "p/old").st_mode)
    assert not os.path.exists(m.path / "p/nothing")


def test_directory_shadows_file_of_same_name(s3, bucket, mount):
    put(s3, bucket, "both", b"file body")
    put(s3, bucket, "both/child", b"child")
    m = mount(bucket)
    assert stat.S_ISDIR(os.stat(m.path / "both").st_mode)
    assert os.listdir(m.path) == ["both"]
    assert os.listdir(m.path / "both") == ["child"]


def test_mount_root_attributes_from_root_object(s3, bucket, mount):
    put(s3, bucket, "/", mode=str(stat.S_IFDIR | 0o751), uid="321", gid="654",
        mtime="1500000000")
    put(s3, bucket, "visible", b"v")
    m = mount(bucket)
    root = os.stat(m.path)
    assert (stat.S_IMODE(root.st_mode), root.st_uid, root.st_gid) == (0o751, 321, 654)
    assert root.st_mtime_ns == 1500000000 * 10**9
    assert os.listdir(m.path) == ["visible"]


def test_mount_root_defaults_without_root_object(bucket, mount):
    m = mount(bucket)
    root = os.stat(m.path)
    assert stat.S_IMODE(root.st_mode) == 0o700
    assert root.st_uid == os.geteuid()
    other = mount(bucket, "allow_other", "mp_umask=027")
    assert stat.S_IMODE(os.stat(other.path).st_mode) == 0o750


def test_prefix_mount_shows_only_the_prefix(s3, bucket, mount):
    put(s3, bucket, "outside", b"no")
    put(s3, bucket, "some/prefix/", mode=str(stat.S_IFDIR | 0o711))
    put(s3, bucket, "some/prefix/inside.txt", b"yes")
    put(s3, bucket, "some/prefix/sub/deeper", b"deeper")
    put(s3, bucket, "some/prefixed-sibling", b"no")
    m = mount(f"{bucket}:/some/prefix")
    assert sorted(os.listdir(m.path)) == ["inside.txt", "sub"]
    assert (m.path / "inside.txt").read_bytes() == b"yes"
    assert (m.path / "sub/deeper").read_bytes() == b"deeper"
    assert stat.S_IMODE(os.stat(m.path).st_mode) == 0o711


def test_listing_paginates_past_1000_keys(s3, bucket, mount):
    names = [f"f{i:05d}" for i in range(2500)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: put(s3, bucket, f"big/{n}", n.encode()), names))
    put(s3, bucket, "big/zdir/inner", b"i")
    m = mount(bucket)
    assert sorted(os.listdir(m.path / "big")) == [*names, "zdir"]
    assert (m.path / "big/f02499").read_bytes() == b"f02499"


def test_ranged_reads_at_odd_offsets(s3, bucket, mount):
    data = random.Random(7).randbytes(20 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=data)
    m = mount(bucket)
    path = m.path / "big.bin"
    assert os.stat(path).st_size == len(data)
    rng = random.Random(11)
    fd = os.open(path, os.O_RDONLY)
    try:
        spots = [(0, 1), (1, 4095), (4097, 131073), (len(data) - 3, 10), (len(data), 5),
                 (12_345_677, 1_000_003)]
        spots += [(rng.randrange(len(data)), rng.randrange(1, 300_000)) for _ in range(40)]
        for offset, size in spots:
            assert os.pread(fd, size, offset) == data[offset:offset + size], (offset, size)
    finally:
        os.close(fd)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()


def test_overwrite_during_read_is_estale_not_a_mix(s3, bucket, mount):
    old = b"a" * (4 * 1024 * 1024)
    s3.put_object(Bucket=bucket, Key="changing", Body=old)
    m = mount(bucket)
    fd = os.open(m.path / "changing", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == old[:4096]
        s3.put_object(Bucket=bucket, Key="changing", Body=b"b" * len(old))
        with pytest.raises(OSError) as stale:
            os.pread(fd, 4096, 3 * 1024 * 1024)
        assert stale.value.errno == errno.ESTALE
    finally:
        os.close(fd)


def put_multipart(s3, bucket: str, key: str, parts: list[bytes]) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = [{"PartNumber": n, "ETag": s3.upload_part(
        Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=body)["ETag"]}
        for n, body in enumerate(parts, 1)]
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": done})


def test_a_file_open_for_reading_reads_on_after_this_mount_moves_or_changes_it(
        s3, bucket, mount):
    """Renames of the file and of its directory give it another key, a chmod of a
    multipart object another ETag: the open descriptor follows, none is stale."""
    mib = 1024 * 1024
    parts = [random.Random(n).randbytes(5 * mib) for n in range(3)]
    data = b"".join(parts)
    put_multipart(s3, bucket, "d/open.bin", parts)
    etag = s3.head_object(Bucket=bucket, Key="d/open.bin")["ETag"]
    m = mount(bucket)
    fd = os.open(m.path / "d/open.bin", os.O_RDONLY)
    try:
        assert os.pread(fd, 4096, 0) == data[:4096]
        os.chmod(m.path / "d/open.bin", 0o600)
        assert s3.head_object(Bucket=bucket, Key="d/open.bin")["ETag"] != etag
        assert os.pread(fd, 4096, 4 * mib) == data[4 * mib:4 * mib + 4096]
        os.rename(m.path / "d/open.bin", m.path / "d/moved.bin")
        assert os.pread(fd, 4096, 8 * mib) == data[8 * mib:8 * mib + 4096]
        os.rename(m.path / "d", m.path / "e")
        assert os.pread(fd, 4096, 12 * mib) == data[12 * mib:12 * mib + 4096]
    finally:
        os.close(fd)
    assert stat.S_IMODE(os.stat(m.path / "e/moved.bin").st_mode) == 0o600
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "e/moved.bin"]
    # Documented: a reader of a file this mount unlinks has only what it cached.
    s3.put_object(Bucket=bucket, Key="gone.bin", Body=data)
    with open(m.path / "gone.bin", "rb") as gone:
        assert gone.read(4096) == data[:4096]
        os.unlink(m.path / "gone.bin")
        gone.seek(8 * mib)
        with pytest.raises(OSError) as missing:
            gone.read(4096)
        assert missing.value.errno in (errno.ESTALE, errno.ENOENT)


def test_unusable_key_names_are_skipped_with_a_warning(s3, bucket, mount):
    put(s3, bucket, "odd/good name %+#?.txt", b"ok")
    put(s3, bucket, "odd/ünïcødé", b"ok")
    put(s3, bucket, "odd//empty-component", b"no")
    put(s3, bucket, "odd/" + "n" * 256, b"too long")
    put(s3, bucket, "odd/" + "m" * 255, b"longest allowed")
    m = mount(bucket)
    assert sorted(os.listdir(m.path / "odd")) == sorted(
        ["good name %+#?.txt", "ünïcødé", "m" * 255])
    assert (m.path / "odd/good name %+#?.txt").read_bytes() == b"ok"
    assert (m.path / ("odd/" + "m" * 255)).read_bytes() == b"longest allowed"
    with pytest.raises(OSError) as too_long:
        os.stat(m.path / ("odd/" + "n" * 256))
    assert too_long.value.errno == errno.ENAMETOOLONG
    log = m.log()
    assert log.count("skipping key") == 2
    assert "name longer than 255 bytes" in log


def test_uid_gid_umask_options_override_stored_attributes(s3, bucket, mount):
    put(s3, bucket, "f", b"x", mode="33279", uid="1", gid="2")
    put(s3, bucket, "d/", content_type=DIR_TYPE, mode="16832")
    m = mount(bucket, "uid=1000", "gid=1001", "umask=027")
    f = os.stat(m.path / "f")
    assert (stat.S_IMODE(f.st_mode), f.st_uid, f.st_gid) == (0o750, 1000, 1001)
    d = os.stat(m.path / "d")
    assert stat.S_ISDIR(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o750


def test_ro_option_refuses_every_change(s3, bucket, mount):
    put(s3, bucket, "f", b"x")
    m = mount(bucket, "ro")
    for action in (lambda: os.open(m.path / "f", os.O_WRONLY), lambda: os.mkdir(m.path / "new"),
                   lambda: os.unlink(m.path / "f")):
        with pytest.raises(OSError) as refused:
            action()
        assert refused.value.errno == errno.EROFS
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == b"x"


def test_statfs_reports_large_stable_numbers(bucket, mount):
    m = mount(bucket)
    first, second = os.statvfs(m.path), os.statvfs(m.path)
    assert first.f_blocks * first.f_frsize >= 2**40
    assert first.f_bavail == first.f_blocks and first.f_namemax == 255
    assert (first.f_blocks, first.f_files) == (second.f_blocks, second.f_files)


def test_ls_find_and_cp_on_a_tree(s3, bucket, mount, tmp_path):
    tree = {"t/a.txt": b"alpha\n", "t/sub/b.bin": bytes(range(256)) * 100,
            "t/sub/deeper/c": b"", "t/implicit/d": b"dd"}
    for key, body in tree.items():
        put(s3, bucket, key, body, mode="33188")
    put(s3, bucket, "t/sub/", content_type=DIR_TYPE, mode="16877")
    m = mount(bucket)
    listing = subprocess.run(["ls", "-l", str(m.path / "t")], capture_output=True, text=True,
                             check=True).stdout
    assert "-rw-r--r--" in listing and "a.txt" in listing and "implicit" in listing
    found = subprocess.run(["find", str(m.path / "t"), "-type", "f"], capture_output=True,
                           text=True, check=True).stdout.split()
    assert sorted(os.path.relpath(p, m.path) for p in found) == sorted(tree)
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(m.path / "t"), str(copy)], check=True)
    for key, body in tree.items():
        assert (copy / os.path.relpath(key, "t")).read_bytes() == body
    assert subprocess.run(["stat", "-c", "%a %s", str(m.path / "t/a.txt")], capture_output=True,
                          text=True, check=True).stdout.split() == ["644", "6"]


def test_max_read_reaches_the_kernel(s3, bucket, mount):
    """max_read is a FUSE mount option: the kernel's mount table shows it, and reads
    through the mount still return the whole object."""
    data = random.Random(9).randbytes(300_000)
    put(s3, bucket, "whole", data)
    m = mount(bucket, "max_read=16384")
    with open("/proc/self/mountinfo") as table:
        [entry] = [line for line in table if f" {m.path} " in line]
    assert "max_read=16384" in entry.split()[-1].split(",")  # the super block options
    assert (m.path / "whole").read_bytes() == data
