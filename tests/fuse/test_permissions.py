"""With allow_other, the kernel checks permissions (default_permissions): another
user gets EACCES where the modes say so and cannot give files away (EPERM).

The mount is root's; a throwaway user (made as in test_nonroot.py) uses it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_nonroot import User, user  # noqa: F401 - the fixture

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a second user")

CHECK = r'''
import errno, os, sys
results = {}
def attempt(label, action):
    try:
        action()
        results[label] = "ok"
    except OSError as exc:
        results[label] = errno.errorcode[exc.errno]
m = sys.argv[1]
attempt("read private", lambda: open(m + "/private").read())
attempt("read public", lambda: open(m + "/public").read())
attempt("write public", lambda: open(m + "/public", "a").write("x"))
attempt("list closed dir", lambda: os.listdir(m + "/closed"))
attempt("create in closed dir", lambda: open(m + "/closed/new", "w").close())
attempt("create in root-owned dir", lambda: open(m + "/shared/new", "w").close())
attempt("unlink in root-owned dir", lambda: os.unlink(m + "/shared/file"))
attempt("chmod root's file", lambda: os.chmod(m + "/public", 0o666))
attempt("chown own file to root", lambda: os.chown(m + "/mine", 0, -1))
attempt("chgrp own file to root", lambda: os.chown(m + "/mine", -1, 0))
attempt("write own file", lambda: open(m + "/mine", "a").write("more"))
attempt("chmod own file", lambda: os.chmod(m + "/mine", 0o600))
attempt("create in open dir", lambda: open(m + "/open/made", "w").write("by user"))
for label, outcome in results.items():
    print(f"{label}: {outcome}")
'''

EXPECTED = {
    "read private": "EACCES",
    "read public": "ok",
    "write public": "EACCES",
    "list closed dir": "EACCES",
    "create in closed dir": "EACCES",
    "create in root-owned dir": "EACCES",
    "unlink in root-owned dir": "EACCES",
    "chmod root's file": "EPERM",
    "chown own file to root": "EPERM",
    "chgrp own file to root": "EPERM",
    "write own file": "ok",
    "chmod own file": "ok",
    "create in open dir": "ok",
}


@pytest.fixture
def shared_mountpoint() -> Iterator[Path]:
    """A mount point other users can reach: pytest's tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="s3mount-shared-"))
    os.chmod(path, 0o755)
    try:
        yield path / "mnt"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def mount_options(path: Path) -> set[str]:
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == str(path):
                return set(fields[3].split(","))
    raise AssertionError(f"{path} is not mounted")


def test_other_users_get_what_the_modes_allow(s3, bucket, mount, user: User,  # noqa: F811
                                              shared_mountpoint):
    m = mount(bucket, "allow_other", mountpoint=shared_mountpoint)
    options = mount_options(m.path)
    assert {"allow_other", "default_permissions"} <= options, options
    mnt = m.path
    (mnt / "private").write_text("secret")
    (mnt / "private").chmod(0o600)
    (mnt / "public").write_text("hello")
    (mnt / "public").chmod(0o644)
    (mnt / "closed").mkdir(mode=0o700)
    (mnt / "shared").mkdir(mode=0o755)
    (mnt / "shared" / "file").write_text("root's")
    (mnt / "open").mkdir(mode=0o777)
    (mnt / "open").chmod(0o777)
    (mnt / "mine").write_text("user's")
    os.chown(mnt / "mine", user.uid, user.gid)  # root may give files away

    result = user.run(*user.python, "-c", CHECK, str(mnt),
                      env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    assert result.returncode == 0, result.stderr
    outcomes = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert outcomes == EXPECTED

    # What the bucket holds agrees: nothing the user was refused happened.
    head = s3.head_object(Bucket=bucket, Key="mine")["Metadata"]
    assert (head["uid"], head["gid"]) == (str(user.uid), str(user.gid))
    assert int(head["mode"]) & 0o777 == 0o600
    assert s3.get_object(Bucket=bucket, Key="public")["Body"].read() == b"hello"
    assert s3.get_object(Bucket=bucket, Key="shared/file")["Body"].read() == b"root's"
    made = s3.head_object(Bucket=bucket, Key="open/made")["Metadata"]
    assert (made["uid"], made["gid"]) == (str(user.uid), str(user.gid))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "closed/new" not in keys and "shared/new" not in keys
