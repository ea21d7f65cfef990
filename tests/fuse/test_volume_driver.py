"""The Docker volume driver, spoken to as Docker does: JSON over HTTP on its unix
socket (no Docker engine needed). The driver runs as a real process, and its
mounts are real s3mount daemons against the moto server.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ACCESS_KEY, READY_TIMEOUT, SECRET_KEY, daemon_pids, unmount, wait_until

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class DriverProcess:
    """``s3mount-volume-driver`` with its socket, state and mounts under one directory."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.socket = base / "plugins" / "s3mount.sock"
        self.state_dir = base / "state"
        self.mount_root = base / "volumes"
        self.log_path = base / "driver.log"
        base.mkdir(exist_ok=True)
        self._env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "s3mount.volume_driver", "--socket", str(self.socket),
                 "--state-dir", str(self.state_dir), "--mount-root", str(self.mount_root),
                 "--log-level", "debug"],
                env=self._env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def serving() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the driver exited with {self.process.returncode}: "
                                   f"{self.log()}")
            with socket.socket(socket.AF_UNIX) as probe:
                return probe.connect_ex(str(self.socket)) == 0

        wait_until(serving, READY_TIMEOUT, "the driver's socket")

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call(self, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to the driver; every answer of a known endpoint is HTTP 200 in the
        plugin content type."""
        status, content_type, answer = self.raw_call(endpoint, body)
        assert status == 200, answer
        assert content_type == CONTENT_TYPE
        return answer

    def raw_call(self, endpoint: str,
                 body: dict[str, Any] | None = None) -> tuple[int, str, dict[str, Any]]:
        connection = _UnixConnection(str(self.socket))
        try:
            connection.request("POST", endpoint, body=json.dumps(body or {}),
                               headers={"Accept": "application/vnd.docker.plugins.v1.2+json"})
            response = connection.getresponse()
            return (response.status, response.getheader("Content-Type"),
                    json.loads(response.read()))
        finally:
            connection.close()

    def create(self, name: str, opts: dict[str, Any]) -> dict[str, Any]:
        return self.call("/VolumeDriver.Create", {"Name": name, "Opts": opts})

    def mount(self, name: str, mount_id: str) -> dict[str, Any]:
        return self.call("/VolumeDriver.Mount", {"Name": name, "ID": mount_id})

    def unmount(self, name: str, mount_id: str) -> dict[str, Any]:
        return self.call("/VolumeDriver.Unmount", {"Name": name, "ID": mount_id})


@pytest.fixture
def driver(tmp_path: Path, daemon_env: dict[str, str]) -> Iterator[DriverProcess]:
    """A running driver. At teardown it is stopped, every mount under its mount root
    is unmounted (their daemons must exit), and its log must hold no traceback."""
    running = DriverProcess(tmp_path / "driver", daemon_env)
    running.start()
    yield running
    status = running.stop() if running.process.poll() is None else running.process.returncode
    for path in running.mount_root.glob("*"):
        pids = daemon_pids(path)
        unmount(path)
        wait_until(lambda p=pids: not any(os.path.exists(f"/proc/{pid}") for pid in p), 30,
                   f"the daemon of {path} to exit")
    assert status == 0, running.log()
    assert "Traceback" not in running.log()


@pytest.fixture
def volume_opts(s3_server, bucket: str, passwd_file: Path) -> dict[str, str]:
    """Docker-style options (every value a string) for the test bucket."""
    return {"bucket": bucket, "url": s3_server.url, "passwd_file": str(passwd_file)}


def daemon_of(path: str) -> int:
    pids = daemon_pids(Path(path))
    assert len(pids) == 1, pids
    return pids[0]


def process_exited(pid: int) -> Callable[[], bool]:
    def exited() -> bool:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                return f.read().rpartition(b")")[2].split()[0] == b"Z"
        except FileNotFoundError:
            return True

    return exited


# --------------------------------------------------------------------------
# Protocol


def test_activate_and_capabilities(driver: DriverProcess) -> None:
    assert driver.call("/Plugin.Activate") == {"Implements": ["VolumeDriver"]}
    assert driver.call("/VolumeDriver.Capabilities") == {"Capabilities": {"Scope": "local"}}
    assert driver.call("/VolumeDriver.List") == {"Volumes": []}
    status, content_type, answer = driver.raw_call("/VolumeDriver.Snapshot", {"Name": "x"})
    assert (status, content_type) == (404, CONTENT_TYPE)
    assert answer == {"Err": "unknown endpoint /VolumeDriver.Snapshot"}


def test_create_checks_the_options(driver: DriverProcess, volume_opts) -> None:
    assert driver.create("good", {**volume_opts, "allow_other": "", "uid": "1000"}) == {}
    # Docker repeats Create for a volume it knows, often without options.
    assert driver.create("good", {}) == {}
    assert driver.create("good", {**volume_opts, "ro": ""}) == {
        "Err": "volume good already exists with other options: remove it first"}

    unknown = driver.create("bad", {**volume_opts, "colour": "blue"})
    assert unknown["Err"].startswith("unknown volume option 'colour': give an s3mount -o "
                                     "option (see s3mount --help) or a Cloud Foundry")
    assert driver.create("bad", {**volume_opts, "multipart_size": "1"}) == {
        "Err": "bad value '1' for option 'multipart_size': must be at least 5"}
    assert driver.create("bad", {"url": volume_opts["url"]}) == {
        "Err": "the volume needs a bucket: add -o bucket=NAME (or NAME:/PREFIX)"}
    assert driver.create("../escape", volume_opts)["Err"].startswith(
        "'../escape' is not a valid volume name")
    assert driver.call("/VolumeDriver.Create", {"Opts": volume_opts}) == {
        "Err": "the request has no volume Name"}

    assert driver.call("/VolumeDriver.List") == {"Volumes": [
        {"Name": "good", "Mountpoint": str(driver.mount_root / "good")}]}
    volume = driver.call("/VolumeDriver.Get", {"Name": "good"})["Volume"]
    assert volume["Name"] == "good"
    assert volume["Status"] == {
        "mounted": False, "containers": 0, "bucket": volume_opts["bucket"],
        "options": f"url={volume_opts['url']},passwd_file={volume_opts['passwd_file']},"
                   "allow_other,uid=1000"}
    assert driver.call("/VolumeDriver.Get", {"Name": "bad"}) == {"Err": "no such volume: bad"}
    assert driver.call("/VolumeDriver.Path", {"Name": "good"}) == {
        "Mountpoint": str(driver.mount_root / "good")}
    assert driver.call("/VolumeDriver.Remove", {"Name": "good"}) == {}
    assert driver.call("/VolumeDriver.List") == {"Volumes": []}
    assert driver.call("/VolumeDriver.Remove", {"Name": "good"}) == {
        "Err": "no such volume: good"}


def test_a_failed_mount_is_one_clear_error(driver: DriverProcess, volume_opts) -> None:
    driver.create("nobucket", {**volume_opts, "bucket": "no-such-bucket-here"})
    answer = driver.mount("nobucket", "c1")
    assert answer["Err"].startswith("cannot mount volume nobucket: ")
    assert "no-such-bucket-here" in answer["Err"] and "\n" not in answer["Err"]
    assert not os.path.ismount(driver.mount_root / "nobucket")
    assert driver.call("/VolumeDriver.Get", {"Name": "nobucket"})["Volume"]["Status"][
        "containers"] == 0


# --------------------------------------------------------------------------
# Mounting


def test_two_containers_share_one_daemon(driver: DriverProcess, volume_opts, s3,
                                         bucket: str) -> None:
    assert driver.create("shared", volume_opts) == {}
    first = driver.mount("shared", "container-a")
    mountpoint = first["Mountpoint"]
    assert first == {"Mountpoint": str(driver.mount_root / "shared")}
    assert os.path.ismount(mountpoint)
    pid = daemon_of(mountpoint)

    Path(mountpoint, "hello.txt").write_text("written through the volume\n")
    body = s3.get_object(Bucket=bucket, Key="hello.txt")["Body"].read()
    assert body == b"written through the volume\n"

    assert driver.mount("shared", "container-b") == first
    assert driver.mount("shared", "container-a") == first  # a repeat counts once
    assert daemon_of(mountpoint) == pid
    status = driver.call("/VolumeDriver.Get", {"Name": "shared"})["Volume"]["Status"]
    assert (status["mounted"], status["containers"]) == (True, 2)

    assert driver.call("/VolumeDriver.Remove", {"Name": "shared"}) == {
        "Err": "volume shared is in use by 2 container(s): stop them first"}
    assert driver.unmount("shared", "container-a") == {}
    assert driver.unmount("shared", "container-a") == {}  # a repeat is harmless
    assert os.path.ismount(mountpoint) and daemon_of(mountpoint) == pid
    assert Path(mountpoint, "hello.txt").read_text() == "written through the volume\n"

    assert driver.unmount("shared", "container-b") == {}
    # The Unmount answer comes after the daemon has exited.
    assert not os.path.ismount(mountpoint)
    assert process_exited(pid)()
    assert driver.call("/VolumeDriver.Remove", {"Name": "shared"}) == {}
    assert not os.path.exists(mountpoint)
    # The data stays in the bucket.
    assert s3.head_object(Bucket=bucket, Key="hello.txt")["ContentLength"] == 27


def test_restart_keeps_volumes_readopts_live_mounts_and_clears_dead_ones(
        driver: DriverProcess, volume_opts, s3, bucket: str) -> None:
    driver.create("alive", volume_opts)
    driver.create("crashed", volume_opts)
    driver.create("idle", volume_opts)
    alive = driver.mount("alive", "c1")["Mountpoint"]
    crashed = driver.mount("crashed", "c2")["Mountpoint"]
    alive_pid, crashed_pid = daemon_of(alive), daemon_of(crashed)

    assert driver.stop() == 0
    assert "stopped; volumes still mounted stay mounted" in driver.log()
    # The mounts outlive the driver; one daemon dies while the driver is away.
    assert os.path.ismount(alive) and os.path.ismount(crashed)
    os.kill(crashed_pid, signal.SIGKILL)
    wait_until(process_exited(crashed_pid), 30, "the killed daemon to exit")

    driver.start()
    assert [v["Name"] for v in driver.call("/VolumeDriver.List")["Volumes"]] == [
        "alive", "crashed", "idle"]
    assert "volume alive: re-adopted its mount, used by 1 container(s)" in driver.log()
    status = driver.call("/VolumeDriver.Get", {"Name": "alive"})["Volume"]["Status"]
    assert (status["mounted"], status["containers"]) == (True, 1)
    assert driver.mount("alive", "c3") == {"Mountpoint": alive}
    assert daemon_of(alive) == alive_pid  # no second daemon

    # The dead mount was detached; the volume mounts again.
    assert not os.path.ismount(crashed)
    status = driver.call("/VolumeDriver.Get", {"Name": "crashed"})["Volume"]["Status"]
    assert (status["mounted"], status["containers"]) == (False, 0)
    assert driver.mount("crashed", "c4") == {"Mountpoint": crashed}
    Path(crashed, "again.txt").write_text("after the crash")
    assert s3.get_object(Bucket=bucket, Key="again.txt")["Body"].read() == b"after the crash"
    assert driver.unmount("crashed", "c4") == {}

    assert driver.unmount("alive", "c1") == {}
    assert os.path.ismount(alive)
    assert driver.unmount("alive", "c3") == {}
    assert not os.path.ismount(alive) and process_exited(alive_pid)()


# --------------------------------------------------------------------------
# Cloud Foundry and secrets


def every_command_line() -> bytes:
    lines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    lines.append(f.read())
            except OSError:
                continue
    return b"\n".join(lines)


def test_cloud_foundry_mount_config_mounts_and_keeps_the_keys_secret(
        driver: DriverProcess, s3_server, s3, bucket: str, tmp_path: Path) -> None:
    daemon_log = tmp_path / "s3mount.log"
    # The mount_config of Cloud Foundry's S3 volume service, as JSON (a nested map).
    mount_config = {"endpoint": s3_server.url, "access_key_id": ACCESS_KEY,
                    "secret_access_key": SECRET_KEY, "bucket": bucket, "region": "us-east-1",
                    "mount_options": {}}
    assert driver.create("cf-volume", mount_config) == {}
    mountpoint = driver.mount("cf-volume", "app-instance-1")["Mountpoint"]
    Path(mountpoint, "from-cf.txt").write_text("cloud foundry\n")
    assert s3.get_object(Bucket=bucket, Key="from-cf.txt")["Body"].read() == b"cloud foundry\n"
    assert sorted(os.listdir(mountpoint)) == ["from-cf.txt"]

    # A second volume with the same keys, and the daemon's own debug log.
    driver.create("cf-debug", {**mount_config, "mount_options": {
        "dbglevel": "debug", "logfile": str(daemon_log)}})
    debug_mountpoint = driver.mount("cf-debug", "app-instance-2")["Mountpoint"]
    assert Path(debug_mountpoint, "from-cf.txt").read_text() == "cloud foundry\n"

    secret = SECRET_KEY.encode()
    assert secret not in every_command_line()
    listing = json.dumps([driver.call("/VolumeDriver.List"),
                          driver.call("/VolumeDriver.Get", {"Name": "cf-volume"}),
                          driver.call("/VolumeDriver.Get", {"Name": "cf-debug"})])
    assert SECRET_KEY not in listing and ACCESS_KEY not in listing
    assert "Authorization" in daemon_log.read_text() or "Signature" in daemon_log.read_text()
    assert SECRET_KEY not in daemon_log.read_text()

    for name, mount_id in (("cf-volume", "app-instance-1"), ("cf-debug", "app-instance-2")):
        assert driver.unmount(name, mount_id) == {}
    assert driver.stop() == 0
    log = driver.log()
    assert "created volume cf-volume" in log and "mounting volume cf-volume" in log
    assert SECRET_KEY not in log and ACCESS_KEY not in log

    # The state files keep the keys (a restarted driver needs them) but only for root.
    for path in driver.state_dir.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o777 == 0o600, path
    assert (driver.state_dir / "credentials" / "cf-volume").read_text() == \
        f"{ACCESS_KEY}:{SECRET_KEY}\n"
    driver.start()  # for the fixture's teardown


def test_one_driver_per_socket_and_a_stale_socket_is_replaced(driver: DriverProcess,
                                                             daemon_env) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "s3mount.volume_driver", "--socket", str(driver.socket),
         "--state-dir", str(driver.state_dir), "--mount-root", str(driver.mount_root)],
        env=daemon_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1] == (
        f"s3mount-volume-driver: another driver is already serving {driver.socket}: "
        "stop it first")
    assert driver.call("/Plugin.Activate") == {"Implements": ["VolumeDriver"]}

    # A driver killed outright leaves its socket file behind; the next one replaces it.
    driver.process.kill()
    driver.process.wait()
    assert driver.socket.exists()
    driver.start()
    assert driver.call("/Plugin.Activate") == {"Implements": ["VolumeDriver"]}
    assert (driver.socket.stat().st_mode & 0o777) == 0o600
