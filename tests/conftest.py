"""Test harness: a real S3 protocol server (moto in server mode) on loopback,
fresh buckets, and real mounts of the actual ``s3mount`` command in a
subprocess with an explicit environment.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import botocore.session
import pytest
from botocore.config import Config

READY_TIMEOUT = 30.0
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
    def __init__(self, log_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **(extra_env or {})}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )

        def accepting() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited; see {log_path}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepting, READY_TIMEOUT, "the moto server")

    def client(self, service: str = "s3", access_key: str = ACCESS_KEY,
               secret_key: str = SECRET_KEY):
        return botocore.session.get_session().create_client(
            service, endpoint_url=self.url, region_name="us-east-1",
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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@dataclasses.dataclass
class AuthServer:
    """A moto server that checks signatures, with one IAM user allowed everything."""

    server: MotoServer
    access_key: str
    secret_key: str
    bucket: str


@pytest.fixture(scope="session")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthServer]:
    # moto lets the first N requests through unsigned; they create the user and bucket.
    server = MotoServer(tmp_path_factory.mktemp("moto-auth") / "moto.log",
                        {"INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    iam = server.client("iam")
    iam.create_user(UserName="tester")
    key = iam.create_access_key(UserName="tester")["AccessKey"]
    iam.put_user_policy(UserName="tester", PolicyName="all", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }))
    s3 = server.client("s3", key["AccessKeyId"], key["SecretAccessKey"])
    s3.create_bucket(Bucket="authbucket")
    s3.put_object(Bucket="authbucket", Key="proof.txt", Body=b"signed\n")
    yield AuthServer(server, key["AccessKeyId"], key["SecretAccessKey"], "authbucket")
    server.stop()


@pytest.fixture
def s3(s3_server: MotoServer):
    return s3_server.client()


@pytest.fixture
def bucket(s3) -> str:
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


def write_passwd_file(path: Path, content: str) -> Path:
    path.write_text(content)
    path.chmod(0o600)
    return path


@pytest.fixture
def passwd_file(tmp_path: Path) -> Path:
    return write_passwd_file(tmp_path / "passwd-s3mount", f"{ACCESS_KEY}:{SECRET_KEY}\n")


@pytest.fixture
def daemon_env(tmp_path: Path) -> dict[str, str]:
    """The daemon's whole environment: no AWS_* or CA variables from the machine."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        # Never let botocore's credential chain reach for instance metadata.
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3mount_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "s3mount", *args]


def run_s3mount(*args: str, env: dict[str, str],
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(s3mount_command(*args), env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


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


MountFactory = Callable[..., Mount]


@pytest.fixture
def mount(tmp_path: Path, s3_server: MotoServer, passwd_file: Path,
          daemon_env: dict[str, str]) -> Iterator[MountFactory]:
    """Start ``s3mount BUCKET MOUNTPOINT -f`` and wait until it is mounted.

    At teardown every mount is unmounted; the daemon must exit 0 and its log
    must hold no traceback.
    """
    mounts: list[Mount] = []

    def start(source: str, *options: str, env: dict[str, str] | None = None,
              url: str | None = None, credentials: bool = True,
              mountpoint: Path | None = None) -> Mount:
        path = mountpoint or tmp_path / f"mnt{len(mounts)}"
        path.mkdir(exist_ok=True)
        base = [f"url={url or s3_server.url}"]
        if credentials:
            base.append(f"passwd_file={passwd_file}")
        log_path = tmp_path / f"daemon{len(mounts)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                s3mount_command(source, str(path), "-f", "-o", ",".join([*base, *options])),
                env=env or daemon_env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        result = Mount(path, process, log_path)

        def mounted() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"s3mount exited with {process.returncode}: {result.log()}")
            return os.path.ismount(path)

        wait_until(mounted, READY_TIMEOUT, f"the mount at {path}")
        mounts.append(result)
        return result

    yield start
    failures = []
    for m in mounts:
        if m.process.poll() is None:
            status = m.stop()
        else:
            unmount(m.path)
            status = m.process.returncode
        text = m.log()
        if status != 0:
            failures.append(f"{m.path}: daemon exited with {status}:\n{text}")
        if "Traceback" in text:
            failures.append(f"{m.path}: traceback in the daemon log:\n{text}")
    assert not failures, "\n".join(failures)

