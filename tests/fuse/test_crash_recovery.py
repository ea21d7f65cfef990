"""Crash safety: a daemon killed with SIGKILL while files wait for their upload
loses nothing; the next mount with the same use_cache directory uploads them,
keeps both versions when the bucket changed meanwhile, and aborts the
multipart uploads the killed daemon had started.

Uploads are held back by the rule proxy (tests/s3proxy.py) so that the kill
happens before or during them; the next mount talks to the server directly.
"""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import body, keys, wait_until
from s3proxy import Answer, Rule, operation_is

MiB = 1024 * 1024


def file_upload(request) -> bool:
    """PUTs of file data (not of directory markers, which mkdir sends)."""
    return (request.operation in ("PutObject", "UploadPart")
            and not urlsplit(request.target).path.endswith("/"))


def journal_records(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/journal/*/*.json"))


def test_files_closed_before_a_kill_are_uploaded_by_the_next_mount(
        s3, bucket, daemons, proxy, tmp_path):
    cache = tmp_path / "cache"
    refused = proxy.add(Rule(file_upload, Answer(503, "SlowDown")))
    m = daemons.start(bucket, f"use_cache={cache}", "async_upload", "retries=0",
                      "multipart_threshold=5", "multipart_size=5", url=proxy.url)
    rng = random.Random(6)
    expected = {}
    for number in range(40):
        name = f"dir{number % 3}/file{number}.bin"
        expected[name] = rng.randbytes(rng.choice([0, 1, 1000, 300_000, 2 * MiB + 7]))
    expected["big.bin"] = rng.randbytes(11 * MiB + 3)  # a multipart upload
    for number in range(3):
        (m.path / f"dir{number}").mkdir()
    for name, data in expected.items():
        (m.path / name).write_bytes(data)  # close() succeeds: the data is journaled
    assert refused.fired > 0
    assert not set(expected) & set(keys(s3, bucket))
    assert len(journal_records(cache)) == len(expected)
    daemons.kill(m)

    again = daemons.start(bucket, f"use_cache={cache}", "dbglevel=info")
    for name, data in expected.items():
        assert body(s3, bucket, name) == data, name
        assert (again.path / name).read_bytes() == data
    assert journal_records(cache) == []
    assert "uploaded big.bin from the journal of a killed mount" in again.log()


def test_a_kill_during_a_multipart_upload_aborts_it_at_the_next_mount(
        s3, bucket, daemons, proxy, tmp_path):
    cache = tmp_path / "cache"
    # Parts are refused over and over (with botocore's back-off) while the kill comes.
    proxy.add(Rule(operation_is("UploadPart"), Answer(503, "SlowDown")))
    m = daemons.start(bucket, f"use_cache={cache}", "retries=50", "multipart_threshold=5",
                      "multipart_size=5", url=proxy.url)
    data = random.Random(7).randbytes(12 * MiB)
    failures: list[BaseException] = []

    def write() -> None:
        try:
            (m.path / "big.bin").write_bytes(data)
        except OSError as exc:  # the mount dies under the writer
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    wait_until(lambda: proxy.counts()["UploadPart"] >= 2, 30, "the parts of the upload")
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert [u["Key"] for u in uploads] == ["big.bin"]
    [record] = journal_records(cache)
    assert uploads[0]["UploadId"] in record.read_text()
    daemons.kill(m)
    writer.join(30)
    assert not writer.is_alive()

    again = daemons.start(bucket, f"use_cache={cache}", "dbglevel=info", "multipart_threshold=5",
                          "multipart_size=5")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert body(s3, bucket, "big.bin") == data
    assert "aborted the multipart upload of big.bin" in again.log()
    assert journal_records(cache) == []


def test_a_file_changed_in_the_bucket_meanwhile_keeps_both_versions(
        s3, bucket, daemons, proxy, tmp_path):
    cache = tmp_path / "cache"
    s3.put_object(Bucket=bucket, Key="old.txt", Body=b"first version\n")
    proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown")))
    m = daemons.start(bucket, f"use_cache={cache}", "async_upload", "retries=0",
                      url=proxy.url)
    (m.path / "old.txt").write_bytes(b"ours\n")
    (m.path / "new.txt").write_bytes(b"ours too\n")
    (m.path / "quiet.txt").write_bytes(b"nobody else wrote this\n")
    daemons.kill(m)
    s3.put_object(Bucket=bucket, Key="old.txt", Body=b"theirs\n")
    s3.put_object(Bucket=bucket, Key="new.txt", Body=b"theirs too\n")

    again = daemons.start(bucket, f"use_cache={cache}", "dbglevel=info")
    names = keys(s3, bucket)
    assert body(s3, bucket, "old.txt") == b"theirs\n"
    assert body(s3, bucket, "new.txt") == b"theirs too\n"
    assert body(s3, bucket, "quiet.txt") == b"nobody else wrote this\n"
    [old_copy] = [n for n in names if n.startswith("old.txt.s3mount-conflict-")]
    [new_copy] = [n for n in names if n.startswith("new.txt.s3mount-conflict-")]
    assert body(s3, bucket, old_copy) == b"ours\n"
    assert body(s3, bucket, new_copy) == b"ours too\n"
    assert len(names) == 5
    assert (again.path / old_copy).read_bytes() == b"ours\n"
    log = again.log()
    assert "old.txt changed in the bucket after a killed mount changed it" in log
    assert f"the changes of this mount go to {old_copy}" in log


def test_an_edit_of_a_big_file_is_recovered_with_the_unchanged_parts_copied(
        s3, bucket, daemons, proxy, tmp_path):
    """Only the written part of a big object is in the cache; the rest still comes
    from the object, which has not changed."""
    cache = tmp_path / "cache"
    original = random.Random(8).randbytes(12 * MiB)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=original)
    proxy.add(Rule(operation_is("UploadPart", "PutObject"), Answer(503, "SlowDown")))
    m = daemons.start(bucket, f"use_cache={cache}", "async_upload", "retries=0",
                      "multipart_threshold=5", "multipart_size=5", url=proxy.url)
    with open(m.path / "big.bin", "r+b") as f:
        f.seek(6 * MiB + 5)
        f.write(b"EDIT")
    daemons.kill(m)

    daemons.start(bucket, f"use_cache={cache}", "multipart_threshold=5", "multipart_size=5")
    expected = bytearray(original)
    expected[6 * MiB + 5:6 * MiB + 9] = b"EDIT"
    assert body(s3, bucket, "big.bin") == bytes(expected)


def test_a_mount_without_use_cache_leaves_no_journal(s3, bucket, daemons, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    m = daemons.start(bucket, f"tmpdir={tmpdir}")
    (m.path / "a.txt").write_bytes(b"a")
    assert list(tmpdir.glob("*/journal/*/*.json")) == []
    assert body(s3, bucket, "a.txt") == b"a"
    m.stop()
    assert os.listdir(tmpdir) == []


def test_files_that_cannot_be_uploaded_at_unmount_stay_for_the_next_mount(
        s3, bucket, daemons, proxy, tmp_path):
    cache = tmp_path / "cache"
    proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown")))
    m = daemons.start(bucket, f"use_cache={cache}", "async_upload", "retries=0",
                      url=proxy.url)
    (m.path / "kept.txt").write_bytes(b"kept across an unclean unmount\n")
    assert daemons.stop_expecting_failure(m) == 1
    assert "could not upload 1 changed files: kept.txt; they stay in the journal" in m.log()
    assert len(journal_records(cache)) == 1

    daemons.start(bucket, f"use_cache={cache}")
    assert body(s3, bucket, "kept.txt") == b"kept across an unclean unmount\n"
    assert journal_records(cache) == []


@pytest.mark.long
@pytest.mark.timeout(900)
def test_kill_soak(s3, bucket, daemons, proxy, tmp_path):
    """Rounds of: write files while half of the uploads fail, kill -9, remount.
    Every file whose close() succeeded ends in the bucket with its last content."""
    cache = tmp_path / "cache"
    proxy.add(Rule(file_upload, Answer(503, "SlowDown"), probability=0.5))
    rng = random.Random(9)
    expected: dict[str, bytes] = {}
    for _ in range(8):
        m = daemons.start(bucket, f"use_cache={cache}", "async_upload", "retries=0",
                          "multipart_threshold=5", "multipart_size=5", url=proxy.url)
        for _ in range(25):
            name = f"f{rng.randrange(40)}.bin"
            data = rng.randbytes(rng.choice([0, 10, 70_000, 1 * MiB + 1, 6 * MiB]))
            try:
                (m.path / name).write_bytes(data)
            except OSError as exc:
                # close() reports that an earlier background upload of the file
                # failed; the data just written is journaled all the same.
                assert exc.errno == errno.EIO
            expected[name] = data
        daemons.kill(m)
    final = daemons.start(bucket, f"use_cache={cache}", "multipart_threshold=5",
                          "multipart_size=5")
    for name, data in expected.items():
        assert body(s3, bucket, name) == data, name
        assert (final.path / name).read_bytes() == data
    assert not [k for k in keys(s3, bucket) if ".s3mount-conflict-" in k]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
