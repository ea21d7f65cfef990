"""Test fixtures: a real S3 protocol server (moto in server mode) on loopback,
fresh buckets, and real mounts of the actual ``s3mount`` command in a
subprocess with an explicit environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import (
    ACCESS_KEY,
    READY_TIMEOUT,
    SECRET_KEY,
    AuthServer,
    MotoServer,
    Mount,
    s3mount_command,
    unmount,
    wait_until,
    write_passwd_file,
)
from s3proxy import S3Proxy


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


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

        try:
            wait_until(mounted, READY_TIMEOUT, f"the mount at {path}")
        except BaseException:
            process.kill()
            process.wait()
            unmount(path)  # a mount left by the killed daemon is dead: remove it
            raise
        mounts.append(result)
        return result

    yield start
    failures = [failure for m in mounts for failure in m.finish()]
    assert not failures, "\n".join(failures)



@pytest.fixture
def proxy(s3_server: MotoServer) -> Iterator[S3Proxy]:
    """A rule-based proxy in front of the S3 server, for counting and refusing requests."""
    with S3Proxy(s3_server.url) as running:
        yield running
