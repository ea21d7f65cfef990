"""Mount lifecycle: pre-mount errors with one clear line, every credential
source against a server that checks signatures, daemon mode, signals, and
secrets kept out of output.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import (
    ACCESS_KEY,
    SECRET_KEY,
    AuthServer,
    daemon_pids,
    free_port,
    run_s3mount,
    start_foreground,
    unmount,
    wait_until,
    write_passwd_file,
)


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int,
                          *fragments: str) -> str:
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("s3mount: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


@pytest.fixture
def mountpoint(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


def test_missing_bucket(s3_server, passwd_file, mountpoint, daemon_env):
    result = run_s3mount("no-such-bucket", str(mountpoint), "-f", "-o",
                         f"url={s3_server.url},passwd_file={passwd_file}", env=daemon_env)
    assert_one_line_error(result, 1, "no-such-bucket", "does not exist", "NoSuchBucket")
    assert not os.path.ismount(mountpoint)


def test_unreachable_endpoint(passwd_file, mountpoint, daemon_env):
    url = f"http://127.0.0.1:{free_port()}"
    result = run_s3mount("bucket", str(mountpoint), "-f", "-o",
                         f"url={url},passwd_file={passwd_file},retries=0", env=daemon_env)
    assert_one_line_error(result, 1, "cannot connect", url, "connection refused")


@pytest.mark.parametrize(("access", "secret", "code"), [
    ("real", "wrong-secret-value-123", "SignatureDoesNotMatch"),
    ("AKIANOSUCHKEY0000000", "whatever-secret-456", "InvalidAccessKeyId"),
])
def test_refused_credentials(auth_server: AuthServer, tmp_path, mountpoint, daemon_env,
                             access, secret, code):
    access = auth_server.access_key if access == "real" else access
    pw = write_passwd_file(tmp_path / "pw", f"{access}:{secret}\n")
    result = run_s3mount(auth_server.bucket, str(mountpoint), "-f", "-o",
                         f"url={auth_server.server.url},passwd_file={pw}", env=daemon_env)
    line = assert_one_line_error(result, 1, "credentials were refused", code)
    assert secret not in line


def test_world_readable_passwd_file_is_refused(s3_server, bucket, tmp_path, mountpoint,
                                               daemon_env):
    pw = tmp_path / "pw"
    pw.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
    pw.chmod(0o644)
    result = run_s3mount(bucket, str(mountpoint), "-f", "-o",
                         f"url={s3_server.url},passwd_file={pw}", env=daemon_env)
    line = assert_one_line_error(result, 1, str(pw), "chmod 600")
    assert SECRET_KEY not in line


def test_passwd_file_without_entry_for_bucket(s3_server, bucket, tmp_path, mountpoint,
                                              daemon_env):
    pw = write_passwd_file(tmp_path / "pw", f"otherbucket:{ACCESS_KEY}:{SECRET_KEY}\n")
    result = run_s3mount(bucket, str(mountpoint), "-f", "-o",
                         f"url={s3_server.url},passwd_file={pw}", env=daemon_env)
    assert_one_line_error(result, 1, bucket, str(pw))


def test_no_credentials_at_all(s3_server, bucket, mountpoint, daemon_env):
    existing = [p for p in ("/etc/passwd-s3mount", "/etc/passwd-s3fs") if os.path.exists(p)]
    if existing:
        pytest.skip(f"this machine has {existing[0]}, which would supply credentials")
    result = run_s3mount(bucket, str(mountpoint), "-f", "-o", f"url={s3_server.url}",
                         env=daemon_env)
    assert_one_line_error(result, 1, "no credentials found", "passwd_file")


@pytest.mark.parametrize("problem", ["missing", "file", "nonempty"])
def test_bad_mountpoint(s3_server, bucket, passwd_file, tmp_path, daemon_env, problem):
    path = tmp_path / "mp"
    expected = {"missing": "does not exist", "file": "not a directory",
                "nonempty": "-o nonempty"}[problem]
    if problem == "file":
        path.write_text("x")
    elif problem == "nonempty":
        path.mkdir()
        (path / "existing").write_text("x")
    result = run_s3mount(bucket, str(path), "-f", "-o",
                         f"url={s3_server.url},passwd_file={passwd_file}", env=daemon_env)
    assert_one_line_error(result, 1, str(path), expected)


def test_nonempty_option_mounts_over_files(s3, bucket, mount, tmp_path):
    path = tmp_path / "busy"
    path.mkdir()
    (path / "hidden").write_text("local")
    s3.put_object(Bucket=bucket, Key="remote", Body=b"r")
    m = mount(bucket, "nonempty", mountpoint=path)
    assert os.listdir(m.path) == ["remote"]


def _credential_setup(source: str, auth: AuthServer, home: Path, tmp_path: Path,
                      env: dict[str, str]) -> list[str]:
    """Arrange one credential source; return the extra -o options it needs."""
    key, secret = auth.access_key, auth.secret_key
    if source == "passwd_file":
        return [f"passwd_file={write_passwd_file(tmp_path / 'pw', f'{key}:{secret}')}"]
    if source == "passwd_file_bucket_line":
        pw = write_passwd_file(tmp_path / "pw", f"AKIAWRONGDEFAULT0000:nope\n"
                                                f"{auth.bucket}:{key}:{secret}\n")
        return [f"passwd_file={pw}"]
    if source == "environment":
        env.update(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    elif source == "old_environment_names":
        env.update(AWSACCESSKEYID=key, AWSSECRETACCESSKEY=secret)
    elif source == "aws_credential_file":
        env["AWS_CREDENTIAL_FILE"] = str(write_passwd_file(tmp_path / "cred", f"{key}:{secret}"))
    elif source in ("profile_option", "aws_profile_env", "default_profile"):
        (home / ".aws").mkdir()
        name = "default" if source == "default_profile" else "dev"
        (home / ".aws/credentials").write_text(
            f"[{name}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
        if source == "aws_profile_env":
            env["AWS_PROFILE"] = "dev"
        elif source == "profile_option":
            return ["profile=dev"]
    elif source in ("home_passwd_s3mount", "home_passwd_s3fs"):
        name = ".passwd-s3mount" if source == "home_passwd_s3mount" else ".passwd-s3fs"
        write_passwd_file(home / name, f"{key}:{secret}\n")
    return []


@pytest.mark.parametrize("source", [
    "passwd_file", "passwd_file_bucket_line", "environment", "old_environment_names",
    "aws_credential_file", "profile_option", "aws_profile_env", "default_profile",
    "home_passwd_s3mount", "home_passwd_s3fs",
])
def test_each_credential_source_mounts(auth_server: AuthServer, mount, daemon_env, tmp_path,
                                       source):
    """A server that checks signatures accepts the keys each source supplies."""
    env = dict(daemon_env)
    options = _credential_setup(source, auth_server, Path(env["HOME"]), tmp_path, env)
    m = mount(auth_server.bucket, *options, env=env, url=auth_server.server.url,
              credentials=False)
    assert (m.path / "proof.txt").read_bytes() == b"signed\n"
    assert "using credentials from" not in m.log() or auth_server.secret_key not in m.log()


def test_debug_log_keeps_secrets_out(auth_server: AuthServer, mount, daemon_env, tmp_path):
    env = dict(daemon_env, AWS_ACCESS_KEY_ID=auth_server.access_key,
               AWS_SECRET_ACCESS_KEY=auth_server.secret_key)
    m = mount(auth_server.bucket, "dbglevel=debug", env=env, url=auth_server.server.url,
              credentials=False)
    assert (m.path / "proof.txt").read_bytes() == b"signed\n"
    with open(f"/proc/{m.process.pid}/cmdline", "rb") as f:
        assert auth_server.secret_key.encode() not in f.read()
    log = m.log()
    assert "DEBUG" in log and "Signature=[redacted]" in log
    assert auth_server.secret_key not in log


def test_daemon_mode_returns_once_mounted(s3_server, s3, bucket, passwd_file, mountpoint,
                                          daemon_env):
    s3.put_object(Bucket=bucket, Key="ready.txt", Body=b"ready")
    result = run_s3mount(bucket, str(mountpoint), "-o",
                         f"url={s3_server.url},passwd_file={passwd_file}", env=daemon_env)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert os.path.ismount(mountpoint)
        assert (mountpoint / "ready.txt").read_bytes() == b"ready"
        pids = daemon_pids(mountpoint)
        assert len(pids) == 1
    finally:
        unmount(mountpoint)
    wait_until(lambda: not daemon_pids(mountpoint), 30, "the daemon to exit after unmount")


def test_daemon_mode_reports_errors_before_detaching(auth_server: AuthServer, tmp_path,
                                                     mountpoint, daemon_env):
    pw = write_passwd_file(tmp_path / "pw", f"{auth_server.access_key}:bad-secret-789\n")
    result = run_s3mount(auth_server.bucket, str(mountpoint), "-o",
                         f"url={auth_server.server.url},passwd_file={pw}", env=daemon_env)
    assert_one_line_error(result, 1, "SignatureDoesNotMatch")
    assert not os.path.ismount(mountpoint)
    assert not daemon_pids(mountpoint)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_signal_unmounts_and_exits_zero(s3_server, bucket, passwd_file, mountpoint,
                                        daemon_env, signal_number):
    process = start_foreground(bucket, mountpoint,
                               f"url={s3_server.url},passwd_file={passwd_file}", daemon_env)
    try:
        assert os.path.ismount(mountpoint)
        process.send_signal(signal_number)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        unmount(mountpoint)
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert not os.path.ismount(mountpoint)


def test_fusermount_unmount_exits_zero(bucket, mount):
    m = mount(bucket)
    assert m.stop() == 0
    assert not os.path.ismount(m.path)
