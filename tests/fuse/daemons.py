"""Mounts that a test may kill with SIGKILL: started like the ``mount`` fixture,
but a killed daemon is expected, its dead mount is removed with
``fusermount -u -z``, and only daemons that were not killed must exit 0."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from helpers import READY_TIMEOUT, Mount, s3mount_command, wait_until


class Daemons:
    def __init__(self, tmp_path: Path, url: str, passwd_file: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.url = url
        self.passwd_file = passwd_file
        self.env = env
        self.mounts: list[Mount] = []
        self.killed: set[int] = set()

    def start(self, bucket: str, *options: str, url: str | None = None,
              mountpoint: Path | None = None) -> Mount:
        path = mountpoint or self.tmp_path / "mnt"
        path.mkdir(exist_ok=True)
        number = len(self.mounts)
        log_path = self.tmp_path / f"daemon{number}.log"
        base = [f"url={url or self.url}", f"passwd_file={self.passwd_file}"]
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                s3mount_command(bucket, str(path), "-f", "-o", ",".join([*base, *options])),
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        mount = Mount(path, process, log_path)
        self.mounts.append(mount)

        def mounted() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"s3mount exited with {process.returncode}: {mount.log()}")
            return os.path.ismount(path)

        wait_until(mounted, READY_TIMEOUT, f"the mount at {path}")
        return mount

    def kill(self, mount: Mount) -> None:
        """SIGKILL the daemon and remove its dead mount."""
        mount.process.send_signal(signal.SIGKILL)
        mount.process.wait(timeout=30)
        self.killed.add(id(mount))
        subprocess.run(["fusermount", "-u", "-z", str(mount.path)], check=True)

    def stop_expecting_failure(self, mount: Mount) -> int:
        """Unmount and return the daemon's exit status, which may be non-zero."""
        status = mount.stop()
        self.killed.add(id(mount))
        return status

    def close(self) -> list[str]:
        return [failure for mount in self.mounts if id(mount) not in self.killed
                for failure in mount.finish()]
