"""The write journal: records, block ranges, sparse data files, and sessions of
dead mounts found through their flock."""

from __future__ import annotations

import os

from s3mount.journal import Journal, Record, block_ranges, block_set, data_blocks
from s3mount.meta import Attr
from s3mount.transfer import Original

BLOCK = 1024 * 1024


def record(**changes) -> Record:
    fields = dict(
        key="dir/file.txt", attr=Attr(mode=0o100644, uid=1, gid=2, size=5, mtime_ns=10,
                                      ctime_ns=11, atime_ns=12),
        original=Original("dir/file.txt", '"etag"', 3), original_limit=3,
        loaded=[(0, 2), (5, 6)], xattrs={"user.x": b"\x00\xff"}, keep={"other": "v"},
        content_type="text/plain", upload_id="abc", upload_key="dir/file.txt")
    fields.update(changes)
    return Record(**fields)


def test_record_round_trips_through_json():
    for rec in (record(), record(original=None, upload_id=None, upload_key=None, xattrs={})):
        assert Record.from_json(rec.to_json()) == rec


def test_block_ranges_and_sets():
    assert block_ranges({0, 1, 2, 5, 7, 8}) == [(0, 3), (5, 6), (7, 9)]
    assert block_ranges(set()) == []
    assert block_set([(0, 3), (5, 6)]) == {0, 1, 2, 5}


def test_data_blocks_finds_written_blocks_of_a_sparse_file(tmp_path):
    path = tmp_path / "sparse"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.pwrite(fd, b"x", 3 * BLOCK + 10)
        os.pwrite(fd, b"y" * 10, BLOCK - 5)  # crosses into block 1
        os.ftruncate(fd, 8 * BLOCK)
        assert data_blocks(fd, BLOCK) == {0, 1, 3}
    finally:
        os.close(fd)


def test_records_of_a_live_session_are_not_taken_those_of_a_dead_one_are(tmp_path):
    first = Journal(str(tmp_path), durable=True)
    name, fd = first.new_data_file()
    os.pwrite(fd, b"hello", 0)
    first.write(name, record(), fd)
    os.close(fd)
    second = Journal(str(tmp_path), durable=True)
    assert list(second.abandoned()) == []  # first still holds its lock
    first.close(keep_records=True)
    [session] = list(second.abandoned())
    [(data_path, found)] = list(session.records())
    assert found == record()
    with open(data_path, "rb") as f:
        assert f.read() == b"hello"
    adopted_name, adopted_fd = second.adopt(data_path)
    os.close(adopted_fd)
    session.forget(data_path)
    session.close()
    assert not os.path.exists(session.directory)
    assert os.path.exists(os.path.join(second.directory, adopted_name + ".data"))
    second.close(keep_records=False)
    assert os.listdir(tmp_path / "journal") == []


def test_a_removed_record_is_not_found(tmp_path):
    first = Journal(str(tmp_path), durable=True)
    name, fd = first.new_data_file()
    first.write(name, record(), fd)
    first.remove(name)
    os.close(fd)
    first.close(keep_records=True)
    second = Journal(str(tmp_path), durable=True)
    [session] = list(second.abandoned())
    assert list(session.records()) == []
    session.close()  # the data file without a record is dropped with the directory
    assert not os.path.exists(session.directory)
    second.close(keep_records=False)


def test_an_unreadable_record_is_reported_and_kept(tmp_path, caplog):
    first = Journal(str(tmp_path), durable=True)
    name, fd = first.new_data_file()
    os.close(fd)
    with open(os.path.join(first.directory, name + ".json"), "w") as f:
        f.write("{not json")
    first.close(keep_records=True)
    second = Journal(str(tmp_path), durable=True)
    [session] = list(second.abandoned())
    assert [found for _, found in session.records()] == [None]
    session.close()
    assert os.path.exists(session.directory)
    assert "cannot read the journal record" in caplog.text
    second.close(keep_records=False)


def test_without_durability_nothing_is_recorded(tmp_path):
    journal = Journal(str(tmp_path), durable=False)
    name, fd = journal.new_data_file()
    journal.write(name, record(), fd)
    assert not journal.has_record(name)
    os.close(fd)
    journal.close(keep_records=False)


def test_partial_blocks_round_trip_and_version_1_records_still_read():
    rec = record(partial={6: [(6 * BLOCK + 5, 6 * BLOCK + 10)], 9: [(9 * BLOCK, 9 * BLOCK + 1)]})
    assert Record.from_json(rec.to_json()) == rec
    old = record().to_json()
    old["version"] = 1
    del old["partial"]
    assert Record.from_json(old) == record()
