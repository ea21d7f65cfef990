"""The write path through a real mount, one test per operation, each checked
both through the mount and directly in the bucket (keys, bodies, headers).
"""

from __future__ import annotations

import errno
import os
import random
import stat

import pytest
from s3proxy import Answer, Rule, is_upload_part_copy, operation_is

from s3mount.meta import parse_time_ns

MiB = 1024 * 1024
SMALL_PARTS = ("multipart_threshold=5", "multipart_size=5")


def body(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def head(s3, bucket: str, key: str) -> dict:
    return s3.head_object(Bucket=bucket, Key=key)


def keys(s3, bucket: str, prefix: str = "") -> list[str]:
    found, token = [], None
    while True:
        params = {"Bucket": bucket, "Prefix": prefix}
        if token:
            params["ContinuationToken"] = token
        page = s3.list_objects_v2(**params)
        found += [o["Key"] for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return sorted(found)
        token = page["NextContinuationToken"]


def expect_errno(number: int, action, *args) -> None:
    with pytest.raises(OSError) as caught:
        action(*args)
    assert caught.value.errno == number, caught.value


def test_create_write_close_uploads_in_s3fs_format(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "notes.txt").write_bytes(b"hello\n")
    os.chmod(m.path / "notes.txt", 0o640)
    info = head(s3, bucket, "notes.txt")
    assert body(s3, bucket, "notes.txt") == b"hello\n"
    assert info["ContentType"] == "text/plain"
    meta = info["Metadata"]
    assert meta["mode"] == str(stat.S_IFREG | 0o640)
    assert (meta["uid"], meta["gid"]) == (str(os.geteuid()), str(os.getegid()))
    local = os.stat(m.path / "notes.txt")
    assert parse_time_ns(meta["mtime"]) == local.st_mtime_ns
    assert len(meta["mtime"].partition(".")[2]) in (0, 9)


def test_empty_file_is_uploaded_at_close(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "empty").touch()
    assert body(s3, bucket, "empty") == b""
    assert os.stat(m.path / "empty").st_size == 0


def test_open_flags_trunc_append_excl(s3, bucket, mount):
    m = mount(bucket)
    path = m.path / "f.bin"
    path.write_bytes(b"0123456789")
    with open(path, "ab") as f:
        f.write(b"AB")
    assert body(s3, bucket, "f.bin") == b"0123456789AB"
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"new")
    os.close(fd)
    assert body(s3, bucket, "f.bin") == b"new"
    expect_errno(errno.EEXIST, os.open, path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)


def test_random_and_sparse_writes_read_back(s3, bucket, mount):
    m = mount(bucket, *SMALL_PARTS)
    path = m.path / "sparse"
    expected = bytearray()
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    rng = random.Random(3)
    for offset in (0, 4095, MiB - 3, 3 * MiB + 17, 7 * MiB, 100):
        data = rng.randbytes(rng.randrange(1, 70_000))
        os.pwrite(fd, data, offset)
        if len(expected) < offset + len(data):
            expected.extend(bytes(offset + len(data) - len(expected)))
        expected[offset:offset + len(data)] = data
        assert os.pread(fd, len(data) + 10, offset) == bytes(expected[offset:offset + len(data)
                                                                     + 10])
    os.close(fd)
    assert body(s3, bucket, "sparse") == bytes(expected)
    assert path.read_bytes() == bytes(expected)


def test_truncate_down_and_up_open_and_closed(s3, bucket, mount):
    m = mount(bucket)
    path = m.path / "t"
    path.write_bytes(b"abcdefgh")
    os.truncate(path, 3)
    assert body(s3, bucket, "t") == b"abc"
    os.truncate(path, 6)
    assert body(s3, bucket, "t") == b"abc\0\0\0"
    with open(path, "r+b") as f:
        f.truncate(1)
        assert os.fstat(f.fileno()).st_size == 1
    assert body(s3, bucket, "t") == b"a"


def test_overwrite_in_the_middle_uploads_only_changed_parts(s3, bucket, mount, proxy):
    data = bytearray(random.Random(5).randbytes(20 * MiB))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    m = mount(bucket, *SMALL_PARTS, url=proxy.url)
    with open(m.path / "big", "r+b") as f:
        f.seek(7 * MiB + 5)
        f.write(b"X" * 4096)
    data[7 * MiB + 5:7 * MiB + 5 + 4096] = b"X" * 4096
    assert body(s3, bucket, "big") == bytes(data)
    counts = proxy.counts()
    assert counts["UploadPart"] == 1
    assert counts["UploadPartCopy"] == 3


def test_partial_update_without_upload_part_copy_falls_back(s3, bucket, mount, proxy):
    proxy.add(Rule(is_upload_part_copy, Answer(501, "NotImplemented")))
    data = bytearray(random.Random(6).randbytes(12 * MiB))
    s3.put_object(Bucket=bucket, Key="big", Body=bytes(data))
    m = mount(bucket, *SMALL_PARTS, url=proxy.url)
    with open(m.path / "big", "r+b") as f:
        f.write(b"head")
    data[:4] = b"head"
    assert body(s3, bucket, "big") == bytes(data)
    assert "server-side copies" in m.log()


def test_read_your_writes_through_a_second_descriptor(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="shared", Body=b"old content")
    m = mount(bucket)
    reader = os.open(m.path / "shared", os.O_RDONLY)
    writer = os.open(m.path / "shared", os.O_WRONLY)
    try:
        os.pwrite(writer, b"NEW", 0)
        assert os.pread(reader, 100, 0) == b"NEW content"
    finally:
        os.close(writer)
        os.close(reader)
    assert body(s3, bucket, "shared") == b"NEW content"


def test_chmod_chown_utimens_keep_foreign_metadata(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="f", Body=b"data", Metadata={"custom": "kept",
                                                                  "mode": "33188"})
    m = mount(bucket)
    os.chmod(m.path / "f", 0o600)
    os.chown(m.path / "f", 1234, 5678)
    os.utime(m.path / "f", ns=(1_600_000_000_123_456_789, 1_700_000_000_987_654_321))
    meta = head(s3, bucket, "f")["Metadata"]
    assert meta["custom"] == "kept"
    assert meta["mode"] == str(stat.S_IFREG | 0o600)
    assert (meta["uid"], meta["gid"]) == ("1234", "5678")
    assert meta["mtime"] == "1700000000.987654321"
    assert meta["atime"] == "1600000000.123456789"
    assert body(s3, bucket, "f") == b"data"
    st = os.stat(m.path / "f")
    assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 5678, 1_700_000_000_987_654_321)


def test_mkdir_writes_marker_and_rmdir_removes_it(s3, bucket, mount):
    m = mount(bucket)
    os.mkdir(m.path / "d", 0o750)
    info = head(s3, bucket, "d/")
    assert info["ContentType"] == "application/x-directory"
    assert info["Metadata"]["mode"] == str(stat.S_IFDIR | 0o750)
    assert stat.S_ISDIR(os.stat(m.path / "d").st_mode)
    os.rmdir(m.path / "d")
    assert keys(s3, bucket) == []
    expect_errno(errno.ENOENT, os.rmdir, m.path / "d")


def test_rmdir_refuses_non_empty_directories_even_implicit_ones(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="implicit/child", Body=b"c")
    m = mount(bucket)
    os.mkdir(m.path / "explicit")
    (m.path / "explicit/file").write_bytes(b"f")
    expect_errno(errno.ENOTEMPTY, os.rmdir, m.path / "implicit")
    expect_errno(errno.ENOTEMPTY, os.rmdir, m.path / "explicit")
    expect_errno(errno.ENOTDIR, os.rmdir, m.path / "explicit/file")
    assert keys(s3, bucket) == ["explicit/", "explicit/file", "implicit/child"]


def test_rename_file_keeps_metadata_and_recomputes_content_type(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="a.bin", Body=b"payload", ContentType="x/y",
                  Metadata={"mode": "33261", "uid": "7", "gid": "8", "custom": "c"})
    s3.put_object(Bucket=bucket, Key="target.txt", Body=b"old target")
    m = mount(bucket)
    os.rename(m.path / "a.bin", m.path / "target.txt")
    assert keys(s3, bucket) == ["target.txt"]
    info = head(s3, bucket, "target.txt")
    assert body(s3, bucket, "target.txt") == b"payload"
    assert info["ContentType"] == "text/plain"
    assert {k: info["Metadata"][k] for k in ("mode", "uid", "gid", "custom")} == {
        "mode": "33261", "uid": "7", "gid": "8", "custom": "c"}
    assert not os.path.exists(m.path / "a.bin")
    assert (m.path / "target.txt").read_bytes() == b"payload"


def test_norenameapi_renames_without_server_side_copies(s3, bucket, mount, proxy):
    s3.put_object(Bucket=bucket, Key="a.bin", Body=b"payload", Metadata={"mode": "33261"})
    s3.put_object(Bucket=bucket, Key="dir/inner", Body=b"inner", Metadata={"mode": "33188"})
    s3.put_object(Bucket=bucket, Key="open.bin", Body=b"held open")
    m = mount(bucket, "norenameapi", url=proxy.url)
    os.rename(m.path / "a.bin", m.path / "b.bin")
    os.rename(m.path / "dir", m.path / "dir2")
    with open(m.path / "open.bin", "r+b") as held:  # renamed through its open file
        os.rename(m.path / "open.bin", m.path / "moved.bin")
        assert held.read() == b"held open"
    assert proxy.counts()["CopyObject"] == 0
    assert keys(s3, bucket) == ["b.bin", "dir2/inner", "moved.bin"]
    assert body(s3, bucket, "moved.bin") == b"held open"
    assert body(s3, bucket, "b.bin") == b"payload"
    assert head(s3, bucket, "b.bin")["Metadata"]["mode"] == "33261"
    assert head(s3, bucket, "dir2/inner")["Metadata"]["mode"] == "33188"
    os.chmod(m.path / "b.bin", 0o600)  # not a rename: still a server-side copy
    assert proxy.counts()["CopyObject"] == 1
    assert head(s3, bucket, "b.bin")["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)


def test_rename_errors_match_linux(s3, bucket, mount):
    m = mount(bucket)
    os.mkdir(m.path / "dir")
    os.mkdir(m.path / "full")
    (m.path / "full/x").write_bytes(b"x")
    (m.path / "file").write_bytes(b"f")
    expect_errno(errno.EISDIR, os.rename, m.path / "file", m.path / "dir")
    expect_errno(errno.ENOTDIR, os.rename, m.path / "dir", m.path / "file")
    expect_errno(errno.ENOTEMPTY, os.rename, m.path / "dir", m.path / "full")
    expect_errno(errno.EINVAL, os.rename, m.path / "dir", m.path / "dir/inside")
    expect_errno(errno.ENOENT, os.rename, m.path / "missing", m.path / "other")
    os.rename(m.path / "dir", m.path / "moved")  # onto nothing
    os.mkdir(m.path / "empty")
    os.rename(m.path / "moved", m.path / "empty")  # onto an empty directory
    assert keys(s3, bucket) == ["empty/", "file", "full/", "full/x"]


def test_rename_directory_moves_every_object_past_1000_keys(s3, bucket, mount):
    from concurrent.futures import ThreadPoolExecutor

    names = [f"src/sub{i % 3}/f{i:04d}" for i in range(1100)]
    s3.put_object(Bucket=bucket, Key="src/", Body=b"",
                  Metadata={"mode": str(stat.S_IFDIR | 0o711)})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=bucket, Key=k, Body=k.encode(),
                                              Metadata={"mode": "33152"}), names))
    m = mount(bucket)
    os.rename(m.path / "src", m.path / "dst")
    moved = keys(s3, bucket)
    assert moved == sorted(["dst/", *(n.replace("src/", "dst/", 1) for n in names)])
    assert body(s3, bucket, "dst/sub1/f0001") == b"src/sub1/f0001"
    assert head(s3, bucket, "dst/sub1/f0001")["Metadata"]["mode"] == "33152"
    assert stat.S_IMODE(os.stat(m.path / "dst").st_mode) == 0o711
    assert len(os.listdir(m.path / "dst/sub2")) == 366


def test_interrupted_directory_rename_can_be_rerun(s3, bucket, mount):
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"src/f{i}", Body=b"same")
    # What an interrupted rename leaves: the first copies made, nothing deleted.
    for i in range(2):
        s3.copy_object(Bucket=bucket, Key=f"dst/f{i}", CopySource={"Bucket": bucket,
                                                                   "Key": f"src/f{i}"})
    m = mount(bucket)
    os.rename(m.path / "src", m.path / "dst")
    assert keys(s3, bucket) == [f"dst/f{i}" for i in range(5)]


def test_unlink(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="gone", Body=b"x")
    m = mount(bucket)
    os.unlink(m.path / "gone")
    assert keys(s3, bucket) == []
    expect_errno(errno.ENOENT, os.unlink, m.path / "gone")
    expect_errno(errno.ENOENT, os.unlink, m.path / "never-existed")


def test_unlinked_open_file_stays_usable_and_is_not_recreated(s3, bucket, mount):
    m = mount(bucket)
    path = m.path / "tmpfile"
    path.write_bytes(b"before")
    fd = os.open(path, os.O_RDWR)
    try:
        os.unlink(path)
        assert keys(s3, bucket) == []
        os.pwrite(fd, b"AFTER!", 0)
        assert os.pread(fd, 100, 0) == b"AFTER!"
    finally:
        os.close(fd)
    assert keys(s3, bucket) == []
    assert not path.exists()


def test_symlink_fifo_and_device(s3, bucket, mount):
    m = mount(bucket)
    os.symlink("../some/target", m.path / "link")
    os.mkfifo(m.path / "fifo", 0o640)
    os.mknod(m.path / "dev", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    assert body(s3, bucket, "link") == b"../some/target"
    assert head(s3, bucket, "link")["Metadata"]["mode"] == str(stat.S_IFLNK | 0o777)
    assert head(s3, bucket, "fifo")["Metadata"]["mode"] == str(stat.S_IFIFO | 0o640)
    assert head(s3, bucket, "dev")["Metadata"]["rdev"] == str(os.makedev(1, 3))
    m.stop()
    again = mount(bucket, "dev")
    assert os.readlink(again.path / "link") == "../some/target"
    assert stat.S_ISFIFO(os.stat(again.path / "fifo").st_mode)
    device = os.stat(again.path / "dev")
    assert stat.S_ISCHR(device.st_mode) and device.st_rdev == os.makedev(1, 3)


def test_extended_attributes(s3, bucket, mount):
    m = mount(bucket)
    path = m.path / "x"
    path.write_bytes(b"x")
    os.setxattr(path, "user.k1", b"v1")
    os.setxattr(path, "user.bin", b"\x00\xff\x10")
    assert head(s3, bucket, "x")["Metadata"]["xattr"] == (
        "%7B%22user.bin%22%3A%22AP8Q%22%2C%22user.k1%22%3A%22djE%3D%22%7D")
    assert sorted(os.listxattr(path)) == ["user.bin", "user.k1"]
    expect_errno(errno.EEXIST, os.setxattr, path, "user.k1", b"again", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, path, "user.none", b"v", os.XATTR_REPLACE)
    expect_errno(errno.E2BIG, os.setxattr, path, "user.huge", b"v" * 4000)
    os.removexattr(path, "user.k1")
    expect_errno(errno.ENODATA, os.removexattr, path, "user.k1")
    os.removexattr(path, "user.bin")
    assert "xattr" not in head(s3, bucket, "x")["Metadata"]
    assert body(s3, bucket, "x") == b"x"


def test_hard_links_are_refused_with_eperm(bucket, mount):
    m = mount(bucket)
    (m.path / "f").write_bytes(b"f")
    expect_errno(errno.EPERM, os.link, m.path / "f", m.path / "g")


def test_mount_root_attributes_are_stored_like_s3fs(s3, bucket, mount):
    m = mount(bucket)
    os.chmod(m.path, 0o751)
    assert head(s3, bucket, "/")["Metadata"]["mode"] == str(stat.S_IFDIR | 0o751)
    prefixed = mount(f"{bucket}:/pre/fix")
    os.chmod(prefixed.path, 0o705)
    assert head(s3, bucket, "pre/fix/")["Metadata"]["mode"] == str(stat.S_IFDIR | 0o705)


def test_names_too_long_get_enametoolong(bucket, mount):
    m = mount(bucket)
    expect_errno(errno.ENAMETOOLONG, open, m.path / ("n" * 256), "wb")
    fine = m.path / ("ü" * 127)  # 254 bytes
    fine.write_bytes(b"ok")
    assert fine.read_bytes() == b"ok"


def test_odd_names_round_trip(s3, bucket, mount):
    m = mount(bucket)
    names = ["with space", "per%cent", "plus+sign", "quest?ion", "hash#tag", "ünïcødé",
             "semi;colon", "amp&er", "tab\there"]
    for name in names:
        (m.path / name).write_bytes(name.encode())
    assert keys(s3, bucket) == sorted(names)
    assert sorted(os.listdir(m.path)) == sorted(names)
    for name in names:
        assert body(s3, bucket, name) == name.encode()


def test_failed_upload_is_eio_at_close_and_the_data_survives(s3, bucket, mount, proxy):
    refuse = proxy.add(Rule(operation_is("PutObject"), Answer(500, "InternalError")))
    m = mount(bucket, "retries=0", url=proxy.url)
    fd = os.open(m.path / "precious", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"do not lose me")
    expect_errno(errno.EIO, os.close, fd)
    assert "upload of precious failed" in m.log()
    assert (m.path / "precious").read_bytes() == b"do not lose me"
    proxy.rules.remove(refuse)
    fd = os.open(m.path / "precious", os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    assert body(s3, bucket, "precious") == b"do not lose me"


def test_dirty_file_is_uploaded_at_unmount(s3, bucket, mount, proxy):
    refuse = proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown")))
    m = mount(bucket, "retries=0", url=proxy.url)
    fd = os.open(m.path / "late", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"late data")
    expect_errno(errno.EIO, os.close, fd)
    proxy.rules.remove(refuse)
    assert m.stop() == 0
    assert body(s3, bucket, "late") == b"late data"


def test_metadata_change_right_after_close_is_stored(s3, bucket, mount):
    """The kernel releases a file after close() returns; a chmod or setxattr that
    overtakes the release must still reach the bucket before it returns."""
    m = mount(bucket)
    for i in range(20):
        path = m.path / f"f{i}"
        path.write_bytes(b"x")
        os.chmod(path, 0o600 + i % 8)
        os.setxattr(path, "user.n", str(i).encode())
        meta = head(s3, bucket, f"f{i}")["Metadata"]
        assert meta["mode"] == str(stat.S_IFREG | (0o600 + i % 8)), i
        assert "xattr" in meta, i


def test_write_options_reach_the_bucket(s3, bucket, mount):
    m = mount(bucket, "use_sse", "storage_class=standard_ia", "default_acl=public-read",
              "bucket_size=1PiB")
    (m.path / "f").write_bytes(b"secret")
    info = head(s3, bucket, "f")
    assert info["ServerSideEncryption"] == "AES256"
    assert info["StorageClass"] == "STANDARD_IA"
    grants = s3.get_object_acl(Bucket=bucket, Key="f")["Grants"]
    assert any(g["Permission"] == "READ" and g["Grantee"].get("URI", "").endswith("AllUsers")
               for g in grants)
    fs = os.statvfs(m.path)
    assert fs.f_blocks * fs.f_frsize == 1024**5


def test_file_open_during_its_directory_rename_lands_under_the_new_name(s3, bucket, mount):
    m = mount(bucket)
    os.mkdir(m.path / "old")
    fd = os.open(m.path / "old/f", os.O_CREAT | os.O_RDWR)
    try:
        os.write(fd, b"first ")
        os.rename(m.path / "old", m.path / "new")
        os.write(fd, b"second")
        assert os.pread(fd, 100, 0) == b"first second"
    finally:
        os.close(fd)
    assert keys(s3, bucket) == ["new/", "new/f"]
    assert body(s3, bucket, "new/f") == b"first second"
    assert (m.path / "new/f").read_bytes() == b"first second"
