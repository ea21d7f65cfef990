"""Starting and stopping the s3mount daemon of a volume.

Each mount is the real ``s3mount`` command in detached mode, which returns once
the mount is usable (or with its one-line error). The daemon is not a child of
the driver: it outlives a driver restart, and the next driver finds it by its
mount point.
"""

from __future__ import annotations

import enum
import errno
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping

from .errors import S3mountError

log = logging.getLogger(__name__)

# Variables of the driver's own environment that must not reach a mount:
# systemd's notification socket belongs to the driver, and S3MOUNT_* would add
# options or a bucket to every volume.
_PRIVATE_VARIABLES = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                      "S3MOUNT_BUCKET", "S3MOUNT_MOUNTPOINT", "S3MOUNT_OPTIONS")


class MountState(enum.Enum):
    ABSENT = "absent"  # not a mount point
    ALIVE = "alive"
    DEAD = "dead"  # a FUSE mount whose daemon is gone ("transport endpoint is not connected")


def _unescape(field: str) -> str:
    """/proc/self/mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field


def mount_points(mountinfo: str = "/proc/self/mountinfo") -> set[str]:
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        return {_unescape(line.split()[4]) for line in f if line.strip()}


def mount_state(path: str) -> MountState:
    if path not in mount_points():
        return MountState.ABSENT
    try:
        # statfs always reaches the daemon; stat could be answered from the kernel's cache.
        os.statvfs(path)
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            return MountState.DEAD
        raise
    return MountState.ALIVE


def daemon_pids(mountpoint: str) -> list[int]:
    """PIDs of the s3mount processes serving ``mountpoint`` (found by their command line)."""
    wanted = os.fsencode(mountpoint)
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
        except OSError:
            continue
        if wanted in words and any(word.endswith(b"s3mount") for word in words):
            pids.append(int(entry))
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # A zombie has exited; only its parent's wait is missing.
            return f.read().rpartition(b")")[2].split()[0] != b"Z"
    except OSError:
        return False


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The explicit environment of a mount: the driver's, without its private variables."""
    return {key: value for key, value in environ.items() if key not in _PRIVATE_VARIABLES}


class Mounter:
    def __init__(self, mount_root: str, environ: Mapping[str, str], *,
                 mount_timeout: float = 120.0, unmount_timeout: float = 60.0) -> None:
        self.mount_root = os.path.abspath(mount_root)
        self._environ = child_environment(environ)
        self._mount_timeout = mount_timeout
        self._unmount_timeout = unmount_timeout
        os.makedirs(self.mount_root, mode=0o755, exist_ok=True)

    def mountpoint(self, name: str) -> str:
        return os.path.join(self.mount_root, name)

    def mount(self, name: str, source: str, options: Iterable[str]) -> None:
        """Mount ``source`` at the volume's mount point; returns once it is usable."""
        path = self.mountpoint(name)
        os.makedirs(path, mode=0o755, exist_ok=True)
        command = [sys.executable, "-m", "s3mount", source, path]
        items = list(options)
        if items:
            command += ["-o", ",".join(items)]
        log.info("mounting volume %s: s3mount %s", name, " ".join(command[3:]))
        try:
            result = subprocess.run(command, env=self._environ, cwd="/", capture_output=True,
                                    text=True, timeout=self._mount_timeout,
                                    stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            self.cleanup(name)
            raise S3mountError(f"mounting volume {name} took more than "
                               f"{self._mount_timeout:g} seconds; see the s3mount log") from None
        if result.returncode != 0:
            lines = [line.removeprefix("s3mount: ") for line in result.stderr.splitlines()
                     if line.strip()]
            reason = lines[-1] if lines else f"s3mount exited with status {result.returncode}"
            raise S3mountError(f"cannot mount volume {name}: {reason}")
        log.info("mounted volume %s at %s", name, path)

    def unmount(self, name: str) -> None:
        """Unmount the volume and wait for its daemon to finish (it uploads what is left)."""
        path = self.mountpoint(name)
        pids = daemon_pids(path)
        result = subprocess.run(["fusermount", "-u", path], capture_output=True, text=True,
                                stdin=subprocess.DEVNULL, env=self._environ)
        if result.returncode != 0 and mount_state(path) is not MountState.ABSENT:
            reason = result.stderr.strip().rpartition(": ")[2] or "fusermount failed"
            raise S3mountError(f"cannot unmount volume {name}: {reason}")
        deadline = time.monotonic() + self._unmount_timeout
        while any(_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                log.warning("the s3mount daemon of volume %s (PID %s) is still running %g "
                            "seconds after the unmount", name,
                            ",".join(map(str, pids)), self._unmount_timeout)
                break
            time.sleep(0.05)
        log.info("unmounted volume %s", name)

    def cleanup(self, name: str) -> None:
        """Detach a dead mount (its daemon crashed) so the volume can mount again."""
        path = self.mountpoint(name)
        if mount_state(path) is MountState.DEAD:
            log.warning("volume %s: detaching the dead mount at %s", name, path)
            subprocess.run(["fusermount", "-u", "-z", path], capture_output=True,
                           stdin=subprocess.DEVNULL, env=self._environ)

    def remove_mountpoint(self, name: str) -> None:
        try:
            os.rmdir(self.mountpoint(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot remove the mount point of volume %s: %s", name, exc.strerror)
