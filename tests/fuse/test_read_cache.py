"""The disk cache of data read (use_cache=DIR) through real mounts: a remount
reads what an earlier mount read with no GET, an object changed by another
client between mounts is read afresh, the cache stays under max_cache_size
while files bigger than it are read, and del_cache wipes it. Requests are
counted at the proxy in front of the server, contents checked against the bucket.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

from helpers import body, wait_until

MiB = 1024 * 1024
STATS = "user.s3mount.stats"


def read_stats(mountpoint: Path) -> dict:
    result = subprocess.run(["getfattr", "-n", STATS, "--only-values", str(mountpoint)],
                            capture_output=True, check=True)
    return json.loads(result.stdout)


def put_random(s3, bucket: str, key: str, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    return data


def blocks_dir(cache: Path, bucket: str) -> Path:
    return cache / f".s3mount-{bucket}" / "blocks"


def disk_usage(directory: Path) -> int:
    """Bytes the cached data below ``directory`` takes on disk (holes of the sparse
    data files count as nothing; the small indexes are not data)."""
    if not directory.exists():
        return 0
    return sum(p.stat().st_blocks * 512 for p in directory.glob("*.data"))


def test_a_remount_reads_from_the_disk_cache_with_no_get(s3, bucket, mount, proxy, tmp_path):
    cache = tmp_path / "cache"
    big = put_random(s3, bucket, "big", 9 * MiB + 12345, seed=1)
    small = put_random(s3, bucket, "dir/small", 5000, seed=2)
    first = mount(bucket, f"use_cache={cache}", url=proxy.url)
    assert (first.path / "big").read_bytes() == big
    assert (first.path / "dir" / "small").read_bytes() == small
    assert first.stop() == 0
    assert disk_usage(blocks_dir(cache, bucket)) >= len(big)

    before = proxy.counts()
    second = mount(bucket, f"use_cache={cache}", url=proxy.url)
    assert (second.path / "big").read_bytes() == big
    assert (second.path / "dir" / "small").read_bytes() == small
    gets = proxy.counts()["GetObject"] - before["GetObject"]
    assert gets == 0
    stats = read_stats(second.path)
    assert stats["disk_cache"]["hits"] >= 10
    assert stats["disk_cache"]["misses"] == 0
    assert stats["requests"].get("GetObject", 0) == 0


def test_an_object_changed_between_mounts_is_read_afresh(s3, bucket, mount, proxy, tmp_path):
    cache = tmp_path / "cache"
    old = put_random(s3, bucket, "f", 3 * MiB + 7, seed=3)
    first = mount(bucket, f"use_cache={cache}", url=proxy.url)
    assert (first.path / "f").read_bytes() == old
    assert first.stop() == 0
    # Another client replaces it with the same size.
    new = put_random(s3, bucket, "f", len(old), seed=4)
    before = proxy.counts()
    second = mount(bucket, f"use_cache={cache}", url=proxy.url)
    assert (second.path / "f").read_bytes() == new
    assert proxy.counts()["GetObject"] - before["GetObject"] >= 1
    assert read_stats(second.path)["disk_cache"]["hits"] == 0


def test_the_cache_stays_under_max_cache_size(s3, bucket, mount, tmp_path):
    cache = tmp_path / "cache"
    files = {f"f{n}": put_random(s3, bucket, f"f{n}", 6 * MiB + n, seed=10 + n) for n in range(3)}
    m = mount(bucket, f"use_cache={cache}", "max_cache_size=4")
    for _ in range(2):
        for name, data in files.items():
            assert (m.path / name).read_bytes() == data
            assert disk_usage(blocks_dir(cache, bucket)) <= 4 * MiB
    stats = read_stats(m.path)
    assert stats["disk_cache"]["evicted_bytes"] > 0
    assert stats["disk_cache"]["stored"] > 0
    assert m.stop() == 0
    assert disk_usage(blocks_dir(cache, bucket)) <= 4 * MiB


def test_del_cache_wipes_the_read_cache_at_start_and_exit(s3, bucket, mount, proxy, tmp_path):
    cache = tmp_path / "cache"
    data = put_random(s3, bucket, "f", 2 * MiB, seed=5)
    first = mount(bucket, f"use_cache={cache}", url=proxy.url)
    assert (first.path / "f").read_bytes() == data
    assert first.stop() == 0
    assert disk_usage(blocks_dir(cache, bucket)) > 0

    before = proxy.counts()
    second = mount(bucket, f"use_cache={cache}", "del_cache", url=proxy.url)
    assert disk_usage(blocks_dir(cache, bucket)) == 0  # wiped at start
    assert (second.path / "f").read_bytes() == data
    assert proxy.counts()["GetObject"] - before["GetObject"] >= 1
    assert second.stop() == 0
    assert disk_usage(blocks_dir(cache, bucket)) == 0  # and at exit


def test_without_use_cache_reads_are_cached_in_the_private_directory(s3, bucket, mount, proxy,
                                                                     daemon_env, tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    data = put_random(s3, bucket, "f", 3 * MiB, seed=6)
    m = mount(bucket, f"tmpdir={private}", url=proxy.url)
    with open(m.path / "f", "rb") as f:
        assert f.read() == data
    gets = proxy.counts()["GetObject"]
    # Served by the disk cache even when the kernel's pages are gone (dropping
    # them needs root; without, the page cache serves it, also with no GET).
    hits = read_stats(m.path)["disk_cache"]["hits"]
    dropped = subprocess.run(["sh", "-c", "echo 1 > /proc/sys/vm/drop_caches"],
                             capture_output=True).returncode == 0
    with open(m.path / "f", "rb") as f:
        assert f.read() == data
    assert proxy.counts()["GetObject"] == gets
    if dropped:
        assert read_stats(m.path)["disk_cache"]["hits"] >= hits + 3
    else:
        print("drop_caches failed (not root?): the kernel's page cache served the re-read")
    assert [p.name for p in private.iterdir()]  # the private directory is in use
    # Nothing outlives this mount: no index is written (nor the blocks flushed).
    assert list(private.rglob("*.data")) and not list(private.rglob("*.json"))
    assert m.stop() == 0
    assert list(private.iterdir()) == []  # removed at exit


def test_a_second_dd_of_a_big_file_makes_no_get(s3, bucket, mount, proxy, tmp_path):
    data = put_random(s3, bucket, "big", 48 * MiB + 4321, seed=7)
    m = mount(bucket, url=proxy.url)
    out = tmp_path / "copy"
    gets = []
    for _ in range(3):
        before = proxy.counts()["GetObject"]
        subprocess.run(["dd", f"if={m.path / 'big'}", f"of={out}", "bs=1M", "status=none"],
                       check=True)
        gets.append(proxy.counts()["GetObject"] - before)
        assert out.read_bytes() == data
    assert gets[0] > 0
    assert gets[1:] == [0, 0], gets


def test_a_file_written_through_the_mount_is_read_after_a_remount_with_no_get(
        s3, bucket, mount, proxy, tmp_path):
    cache = tmp_path / "cache"
    written = random.Random(20).randbytes(3 * MiB + 777)
    first = mount(bucket, f"use_cache={cache}", url=proxy.url)
    (first.path / "new.bin").write_bytes(written)
    assert first.stop() == 0
    assert disk_usage(blocks_dir(cache, bucket)) >= len(written)

    before = proxy.counts()
    second = mount(bucket, f"use_cache={cache}", url=proxy.url)
    assert (second.path / "new.bin").read_bytes() == written
    assert proxy.counts()["GetObject"] - before["GetObject"] == 0
    assert read_stats(second.path)["disk_cache"]["hits"] == 4
    assert body(s3, bucket, "new.bin") == written


def test_an_edited_file_keeps_only_the_blocks_it_held_in_the_cache(s3, bucket, mount, proxy,
                                                                  tmp_path):
    cache = tmp_path / "cache"
    # Three parts of 10 MiB: the last two are copied server-side at close, so their
    # blocks never reach the mount.
    data = bytearray(put_random(s3, bucket, "f", 30 * MiB, seed=21))
    first = mount(bucket, f"use_cache={cache}", url=proxy.url)
    with open(first.path / "f", "r+b") as f:
        f.seek(MiB)
        f.write(b"x" * MiB)
    data[MiB:2 * MiB] = b"x" * MiB
    assert first.stop() == 0
    assert body(s3, bucket, "f") == bytes(data)

    before = proxy.counts()
    second = mount(bucket, f"use_cache={cache}", url=proxy.url)
    fd = os.open(second.path / "f", os.O_RDONLY)
    try:
        assert os.pread(fd, MiB, MiB) == data[MiB:2 * MiB]
        assert proxy.counts()["GetObject"] - before["GetObject"] == 0
        # Blocks the first mount never held come from the new object.
        assert os.pread(fd, MiB, 25 * MiB) == data[25 * MiB:26 * MiB]
    finally:
        os.close(fd)
    assert proxy.counts()["GetObject"] - before["GetObject"] >= 1


def test_a_file_just_written_is_read_back_from_the_cache_once_the_kernel_drops_it(
        s3, bucket, mount, proxy, tmp_path):
    m = mount(bucket, f"use_cache={tmp_path / 'cache'}", url=proxy.url)
    written = random.Random(22).randbytes(2 * MiB + 5)
    (m.path / "w.bin").write_bytes(written)
    before = proxy.counts()
    fd = os.open(m.path / "w.bin", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(written) + 1, 0) == written
    finally:
        os.close(fd)
    assert proxy.counts()["GetObject"] - before["GetObject"] == 0
    assert read_stats(m.path)["disk_cache"]["hits"] == 3


def test_without_use_cache_a_written_file_leaves_the_disk_once_uploaded(
        s3, bucket, mount, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    m = mount(bucket, f"tmpdir={temporary}")
    written = random.Random(23).randbytes(4 * MiB)
    (m.path / "w.bin").write_bytes(written)
    assert body(s3, bucket, "w.bin") == written

    def used() -> int:
        return sum(p.stat().st_blocks * 512 for p in temporary.rglob("*") if p.is_file())

    # The kernel sends the release after close() returned; then the file goes.
    wait_until(lambda: used() < MiB, 10, "the written file's data to leave the disk")
