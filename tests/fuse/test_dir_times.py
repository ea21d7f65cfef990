"""Directory mtime/ctime after entries are added or removed: stored in the
directory's marker, coalesced (one self-copy per directory for a burst of
changes), and flushed at unmount.
"""

from __future__ import annotations

import os

from helpers import wait_until
from s3proxy import Answer, Rule

from s3mount.meta import parse_time_ns


def marker_times(s3, bucket: str, key: str) -> tuple[int, int]:
    meta = s3.head_object(Bucket=bucket, Key=key)["Metadata"]
    return parse_time_ns(meta["mtime"]), parse_time_ns(meta["ctime"])


def record_copies_of(proxy, key: str) -> list[str]:
    """Self-copies of ``key`` that pass the proxy (a rule that watches, never fires)."""
    copies: list[str] = []

    def watch(request) -> bool:
        if request.operation == "CopyObject" and request.target.split("?")[0].endswith(
                "/" + key):
            copies.append(request.target)
        return False

    proxy.add(Rule(watch, Answer(500, "InternalError")))
    return copies


def test_creating_a_file_stores_the_parent_times(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "d").mkdir()
    made = marker_times(s3, bucket, "d/")
    (m.path / "d" / "f.txt").write_text("x")
    shown = os.stat(m.path / "d")
    assert shown.st_mtime_ns > made[0]
    wait_until(lambda: marker_times(s3, bucket, "d/")[0] > made[0], 30,
               "the directory's new mtime in its marker")
    stored = marker_times(s3, bucket, "d/")
    assert stored[0] >= shown.st_mtime_ns and stored[1] >= shown.st_ctime_ns
    assert s3.head_object(Bucket=bucket, Key="d/")["ContentType"] == "application/x-directory"


def test_times_survive_a_remount(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "d").mkdir()
    (m.path / "d" / "a").write_text("a")
    (m.path / "d" / "b").write_text("b")
    os.unlink(m.path / "d" / "a")
    expected = os.stat(m.path / "d").st_mtime_ns
    assert m.stop() == 0  # unmount stores what is still pending
    assert marker_times(s3, bucket, "d/")[0] == expected
    again = mount(bucket)
    assert os.stat(again.path / "d").st_mtime_ns == expected


def test_a_burst_of_changes_costs_few_requests(s3, bucket, mount, proxy, s3_server):
    copies = record_copies_of(proxy, "d/")
    m = mount(bucket, url=proxy.url)
    (m.path / "d").mkdir()
    for number in range(60):
        (m.path / "d" / f"f{number}").write_bytes(b"")
    os.rename(m.path / "d" / "f0", m.path / "d" / "renamed")
    os.unlink(m.path / "d" / "f1")
    assert m.stop() == 0
    # One self-copy per quiet second or five busy ones, not one per change (62).
    assert 1 <= len(copies) <= 10
    assert marker_times(s3, bucket, "d/")[0] >= parse_time_ns(
        s3.head_object(Bucket=bucket, Key="d/f59")["Metadata"]["mtime"])


def test_rmdir_and_rename_update_the_parent(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "p").mkdir()
    (m.path / "p" / "child").mkdir()
    (m.path / "p" / "file").write_text("x")
    assert m.stop() == 0
    before = marker_times(s3, bucket, "p/")[0]
    m = mount(bucket)
    os.rmdir(m.path / "p" / "child")
    os.rename(m.path / "p" / "file", m.path / "p" / "moved")
    assert m.stop() == 0
    assert marker_times(s3, bucket, "p/")[0] > before


def test_implicit_directories_get_no_marker(s3, bucket, mount):
    s3.put_object(Bucket=bucket, Key="implicit/existing.txt", Body=b"x")
    m = mount(bucket)
    (m.path / "implicit" / "new.txt").write_text("y")
    assert m.stop() == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {"implicit/existing.txt", "implicit/new.txt"}


def test_a_removed_directory_is_not_brought_back(s3, bucket, mount):
    m = mount(bucket)
    (m.path / "gone").mkdir()
    (m.path / "gone" / "f").write_text("x")
    os.unlink(m.path / "gone" / "f")
    os.rmdir(m.path / "gone")
    assert m.stop() == 0
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_update_parent_dir_stat_off_leaves_markers_alone(s3, bucket, mount, proxy):
    copies = record_copies_of(proxy, "d/")
    m = mount(bucket, "update_parent_dir_stat=0", url=proxy.url)
    (m.path / "d").mkdir()
    made = marker_times(s3, bucket, "d/")
    (m.path / "d" / "f").write_text("x")
    assert os.stat(m.path / "d").st_mtime_ns > made[0]  # shown in memory all the same
    assert m.stop() == 0
    assert copies == []
    assert marker_times(s3, bucket, "d/") == made


def test_an_mtime_set_after_the_changes_is_kept(s3, bucket, mount):
    # tar sets a directory's mtime after extracting its entries; the pending
    # update from those entries must not overwrite it.
    m = mount(bucket)
    (m.path / "d").mkdir()
    (m.path / "d" / "f").write_text("x")
    os.utime(m.path / "d", ns=(1_500_000_000_000_000_000, 1_500_000_000_123_456_789))
    assert m.stop() == 0
    assert marker_times(s3, bucket, "d/")[0] == 1_500_000_000_123_456_789
