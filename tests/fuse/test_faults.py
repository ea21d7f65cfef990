"""Real mounts through the fault-injecting proxy (tests/s3proxy.py).

Every kind of fault on the requests of reads and of writes (multipart parts
included) is retried and the result is right, through the mount and in the
bucket; bodies cut short or corrupted never reach the application; a server
that goes offline is waited for, then gives EIO without losing a dirty file,
and the mount answers again once it is back; and a workload of writes,
renames, reads and deletes under about 10 % injected failures of every kind
leaves the bucket byte-identical to a reference directory.

The daemons use small time-outs (readwrite_timeout) so that stalls are short;
retries wait 0.25-0.5 s, then 0.5-1 s, 1-2 s ... (see s3mount/retry.py).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path

import pytest
from helpers import body, keys
from s3proxy import (
    Answer,
    Corrupt,
    Rule,
    S3Proxy,
    Truncate,
    any_request,
    body_faults,
    operation_is,
    request_faults,
)

TIMEOUTS = "connect_timeout=2,readwrite_timeout=2"
STALL = 4.0  # past readwrite_timeout
SMALL_PARTS = "multipart_threshold=5,multipart_size=5"
MiB = 1024 * 1024

REQUEST_FAULTS = request_faults(STALL)
BODY_FAULTS = body_faults(STALL)


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def expect_errno(number: int, action, *args) -> None:
    with pytest.raises(OSError) as caught:
        action(*args)
    assert caught.value.errno == number, caught.value


def once_each(proxy: S3Proxy, operations: list[str], action) -> list[Rule]:
    """One rule per operation that fires on its first request (on the 2nd part
    of a multipart upload: the Nth request)."""
    return [proxy.add(Rule(operation_is(name), action, times=1,
                           skip=1 if name == "UploadPart" else 0))
            for name in operations]


@pytest.mark.parametrize("fault", [*REQUEST_FAULTS, *BODY_FAULTS])
def test_faults_on_reads_are_retried(fault: str, s3, bucket: str, mount, proxy: S3Proxy
                                     ) -> None:
    """A listing, a lookup (HEAD) and a download each meet the fault once."""
    data = payload(300_000, seed=1)
    s3.put_object(Bucket=bucket, Key="dir/f", Body=data)
    m = mount(bucket, "retries=3", TIMEOUTS, url=proxy.url)
    if fault in BODY_FAULTS:
        rules = once_each(proxy, ["GetObject"], BODY_FAULTS[fault])
    else:
        rules = once_each(proxy, ["ListObjects", "HeadObject", "GetObject"],
                          REQUEST_FAULTS[fault])
    assert os.listdir(m.path / "dir") == ["f"]
    assert (m.path / "dir" / "f").stat().st_size == len(data)
    assert (m.path / "dir" / "f").read_bytes() == data
    assert [rule.fired for rule in rules] == [1] * len(rules)


@pytest.mark.parametrize("fault", REQUEST_FAULTS)
def test_faults_on_writes_are_retried(fault: str, s3, bucket: str, mount, proxy: S3Proxy
                                      ) -> None:
    """A PUT, a multipart upload (its start, a part, its completion) and a rename
    (copy, delete) each meet the fault once."""
    small, big = payload(100_000, seed=2), payload(11 * MiB, seed=3)
    m = mount(bucket, "retries=3", TIMEOUTS, SMALL_PARTS, url=proxy.url)
    (m.path / "old").write_bytes(b"to be renamed")
    rules = once_each(proxy, ["PutObject", "CreateMultipartUpload", "UploadPart",
                              "CompleteMultipartUpload", "CopyObject", "DeleteObject"],
                      REQUEST_FAULTS[fault])
    (m.path / "small").write_bytes(small)
    (m.path / "big").write_bytes(big)
    os.rename(m.path / "old", m.path / "new")
    assert [rule.fired for rule in rules] == [1] * len(rules)
    assert keys(s3, bucket) == ["big", "new", "small"]
    assert body(s3, bucket, "small") == small
    assert body(s3, bucket, "big") == big
    assert body(s3, bucket, "new") == b"to be renamed"
    assert sorted(os.listdir(m.path)) == ["big", "new", "small"]
    assert (m.path / "big").read_bytes() == big


@pytest.mark.parametrize("action", [Truncate(0.5), Corrupt(3)], ids=["cut", "corrupted"])
def test_damaged_bodies_never_reach_the_application(action, s3, bucket: str, mount,
                                                    proxy: S3Proxy) -> None:
    """Every answer damaged: the read fails with EIO; it never returns the bytes."""
    data = payload(200_000, seed=4)
    s3.put_object(Bucket=bucket, Key="f", Body=data)
    m = mount(bucket, "retries=2", TIMEOUTS, url=proxy.url)
    assert (m.path / "f").stat().st_size == len(data)
    rule = proxy.add(Rule(operation_is("GetObject"), action))
    expect_errno(errno.EIO, (m.path / "f").read_bytes)
    assert rule.fired >= 3  # the first attempt and two retries
    assert "get_object of f" in m.log() and "gave up after 3 attempts" in m.log()
    rule.times = rule.fired  # the network is healthy again
    assert (m.path / "f").read_bytes() == data


def test_outage_shorter_than_the_retries_is_invisible(s3, bucket: str, mount,
                                                      proxy: S3Proxy) -> None:
    """Retries wait at least 0.25 + 0.5 + 1 + 2 s: a 1 s outage passes unseen."""
    s3.put_object(Bucket=bucket, Key="there", Body=b"read me")
    m = mount(bucket, "retries=4", TIMEOUTS, url=proxy.url)
    proxy.offline(1.0)
    (m.path / "written").write_bytes(b"during the outage")
    proxy.offline(1.0)
    assert (m.path / "there").read_bytes() == b"read me"
    assert body(s3, bucket, "written") == b"during the outage"


def test_offline_server_gives_eio_and_keeps_dirty_files(s3, bucket: str, mount,
                                                        proxy: S3Proxy) -> None:
    """Offline for longer than the retries: operations fail with EIO, the daemon
    lives, the dirty file stays (readable through the mount); once the server is
    back the mount answers at once and a later close uploads the file."""
    s3.put_object(Bucket=bucket, Key="known", Body=b"known")
    m = mount(bucket, "retries=1", TIMEOUTS, url=proxy.url)
    fd = os.open(m.path / "precious", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"written before the outage")
    proxy.offline()
    expect_errno(errno.EIO, os.fsync, fd)
    expect_errno(errno.EIO, os.close, fd)
    expect_errno(errno.EIO, os.stat, m.path / "unknown")
    expect_errno(errno.EIO, (m.path / "new").write_bytes, b"x")
    assert m.process.poll() is None
    assert "upload of precious failed" in m.log()
    assert (m.path / "precious").read_bytes() == b"written before the outage"
    assert keys(s3, bucket) == ["known"]
    proxy.online()
    assert (m.path / "known").read_bytes() == b"known"
    assert not (m.path / "unknown").exists()
    fd = os.open(m.path / "precious", os.O_WRONLY)
    os.close(fd)  # the flush uploads what is still dirty
    assert body(s3, bucket, "precious") == b"written before the outage"


def test_dirty_file_of_an_outage_is_uploaded_at_unmount(s3, bucket: str, mount,
                                                        proxy: S3Proxy) -> None:
    m = mount(bucket, "retries=1", TIMEOUTS, url=proxy.url)
    fd = os.open(m.path / "late", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"late data")
    proxy.offline()
    expect_errno(errno.EIO, os.close, fd)
    proxy.online()
    assert m.stop() == 0
    assert body(s3, bucket, "late") == b"late data"


def test_upload_that_finally_fails_is_eio_from_fsync_and_close(s3, bucket: str, mount,
                                                               proxy: S3Proxy) -> None:
    refuse = proxy.add(Rule(operation_is("PutObject"), Answer(503, "SlowDown")))
    m = mount(bucket, "retries=2", TIMEOUTS, url=proxy.url)
    fd = os.open(m.path / "f", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"content")
    expect_errno(errno.EIO, os.fsync, fd)
    assert refuse.fired == 3
    expect_errno(errno.EIO, os.close, fd)
    log = m.log()
    assert "put_object of f on" in log and "gave up after 3 attempts: put_object: SlowDown" in log
    assert "upload of f failed" in log
    assert keys(s3, bucket) == []
    refuse.times = refuse.fired
    fd = os.open(m.path / "f", os.O_WRONLY)
    os.fsync(fd)
    os.close(fd)
    assert body(s3, bucket, "f") == b"content"


# A workload under random faults of every kind, checked against a reference directory.

def fault_rules(probability: float) -> list[Rule]:
    """Each kind of fault on any request (body faults on downloads) with this chance.

    Corruption only hits bodies that can be checked: a whole object uploaded in
    one piece, whose ETag is its MD5. Parts of objects and multipart objects
    carry no checksum (see the README's Reliability section), so a flipped
    byte there would pass, as it would through any client; TLS guards them.
    """
    rules = [Rule(any_request, action, probability=probability)
             for action in request_faults(STALL).values()]
    for action in body_faults(STALL).values():
        if isinstance(action, Corrupt):
            action = Corrupt(action.count, checkable_only=True)
        rules.append(Rule(operation_is("GetObject"), action, probability=probability))
    return rules


class Workload:
    """Random operations done through the mount and in a reference directory alike."""

    DIRS = ("a", "b", "c/d")

    def __init__(self, mount_path: Path, reference: Path, seed: int, proxy: S3Proxy,
                 big_every: int) -> None:
        self.roots = (mount_path, reference)
        self.rng = random.Random(seed)
        self.proxy = proxy
        self.big_every = big_every
        self.files: list[str] = []
        self.serial = 0
        for root in self.roots:
            for name in self.DIRS:
                (root / name).mkdir(parents=True, exist_ok=True)

    def content(self) -> bytes:
        self.serial += 1
        big = self.big_every and self.serial % self.big_every == 0
        size = 6 * MiB if big else self.rng.choice([0, 1, 100, 4096, 70_000, 300_000])
        return self.rng.randbytes(size)

    def new_name(self) -> str:
        self.serial += 1
        return f"{self.rng.choice(self.DIRS)}/f{self.serial}"

    def step(self, number: int) -> None:
        if number % 15 == 7:
            self.proxy.offline(0.5)  # a short outage now and then
        kinds = ["create", "create"]
        if self.files:
            kinds += ["overwrite", "append", "rename", "read", "read", "delete"]
        getattr(self, self.rng.choice(kinds))()

    def create(self) -> None:
        name, data = self.new_name(), self.content()
        for root in self.roots:
            (root / name).write_bytes(data)
        self.files.append(name)

    def overwrite(self) -> None:
        name, data = self.rng.choice(self.files), self.content()
        for root in self.roots:
            (root / name).write_bytes(data)

    def append(self) -> None:
        name, data = self.rng.choice(self.files), self.rng.randbytes(self.rng.randrange(5000))
        for root in self.roots:
            with open(root / name, "ab") as f:
                f.write(data)

    def rename(self) -> None:
        old, new = self.rng.choice(self.files), self.new_name()
        for root in self.roots:
            os.rename(root / old, root / new)
        self.files[self.files.index(old)] = new

    def read(self) -> None:
        name = self.rng.choice(self.files)
        mounted, reference = ((root / name).read_bytes() for root in self.roots)
        if mounted != reference:
            differ = [i for i, (a, b) in enumerate(zip(mounted, reference, strict=False)) if a != b]
            raise AssertionError(f"{name}: {len(mounted)} bytes read, {len(reference)} "
                                 f"expected; {len(differ)} differ, from {differ[:1]}")

    def delete(self) -> None:
        name = self.rng.choice(self.files)
        for root in self.roots:
            os.remove(root / name)
        self.files.remove(name)


def put_before_mount(s3, bucket: str, reference: Path, count: int, seed: int) -> list[str]:
    """Directories and ``count`` files written by another client before the mount:
    the mount downloads them when they are read (its own writes are in the
    kernel's page cache)."""
    rng = random.Random(seed)
    for name in Workload.DIRS:
        (reference / name).mkdir(parents=True, exist_ok=True)
    for key in ("a/", "b/", "c/", "c/d/"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    names = []
    for number in range(count):
        name = f"{rng.choice(Workload.DIRS)}/old{number}"
        data = rng.randbytes(rng.choice([1, 4096, 70_000, 300_000]))
        s3.put_object(Bucket=bucket, Key=name, Body=data)
        (reference / name).write_bytes(data)
        names.append(name)
    return names


def run_workload(s3, bucket: str, mount, tmp_path: Path, s3_server, operations: int,
                 seed: int, big_every: int) -> None:
    reference = tmp_path / "reference"
    existing = put_before_mount(s3, bucket, reference, operations // 3, seed)
    with S3Proxy(s3_server.url, fault_rules(0.011), seed=seed) as proxy:
        m = mount(bucket, "retries=6", TIMEOUTS, SMALL_PARTS, url=proxy.url)
        workload = Workload(m.path, reference, seed, proxy, big_every)
        workload.files += existing
        for number in range(operations):
            workload.step(number)
        fired = proxy.fired()
        total = sum(proxy.counts().values())
        assert m.stop() == 0
    print(f"{operations} operations, {total} requests, faults injected: {dict(fired)}")
    assert sum(fired.values()) > total * 0.03  # the faults did happen
    expected = {}
    for path in sorted(reference.rglob("*")):
        name = path.relative_to(reference).as_posix()
        expected[name + "/" if path.is_dir() else name] = (
            None if path.is_dir() else path.read_bytes())
    assert keys(s3, bucket) == sorted(expected)
    for key, data in expected.items():
        if data is not None:
            assert body(s3, bucket, key) == data, key
    shutil.rmtree(reference)


def test_workload_under_faults(s3, bucket: str, mount, tmp_path: Path, s3_server) -> None:
    run_workload(s3, bucket, mount, tmp_path, s3_server, operations=60, seed=11, big_every=0)


@pytest.mark.long
@pytest.mark.timeout(1500)
def test_long_workload_under_faults(s3, bucket: str, mount, tmp_path: Path,
                                    s3_server) -> None:
    run_workload(s3, bucket, mount, tmp_path, s3_server, operations=400, seed=12,
                 big_every=40)

