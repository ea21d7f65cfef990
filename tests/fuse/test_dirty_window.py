"""The dirty window of streaming uploads (-o max_dirty_data=MB).

A file streamed to the bucket keeps at most the window on local disk: the
parts already uploaded are punched out of its cache file. Reading, rewriting,
truncating or renaming the file where those parts were first completes the
upload, as fsync would, and works on the object it made; an unlink with no
reader left drops the upload; a completion that fails keeps the upload for the
next try. Without streamupload a file written from its start streams once it
holds half the window. Parts are 5 MiB and the window 50 MiB (its minimum), so
the files of these tests are 80-120 MiB.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import body, keys, payload, uploads, wait_until
from s3proxy import Answer, Rule, operation_is

MiB = 1024 * 1024
WINDOW = 50 * MiB
PART = 5 * MiB
OPTIONS = ("streamupload", "multipart_threshold=5", "multipart_size=5", "max_dirty_data=50")


def on_disk(directory: Path) -> int:
    """Bytes the files below ``directory`` take on disk."""
    return sum(path.stat().st_blocks * 512 for path in directory.rglob("*") if path.is_file())


def write_all(fd: int, data: bytes, cache: Path) -> int:
    """Write ``data`` in 1 MiB writes; return the most ``cache`` took meanwhile."""
    peak = 0
    for offset in range(0, len(data), MiB):
        os.pwrite(fd, data[offset:offset + MiB], offset)
        peak = max(peak, on_disk(cache))
    return peak


def stream_file(path: Path, data: bytes, cache: Path,
                then: Callable[[int], object] = lambda fd: None) -> int:
    """Write ``data`` to a new file at ``path``, then call ``then`` with its
    descriptor before it is closed; return the most ``cache`` took."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        peak = write_all(fd, data, cache)
        then(fd)
    finally:
        os.close(fd)
    return peak


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """The mount's tmpdir, where its cache files live."""
    path = tmp_path / "cache"
    path.mkdir()
    return path


def test_a_streamed_file_keeps_at_most_the_window_on_local_disk(s3, bucket, mount, proxy,
                                                               cache):
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}", url=proxy.url)
    data = payload(120 * MiB, seed=11)
    peak = stream_file(m.path / "big", data, cache)
    # The window, and the write that went past it before the next punch.
    assert peak <= WINDOW + PART, peak
    assert body(s3, bucket, "big") == data
    counts = proxy.counts()
    # Punched parts were not sent twice.
    assert counts["UploadPart"] == 24 and counts["CompleteMultipartUpload"] == 1, counts
    assert uploads(s3, bucket) == []
    assert (m.path / "big").read_bytes() == data


def test_the_window_holds_while_the_upload_is_created(s3, bucket, mount, proxy, cache):
    """A slow CreateMultipartUpload: nothing can be sent or punched meanwhile, so the
    writer waits once past the window instead of filling the disk."""
    def slow_create(request) -> bool:
        if request.operation == "CreateMultipartUpload":
            time.sleep(1.0)  # the writer would write far past the window meanwhile
        return False

    proxy.add(Rule(slow_create, Answer(500, "NeverSent")))
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}", url=proxy.url)
    data = payload(90 * MiB, seed=14)
    peak = stream_file(m.path / "big", data, cache)
    assert peak <= WINDOW + PART, peak
    assert body(s3, bucket, "big") == data


def test_a_file_bigger_than_max_cache_size_can_be_streamed(s3, bucket, mount, cache):
    # The window is at most half the cache: 30 MiB here, below max_dirty_data.
    m = mount(bucket, *OPTIONS, "max_cache_size=60", f"tmpdir={cache}")
    data = payload(100 * MiB, seed=22)
    peak = stream_file(m.path / "big", data, cache)
    assert peak <= 30 * MiB + PART, peak
    assert body(s3, bucket, "big") == data


def test_without_a_window_the_whole_file_stays_until_close(s3, bucket, mount, cache):
    m = mount(bucket, *OPTIONS[:-1], "max_dirty_data=-1", f"tmpdir={cache}")
    data = payload(80 * MiB, seed=12)
    peak = stream_file(m.path / "big", data, cache)
    assert peak >= len(data)
    assert body(s3, bucket, "big") == data


# Without streamupload: a file streams once its written prefix reaches half the
# window (25 MiB here), so the window holds by default.
DEFAULT_OPTIONS = ("multipart_threshold=5", "multipart_size=5", "max_dirty_data=50")


def test_without_streamupload_a_file_past_half_the_window_streams(s3, bucket, mount, proxy,
                                                                   cache):
    m = mount(bucket, *DEFAULT_OPTIONS, f"tmpdir={cache}", url=proxy.url)
    data = payload(120 * MiB, seed=23)
    started: list[int] = []
    peak = stream_file(m.path / "big", data, cache,
                       then=lambda fd: started.append(proxy.counts()["UploadPart"]))
    assert peak <= WINDOW + PART, peak
    # Parts went up while the file was written: at close only the tail is left.
    assert started[0] >= 14, started
    assert body(s3, bucket, "big") == data
    counts = proxy.counts()
    assert counts["UploadPart"] == 24 and counts["CreateMultipartUpload"] == 1, counts
    # The upload began with the metadata of its start: one self-copy sets the final ones.
    assert counts["CopyObject"] == 1, counts
    assert uploads(s3, bucket) == []


def test_without_streamupload_a_file_below_half_the_window_goes_up_at_close(
        s3, bucket, mount, proxy, cache):
    m = mount(bucket, *DEFAULT_OPTIONS, f"tmpdir={cache}", url=proxy.url)
    data = payload(24 * MiB, seed=24)
    before_close: list[dict[str, int]] = []
    peak = stream_file(m.path / "f", data, cache,
                       then=lambda fd: before_close.append(proxy.counts()))
    assert peak >= len(data)
    assert before_close[0]["CreateMultipartUpload"] == 0, before_close
    assert body(s3, bucket, "f") == data
    counts = proxy.counts()
    # One multipart upload with the final metadata: no self-copy.
    assert counts["CreateMultipartUpload"] == 1 and counts["CopyObject"] == 0, counts


def test_reading_a_punched_part_completes_the_upload_first(s3, bucket, mount, cache):
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}")
    data = payload(80 * MiB, seed=13)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        write_all(fd, data, cache)
        assert keys(s3, bucket) == []
        # Else the kernel answers from the pages the writes left.
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, MiB, 3 * MiB) == data[3 * MiB:4 * MiB]
        # The read made the object: the part came from it.
        assert body(s3, bucket, "f") == data
        os.pwrite(fd, b"more", len(data))
    finally:
        os.close(fd)
    assert body(s3, bucket, "f") == data + b"more"
    assert uploads(s3, bucket) == []


def test_rewriting_a_punched_part_lands_in_the_object(s3, bucket, mount, cache):
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}")
    data = payload(80 * MiB, seed=14)
    # A header fixed at the end, as archivers and muxers do.
    stream_file(m.path / "f", data, cache, lambda fd: os.pwrite(fd, b"HEADER", 10))
    assert body(s3, bucket, "f") == data[:10] + b"HEADER" + data[16:]
    assert uploads(s3, bucket) == []


def test_truncating_below_punched_parts_keeps_the_rest(s3, bucket, mount, cache):
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}")
    data = payload(80 * MiB, seed=15)
    stream_file(m.path / "f", data, cache, lambda fd: os.ftruncate(fd, 7 * MiB + 3))
    assert body(s3, bucket, "f") == data[:7 * MiB + 3]
    assert uploads(s3, bucket) == []


def test_renaming_a_file_with_punched_parts_moves_all_of_it(s3, bucket, mount, cache):
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}")
    data = payload(80 * MiB, seed=16)

    def rename_and_chmod(fd: int) -> None:
        os.rename(m.path / "old", m.path / "new")
        os.fchmod(fd, 0o600)

    stream_file(m.path / "old", data, cache, rename_and_chmod)
    assert keys(s3, bucket) == ["new"]
    assert body(s3, bucket, "new") == data
    head = s3.head_object(Bucket=bucket, Key="new")
    assert head["Metadata"]["mode"] == str(stat.S_IFREG | 0o600)
    assert uploads(s3, bucket) == []


@pytest.mark.parametrize("readable", [False, True], ids=["write-only", "read-write"])
def test_an_unlinked_file_leaves_nothing_and_stays_readable(s3, bucket, mount, cache,
                                                            readable):
    """With no descriptor that can read it, its upload is dropped; with one, the
    upload is completed and read back before the object goes."""
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}")
    data = payload(80 * MiB, seed=17)
    fd = os.open(m.path / "f", os.O_CREAT | (os.O_RDWR if readable else os.O_WRONLY), 0o644)
    try:
        write_all(fd, data, cache)
        os.unlink(m.path / "f")
        if readable:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.pread(fd, 2 * MiB, MiB) == data[MiB:3 * MiB]
    finally:
        os.close(fd)
    wait_until(lambda: uploads(s3, bucket) == [], 30, "no upload in progress")
    assert keys(s3, bucket) == []


def test_a_failed_completion_keeps_the_uploaded_parts_for_the_next_try(s3, bucket, mount,
                                                                       proxy, cache):
    refused = proxy.add(Rule(operation_is("CompleteMultipartUpload"),
                             Answer(503, "SlowDown"), times=1))
    m = mount(bucket, "retries=0", *OPTIONS, f"tmpdir={cache}", url=proxy.url)
    data = payload(80 * MiB, seed=19)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    write_all(fd, data, cache)
    with pytest.raises(OSError) as caught:
        os.close(fd)
    assert caught.value.errno == errno.EIO
    assert refused.fired == 1
    # The release after close() tries again: the same upload, no part sent twice.
    wait_until(lambda: keys(s3, bucket) == ["f"], 30, "the object after the second try")
    assert body(s3, bucket, "f") == data
    counts = proxy.counts()
    assert counts["CreateMultipartUpload"] == 1 and counts["UploadPart"] == 16, counts
    assert uploads(s3, bucket) == []


def test_a_failed_metadata_copy_sends_no_data_again(s3, bucket, mount, proxy, cache):
    refused = proxy.add(Rule(operation_is("CopyObject"), Answer(503, "SlowDown"), times=1))
    m = mount(bucket, "retries=0", *OPTIONS, f"tmpdir={cache}", url=proxy.url)
    data = payload(80 * MiB, seed=20)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)
    write_all(fd, data, cache)
    os.fchmod(fd, 0o640)
    with pytest.raises(OSError) as caught:
        os.close(fd)
    assert caught.value.errno == errno.EIO
    assert refused.fired == 1
    # The release after close() copies again. moto's copy stores the object before
    # its metadata, so a HEAD meanwhile may see none.
    wait_until(lambda: s3.head_object(Bucket=bucket, Key="f")["Metadata"].get("mode")
               == str(stat.S_IFREG | 0o640), 30, "the final mode in the bucket")
    assert body(s3, bucket, "f") == data
    counts = proxy.counts()
    assert counts["UploadPart"] == 16 and counts["CreateMultipartUpload"] == 1, counts
    assert counts["CopyObject"] == 2, counts


def test_reads_of_punched_parts_while_the_file_grows(s3, bucket, mount, cache):
    """A reader of the early parts through its own descriptor, while the writer
    goes on: each such read completes the upload (once), and the writer's later
    bytes join the object at close."""
    m = mount(bucket, *OPTIONS, f"tmpdir={cache}")
    data = payload(110 * MiB, seed=21)
    seen: list[bool] = []
    stop = threading.Event()
    writer = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY, 0o644)

    def read_early_parts() -> None:
        reader = os.open(m.path / "f", os.O_RDONLY)
        try:
            while not stop.is_set():
                if os.fstat(reader).st_size >= 70 * MiB:
                    os.posix_fadvise(reader, 0, 0, os.POSIX_FADV_DONTNEED)
                    seen.append(os.pread(reader, MiB, 2 * MiB) == data[2 * MiB:3 * MiB])
                stop.wait(0.05)
        finally:
            os.close(reader)

    thread = threading.Thread(target=read_early_parts)
    thread.start()
    try:
        write_all(writer, data, cache)
        stop.set()
        thread.join()
        # A read completed the upload before close: the object is there.
        assert keys(s3, bucket) == ["f"]
    finally:
        stop.set()
        thread.join()
        os.close(writer)
    assert seen and all(seen), seen
    assert body(s3, bucket, "f") == data
    assert uploads(s3, bucket) == []
