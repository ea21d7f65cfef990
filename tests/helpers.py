"""Shared test helpers: the moto server, running s3mount, waiting and unmounting."""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import botocore.session
from botocore.config import Config

from s3mount import volume_mounts

READY_TIMEOUT = 30.0
# moto's server with only its per-request dispatch made cheaper (no answer changes).
MOTO_LAUNCHER = Path(__file__).resolve().parent.parent / "bench" / "moto_server.py"
ACCESS_KEY = "AKIATESTTESTTEST0000"
SECRET_KEY = "testsecret/0123456789abcdefghijklmnopqrst"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll for readiness; a time-out fails with what was awaited (not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


class MotoServer:
    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None,
                 tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: (certificate, key) files to serve https with."""
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        tls_args = ["-c", str(tls[0]), "-k", str(tls[1])] if tls else []
        env = {**os.environ, **(extra_env or {})}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, str(MOTO_LAUNCHER), "--dispatch-only",
             "-H", "127.0.0.1", "-p", str(self.port), *tls_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

        def accepting() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited; see {log_path}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepting, READY_TIMEOUT, "the moto server")

    def client(self, service: str = "s3", access_key: str = ACCESS_KEY,
               secret_key: str = SECRET_KEY, verify: str | bool | None = None):
        return botocore.session.get_session().create_client(
            service, endpoint_url=self.url, region_name="us-east-1", verify=verify,
            aws_access_key_id=access_key, aws_secret_access_key=secret_key,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16,
                          request_checksum_calculation="when_required"),
        )

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


@dataclasses.dataclass
class AuthServer:
    """A moto server that checks signatures, with one IAM user allowed everything."""

    server: MotoServer
    access_key: str
    secret_key: str
    bucket: str


def write_passwd_file(path: Path, content: str) -> Path:
    path.write_text(content)
    path.chmod(0o600)
    return path


def s3mount_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "s3mount", *args]


def run_s3mount(*args: str, env: dict[str, str],
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(s3mount_command(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def daemon_pids(mountpoint: Path) -> list[int]:
    """PIDs of s3mount processes (any entry point) that serve ``mountpoint``."""
    return volume_mounts.daemon_pids(str(mountpoint))


def start_foreground(source: str, mountpoint: Path, options: str,
                     env: dict[str, str]) -> subprocess.Popen:
    """``s3mount SOURCE MOUNTPOINT -f -o OPTIONS`` with its output in a pipe,
    returned once it has mounted or exited (the caller checks which)."""
    process = subprocess.Popen(s3mount_command(source, str(mountpoint), "-f", "-o", options),
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    wait_until(lambda: os.path.ismount(mountpoint) or process.poll() is not None, 30,
               "the mount")
    return process


def unmount(path: str | Path) -> None:
    for _ in range(50):
        if not os.path.ismount(path):
            return
        result = subprocess.run(["fusermount", "-u", str(path)], capture_output=True)
        if result.returncode == 0:
            return
        time.sleep(0.1)
    subprocess.run(["fusermount", "-u", "-z", str(path)], capture_output=True)


@dataclasses.dataclass
class Mount:
    path: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """Unmount and return the daemon's exit status."""
        unmount(self.path)
        return self.process.wait(timeout=30)

    def finish(self) -> list[str]:
        """Unmount if still mounted; what went wrong: a non-zero exit status, a
        traceback in the log."""
        if self.process.poll() is None:
            status = self.stop()
        else:
            unmount(self.path)
            status = self.process.returncode
        text = self.log()
        failures = []
        if status != 0:
            failures.append(f"{self.path}: daemon exited with {status}:\n{text}")
        if "Traceback" in text:
            failures.append(f"{self.path}: traceback in the daemon log:\n{text}")
        return failures


def payload(size: int, seed: int = 1) -> bytes:
    """``size`` reproducible random bytes."""
    return random.Random(seed).randbytes(size)


class MemorySource:
    """Bytes in memory as a transfer.DataSource; ``changed`` are the (start, end)
    ranges that differ from the original object, ``reads`` what was read."""

    def __init__(self, data: bytes, changed: tuple[tuple[int, int], ...] = ()) -> None:
        self.data = data
        self.size = len(data)
        self.changed = changed
        self.reads: list[tuple[int, int]] = []

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        return self.data[offset:offset + length]

    def read_into(self, offset: int, into: memoryview) -> int:
        data = self.read(offset, len(into))
        into[:len(data)] = data
        return len(data)

    def unchanged(self, offset: int, length: int) -> bool:
        return not any(start < offset + length and offset < end for start, end in self.changed)


def body(s3, bucket: str, key: str) -> bytes:
    """An object's content, read directly from the bucket."""
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket: str) -> list[str]:
    """Every key of the bucket, sorted."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def uploads(s3, bucket: str) -> list[dict]:
    """The multipart uploads in progress in the bucket."""
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
