"""Threads of one mount overwrite one file (O_TRUNC and one write each) while
others read it. Reads during the race may see any state; once every writer has
closed, a fresh open and read returns what the bucket holds: no page of the
kernel's cache from the racing period survives."""

from __future__ import annotations

import os
import threading

import pytest

WRITERS = 4
READERS = 4
ROUNDS = 60


def content(writer: int, round_: int) -> bytes:
    # Different lengths, so a page left from another version shows as a mix.
    line = f"writer {writer} round {round_}\n".encode()
    return line * (200 + 37 * writer + round_)


@pytest.mark.parametrize("attempt", range(3))
def test_a_fresh_read_after_racing_overwrites_is_what_the_bucket_holds(s3, bucket, mount,
                                                                       attempt):
    m = mount(bucket)
    path = m.path / "raced"
    path.write_bytes(content(0, 0))
    done = threading.Event()
    errors: list[BaseException] = []

    def writer(number: int) -> None:
        try:
            for round_ in range(ROUNDS):
                fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
                try:
                    os.write(fd, content(number, round_))
                finally:
                    os.close(fd)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        while not done.is_set():
            try:
                with open(path, "rb") as f:
                    f.read()
            except OSError:
                pass  # ESTALE and the like are allowed while writers race

    readers = [threading.Thread(target=reader) for _ in range(READERS)]
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join(timeout=300)
    done.set()
    for thread in readers:
        thread.join(timeout=60)
    assert not errors, errors
    # Overlapping O_TRUNC and write of two writers may legitimately leave a mix
    # of them; whatever it is, the bucket holds it, and a fresh read must too.
    stored = s3.get_object(Bucket=bucket, Key="raced")["Body"].read()
    with open(path, "rb") as f:
        seen = f.read()
    assert seen == stored, (len(seen), len(stored), seen[:64], seen[-64:])
