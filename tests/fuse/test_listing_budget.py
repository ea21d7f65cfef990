"""Cached listings count their entries against max_stat_cache_size: through a
real mount, a directory within the budget is listed once and its lookups use
the listing; one larger than the budget is not kept, so it is listed again at
the next readdir and its lookups ask S3 (a LIST and a HEAD)."""

from __future__ import annotations

import json
import os
import subprocess

STATS = "user.s3mount.stats"


def lists(mountpoint) -> int:
    result = subprocess.run(["getfattr", "-n", STATS, "--only-values", str(mountpoint)],
                            capture_output=True, check=True)
    return json.loads(result.stdout)["requests"].get("ListObjectsV2", 0)


def test_a_listing_larger_than_the_budget_is_not_kept(s3, bucket, mount):
    for name, count in (("big", 30), ("small", 5)):
        for number in range(count):
            s3.put_object(Bucket=bucket, Key=f"{name}/f{number}", Body=b"x")
    m = mount(bucket, "max_stat_cache_size=20", "update_parent_dir_stat=0")

    for name, count, kept in (("small", 5, True), ("big", 30, False)):
        assert (m.path / name).is_dir()  # its own lookup (a LIST) is not counted
        before = lists(m.path)
        assert len(os.listdir(m.path / name)) == count
        assert lists(m.path) - before == 1
        assert len(os.listdir(m.path / name)) == count  # within the TTL
        assert lists(m.path) - before == (1 if kept else 2)
        os.stat(m.path / name / "f1")
        # Kept: the lookup comes from the listing (a HEAD); not kept: the lookup
        # probes with a LIST beside its HEAD.
        assert lists(m.path) - before == (1 if kept else 3), name
