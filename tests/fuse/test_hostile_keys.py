"""Keys no file system would make, written straight into the bucket: the mount shows
what it can, hides what it cannot with one warning each, and never crashes.

Keys with a newline are tested at the key <-> path mapping level only
(tests/unit/test_fuzz.py): moto's server cannot store them (PutObject answers 404).
"""

from __future__ import annotations

import errno
import http.client
import os
import stat
from urllib.parse import urlsplit

import pytest
from helpers import wait_until
from s3proxy import S3Proxy

# How the daemon's log shows a warning about the bucket's data.
FS_WARNING = "WARNING s3mount.fs: "
# Shown, with their own names: the file name is the key.
ODD_NAMES = ["sp ace.txt", " lead", "trail ", "per%cent", "%41", "pl+us", "ha#sh", "que?ry",
             "back\\slash", "ctl\x01\x1f\x7f", "tab\t", "cr\r", "\u00e9t\u00e9", "\ufffd",
             "\U0001f600", "x" * 255, "...", "-rf", "a_$folder$x"]
# Components of 200 bytes: a key of exactly S3's maximum, 1,024 bytes.
LONG_DIR = "long/" + "/".join("z" * 200 for _ in range(4)) + "/"
LONG_KEY = LONG_DIR + "w" * (1024 - len(LONG_DIR))
# Hidden, each with the warning it earns.
HIDDEN = {
    "y" * 256: f"skipping key {'y' * 256!r}: name longer than 255 bytes",
    "both": "hiding the file 'both': a directory of the same name exists",
    "both/inside": None,
    "dbl//slash": "skipping key 'dbl//': empty name",
    "dbl/ok": None,
    "//": "skipping key '/': empty name",
    "/leading": None,
    "dots/../up": "skipping key 'dots/../': name is '.' or '..'",
    "dots/./here": "skipping key 'dots/./': name is '.' or '..'",
    "dots/fine": None,
}


def put(s3, bucket: str, key: str, body: bytes | None = None) -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=key.encode() if body is None else body)


@pytest.fixture
def hostile_bucket(s3, bucket: str) -> str:
    for key in [*ODD_NAMES, LONG_KEY, *HIDDEN]:
        put(s3, bucket, key)
    return bucket


def listed(proxy: S3Proxy) -> int:
    return proxy.counts()["ListObjects"]


def test_odd_keys_are_shown_and_the_rest_hidden_with_one_warning_each(
        s3, hostile_bucket, mount, proxy):
    m = mount(hostile_bucket, "stat_cache_expire=0.5", url=proxy.url)
    root = set(os.listdir(m.path))
    assert root == {*ODD_NAMES, "long", "both", "dbl", "dots"}
    for name in ODD_NAMES:
        st = os.stat(m.path / name)
        assert stat.S_ISREG(st.st_mode), name
        assert (m.path / name).read_bytes() == name.encode(), name
    assert stat.S_ISDIR(os.stat(m.path / "both").st_mode)
    assert os.listdir(m.path / "both") == ["inside"]
    assert os.listdir(m.path / "dbl") == ["ok"]
    assert sorted(os.listdir(m.path / "dots")) == ["fine"]
    long_path = m.path / LONG_KEY
    assert os.stat(long_path).st_size == 1024
    assert long_path.read_bytes() == LONG_KEY.encode()
    with pytest.raises(OSError) as too_long:
        os.stat(m.path / ("y" * 256))
    assert too_long.value.errno == errno.ENAMETOOLONG

    # List everything again after the listings expired: still one warning each.
    before = listed(proxy)

    def relisted() -> bool:
        for directory in ("", "both", "dbl", "dots"):
            os.listdir(m.path / directory)
        return listed(proxy) >= before + 4
    wait_until(relisted, 30, "fresh listings once the cached ones expired")

    assert m.process.poll() is None, m.log()
    log = m.log()
    for warning in filter(None, HIDDEN.values()):
        assert log.count(warning) == 1, (warning, log)
    assert log.count(FS_WARNING) == len(list(filter(None, HIDDEN.values()))), log


def test_names_are_written_as_given(s3, bucket, mount):
    m = mount(bucket)
    for name in ODD_NAMES:
        (m.path / name).write_bytes(b"via the mount")
    os.mkdir(m.path / "d i r%#?")
    (m.path / "d i r%#?" / "\u00e9").write_bytes(b"deep")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {*ODD_NAMES, "d i r%#?/", "d i r%#?/\u00e9"}
    assert s3.get_object(Bucket=bucket, Key="que?ry")["Body"].read() == b"via the mount"


def test_names_that_are_not_utf8_are_refused(s3, bucket, mount):
    """S3 keys are UTF-8: a name with other bytes can be neither stored nor looked up."""
    m = mount(bucket)
    path = os.fsencode(m.path) + b"/bad\xff"
    with pytest.raises(OSError) as created:
        os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    assert created.value.errno == errno.EINVAL
    with pytest.raises(OSError) as made:
        os.mkdir(path)
    assert made.value.errno == errno.EINVAL
    assert not os.path.exists(path)
    assert "KeyCount" in s3.list_objects_v2(Bucket=bucket)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert m.process.poll() is None


def test_a_key_sent_as_invalid_utf8(s3_server, s3, bucket, mount):
    """Real S3 refuses such a key; moto stores U+FFFD in place of the bad byte, and the
    mount shows the key it lists, as it is."""
    url = urlsplit(s3_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request("PUT", f"/{bucket}/bad%FFutf8", body=b"raw")
    assert connection.getresponse().status == 200
    connection.close()
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    m = mount(bucket)
    assert os.listdir(m.path) == [key]
    assert (m.path / key).read_bytes() == b"raw"


def test_the_root_marker_alone_earns_no_warning(s3, bucket, mount):
    # s3fs keeps the mount root's attributes in the object "/".
    s3.put_object(Bucket=bucket, Key="/", Body=b"", Metadata={"mode": str(0o40755)})
    put(s3, bucket, "file")
    m = mount(bucket)
    assert os.listdir(m.path) == ["file"]
    assert stat.S_IMODE(os.stat(m.path).st_mode) == 0o755
    assert FS_WARNING not in m.log()


def test_hidden_keys_are_never_lost(s3, bucket, mount):
    """A directory holding hidden keys is not empty, and moves with them."""
    for key in ("dir//hidden", "dir/../up", "dir/shown"):
        put(s3, bucket, key)
    m = mount(bucket)
    os.unlink(m.path / "dir" / "shown")
    assert os.listdir(m.path / "dir") == []
    with pytest.raises(OSError) as not_empty:
        os.rmdir(m.path / "dir")
    assert not_empty.value.errno == errno.ENOTEMPTY
    os.rename(m.path / "dir", m.path / "moved")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"moved//hidden", "moved/../up"}
    assert s3.get_object(Bucket=bucket, Key="moved//hidden")["Body"].read() == b"dir//hidden"
