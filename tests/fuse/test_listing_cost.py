"""What `ls -l` costs in requests: a cold listing is one LIST page plus at most
one HEAD per entry (fetched in parallel, ahead of the kernel's lookups); a
second `ls -l` within the cache time costs nothing. Counted at a proxy in
front of the server.
"""

from __future__ import annotations

import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from s3proxy import Answer, Rule


def record_requests(proxy) -> list[tuple[str, str]]:
    """(operation, target) of every request that passes the proxy."""
    seen: list[tuple[str, str]] = []

    def watch(request) -> bool:
        seen.append((request.operation, request.target))
        return False

    proxy.add(Rule(watch, Answer(500, "InternalError")))
    return seen


def ls_l(path) -> list[str]:
    result = subprocess.run(["ls", "-l", "--time-style=full-iso", str(path)],
                            env={**os.environ, "TZ": "UTC", "LC_ALL": "C"},
                            capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[1:]  # without "total N"


def test_ls_l_of_a_cold_directory_costs_one_list_and_one_head_per_entry(s3, bucket, mount,
                                                                        proxy):
    for number in range(120):
        s3.put_object(Bucket=bucket, Key=f"big/f{number:03}", Body=b"x" * number,
                      Metadata={"mode": str(0o100640), "uid": "1234", "gid": "5678",
                                "mtime": "1700000000"})
    s3.put_object(Bucket=bucket, Key="big/sub/", Body=b"",
                  Metadata={"mode": str(0o40750)}, ContentType="application/x-directory")
    m = mount(bucket, url=proxy.url)
    os.stat(m.path / "big")
    seen = record_requests(proxy)
    lines = ls_l(m.path / "big")
    assert len(lines) == 121
    assert lines[0].split() == ["-rw-r-----", "1", "1234", "5678", "0", "2023-11-14",
                                "22:13:20.000000000", "+0000", "f000"]
    assert lines[-1].startswith("drwxr-x---")
    lists = [target for operation, target in seen if operation == "ListObjects"]
    heads = [target for operation, target in seen if operation == "HeadObject"]
    assert len(lists) == 1
    assert len(heads) <= 121
    assert len(set(heads)) == len(heads)  # no entry asked twice
    assert {op for op, _ in seen} <= {"ListObjects", "HeadObject"}

    seen.clear()
    assert ls_l(m.path / "big") == lines
    assert seen == []  # within stat_cache_expire: served from the caches


def test_a_plain_readdir_fetches_no_attributes(s3, bucket, mount, proxy):
    """os.listdir, a glob or `ls` into a pipe read names and types only: no HEAD.
    The first lookup of a file starts the attribute lookups of the listed files,
    that of a directory those of the listed directories (`find` looks up only
    directories)."""
    for number in range(40):
        s3.put_object(Bucket=bucket, Key=f"d/f{number:02}", Body=b"x")
    for number in range(3):
        s3.put_object(Bucket=bucket, Key=f"d/sub{number}/", Body=b"",
                      ContentType="application/x-directory")
    m = mount(bucket, url=proxy.url)
    os.stat(m.path / "d")
    seen = record_requests(proxy)

    def heads_below(prefix: str) -> list[str]:
        return [target for operation, target in seen
                if operation == "HeadObject" and f"/d/{prefix}" in target]

    assert len(os.listdir(m.path / "d")) == 43
    # Requests made after it, in order: any HEAD of the listing's entries that a
    # readdir started would come before these.
    assert not (m.path / "elsewhere").exists()
    marker = len(seen)
    assert heads_below("") == [], seen[:marker]
    assert os.stat(m.path / "d" / "f07").st_size == 1
    assert all(os.stat(m.path / "d" / f"f{number:02}").st_size == 1 for number in range(40))
    assert sorted(heads_below("f")) == sorted(set(heads_below("f")))  # one HEAD each
    assert len(heads_below("f")) == 40
    assert heads_below("sub") == []  # no directory was looked up
    assert os.path.isdir(m.path / "d" / "sub1")
    assert all(os.path.isdir(m.path / "d" / f"sub{number}") for number in range(3))
    assert 1 <= len(heads_below("sub")) <= 3 * 3  # at most marker, same name, $folder$


def test_changes_made_during_a_listing_win_over_its_lookups(s3, bucket, mount):
    for number in range(50):
        s3.put_object(Bucket=bucket, Key=f"d/f{number:02}", Body=b"old")
    m = mount(bucket)
    os.listdir(m.path / "d")
    os.unlink(m.path / "d" / "f00")  # its lookup starts those of all the files
    (m.path / "d" / "f01").write_bytes(b"new content")
    os.chmod(m.path / "d" / "f02", 0o600)
    names = os.listdir(m.path / "d")
    assert "f00" not in names and len(names) == 49
    assert not (m.path / "d" / "f00").exists()
    assert os.stat(m.path / "d" / "f01").st_size == len(b"new content")
    assert os.stat(m.path / "d" / "f02").st_mode & 0o777 == 0o600


def test_small_files_in_a_new_directory_cost_one_put_each(s3, bucket, mount, proxy):
    m = mount(bucket, url=proxy.url)
    seen = record_requests(proxy)
    (m.path / "new").mkdir()
    for number in range(100):
        (m.path / "new" / f"small{number:03}").write_bytes(os.urandom(4096))
    assert m.stop() == 0  # includes the coalesced update of the directory's times
    operations = [operation for operation, _ in seen]
    assert operations.count("PutObject") == 101  # the marker and the files
    assert len(operations) <= 105, sorted(set(operations))
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="new/")["KeyCount"]
    assert listed == 101


LONG_NAME = "x" * 190  # about 146 entries per getdents buffer of 32 KiB
WALK_TTL = 4.0


@pytest.mark.parametrize("option", ["attrs_from_list", "heads"])
def test_a_walk_that_outlasts_the_ttl_keeps_its_listing(s3, bucket, mount, proxy, option):
    """A directory read slowly (a huge one, a slow server) keeps its listing while
    it is read: the lookups after the TTL has passed since the LIST still use it,
    instead of falling back to a LIST and a HEAD each."""
    names = [f"e{number:03}-{LONG_NAME}" for number in range(300)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: s3.put_object(Bucket=bucket, Key=f"walk/{name}",
                                                 Body=b"data"), names))
    options = [f"stat_cache_expire={WALK_TTL}"]
    if option == "attrs_from_list":
        options.append(option)
    m = mount(bucket, *options, url=proxy.url)
    directory = os.open(m.path / "walk", os.O_RDONLY | os.O_DIRECTORY)
    with os.scandir(directory) as walk:
        read = [next(walk).name]  # the LIST; the first buffer of entries
        time.sleep(WALK_TTL * 0.6)
        read += [next(walk).name for _ in range(199)]  # a further buffer: the walk goes on
        time.sleep(WALK_TTL * 0.6)  # the LIST is now older than the TTL
        seen = record_requests(proxy)
        # Looked up in the open directory: the lookup of "walk" itself, which
        # expired too, is not what is measured here. Without attrs_from_list this
        # first lookup starts the attribute lookups of the listed files.
        assert os.stat(names[10], dir_fd=directory).st_size == 4
        read += [entry.name for entry in walk]
    os.close(directory)
    assert sorted(read) == names
    assert [operation for operation, _ in seen if operation == "ListObjects"] == [], seen
    if option == "attrs_from_list":
        assert seen == []
    else:
        heads = [target for operation, target in seen if operation == "HeadObject"]
        assert len(heads) == len(seen) and len(set(heads)) == len(heads) <= len(names)
