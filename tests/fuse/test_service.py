"""Running as a service: systemd's READY=1, the log file and SIGHUP, clean
shutdown on signals with dirty files, configuration from the environment, and
secrets kept out of everything a debug run shows.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulating_proxy import EmulatingProxy
from helpers import (
    AuthServer,
    daemon_pids,
    run_s3mount,
    s3mount_command,
    start_foreground,
    unmount,
    wait_until,
)
from s3proxy import Answer, Rule, operation_is


@pytest.fixture
def mountpoint(tmp_path: Path) -> Path:
    path = tmp_path / "mnt"
    path.mkdir()
    return path


@contextlib.contextmanager
def notify_socket(path: str) -> Iterator[socket.socket]:
    """A stand-in for systemd's notification socket ("@name" is an abstract one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + path[1:] if path.startswith("@") else path)
    sock.settimeout(30)
    try:
        yield sock
    finally:
        sock.close()


def stop_daemon(mountpoint: Path) -> None:
    unmount(mountpoint)
    wait_until(lambda: not daemon_pids(mountpoint), 30, "the daemon to exit")


# --------------------------------------------------------------------------
# systemd notification


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_foreground_mount_sends_ready_then_stopping(s3_server, bucket, passwd_file, mountpoint,
                                                    daemon_env, tmp_path, abstract):
    address = f"@s3mount-test-{os.getpid()}-{tmp_path.name}" if abstract else \
        str(tmp_path / "notify")
    with notify_socket(address) as sock:
        process = subprocess.Popen(
            s3mount_command(bucket, str(mountpoint), "-f", "-o",
                            f"url={s3_server.url},passwd_file={passwd_file}"),
            env={**daemon_env, "NOTIFY_SOCKET": address}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        try:
            message = sock.recv(4096).decode()
            assert "READY=1" in message.split("\n")
            # READY=1 means usable: the mount answers at once.
            assert os.path.ismount(mountpoint)
            assert os.listdir(mountpoint) == []
            process.send_signal(signal.SIGTERM)
            assert "STOPPING=1" in sock.recv(4096).decode().split("\n")
            output, _ = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
            unmount(mountpoint)
    assert process.returncode == 0, output


def test_daemon_mode_sends_ready_with_the_daemon_pid(s3_server, bucket, passwd_file,
                                                      mountpoint, daemon_env, tmp_path):
    address = str(tmp_path / "notify")
    with notify_socket(address) as sock:
        result = run_s3mount(bucket, str(mountpoint), "-o",
                             f"url={s3_server.url},passwd_file={passwd_file}",
                             env={**daemon_env, "NOTIFY_SOCKET": address})
        try:
            assert result.returncode == 0, result.stderr
            fields = dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n")
                          if line)
            assert fields["READY"] == "1"
            assert [int(fields["MAINPID"])] == daemon_pids(mountpoint)
        finally:
            stop_daemon(mountpoint)


# --------------------------------------------------------------------------
# Log file


def test_logfile_gets_the_daemon_log_and_is_reopened_on_sighup(s3_server, bucket, passwd_file,
                                                                mountpoint, daemon_env, tmp_path):
    log_path = tmp_path / "s3mount.log"
    result = run_s3mount(bucket, str(mountpoint), "-o",
                         f"url={s3_server.url},passwd_file={passwd_file},dbglevel=info,"
                         f"logfile={log_path}", env=daemon_env)
    try:
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert f"mounted {bucket} at {mountpoint}" in log_path.read_text()
        [pid] = daemon_pids(mountpoint)

        rotated = tmp_path / "s3mount.log.1"
        log_path.rename(rotated)
        os.kill(pid, signal.SIGHUP)
        wait_until(log_path.exists, 30, "the log file to be reopened")
        wait_until(lambda: "log file reopened" in log_path.read_text(), 30, "the log line")
        assert "received SIGHUP" in rotated.read_text()
        # Still mounted and serving after SIGHUP (llfuse's own handling would unmount).
        (mountpoint / "after-hup.txt").write_text("still here")
        assert daemon_pids(mountpoint) == [pid]
    finally:
        stop_daemon(mountpoint)
    assert f"unmounted {mountpoint}" in log_path.read_text()
    assert "Traceback" not in log_path.read_text() + rotated.read_text()


@pytest.mark.parametrize("stamped", [True, False])
def test_no_time_stamp_msg_drops_the_time_in_front_of_log_lines(
        s3_server, bucket, passwd_file, mountpoint, daemon_env, tmp_path, stamped):
    log_path = tmp_path / "s3mount.log"
    options = (f"url={s3_server.url},passwd_file={passwd_file},dbglevel=info,"
               f"logfile={log_path}" + ("" if stamped else ",no_time_stamp_msg"))
    result = run_s3mount(bucket, str(mountpoint), "-o", options, env=daemon_env)
    try:
        assert result.returncode == 0, result.stderr
    finally:
        stop_daemon(mountpoint)
    lines = log_path.read_text().splitlines()
    assert any(f"mounted {bucket} at {mountpoint}" in line for line in lines)
    dated = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", line)]
    assert dated == (lines if stamped else [])
    if not stamped:  # the mounting process's lines, then the daemon's
        assert all(re.match(r"s3mount\[\d+\] (INFO|WARNING|ERROR) ", line) for line in lines)


def test_instance_name_marks_log_lines_and_the_user_agent(s3_server, bucket, mount):
    with EmulatingProxy(s3_server.url) as proxy:
        m = mount(bucket, "instance_name=nightly-1", "dbglevel=info", url=proxy.url)
        (m.path / "f").write_bytes(b"data")
        assert os.stat(m.path / "f").st_size == 4
        assert m.stop() == 0
        agents = {r.operation: r.headers.get("user-agent", "") for r in proxy.requests}
    assert {"PutObject", "HeadObject"} <= set(agents)
    assert all(agent.startswith("Botocore/") and " s3mount/" in agent
               and agent.endswith(" instance/nightly-1") for agent in agents.values()), agents
    lines = [line for line in m.log().splitlines() if line.strip()]
    assert any("[nightly-1] mounted " in line for line in lines), lines
    assert all("[nightly-1] " in line for line in lines), lines


def test_unwritable_logfile_is_a_one_line_error(s3_server, bucket, passwd_file, mountpoint,
                                                daemon_env, tmp_path):
    result = run_s3mount(bucket, str(mountpoint), "-o",
                         f"url={s3_server.url},passwd_file={passwd_file},"
                         f"logfile={tmp_path}/no/such/dir/s3mount.log", env=daemon_env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"s3mount: cannot open the log file {tmp_path}/no/such/dir/s3mount.log: No such file "
        "or directory; check -o logfile="]
    assert not os.path.ismount(mountpoint)


# --------------------------------------------------------------------------
# Clean shutdown


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_uploads_a_file_still_open_for_writing(s3, bucket, mount, signal_number):
    m = mount(bucket)
    data = os.urandom(3 * 1024 * 1024 + 17)
    fd = os.open(m.path / "dirty.bin", os.O_CREAT | os.O_WRONLY)
    try:
        os.write(fd, data)
        m.process.send_signal(signal_number)
        assert m.process.wait(timeout=60) == 0, m.log()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="dirty.bin")["Body"].read() == data
    assert not os.path.ismount(m.path)


def test_stop_signal_reports_files_that_could_not_be_uploaded(s3, bucket, proxy, passwd_file,
                                                              mountpoint, daemon_env):
    proxy.add(Rule(operation_is("PutObject"), Answer(403, "AccessDenied")))
    process = start_foreground(bucket, mountpoint, f"url={proxy.url},passwd_file={passwd_file}",
                               daemon_env)
    try:
        fd = os.open(mountpoint / "refused.txt", os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"the server refuses this")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        with contextlib.suppress(OSError):
            os.close(fd)
    finally:
        if process.poll() is None:
            process.kill()
        unmount(mountpoint)
    assert process.returncode == 1, output
    assert "could not upload 1 changed files: refused.txt" in output
    assert "Traceback" not in output


# --------------------------------------------------------------------------
# Configuration from the environment (containers, systemd units)


def test_bucket_mountpoint_and_options_from_the_environment(s3_server, s3, bucket, passwd_file,
                                                            mountpoint, daemon_env):
    s3.put_object(Bucket=bucket, Key="from-env.txt", Body=b"configured by the environment")
    env = {**daemon_env, "S3MOUNT_BUCKET": bucket, "S3MOUNT_MOUNTPOINT": str(mountpoint),
           "S3MOUNT_OPTIONS": f"url={s3_server.url},passwd_file={passwd_file},ro"}
    result = run_s3mount(env=env)
    try:
        assert result.returncode == 0, result.stderr
        assert (mountpoint / "from-env.txt").read_bytes() == b"configured by the environment"
        with pytest.raises(OSError) as info:
            (mountpoint / "new.txt").write_text("x")
        assert info.value.errno == 30  # EROFS: ro came from S3MOUNT_OPTIONS
    finally:
        stop_daemon(mountpoint)


# --------------------------------------------------------------------------
# Secrets


def test_debug_daemon_keeps_secrets_out_of_log_output_and_process_title(
        auth_server: AuthServer, mountpoint, daemon_env, tmp_path):
    log_path = tmp_path / "debug.log"
    env = {**daemon_env, "AWS_ACCESS_KEY_ID": auth_server.access_key,
           "AWS_SECRET_ACCESS_KEY": auth_server.secret_key}
    result = run_s3mount(auth_server.bucket, str(mountpoint), "-o",
                         f"url={auth_server.server.url},dbglevel=debug,logfile={log_path}",
                         env=env)
    try:
        assert result.returncode == 0, result.stderr
        (mountpoint / "secret-test.txt").write_text("some data")
        assert (mountpoint / "secret-test.txt").read_text() == "some data"
        [pid] = daemon_pids(mountpoint)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        comm = Path(f"/proc/{pid}/comm").read_bytes()
    finally:
        stop_daemon(mountpoint)
    log = log_path.read_text()
    assert "DEBUG" in log and "Signature=[redacted]" in log
    secret = auth_server.secret_key
    for shown in (log, result.stdout, result.stderr, cmdline.decode(), comm.decode()):
        assert secret not in shown
        assert secret[:12] not in shown
