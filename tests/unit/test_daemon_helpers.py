"""daemon.py's helpers: the mount table check that tells a user's SIGUSR1 from
llfuse's, and the malloc tuning."""

from __future__ import annotations

import platform

from s3mount.daemon import is_mounted, tune_malloc


def test_is_mounted_reads_the_mount_table(tmp_path):
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
        "95 22 0:52 / /tmp/with\\040space rw,nosuid,nodev,relatime shared:50 - "
        "fuse.s3mount bucket rw,user_id=0,group_id=0\n")
    assert is_mounted("/tmp/with space", str(table))
    assert not is_mounted("/tmp/other", str(table))
    assert is_mounted("/tmp/x", str(tmp_path / "missing"))  # cannot tell: assume mounted


def test_malloc_is_tuned_on_glibc():
    libc, _ = platform.libc_ver()
    if libc != "glibc":
        print(f"not glibc ({libc or 'unknown'}): tune_malloc must report False")
        assert tune_malloc() is False
    else:
        assert tune_malloc() is True
