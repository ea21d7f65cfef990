"""Mounting from fstab entries with util-linux mount(8), both forms:

    bucket /mnt s3mount      _netdev,...   (mount(8) runs /sbin/mount.s3mount)
    bucket /mnt fuse.s3mount _netdev,...   (mount(8) runs mount.fuse, which runs s3mount)

Both need the commands where `make install` puts them: the tests put the venv's
there for their duration (keeping installed ones aside) and restore what was there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import daemon_pids, wait_until

VENV_BIN = Path(sys.executable).parent
# mount(8) runs helpers with an empty environment, so mount.fuse's shell finds
# s3mount only on its default PATH, where `make install` puts it.
INSTALLED = {Path("/sbin/mount.s3mount"): VENV_BIN / "mount.s3mount",
             Path("/usr/local/bin/s3mount"): VENV_BIN / "s3mount"}


@pytest.fixture
def installed_commands() -> Iterator[None]:
    """The venv's commands where `make install` puts them, for the test's duration."""
    kept: dict[Path, Path] = {}
    for place, ours in INSTALLED.items():
        assert ours.exists(), f"{ours} is missing: the venv lacks the console script"
        if place.exists() or place.is_symlink():
            kept[place] = place.with_name(place.name + ".kept-by-tests")
            place.rename(kept[place])
        place.parent.mkdir(parents=True, exist_ok=True)
        place.symlink_to(ours)
    try:
        yield
    finally:
        for place in INSTALLED:
            place.unlink()
            if place in kept:
                kept[place].rename(place)


@pytest.fixture
def mountpoint(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@pytest.mark.parametrize("fstype", ["s3mount", "fuse.s3mount"])
def test_mount_from_fstab_and_umount(s3_server, s3, bucket, passwd_file, mountpoint, daemon_env,
                                     tmp_path, installed_commands, fstype):
    s3.put_object(Bucket=bucket, Key="hello.txt", Body=b"from fstab")
    options = (f"_netdev,nofail,x-systemd.automount,x-systemd.mount-timeout=30,defaults,"
               f"url={s3_server.url},passwd_file={passwd_file},uid=1234")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# test fstab\n{bucket} {mountpoint} {fstype} {options} 0 0\n")
    result = subprocess.run(["mount", "--fstab", str(fstab), str(mountpoint)],
                            env=daemon_env, capture_output=True, text=True,
                            timeout=60)
    try:
        assert result.returncode == 0, result.stderr
        # mount(8) returns once the mount is usable.
        assert os.path.ismount(mountpoint)
        assert (mountpoint / "hello.txt").read_bytes() == b"from fstab"
        assert (mountpoint / "hello.txt").stat().st_uid == 1234
        (mountpoint / "written.txt").write_bytes(b"through fstab")
        assert len(daemon_pids(mountpoint)) == 1
    finally:
        unmounted = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True,
                                   timeout=60)
    assert unmounted.returncode == 0, unmounted.stderr
    wait_until(lambda: not daemon_pids(mountpoint), 30, "the daemon to exit after umount")
    assert s3.get_object(Bucket=bucket, Key="written.txt")["Body"].read() == b"through fstab"


def test_fstab_mount_with_a_bad_option_fails_with_one_line(s3_server, bucket, passwd_file,
                                                           mountpoint, daemon_env, tmp_path,
                                                           installed_commands):
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{bucket} {mountpoint} s3mount _netdev,nosuchoption,"
                     f"url={s3_server.url},passwd_file={passwd_file} 0 0\n")
    result = subprocess.run(["mount", "--fstab", str(fstab), str(mountpoint)],
                            env=daemon_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "unknown option 'nosuchoption'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.ismount(mountpoint)
