"""Streaming multipart uploads (s3mount/streaming.py) through a real mount.

A big file written from the start has its parts in the bucket before close();
close() sends the rest, completes the upload and sets the final metadata. A
rewrite of a part sent already, a streamed part that failed, a truncation,
an unlink and a rename each leave the right object and no upload in progress.
Parts are 5 MiB (multipart_threshold=5,multipart_size=5) so that files stay small.
Streaming from multipart_threshold is opt-in (-o streamupload); without it a file
below half of max_dirty_data goes up at close (the rest: test_dirty_window.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
from pathlib import Path

import pytest
from helpers import body, keys, payload, uploads, wait_until
from s3proxy import Answer, Rule, operation_is

from s3mount.meta import parse_time_ns

MiB = 1024 * 1024
SMALL_PARTS = ("streamupload", "multipart_threshold=5", "multipart_size=5")


def parts_in_progress(s3, bucket: str, key: str) -> list[int]:
    """Part numbers of the multipart upload in progress for ``key`` (none: [])."""
    found = [u for u in uploads(s3, bucket) if u["Key"] == key]
    if not found:
        return []
    assert len(found) == 1, found
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=found[0]["UploadId"])
    return [part["PartNumber"] for part in listed.get("Parts", [])]


def wait_for_parts(s3, bucket: str, key: str, numbers: list[int]) -> None:
    """Wait until the upload in progress for ``key`` holds exactly these parts."""
    wait_until(lambda: parts_in_progress(s3, bucket, key) == numbers, 30,
               f"parts {numbers} of {key} in the bucket before close")


def write_all(fd: int, data: bytes, chunk: int = MiB) -> None:
    for offset in range(0, len(data), chunk):
        os.pwrite(fd, data[offset:offset + chunk], offset)


@pytest.mark.parametrize("options", [
    ("multipart_threshold=5", "multipart_size=5"),
    # Streaming ends in a server-side self-copy, which nomixupload rules out.
    (*SMALL_PARTS, "nomixupload"),
], ids=["without-streamupload", "nomixupload"])
def test_a_big_file_goes_up_at_close(s3, bucket, mount, proxy, options):
    m = mount(bucket, *options, url=proxy.url)
    data = payload(17 * MiB, seed=3)
    fd = os.open(m.path / "big", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        assert proxy.counts()["CreateMultipartUpload"] == 0
    finally:
        os.close(fd)
    assert body(s3, bucket, "big") == data
    counts = proxy.counts()
    # One multipart upload with the final metadata: no self-copy after it.
    assert counts["UploadPart"] == 4 and counts["CreateMultipartUpload"] == 1, counts
    assert counts["CopyObject"] == 0 and counts["UploadPartCopy"] == 0, counts


def test_parts_go_up_before_close_and_close_sets_the_final_metadata(s3, bucket, mount,
                                                                     proxy):
    m = mount(bucket, *SMALL_PARTS, url=proxy.url)
    data = payload(30 * MiB + 12345, seed=1)
    fd = os.open(m.path / "big", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        # Before close: the upload runs, and the parts the written prefix covers are in.
        wait_for_parts(s3, bucket, "big", [1, 2, 3, 4, 5, 6])
        assert keys(s3, bucket) == []
        # Attributes changed after the upload began: they must be the ones stored.
        os.fchmod(fd, 0o604)
        os.utime(m.path / "big", ns=(1_700_000_000_123_456_789, 1_700_000_001_987_654_321))
    finally:
        os.close(fd)
    assert uploads(s3, bucket) == []
    assert body(s3, bucket, "big") == data
    head = s3.head_object(Bucket=bucket, Key="big")
    assert head["Metadata"]["mode"] == str(stat.S_IFREG | 0o604)
    assert parse_time_ns(head["Metadata"]["mtime"]) == 1_700_000_001_987_654_321
    counts = proxy.counts()
    # Six parts streamed, the seventh (the tail) sent at close; one self-copy for
    # the metadata.
    assert counts["UploadPart"] == 7, counts
    assert counts["CreateMultipartUpload"] == 1 and counts["CompleteMultipartUpload"] == 1
    assert counts["CopyObject"] == 1, counts
    again = mount(bucket)
    st = os.stat(again.path / "big")
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns) == (
        len(data), 0o604, 1_700_000_001_987_654_321)
    assert (again.path / "big").read_bytes() == data


def test_a_rewrite_of_a_sent_part_reaches_the_object(s3, bucket, mount):
    m = mount(bucket, *SMALL_PARTS)
    data = bytearray(payload(22 * MiB, seed=2))
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, bytes(data))
        wait_until(lambda: {1, 2} <= set(parts_in_progress(s3, bucket, "f")), 30,
                   "parts 1 and 2 in the bucket")
        for offset in (100, 5 * MiB + 7, 21 * MiB):
            os.pwrite(fd, b"REWRITTEN", offset)
            data[offset:offset + 9] = b"REWRITTEN"
        os.pwrite(fd, b"tail", len(data))
        data += b"tail"
    finally:
        os.close(fd)
    assert body(s3, bucket, "f") == bytes(data)
    assert uploads(s3, bucket) == []
    assert (m.path / "f").read_bytes() == bytes(data)


def test_a_streamed_part_that_failed_is_sent_again_at_close(s3, bucket, mount, proxy):
    refused = proxy.add(Rule(operation_is("UploadPart"), Answer(503, "SlowDown"), times=2))
    m = mount(bucket, "retries=0", *SMALL_PARTS, url=proxy.url)
    data = payload(17 * MiB, seed=3)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        wait_until(lambda: refused.fired == 2, 30, "two streamed parts refused")
        wait_until(lambda: proxy.counts()["UploadPart"] == 3, 30, "the third streamed part")
    finally:
        os.close(fd)
    assert body(s3, bucket, "f") == data
    # Parts 1-3 streamed (two refused), 1, 2 and the tail 4 sent at close.
    assert proxy.counts()["UploadPart"] == 6
    assert uploads(s3, bucket) == []


def test_parts_that_keep_failing_give_eio_and_the_data_stays(s3, bucket, mount, proxy):
    refused = proxy.add(Rule(operation_is("UploadPart"), Answer(503, "SlowDown")))
    m = mount(bucket, "retries=0", *SMALL_PARTS, url=proxy.url)
    data = payload(12 * MiB, seed=4)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    write_all(fd, data)
    wait_until(lambda: refused.fired >= 2, 30, "the streamed parts refused")
    with pytest.raises(OSError) as caught:
        os.close(fd)
    assert caught.value.errno == errno.EIO
    assert "upload of f failed" in m.log()
    assert keys(s3, bucket) == []
    # The release after close() tries once more (the normal way), and aborts too.
    wait_until(lambda: uploads(s3, bucket) == [], 30, "no upload in progress")
    assert (m.path / "f").read_bytes() == data
    refused.times = refused.fired  # the server takes parts again
    fd = os.open(m.path / "f", os.O_WRONLY)
    os.close(fd)
    assert body(s3, bucket, "f") == data


def test_truncation_below_sent_parts_abandons_the_upload(s3, bucket, mount):
    m = mount(bucket, *SMALL_PARTS)
    data = payload(16 * MiB, seed=5)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        wait_until(lambda: {1, 2} <= set(parts_in_progress(s3, bucket, "f")), 30,
                   "parts in the bucket")
        os.ftruncate(fd, MiB)
        wait_until(lambda: uploads(s3, bucket) == [], 30, "the abort of the upload")
        os.pwrite(fd, b"after the truncation", MiB)
    finally:
        os.close(fd)
    expected = data[:MiB] + b"after the truncation"
    assert body(s3, bucket, "f") == expected
    assert uploads(s3, bucket) == []


def test_a_stream_truncated_below_the_threshold_becomes_one_put(s3, bucket, mount, proxy):
    """Parts of 10 MiB, threshold 5 MiB: the upload starts at 5 MiB with no part
    yet; cut to a few bytes, the file is one PUT and the upload is aborted."""
    m = mount(bucket, "streamupload", "multipart_threshold=5", "multipart_size=10",
              url=proxy.url)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, payload(7 * MiB, seed=10))
        wait_until(lambda: [u["Key"] for u in uploads(s3, bucket)] == ["f"], 30,
                   "the streaming upload")
        os.ftruncate(fd, 0)
        os.pwrite(fd, b"small", 0)
    finally:
        os.close(fd)
    assert body(s3, bucket, "f") == b"small"
    assert proxy.counts()["UploadPart"] == 0
    wait_until(lambda: uploads(s3, bucket) == [], 30, "the abort of the upload")


def test_a_file_truncated_to_zero_and_written_again_streams_again(s3, bucket, mount):
    """O_TRUNC of an existing object: nothing of it is kept, so the new content streams."""
    s3.put_object(Bucket=bucket, Key="f", Body=b"old content")
    m = mount(bucket, *SMALL_PARTS)
    data = payload(11 * MiB, seed=6)
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_TRUNC)
    try:
        write_all(fd, data)
        wait_for_parts(s3, bucket, "f", [1, 2])
    finally:
        os.close(fd)
    assert body(s3, bucket, "f") == data


def test_unlink_during_the_stream_aborts_it(s3, bucket, mount):
    m = mount(bucket, *SMALL_PARTS)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, payload(12 * MiB, seed=7))
        wait_for_parts(s3, bucket, "f", [1, 2])
        os.unlink(m.path / "f")
        wait_until(lambda: uploads(s3, bucket) == [], 30, "the abort of the upload")
        os.pwrite(fd, b"more", 12 * MiB)
    finally:
        os.close(fd)
    assert keys(s3, bucket) == [] and uploads(s3, bucket) == []


def test_rename_during_the_stream_lands_under_the_new_name(s3, bucket, mount):
    m = mount(bucket, *SMALL_PARTS)
    data = payload(12 * MiB, seed=8)
    fd = os.open(m.path / "old", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        wait_for_parts(s3, bucket, "old", [1, 2])
        os.rename(m.path / "old", m.path / "new")
    finally:
        os.close(fd)
    assert keys(s3, bucket) == ["new"]
    assert body(s3, bucket, "new") == data
    wait_until(lambda: uploads(s3, bucket) == [], 30, "the abort of the old upload")


def test_async_upload_finishes_the_stream_in_the_background(s3, bucket, mount, tmp_path,
                                                            proxy):
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", "async_upload", *SMALL_PARTS,
              url=proxy.url)
    data = payload(13 * MiB, seed=9)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        wait_for_parts(s3, bucket, "f", [1, 2])
    finally:
        os.close(fd)
    wait_until(lambda: keys(s3, bucket) == ["f"], 30, "the background upload")
    assert body(s3, bucket, "f") == data
    assert uploads(s3, bucket) == []
    assert proxy.counts()["UploadPart"] == 3


def test_a_kill_while_the_stream_is_finished_aborts_it_at_the_next_mount(
        s3, bucket, daemons, proxy, tmp_path):
    """The upload that streaming started while the file was written goes into the
    journal record at close, so the next mount aborts it and uploads the file."""
    cache = tmp_path / "cache"
    # Parts are refused over and over (with back-off) while the kill comes.
    proxy.add(Rule(operation_is("UploadPart"), Answer(503, "SlowDown")))
    m = daemons.start(bucket, f"use_cache={cache}", "retries=50", *SMALL_PARTS,
                      url=proxy.url)
    data = payload(12 * MiB, seed=11)
    fd = os.open(m.path / "big.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    write_all(fd, data)
    wait_until(lambda: proxy.counts()["UploadPart"] >= 2, 30, "the streamed parts")
    [upload] = uploads(s3, bucket)  # started before close
    failures: list[OSError] = []

    def close() -> None:
        try:
            os.close(fd)  # waits for the refused parts
        except OSError as exc:  # the mount dies under it
            failures.append(exc)

    def records() -> list[Path]:
        return sorted(cache.glob("*/journal/*/*.json"))

    closing = threading.Thread(target=close)
    closing.start()
    wait_until(lambda: any(upload["UploadId"] in r.read_text() for r in records()), 30,
               "the upload id in the journal record")
    daemons.kill(m)
    closing.join(30)
    assert not closing.is_alive()

    again = daemons.start(bucket, f"use_cache={cache}", "dbglevel=info", *SMALL_PARTS)
    assert uploads(s3, bucket) == []
    assert body(s3, bucket, "big.bin") == data
    assert "aborted the multipart upload of big.bin" in again.log()
    assert records() == []


def test_a_kill_before_the_first_flush_aborts_the_stream_at_the_next_mount(
        s3, bucket, daemons, proxy, tmp_path):
    """A file never flushed has no journal record, but its stream's upload is
    noted in the journal all the same: the next mount aborts it, and uploads
    nothing (no flush asked for the data to be kept)."""
    cache = tmp_path / "cache"
    m = daemons.start(bucket, f"use_cache={cache}", *SMALL_PARTS, url=proxy.url)
    data = payload(12 * MiB, seed=12)
    fd = os.open(m.path / "big.bin", os.O_CREAT | os.O_WRONLY, 0o644)
    write_all(fd, data)
    wait_for_parts(s3, bucket, "big.bin", [1, 2])
    [upload] = uploads(s3, bucket)
    os.pwrite(fd, data[:1], 0)  # a write after the upload started notes its id

    def notes() -> list[Path]:
        return sorted(cache.glob("*/journal/*/*.upload"))

    wait_until(lambda: any(upload["UploadId"] in n.read_text() for n in notes()), 30,
               "the upload id noted in the journal")
    assert list(cache.glob("*/journal/*/*.json")) == []  # no record: never flushed
    daemons.kill(m)
    with contextlib.suppress(OSError):
        os.close(fd)  # the mount is gone

    again = daemons.start(bucket, f"use_cache={cache}", "dbglevel=info", *SMALL_PARTS)
    assert uploads(s3, bucket) == []
    assert keys(s3, bucket) == []
    assert "aborted the multipart upload of big.bin" in again.log()
    assert notes() == []


def test_a_flush_turns_the_noted_upload_into_a_journal_record(s3, bucket, mount, proxy,
                                                             tmp_path):
    """Once flushed, the file's record names the upload; the note goes, and so does
    the record when close completes the upload."""
    cache = tmp_path / "cache"
    m = mount(bucket, f"use_cache={cache}", *SMALL_PARTS, url=proxy.url)
    data = payload(11 * MiB, seed=13)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        write_all(fd, data)
        wait_for_parts(s3, bucket, "f", [1, 2])
        os.pwrite(fd, data[:1], 0)
        wait_until(lambda: len(list(cache.glob("*/journal/*/*.upload"))) == 1, 30,
                   "the upload noted in the journal")
        os.fsync(fd)
        assert list(cache.glob("*/journal/*/*.upload")) == []
        assert body(s3, bucket, "f") == data
    finally:
        os.close(fd)
    assert list(cache.glob("*/journal/*/*.upload")) == []
    assert list(cache.glob("*/journal/*/*.json")) == []
    assert uploads(s3, bucket) == []
