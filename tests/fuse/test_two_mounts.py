"""Two daemons mount the same bucket: what one changes, the other shows once its cached
attributes and listings expire (stat_cache_expire), and their simultaneous writes to
different files never disturb each other."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from helpers import wait_until

TTL = "stat_cache_expire=1"
PATIENCE = 30  # seconds to wait for a change to show; the TTL is 1 s


def content(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def shows(path: Path, expected: bytes | None) -> bool:
    return content(path) == expected


def test_a_change_through_one_mount_shows_in_the_other(s3, bucket, mount):
    one, two = mount(bucket, TTL), mount(bucket, TTL)
    # The second mount has looked and cached that the name does not exist.
    assert content(two.path / "note.txt") is None
    assert os.listdir(two.path) == []

    (one.path / "note.txt").write_bytes(b"first")
    wait_until(lambda: shows(two.path / "note.txt", b"first"), PATIENCE, "the new file")
    assert os.listdir(two.path) == ["note.txt"]

    (one.path / "note.txt").write_bytes(b"second, longer")
    wait_until(lambda: shows(two.path / "note.txt", b"second, longer"), PATIENCE,
               "the new content")

    os.chmod(one.path / "note.txt", 0o600)
    wait_until(lambda: os.stat(two.path / "note.txt").st_mode & 0o777 == 0o600, PATIENCE,
               "the new mode")

    os.mkdir(one.path / "dir")
    os.rename(one.path / "note.txt", one.path / "dir" / "moved.txt")
    wait_until(lambda: sorted(os.listdir(two.path)) == ["dir"], PATIENCE, "the rename")
    assert (two.path / "dir" / "moved.txt").read_bytes() == b"second, longer"

    # And back the other way.
    (two.path / "dir" / "reply.txt").write_bytes(b"from two")
    wait_until(lambda: shows(one.path / "dir" / "reply.txt", b"from two"), PATIENCE,
               "the reply")
    os.unlink(two.path / "dir" / "moved.txt")
    wait_until(lambda: os.listdir(one.path / "dir") == ["reply.txt"], PATIENCE, "the delete")
    assert content(one.path / "dir" / "moved.txt") is None
    assert one.process.poll() is None and two.process.poll() is None


FILES_EACH = 12


def write_many(root: Path, tag: str, errors: list[str]) -> None:
    try:
        for i in range(FILES_EACH):
            (root / "shared" / f"{tag}-{i}").write_bytes(f"{tag} {i}\n".encode() * (i + 1))
            if i % 5 == 0:
                os.listdir(root / "shared")
    except OSError as exc:
        errors.append(f"{tag}: {exc}")


def test_simultaneous_writes_to_different_files(s3, bucket, mount):
    one, two = mount(bucket, TTL), mount(bucket, TTL)
    os.mkdir(one.path / "shared")
    wait_until(lambda: (two.path / "shared").is_dir(), PATIENCE, "the shared directory")
    errors: list[str] = []
    threads = [threading.Thread(target=write_many, args=(m.path, tag, errors))
               for m, tag in ((one, "one"), (two, "two"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors

    expected = {f"{tag}-{i}": f"{tag} {i}\n".encode() * (i + 1)
                for tag in ("one", "two") for i in range(FILES_EACH)}
    stored = {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
              for o in s3.list_objects_v2(Bucket=bucket, Prefix="shared/")["Contents"]
              if o["Key"] != "shared/"}
    assert stored == {f"shared/{name}": data for name, data in expected.items()}
    for m in (one, two):
        wait_until(lambda m=m: sorted(os.listdir(m.path / "shared")) == sorted(expected),
                   PATIENCE, f"all files listed in {m.path}")
        assert {name: (m.path / "shared" / name).read_bytes() for name in expected} == expected
