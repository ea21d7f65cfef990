"""Mounting as an ordinary user: the daemon runs as a throwaway user created for
these tests and mounts through the setuid fusermount, like a user's fstab entry
or a desktop user would.

The tests' interpreter may live where that user cannot reach (e.g. under
/root); then the daemon runs on the system's Python of the same version with
the venv's packages on PYTHONPATH (same version, same ABI for llfuse), and
without its site directory (-S): Debian's dist-packages may hold other versions
of the same packages (python3-openssl warns against the venv's cryptography).
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import ACCESS_KEY, SECRET_KEY, daemon_pids, wait_until

REPOSITORY = Path(__file__).resolve().parents[2]
RUNUSER = shutil.which("runuser", path="/usr/sbin:/usr/bin:/sbin:/bin") or "runuser"


@dataclasses.dataclass
class User:
    name: str
    uid: int
    gid: int
    python: tuple[str, ...]  # the interpreter and its flags
    pythonpath: str

    def run(self, *command: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNUSER, "-u", self.name, "--", *command], env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)


def _python_for(name: str) -> tuple[tuple[str, ...], str]:
    """An interpreter ``name`` can run, and the PYTHONPATH that gives it our packages."""
    paths = [REPOSITORY, Path(sysconfig.get_paths()["purelib"]),
             Path(sysconfig.get_paths()["platlib"])]
    candidates = [os.path.realpath(sys.executable),
                  f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"]
    for python in candidates:
        readable = [str(p) for p in paths]
        check = subprocess.run(
            [RUNUSER, "-u", name, "--", python, "-S", "-c", "import llfuse, botocore, s3mount"],
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(readable)},
            capture_output=True, text=True)
        if check.returncode == 0:
            return (python, "-S"), ":".join(readable)
    pytest.fail(f"no Python that user {name} can run finds the packages "
                f"(tried {', '.join(candidates)}): {check.stderr.strip()[-300:]}")


@pytest.fixture(scope="module")
def user() -> Iterator[User]:
    name = f"s3mt{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        python, pythonpath = _python_for(name)
        yield User(name, entry.pw_uid, entry.pw_gid, python, pythonpath)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture(scope="module")
def usable_dev_fuse() -> Iterator[None]:
    """Users need read-write access to /dev/fuse (libfuse 2 opens it before it
    falls back to fusermount). Debian's udev rules make it 0666; some machines
    without udev leave it 0600, and then the tests lend the usual mode."""
    mode = os.stat("/dev/fuse").st_mode & 0o777
    if mode & 0o006 != 0o006:
        print(f"/dev/fuse has mode {mode:o}: using 0666 for the non-root tests")
        os.chmod("/dev/fuse", 0o666)
    try:
        yield
    finally:
        os.chmod("/dev/fuse", mode)


@pytest.fixture
def workdir(user: User, usable_dev_fuse: None) -> Iterator[Path]:
    """A directory the user can use: pytest's tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="s3mount-user-"))
    os.chmod(path, 0o755)
    for name in ("mnt", "home"):
        (path / name).mkdir()
        os.chown(path / name, user.uid, user.gid)
    passwd = path / "passwd-s3mount"
    passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
    os.chown(passwd, user.uid, user.gid)
    passwd.chmod(0o600)
    try:
        yield path
    finally:
        if mounted(path / "mnt"):
            subprocess.run(["fusermount", "-u", "-z", str(path / "mnt")], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def mounted(path: Path) -> bool:
    # Not os.path.ismount: root's stat of a user's mount without allow_other fails.
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == str(path) for line in f)


def user_env(user: User, workdir: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(workdir / "home"), "LANG": "C.UTF-8",
            "PYTHONPATH": user.pythonpath, "AWS_EC2_METADATA_DISABLED": "true"}


def user_mount(user: User, workdir: Path, bucket: str, options: str,
               url: str) -> subprocess.CompletedProcess[str]:
    return user.run(*user.python, "-m", "s3mount", bucket, str(workdir / "mnt"), "-o",
                    f"url={url},passwd_file={workdir / 'passwd-s3mount'},{options}".rstrip(","),
                    env=user_env(user, workdir))


def test_user_mounts_through_fusermount_and_unmounts(s3_server, s3, bucket, user, workdir):
    mnt = workdir / "mnt"
    result = user_mount(user, workdir, bucket, "", s3_server.url)
    try:
        assert result.returncode == 0, result.stderr
        assert mounted(mnt)
        [pid] = daemon_pids(mnt)
        assert os.stat(f"/proc/{pid}").st_uid == user.uid
        written = user.run("sh", "-c", f"echo 'by a user' > {mnt}/mine.txt && stat -c '%u %g' "
                           f"{mnt}/mine.txt")
        assert written.returncode == 0, written.stderr
        # Without -o uid/gid, files belong to the user who mounted.
        assert written.stdout.split() == [str(user.uid), str(user.gid)]
        # Without allow_other, nobody else gets in: not even root.
        with pytest.raises(PermissionError):
            os.listdir(mnt)
    finally:
        unmounted = user.run("fusermount", "-u", str(mnt))
    assert unmounted.returncode == 0, unmounted.stderr
    wait_until(lambda: not daemon_pids(mnt), 30, "the user's daemon to exit")
    assert s3.get_object(Bucket=bucket, Key="mine.txt")["Body"].read() == b"by a user\n"


def test_user_cannot_use_uid_0(s3_server, bucket, user, workdir):
    result = user_mount(user, workdir, bucket, "uid=0", s3_server.url)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "s3mount: only root can use uid=0 or gid=0"]
    assert not mounted(workdir / "mnt")


def test_allow_other_follows_fuse_conf(s3_server, bucket, user, workdir):
    try:
        with open("/etc/fuse.conf") as f:
            allowed = any(line.strip() == "user_allow_other" for line in f)
    except FileNotFoundError:
        allowed = False
    result = user_mount(user, workdir, bucket, "allow_other", s3_server.url)
    try:
        if allowed:
            assert result.returncode == 0, result.stderr
            assert os.listdir(workdir / "mnt") == []  # root gets in with allow_other
        else:
            assert result.returncode == 1
            assert result.stderr.strip().splitlines() == [
                "s3mount: allow_other needs the line 'user_allow_other' in /etc/fuse.conf when "
                "a user who is not root mounts: ask root to add it, or mount without it"]
            assert not mounted(workdir / "mnt")
    finally:
        if mounted(workdir / "mnt"):
            user.run("fusermount", "-u", str(workdir / "mnt"))
