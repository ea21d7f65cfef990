#!/usr/bin/env python3
"""Benchmark s3mount against s3fs-fuse on a local S3 server (``make bench``).

One moto server on 127.0.0.1 for the whole run, and in front of it one relay
(relay.py) that delays each direction by RTT/2 and counts every request. For
each RTT, each run and each tool, a fresh bucket is mounted through the relay
and the workloads of workloads.py run on it, in order. Progress goes to
stderr; the tables (markdown) to stdout, and everything measured to a JSON
file. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from workloads import (
    BY_NAME,
    FULL,
    QUICK,
    SEEDS,
    WORKLOADS,
    MiB,
    Sizes,
    Tarball,
    Workload,
    WorkloadError,
    build_tarball,
    make_source,
)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
TOOLS = ("s3mount", "s3fs")
ACCESS_KEY = "AKIABENCHBENCHBENCH0"
SECRET_KEY = "bench/secret/0123456789abcdefghijklmnopq"
READY_TIMEOUT = 30.0
STARTED = time.monotonic()


def progress(message: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}", file=sys.stderr, flush=True)


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- The server and the relay -------------------------------------------------------------


# moto keeps every object bigger than 5 MiB in a temporary file and its glibc gives
# freed memory back at once, so each uploaded part was written to a file and
# faulted in anew: 44% of moto's CPU in a random_write was page faults (perf), and
# the server, not the client, set the time. Objects stay in memory and freed
# memory is kept for reuse, as a real server's buffers are. No block is mmapped:
# glibc mmaps what is bigger than 32 MiB at most (a Complete's concatenated object)
# and unmaps it when it is freed, so every big upload faulted 256 MiB in anew.
SERVER_MEMORY_ENV = {
    "MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 40),
    "MALLOC_ARENA_MAX": "1",
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": str(1 << 40),
    "MALLOC_TOP_PAD_": str(256 << 20),
}
SERVER_MEMORY_NOTE = ("objects in memory, freed memory kept ("
                      + ", ".join(f"{name}={value}" for name, value in SERVER_MEMORY_ENV.items())
                      + ")")


class MotoServer:
    """moto in server mode on loopback; its objects live in tmpfs when there is one.

    Started through moto_server.py, which makes ranged reads cost what the range
    costs and keeps connections open, as S3 does (``plain``: moto as it is;
    ``closing``: patched, but closing every connection after one answer, as
    Werkzeug, moto's HTTP server, does by itself).
    """

    def __init__(self, workdir: Path, data_dir: Path, plain: bool = False,
                 closing: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "moto.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "TMPDIR": str(data_dir), **({} if plain else SERVER_MEMORY_ENV)}
        launcher = ["-m", "moto.server"] if plain else [str(BENCH / "moto_server.py")]
        if not (plain or closing):
            launcher.append("--keep-connections")
        self.process = subprocess.Popen(
            [sys.executable, *launcher, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)  # a terminal's ^C reaches the runner, which stops it

        def accepting() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the moto server exited: {tail(self.log_path)}")
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(accepting, READY_TIMEOUT, "the moto server")
        first = self.log_path.read_text(errors="replace").splitlines()[:1]
        self.patches = "none (plain moto)" if plain else (
            (first[0].split("patches ", 1)[-1] if first else "unknown")
            + "; memory: " + SERVER_MEMORY_NOTE)
        self.client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16,
                          retries={"max_attempts": 5, "mode": "standard"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))

    def warm_up(self, source: Path, rounds: int = 2) -> None:
        """Upload the big file (parts of 8 MiB, 4 at a time) and delete it, ``rounds``
        times, before anything is timed: the first 256 MiB a fresh moto receives cost
        it page faults on new memory that later ones do not, and that first run would
        be one tool's (s3mount alone, 0 ms, 2 x 4 runs: the first seq_write 1.6-1.7 s,
        the others 1.0-1.4 s; with the warm-up the first is one of the others)."""
        bucket, key, part_size = "bench-warm-up", "big", 8 * MiB
        self.client.create_bucket(Bucket=bucket)
        try:
            for _ in range(rounds):
                upload = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

                def send(number: int, upload: str = upload) -> dict:
                    with open(source, "rb") as data:
                        data.seek((number - 1) * part_size)
                        body = data.read(part_size)
                    answer = self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload,
                                                     PartNumber=number, Body=body)
                    return {"PartNumber": number, "ETag": answer["ETag"]}

                count = -(-source.stat().st_size // part_size)
                with ThreadPoolExecutor(4) as pool:
                    parts = list(pool.map(send, range(1, count + 1)))
                self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                      MultipartUpload={"Parts": parts})
                self.client.delete_object(Bucket=bucket, Key=key)
        finally:
            self.empty_and_delete(bucket)

    def empty_and_delete(self, bucket: str) -> None:
        client = self.client
        with contextlib.suppress(Exception):
            for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
                client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"],
                                              UploadId=upload["UploadId"])
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


class RelayProcess:
    """relay.py in a process of its own, driven over its stdin and stdout."""

    def __init__(self, upstream: str, log_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH / "relay.py"), "--upstream", upstream,
             "--log", str(log_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
            start_new_session=True)
        self.port = self._read()["port"]
        self.url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the relay exited")
        return json.loads(line)

    def _ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def stats(self) -> dict:
        return self._ask("stats")

    def set_rtt(self, rtt_ms: float) -> None:
        self._ask(f"rtt {rtt_ms}")

    def settle(self, quiet: float = 0.3, limit: float = 5.0) -> dict:
        """Stats once no request arrived for ``quiet`` seconds (at most ``limit``)."""
        stats = self.stats()
        deadline, still_since = time.monotonic() + limit, time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.stats()
            if now["requests"] != stats["requests"]:
                still_since = time.monotonic()
            stats = now
            if time.monotonic() - still_since >= quiet:
                break
        return stats

    def stop(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def request_delta(before: dict, after: dict) -> dict:
    def minus(key: str) -> dict[str, int]:
        diff = {name: after[key].get(name, 0) - before[key].get(name, 0) for name in after[key]}
        return {name: n for name, n in sorted(diff.items(), key=lambda kv: -kv[1]) if n}

    return {"total": after["requests"] - before["requests"], "classes": minus("classes"),
            "operations": minus("operations"),
            "bytes_up": after["bytes_up"] - before["bytes_up"],
            "bytes_down": after["bytes_down"] - before["bytes_down"],
            "connections": after["connections"] - before["connections"],
            "upstream_connections": (after.get("upstream_connections", 0)
                                     - before.get("upstream_connections", 0)),
            "expect_continue": after.get("expect_continue", 0) - before.get("expect_continue", 0),
            "seq": [before["requests"] + 1, after["requests"]]}


# --- The mounts -----------------------------------------------------------------------------


class MountError(Exception):
    pass


def vm_kib(pid: int, field: str = "VmHWM") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU time of a process and all its threads so far."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()  # the name may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU_PROCESSES = ("daemon", "server", "relay")


def cpu_delta(before: dict, after: dict) -> dict[str, float]:
    return {name: round(after[name] - before[name], 3) for name in CPU_PROCESSES
            if before.get(name) is not None and after.get(name) is not None}


class Daemon:
    """One s3mount or s3fs process, in the foreground (-f) as our child."""

    def __init__(self, tool: str, program: str, bucket: str, mountpoint: Path, url: str,
                 passwd: Path, env: dict[str, str], log_path: Path, extra: list[str]) -> None:
        self.tool, self.mountpoint, self.log_path = tool, mountpoint, log_path
        options = [f"url={url}", f"passwd_file={passwd}"]
        if tool == "s3fs":
            options.append("use_path_request_style")
        self.argv = [program, bucket, str(mountpoint), "-f", "-o", ",".join(options + extra)]
        self.env = env
        self.process: subprocess.Popen | None = None
        self.peak_kib = 0

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env,
                                            start_new_session=True)

        def mounted() -> bool:
            if self.process.poll() is not None:
                raise MountError(f"{self.tool} exited with {self.process.returncode} while "
                                 f"mounting: {tail(self.log_path, 5)}")
            return os.path.ismount(self.mountpoint)

        try:
            wait_until(mounted, READY_TIMEOUT, f"the {self.tool} mount")
        except TimeoutError as error:
            self.kill()
            raise MountError(f"{error}: {tail(self.log_path, 5)}") from error

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return (self.process is not None and self.process.poll() is None
                and os.path.ismount(self.mountpoint))

    def sample(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.peak_kib = max(self.peak_kib, vm_kib(self.process.pid) or 0)

    def stop(self) -> int | None:
        """Unmount and wait for the daemon to exit; its exit status (None: killed)."""
        if self.process is None:
            return None
        self.sample()
        for _ in range(100):
            if not os.path.ismount(self.mountpoint) or self.process.poll() is not None:
                break
            if subprocess.run(["fusermount", "-u", str(self.mountpoint)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            self.kill()  # still busy after 20 s
            return None
        try:
            # s3mount uploads what is still dirty at unmount: give it time.
            return self.process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount", "-u", "-z", str(self.mountpoint)], capture_output=True)


class RssSampler(threading.Thread):
    """Samples the peak RSS (VmHWM) of the current daemon twice a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss")
        self.daemon_ref: Daemon | None = None
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.5):
            current = self.daemon_ref
            if current is not None:
                current.sample()


# --- One session: a tool, an RTT, a run -----------------------------------------------------


@dataclasses.dataclass
class Settings:
    sizes: Sizes
    rtts: list[float]
    runs: int
    tools: list[str]
    workloads: list[Workload]
    timeout: float
    max_cell_seconds: float
    extra_options: dict[str, list[str]]
    programs: dict[str, str]
    plain_moto: bool = False
    closing_moto: bool = False


class Bench:
    def __init__(self, settings: Settings, workdir: Path, data_dir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.data_dir = data_dir
        self.records: list[dict] = []
        self.problems: list[dict] = []
        self.peak_kib: dict[str, dict[str, int]] = {tool: {} for tool in TOOLS}
        self.spent: dict[tuple[str, float, str], float] = {}
        self.notes: list[str] = []
        self.drop_caches_ok: bool | None = None
        self.server: MotoServer | None = None
        self.relay: RelayProcess | None = None
        self.sampler = RssSampler()
        self.passwd = workdir / "passwd"
        self.passwd.write_text(f"{ACCESS_KEY}:{SECRET_KEY}\n")
        self.passwd.chmod(0o600)
        home = workdir / "home"
        home.mkdir()
        self.daemon_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                           "LANG": "C.UTF-8", "AWS_EC2_METADATA_DISABLED": "true"}
        self.command_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
                            "HOME": str(home)}
        self.source = data_dir / "source.bin"
        self.tarball: Tarball | None = None

    def problem(self, tool: str, rtt: float, run: int, what: str,
                workload: str | None = None) -> None:
        self.problems.append({"tool": tool, "rtt_ms": rtt, "run": run, "workload": workload,
                              "what": what})
        progress(f"  PROBLEM ({tool}{', ' + workload if workload else ''}): "
                 f"{what.splitlines()[0] if what else ''}")

    def drop_caches(self) -> None:
        os.sync()
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            self.drop_caches_ok = True
        except OSError as error:
            if self.drop_caches_ok is None:
                self.notes.append(f"drop_caches failed ({error}): cold runs keep the kernel's "
                                  "caches; they are cold for the daemons only")
                progress(f"warning: cannot drop caches: {error}")
            self.drop_caches_ok = False

    def prepare(self) -> None:
        s = self.settings.sizes
        progress(f"making {s.big_mib} MiB of random data and a tarball of "
                 f"{s.untar_files} files")
        make_source(self.source, s.big_bytes)
        self.tarball = build_tarball(self.workdir / "tree.tar", s.untar_files)
        progress(f"  tarball: {self.tarball.files} files, {self.tarball.dirs} directories, "
                 f"{self.tarball.bytes / MiB:.1f} MiB")
        self.server = MotoServer(self.workdir, self.data_dir, self.settings.plain_moto,
                                 self.settings.closing_moto)
        self.relay = RelayProcess(self.server.url, self.workdir / "requests.log")
        progress(f"moto on {self.server.url} (patches: {self.server.patches}), "
                 f"relay on {self.relay.url}")
        self.server.warm_up(self.source)
        progress("moto warmed up (the big file uploaded and deleted twice)")
        self.sampler.start()

    def run(self) -> None:
        settings = self.settings
        for rtt in settings.rtts:
            self.relay.set_rtt(rtt)
            for run in range(settings.runs):
                order = settings.tools if run % 2 == 0 else settings.tools[::-1]
                for tool in order:
                    Session(self, tool, rtt, run).run()

    def cpu_now(self, daemon: Daemon | None) -> dict[str, float | None]:
        return {"daemon": cpu_seconds(daemon.pid if daemon else None),
                "server": cpu_seconds(self.server.process.pid),
                "relay": cpu_seconds(self.relay.process.pid)}

    def close(self) -> None:
        self.sampler.stopping.set()
        if self.relay is not None:
            self.relay.stop()
        if self.server is not None:
            self.server.stop()


class Session:
    """A fresh bucket, mounted by one tool; the workloads run on it in order."""

    def __init__(self, bench: Bench, tool: str, rtt: float, run: int) -> None:
        self.bench, self.tool, self.rtt, self.run_index = bench, tool, rtt, run
        self.settings = bench.settings
        self.sizes = self.settings.sizes
        self.source = bench.source
        self.tarball = bench.tarball
        self.client = bench.server.client
        rtt_text = f"{rtt:g}".replace(".", "-")
        self.bucket = f"bench-{tool}-{rtt_text}ms-r{run}-{uuid.uuid4().hex[:8]}"
        self.mnt = bench.workdir / f"mnt-{tool}"
        self.mnt.mkdir(exist_ok=True)
        self.daemon: Daemon | None = None
        self.mounts = 0
        self.state = {"big": False, "small": False}
        self.last_ok: str | None = None

    # The Context of workloads.py.

    def command(self, argv: list[str], capture: bool = False) -> tuple[float, str, str]:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                   env=self.bench.command_env, start_new_session=True)
        try:
            out, err = process.communicate(timeout=self.settings.timeout)
        except KeyboardInterrupt:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            raise
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                # Stuck in the filesystem: only ending the daemon frees it.
                if self.daemon is not None:
                    self.daemon.kill()
                process.communicate(timeout=60)
            raise WorkloadError(f"{argv[0]} timed out after {self.settings.timeout:g} s "
                                "(killed)") from None
        seconds = time.perf_counter() - start
        if process.returncode != 0:
            raise WorkloadError(f"{shlex.join(argv[:3])}... exited with {process.returncode}: "
                                f"{(err or '').strip()[-500:]}")
        return seconds, out or "", err or ""

    def helper(self, *args: str) -> float:
        _, out, _ = self.command([sys.executable, str(BENCH / "workloads.py"), *args],
                                 capture=True)
        return json.loads(out)["seconds"]

    # Mounting.

    def mount(self) -> None:
        self.mounts += 1
        bench = self.bench
        self.daemon = Daemon(
            self.tool, self.settings.programs[self.tool], self.bucket, self.mnt,
            bench.relay.url, bench.passwd, bench.daemon_env,
            bench.workdir / f"{self.bucket}.{self.mounts}.log",
            self.settings.extra_options.get(self.tool, []))
        self.daemon.start()
        bench.sampler.daemon_ref = self.daemon
        self.last_ok = None

    def unmount(self) -> None:
        daemon, self.daemon = self.daemon, None
        if daemon is None:
            return
        self.bench.sampler.daemon_ref = None
        status = daemon.stop()
        self.record_peak(daemon)
        self.check_log(daemon, status)

    def record_peak(self, daemon: Daemon) -> None:
        peaks = self.bench.peak_kib[self.tool]
        key = f"{self.rtt:g}"
        peaks[key] = max(peaks.get(key, 0), daemon.peak_kib)

    def check_log(self, daemon: Daemon, status: int | None) -> None:
        text = daemon.log_path.read_text(errors="replace") if daemon.log_path.exists() else ""
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        if self.tool == "s3fs":  # s3fs logs its start-up at [INF] even at its default level
            lines = [line for line in lines if "[INF]" not in line and "[DBG]" not in line]
        if status != 0:
            self.bench.problem(self.tool, self.rtt, self.run_index,
                               f"daemon exit status {status} at unmount; log: "
                               + "\n".join(lines[-10:]))
        elif lines:
            # Anything a daemon logs at its default level is worth a look.
            self.bench.problem(self.tool, self.rtt, self.run_index,
                               f"daemon log has {len(lines)} lines: " + "\n".join(lines[:10]))

    def remount(self, drop: bool) -> None:
        self.unmount()
        if drop:
            self.bench.drop_caches()
        self.mount()

    def ensure_mounted(self, workload: str) -> None:
        if self.daemon is not None and self.daemon.alive():
            return
        if self.daemon is not None:
            daemon = self.daemon
            status = daemon.process.poll() if daemon.process else None
            self.bench.problem(self.tool, self.rtt, self.run_index,
                               f"the daemon is gone before {workload} (exit status {status}); "
                               f"log: {tail(daemon.log_path, 10)}", workload)
            daemon.kill()
            self.record_peak(daemon)
            self.daemon = None
        self.mount()

    # Running.

    def run(self) -> None:
        bench = self.bench
        progress(f"{self.tool} at {self.rtt:g} ms, run {self.run_index + 1}/"
                 f"{self.settings.runs}: bucket {self.bucket}")
        self.client.create_bucket(Bucket=self.bucket)
        try:
            try:
                self.mount()
            except MountError as error:
                for workload in self.settings.workloads:
                    self.record(workload, "failed", error=f"mount: {error}")
                return
            for workload in self.settings.workloads:
                key = (self.tool, self.rtt, workload.name)
                if self.run_index > 0 and bench.spent.get(key, 0.0) >= \
                        self.settings.max_cell_seconds:
                    continue  # enough time spent on this one: fewer runs
                start = time.monotonic()
                self.run_workload(workload)
                bench.spent[key] = bench.spent.get(key, 0.0) + time.monotonic() - start
        finally:
            try:
                self.unmount()
            finally:
                try:
                    bench.server.empty_and_delete(self.bucket)
                except Exception as error:
                    progress(f"warning: could not delete bucket {self.bucket}: {error}")

    def run_workload(self, workload: Workload) -> None:
        relay = self.bench.relay
        seeded = primed = False
        try:
            self.ensure_mounted(workload.name)
            if workload.needs and not self.state[workload.needs]:
                SEEDS[workload.needs](self)
                self.state[workload.needs] = seeded = True
                if not workload.cold:
                    self.remount(drop=False)
            if workload.cold:
                self.remount(drop=True)
            if workload.warm_after and self.last_ok != workload.warm_after:
                workload.run(self)  # once, untimed, so that this run is warm
                primed = True
            if workload.prepare:
                workload.prepare(self)
        except (WorkloadError, MountError) as error:
            self.record(workload, "failed", error=f"setup: {error}", seeded=seeded)
            self.last_ok = None
            return
        before = relay.settle()
        rss_before = vm_kib(self.daemon.pid, "VmRSS") if self.daemon else None
        seconds: float | None = None
        error_text = None
        cpu_before = self.bench.cpu_now(self.daemon)
        try:
            seconds = workload.run(self)
        except WorkloadError as error:
            error_text = str(error)
        cpu = cpu_delta(cpu_before, self.bench.cpu_now(self.daemon))
        after = relay.settle()
        requests = request_delta(before, after)
        if self.daemon is not None:
            self.daemon.sample()
        if error_text is None and workload.verify:
            try:
                workload.verify(self)
            except WorkloadError as error:
                error_text = str(error)
            except Exception as error:
                error_text = f"check: {type(error).__name__}: {error}"
        if error_text is None:
            if workload.produces:
                self.state[workload.produces] = True
            if workload.consumes:
                self.state[workload.consumes] = False
            self.last_ok = workload.name
        else:
            self.last_ok = None
            if workload.consumes:
                self.state[workload.consumes] = False
            if self.daemon is not None and not self.daemon.alive():
                error_text += (f" (the daemon is gone: exit status "
                               f"{self.daemon.process.poll()}; log: "
                               f"{tail(self.daemon.log_path, 5)})")
        self.record(workload, "ok" if error_text is None else "failed", seconds=seconds,
                    error=error_text, requests=requests, cpu_seconds=cpu, seeded=seeded,
                    primed=primed,
                    rss_before_kib=rss_before,
                    rss_after_kib=vm_kib(self.daemon.pid, "VmRSS") if self.daemon else None)

    def record(self, workload: Workload, status: str, seconds: float | None = None,
               error: str | None = None, requests: dict | None = None, **extra: Any) -> None:
        record = {"tool": self.tool, "rtt_ms": self.rtt, "run": self.run_index,
                  "workload": workload.name, "status": status, "seconds": seconds,
                  "error": error, "requests": requests, **extra}
        self.bench.records.append(record)
        shown = f"{seconds:.3f} s" if seconds is not None else "-"
        count = requests["total"] if requests else "-"
        cpu = extra.get("cpu_seconds") or {}
        spent = "  CPU " + " ".join(f"{name} {cpu[name]:.2f}" for name in cpu) if cpu else ""
        progress(f"  {workload.name:14s} {status:6s} {shown:>10s}  {count} requests{spent}"
                 + (f"  ERROR: {error}" if error else ""))


# --- Results ----------------------------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds:.3f} s"


def summarize(bench: Bench) -> dict:
    """Per RTT, workload and tool: the median over the successful runs."""
    summary: dict[str, dict] = {}
    for rtt in bench.settings.rtts:
        per_workload: dict[str, dict] = {}
        for workload in bench.settings.workloads:
            cells: dict[str, dict] = {}
            for tool in bench.settings.tools:
                records = [r for r in bench.records if r["tool"] == tool and r["rtt_ms"] == rtt
                           and r["workload"] == workload.name]
                ok = [r for r in records if r["status"] == "ok"]
                failed = [r for r in records if r["status"] != "ok"]
                cell: dict[str, Any] = {"runs": len(records), "ok": len(ok),
                                        "errors": [r["error"] for r in failed]}
                if ok:
                    by_requests = sorted(ok, key=lambda r: r["requests"]["total"])
                    typical = by_requests[(len(by_requests) - 1) // 2]
                    cell.update(
                        seconds=statistics.median(r["seconds"] for r in ok),
                        all_seconds=[r["seconds"] for r in ok],
                        requests=statistics.median(r["requests"]["total"] for r in ok),
                        classes=typical["requests"]["classes"],
                        operations=typical["requests"]["operations"],
                        bytes_up=typical["requests"]["bytes_up"],
                        bytes_down=typical["requests"]["bytes_down"],
                        cpu={name: statistics.median(r["cpu_seconds"][name] for r in ok)
                             for name in CPU_PROCESSES
                             if all(name in r.get("cpu_seconds", {}) for r in ok)})
                cells[tool] = cell
            per_workload[workload.name] = cells
        summary[f"{rtt:g}"] = per_workload
    return summary


def request_cell(cell: dict, workload: Workload, per_file: int | None) -> str:
    if "requests" not in cell:
        return "—"
    total = cell["requests"]
    text = f"{total:,.0f}"
    if per_file:
        text += f" ({total / per_file:.2f}/file)"
    breakdown = " ".join(f"{kind} {n:,}" for kind, n in cell["classes"].items())
    if breakdown:
        text += f": {breakdown}"
    if workload.name in ("seq_write", "random_write") and cell["bytes_up"] >= MiB:
        text += f"; {cell['bytes_up'] / MiB:.1f} MiB up"
    return text


def markdown(bench: Bench, summary: dict) -> tuple[str, list[dict]]:
    settings = bench.settings
    sizes = settings.sizes
    lines: list[str] = []
    footnotes: list[str] = []
    targets: list[dict] = []

    def time_cell(cell: dict, workload: Workload) -> str:
        if cell is None:
            return "—"
        if "seconds" not in cell:
            if not cell["runs"]:
                return "—"
            footnotes.append(cell["errors"][0] if cell["errors"] else "no successful run")
            return f"failed [{len(footnotes)}]"
        text = fmt_seconds(cell["seconds"])
        if workload.throughput and cell["seconds"] > 0:
            text += f" ({sizes.big_bytes / MiB / cell['seconds']:.0f} MiB/s)"
        if cell["ok"] < settings.runs:
            text += f" (n={cell['ok']})"
        if cell["ok"] < cell["runs"]:
            footnotes.append(f"{cell['runs'] - cell['ok']} of {cell['runs']} runs failed: "
                             f"{cell['errors'][0]}")
            text += f" [{len(footnotes)}]"
        return text

    for rtt_key, per_workload in summary.items():
        lines += [f"#### RTT {rtt_key} ms", "",
                  "| workload | s3mount | s3fs | s3mount/s3fs | s3mount requests "
                  "| s3fs requests |", "|---|---|---|---|---|---|"]
        footnotes.clear()
        for workload in settings.workloads:
            cells = per_workload[workload.name]
            mine, theirs = cells.get("s3mount"), cells.get("s3fs")
            ratio = "—"
            if mine and theirs and "seconds" in mine and "seconds" in theirs \
                    and theirs["seconds"] > 0:
                ratio = f"{mine['seconds'] / theirs['seconds']:.2f}"
            per_file = None
            if workload.per_file:
                per_file = bench.tarball.files if workload.name == "untar" else sizes.files
            label = workload.name
            lines.append(f"| {label} | {time_cell(mine, workload)} | "
                         f"{time_cell(theirs, workload)} | {ratio} | "
                         f"{request_cell(mine or {}, workload, per_file)} | "
                         f"{request_cell(theirs or {}, workload, per_file)} |")
        peaks = [bench.peak_kib[tool].get(rtt_key) for tool in ("s3mount", "s3fs")]
        shown = [f"{peak / 1024:.0f} MiB" if peak else "—" for peak in peaks]
        lines.append(f"| peak RSS (daemon) | {shown[0]} | {shown[1]} | | | |")
        lines.append("")
        for index, note in enumerate(footnotes, 1):
            lines.append(f"[{index}] {note.splitlines()[0][:300] if note else ''}  ")
        if footnotes:
            lines.append("")
        lines += cpu_table(settings, per_workload)
        targets += check_targets(bench, rtt_key, per_workload)
    return "\n".join(lines), targets


def cpu_table(settings: Settings, per_workload: dict) -> list[str]:
    """CPU seconds each process spent in the timed part (medians): on a machine with
    few cores, the server or the relay can be what limits both tools."""
    def shown(cell: dict | None) -> str:
        cpu = (cell or {}).get("cpu") or {}
        return " / ".join(f"{cpu[name]:.2f}" if name in cpu else "—"
                          for name in CPU_PROCESSES) if cpu else "—"

    tools = [tool for tool in TOOLS if tool in settings.tools]
    lines = ["CPU seconds in the timed part (median): daemon / moto / relay", "",
             "| workload | " + " | ".join(tools) + " |", "|---|" + "---|" * len(tools)]
    for workload in settings.workloads:
        cells = per_workload[workload.name]
        lines.append(f"| {workload.name} | "
                     + " | ".join(shown(cells.get(tool)) for tool in tools) + " |")
    return [*lines, ""]


def check_targets(bench: Bench, rtt_key: str, per_workload: dict) -> list[dict]:
    """The goals of issue 4, as measured."""
    out = []
    sizes = bench.settings.sizes

    def target(name: str, passed: bool | None, detail: str) -> None:
        out.append({"rtt_ms": rtt_key, "target": name, "passed": passed, "detail": detail})

    for workload in bench.settings.workloads:
        cells = per_workload[workload.name]
        mine, theirs = cells.get("s3mount", {}), cells.get("s3fs", {})
        if "seconds" not in mine:
            if mine.get("runs"):
                target(f"{workload.name}: s3mount works", False, "no successful run")
            continue
        if "seconds" in theirs:
            ratio = mine["seconds"] / theirs["seconds"] if theirs["seconds"] else 0.0
            need = 0.5 if (rtt_key == "20" and workload.name in (
                "ls_l_cold", "small_create", "untar", "random_write")) else 1.0
            target(f"{workload.name}: s3mount/s3fs ≤ {need:g}", ratio <= need,
                   f"ratio {ratio:.2f}")
        elif theirs.get("runs"):
            target(f"{workload.name}: s3mount works where s3fs fails", True, "")
        if workload.name == "small_create":
            per = mine["requests"] / sizes.files
            target("small_create: ≤ 1.05 requests per file", per <= 1.05, f"{per:.2f}")
        if workload.name == "ls_l_warm":
            target("ls_l_warm: 0 requests", mine["requests"] == 0, f"{mine['requests']:.0f}")
        if workload.name == "random_write":
            ops = mine["operations"]
            target("random_write: only changed parts uploaded (info)", None,
                   f"{mine['bytes_up'] / MiB:.1f} MiB up of {sizes.big_mib} MiB; "
                   f"UploadPart {ops.get('UploadPart', 0)}, "
                   f"UploadPartCopy {ops.get('UploadPartCopy', 0)}, "
                   f"PutObject {ops.get('PutObject', 0)}")
    peak = bench.peak_kib["s3mount"].get(rtt_key)
    if peak:
        target("s3mount peak RSS < 200 MiB", peak < 200 * 1024, f"{peak / 1024:.0f} MiB")
    return out


def machine() -> dict:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB"
    distro = ""
    with contextlib.suppress(OSError):
        distro = "Debian " + Path("/etc/debian_version").read_text().strip()
    return {"host": platform.node(), "cpu": cpu, "cpus": os.cpu_count(), "memory": memory,
            "kernel": platform.release(), "os": distro,
            "python": platform.python_version()}


def version_of(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (result.stdout or result.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "unknown"


# --- Command line -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="workloads: " + ", ".join(w.name for w in WORKLOADS))
    parser.add_argument("--rtt-ms", action="append",
                        help="round-trip time(s) to inject, repeatable or a comma list "
                             "(default: 0,20)")
    parser.add_argument("--runs", type=int, help="runs per workload; the median is shown "
                        "(default: 5, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help=f"smaller sizes for a smoke run ({QUICK.big_mib} MiB, "
                             f"{QUICK.files} files, untar of {QUICK.untar_files} files)")
    parser.add_argument("--tools", default="s3mount,s3fs", help="default: s3mount,s3fs")
    parser.add_argument("--workloads", help="comma list (default: all)")
    parser.add_argument("--json", default=str(BENCH / "results.json"),
                        help="where to write all results (default: bench/results.json)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (daemon logs, request log, tarball)")
    parser.add_argument("--timeout", type=float,
                        help="time-out of one workload in seconds (default: 900, quick: 300)")
    parser.add_argument("--max-cell-seconds", type=float, default=60.0,
                        help="after the first run, repeat a workload only while its runs so "
                             "far took less than this (default: 60); keeps slow cells to "
                             "fewer runs")
    parser.add_argument("--s3mount-options", default="",
                        help="extra -o options for s3mount (comma list)")
    parser.add_argument("--s3fs-options", default="", help="extra -o options for s3fs")
    parser.add_argument("--plain-moto", action="store_true",
                        help="run moto unpatched (its ranged GETs read the whole object; "
                             "its Werkzeug server closes every connection)")
    parser.add_argument("--closing-moto", action="store_true",
                        help="let the patched moto close every connection after one "
                             "answer, as its Werkzeug server does by itself (the bench "
                             "before 2026-12-07)")
    parser.add_argument("--size-mib", type=int, help="size of the big file")
    parser.add_argument("--files", type=int, help="files of small_create, ls_l and rename_dir")
    parser.add_argument("--untar-files", type=int, help="files in the untar tree")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    base = QUICK if args.quick else FULL
    sizes = dataclasses.replace(
        base, big_mib=args.size_mib or base.big_mib, files=args.files or base.files,
        untar_files=args.untar_files or base.untar_files)
    rtts = [float(part) for item in (args.rtt_ms or ["0,20"]) for part in item.split(",")
            if part.strip()]
    tools = [tool.strip() for tool in args.tools.split(",") if tool.strip()]
    for tool in tools:
        if tool not in TOOLS:
            sys.exit(f"bench: unknown tool {tool!r} (known: {', '.join(TOOLS)})")
    workloads = WORKLOADS
    if args.workloads:
        names = [name.strip() for name in args.workloads.split(",") if name.strip()]
        unknown = [name for name in names if name not in BY_NAME]
        if unknown:
            sys.exit(f"bench: unknown workload(s) {', '.join(unknown)} "
                     f"(known: {', '.join(BY_NAME)})")
        workloads = [w for w in WORKLOADS if w.name in names]
    programs = {}
    s3mount = Path(sys.executable).parent / "s3mount"
    programs["s3mount"] = str(s3mount) if s3mount.exists() else (shutil.which("s3mount") or "")
    programs["s3fs"] = shutil.which("s3fs") or ""
    for tool in list(tools):
        if not programs[tool]:
            progress(f"warning: {tool} is not installed: its columns stay empty")
            tools.remove(tool)
    extra = {"s3mount": [o for o in args.s3mount_options.split(",") if o],
             "s3fs": [o for o in args.s3fs_options.split(",") if o]}
    return Settings(sizes=sizes, rtts=rtts, runs=args.runs or (1 if args.quick else 5),
                    tools=tools, workloads=workloads,
                    timeout=args.timeout or (300.0 if args.quick else 900.0),
                    max_cell_seconds=args.max_cell_seconds, extra_options=extra,
                    programs=programs, plain_moto=args.plain_moto,
                    closing_moto=args.closing_moto)


def interrupt(signum: int, _frame: object) -> None:
    for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(other, signal.SIG_IGN)  # let the clean-up finish
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    # Also when started in the background (SIGINT ignored): stop cleanly on INT, TERM, HUP.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)
    args = parse_args(argv)
    settings = settings_from(args)
    if os.geteuid() != 0:
        progress("warning: not root: drop_caches will fail and FUSE may refuse to mount")
    command = shlex.join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    started = datetime.datetime.now(datetime.UTC)
    workdir = Path(tempfile.mkdtemp(prefix="s3mount-bench-"))
    shm = Path("/dev/shm")
    data_dir = Path(tempfile.mkdtemp(prefix="s3mount-bench-", dir=shm)) \
        if shm.is_dir() and os.access(shm, os.W_OK) else workdir / "data"
    data_dir.mkdir(exist_ok=True)
    progress(f"work directory {workdir}, data in {data_dir}")
    bench = Bench(settings, workdir, data_dir)
    load_start = os.getloadavg()
    interrupted = False
    try:
        bench.prepare()
        bench.run()
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: writing what was measured")
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(data_dir, ignore_errors=True)

    summary = summarize(bench)
    table, targets = markdown(bench, summary)
    info = machine()
    versions = {"s3mount": version_of([settings.programs["s3mount"], "--version"])
                if settings.programs["s3mount"] else "not installed",
                "s3fs": version_of([settings.programs["s3fs"], "--version"])
                if settings.programs["s3fs"] else "not installed",
                "moto": importlib.metadata.version("moto")}
    duration = time.monotonic() - STARTED
    load_end = os.getloadavg()
    arguments = sys.argv[1:] if argv is None else argv
    make_command = "make bench" + (f' BENCH_ARGS="{shlex.join(arguments)}"' if arguments else "")
    sizes = settings.sizes
    header = [
        f"Measured {started:%Y-%m-%d} on {info['host']}: {info['cpu']}, {info['cpus']} CPUs, "
        f"{info['memory']}, Linux {info['kernel']}, {info['os']}; {versions['s3mount']}; "
        f"{versions['s3fs']}; moto {versions['moto']} (server mode, on loopback, through "
        "bench/relay.py).",
        f"Command: `{make_command}` (`{command}`), {duration / 60:.1f} min.",
        f"Sizes: {sizes.big_mib} MiB file, {sizes.random_writes} random 4 KiB writes, "
        f"{sizes.files} files of 4 KiB, untar of {bench.tarball.files if bench.tarball else 0}"
        f" files in {bench.tarball.dirs if bench.tarball else 0} directories. Median of "
        f"{settings.runs} run(s) (n= when fewer succeeded or were run: see --max-cell-seconds). "
        "s3mount/s3fs < 1 means s3mount is faster. Requests by class: GET, HEAD, LIST, PUT, "
        "COPY (server-side copies), POST (multipart start/complete), DELETE.",
    ]
    header.append(f"Load average (1 min) at the start {load_start[0]:.2f}, at the end "
                  f"{load_end[0]:.2f}; moto patches: "
                  f"{bench.server.patches if bench.server else 'unknown'}.")
    header += [f"Note: {note}" for note in bench.notes]
    if interrupted:
        header.append("Note: interrupted; some runs are missing.")
    target_lines = ["", "Targets (issue 4):", ""]
    for t in targets:
        mark = {True: "pass", False: "FAIL", None: "info"}[t["passed"]]
        target_lines.append(f"- {mark}: RTT {t['rtt_ms']} ms, {t['target']}"
                            + (f" ({t['detail']})" if t["detail"] else ""))
    problem_lines = []
    if bench.problems:
        problem_lines = ["", "Problems seen:", ""]
        for p in bench.problems:
            first = p["what"].replace("\n", " | ")[:400]
            problem_lines.append(f"- {p['tool']}, RTT {p['rtt_ms']:g} ms, run "
                                 f"{p['run'] + 1}{', ' + p['workload'] if p['workload'] else ''}:"
                                 f" {first}")
    text = "\n".join([*header, "", table, *target_lines, *problem_lines]) + "\n"
    print(text)
    result = {
        "date": started.isoformat(timespec="seconds"), "command": command,
        "duration_seconds": duration, "machine": info, "versions": versions,
        "load_average": {"start": load_start, "end": load_end},
        "moto_patches": bench.server.patches if bench.server else None,
        "sizes": dataclasses.asdict(sizes),
        "tarball": dataclasses.asdict(bench.tarball) if bench.tarball else None,
        "settings": {"rtt_ms": settings.rtts, "runs": settings.runs, "tools": settings.tools,
                     "workloads": [w.name for w in settings.workloads],
                     "timeout": settings.timeout,
                     "max_cell_seconds": settings.max_cell_seconds,
                     "extra_options": settings.extra_options,
                     "drop_caches": bench.drop_caches_ok},
        "workloads": {w.name: w.description for w in settings.workloads},
        "peak_rss_kib": bench.peak_kib, "summary": summary, "targets": targets,
        "problems": bench.problems, "notes": bench.notes, "records": bench.records,
        "markdown": text,
    }
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    progress(f"results written to {json_path}")
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
