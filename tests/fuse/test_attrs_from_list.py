"""attrs_from_list: a cold `ls -l` is one LIST request, with modes and owners
from the options (not the stored ones) and times from Last-Modified; reads and
changes still see the whole object, so a change keeps the stored metadata.
Requests are counted at the proxy in front of the server.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

from test_listing_cost import ls_l, record_requests

STORED = {"mode": str(0o100604), "uid": "1234", "gid": "5678", "mtime": "1700000000"}


def test_a_cold_ls_l_of_1000_entries_is_one_list(s3, bucket, mount, proxy):
    def put(number: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"big/f{number:03}", Body=b"x" * number,
                      Metadata=STORED)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(999)))
    s3.put_object(Bucket=bucket, Key="big/sub/", Body=b"", Metadata={"mode": str(0o40700)},
                  ContentType="application/x-directory")
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="big/", Delimiter="/")
    modified = {item["Key"]: int(item["LastModified"].timestamp())
                for item in listed["Contents"]}
    m = mount(bucket, "attrs_from_list", url=proxy.url)
    os.stat(m.path / "big")
    seen = record_requests(proxy)
    lines = ls_l(m.path / "big")
    assert len(lines) == 1000
    assert seen == [("ListObjects", seen[0][1])], seen[:5]

    uid, gid = os.geteuid(), os.getegid()
    for name in ("f000", "f500", "f998"):
        info = os.stat(m.path / "big" / name)
        assert stat.S_IMODE(info.st_mode) == 0o640 and stat.S_ISREG(info.st_mode)
        assert (info.st_uid, info.st_gid) == (uid, gid)  # not the stored 1234/5678
        assert info.st_size == int(name[1:])
        assert info.st_mtime == modified[f"big/{name}"]  # Last-Modified, not the stored mtime
    sub = os.stat(m.path / "big" / "sub")
    assert stat.S_ISDIR(sub.st_mode)
    assert seen == [("ListObjects", seen[0][1])]  # still only the one LIST
    assert lines[0].split()[0] == "-rw-r-----"


def test_reads_and_changes_see_the_whole_object(s3, bucket, mount, proxy):
    s3.put_object(Bucket=bucket, Key="d/file", Body=b"content", Metadata={**STORED, "keep": "me"})
    m = mount(bucket, "attrs_from_list", url=proxy.url)
    os.listdir(m.path / "d")
    assert stat.S_IMODE(os.stat(m.path / "d/file").st_mode) == 0o640
    assert (m.path / "d/file").read_bytes() == b"content"
    os.chmod(m.path / "d/file", 0o600)
    head = s3.head_object(Bucket=bucket, Key="d/file")
    metadata = head["Metadata"]
    assert int(metadata["mode"]) == 0o100600
    # What LIST did not show was kept: owner, times and other tools' headers.
    assert (metadata["uid"], metadata["gid"], metadata["keep"]) == ("1234", "5678", "me")
    assert metadata["mtime"] == "1700000000"
    # Our own change is what stat shows now.
    assert stat.S_IMODE(os.stat(m.path / "d/file").st_mode) == 0o600
