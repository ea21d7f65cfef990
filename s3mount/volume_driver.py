"""``s3mount-volume-driver``: a Docker volume plugin that mounts buckets as volumes.

Docker (and Cloud Foundry's volume services) speak JSON over HTTP on a unix
socket; every answer has HTTP status 200, and an error is ``{"Err": "..."}``.
Each volume gets one s3mount daemon, started at its first Mount and stopped when
the last container unmounted it. Volume definitions are kept in the state
directory, so a restarted driver knows them and re-adopts mounts still running.
"""

from __future__ import annotations

import contextlib
import datetime
import http.server
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click

from . import __version__
from .daemon import notify_systemd
from .errors import S3mountError
from .log import redactor
from .volume_mounts import Mounter, MountState, mount_state
from .volume_options import volume_spec
from .volume_state import Volume, VolumeStore, check_name

log = logging.getLogger("s3mount.volume_driver")

DEFAULT_SOCKET = "/run/docker/plugins/s3mount.sock"
DEFAULT_STATE_DIR = "/var/lib/s3mount/driver"
DEFAULT_MOUNT_ROOT = "/var/lib/s3mount/volumes"
CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"


def _check_id(mount_id: Any) -> None:
    if not isinstance(mount_id, str) or not mount_id:
        raise S3mountError("the request has no caller ID")


class Driver:
    """The volume operations, independent of HTTP. Errors are S3mountError."""

    def __init__(self, store: VolumeStore, mounter: Mounter) -> None:
        self._store = store
        self._mounter = mounter
        self._lock = threading.Lock()  # guards _volumes and _locks, held only briefly
        self._volumes: dict[str, Volume] = store.load_all()
        # One lock per volume name, held across its mount or unmount.
        self._locks: dict[str, threading.Lock] = {}
        for volume in self._volumes.values():
            self._remember_secrets(volume)

    @staticmethod
    def _remember_secrets(volume: Volume) -> None:
        with contextlib.suppress(S3mountError):
            redactor.add_secrets(volume_spec(volume.opts).secrets)

    @contextlib.contextmanager
    def _volume_lock(self, name: str) -> Iterator[None]:
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def _volume(self, name: str) -> Volume:
        try:
            return self._volumes[name]
        except KeyError:
            raise S3mountError(f"no such volume: {name}") from None

    def adopt_mounts(self) -> None:
        """After a restart: keep mounts that containers still use, clear the rest."""
        for name, volume in list(self._volumes.items()):
            with self._volume_lock(name):
                state = mount_state(self._mounter.mountpoint(name))
                if state is MountState.ALIVE and volume.mounted_by:
                    log.info("volume %s: re-adopted its mount, used by %d container(s)", name,
                             len(volume.mounted_by))
                    continue
                if state is MountState.ALIVE:
                    log.info("volume %s: unmounting a mount that no container uses", name)
                    try:
                        self._mounter.unmount(name)
                    except S3mountError as exc:
                        log.warning("%s", exc.message)
                elif state is MountState.DEAD:
                    self._mounter.cleanup(name)
                if volume.mounted_by:
                    log.warning("volume %s: its mount ended while the driver was away; the "
                                "next Mount mounts it again", name)
                    volume.mounted_by.clear()
                    self._store.save(volume)

    def create(self, name: str, opts: Mapping[str, Any] | None) -> None:
        check_name(name)
        with self._volume_lock(name):
            existing = self._volumes.get(name)
            if existing is not None:
                # Docker repeats Create, often without options, for a volume it knows.
                if opts and dict(opts) != existing.opts:
                    raise S3mountError(f"volume {name} already exists with other options: "
                                       "remove it first")
                return
            spec = volume_spec(opts)
            redactor.add_secrets(spec.secrets)
            created = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            volume = Volume(name, dict(opts or {}), set(), created)
            self._store.save(volume)
            with self._lock:
                self._volumes[name] = volume
        log.info("created volume %s (bucket %s)", name, spec.source)

    def remove(self, name: str) -> None:
        with self._volume_lock(name):
            volume = self._volume(name)
            if volume.mounted_by:
                raise S3mountError(f"volume {name} is in use by {len(volume.mounted_by)} "
                                   "container(s): stop them first")
            state = mount_state(self._mounter.mountpoint(name))
            if state is MountState.ALIVE:
                self._mounter.unmount(name)  # left by an unmount that failed
            elif state is MountState.DEAD:
                self._mounter.cleanup(name)
            self._store.delete(name)
            self._mounter.remove_mountpoint(name)
            with self._lock:
                del self._volumes[name]
        log.info("removed volume %s", name)

    def mount(self, name: str, mount_id: str) -> str:
        _check_id(mount_id)
        with self._volume_lock(name):
            volume = self._volume(name)
            path = self._mounter.mountpoint(name)
            state = mount_state(path)
            if state is not MountState.ALIVE:
                if state is MountState.DEAD:
                    self._mounter.cleanup(name)
                spec = volume_spec(volume.opts)
                options = list(spec.options)
                if spec.access_key and spec.secret_key:
                    passwd = self._store.write_passwd_file(name, spec.access_key,
                                                           spec.secret_key)
                    options.insert(0, f"passwd_file={passwd}")
                self._mounter.mount(name, spec.source, options)
            if mount_id not in volume.mounted_by:
                volume.mounted_by.add(mount_id)
                self._store.save(volume)
            log.info("volume %s mounted for %s (%d in all)", name, mount_id,
                     len(volume.mounted_by))
            return path

    def unmount(self, name: str, mount_id: str) -> None:
        _check_id(mount_id)
        with self._volume_lock(name):
            volume = self._volume(name)
            if mount_id not in volume.mounted_by:
                return  # a repeated Unmount
            volume.mounted_by.discard(mount_id)
            self._store.save(volume)
            log.info("volume %s unmounted for %s (%d left)", name, mount_id,
                     len(volume.mounted_by))
            if not volume.mounted_by:
                state = mount_state(self._mounter.mountpoint(name))
                if state is MountState.ALIVE:
                    self._mounter.unmount(name)
                elif state is MountState.DEAD:
                    self._mounter.cleanup(name)

    def describe(self, name: str) -> dict[str, Any]:
        """The volume as Get shows it: never a secret."""
        with self._lock:
            volume = self._volume(name)
        path = self._mounter.mountpoint(name)
        status: dict[str, Any] = {"mounted": mount_state(path) is MountState.ALIVE,
                                  "containers": len(volume.mounted_by)}
        try:
            spec = volume_spec(volume.opts)
            status.update(bucket=spec.source, options=",".join(spec.options))
        except S3mountError as exc:
            status["error"] = exc.message
        described = {"Name": name, "Mountpoint": path, "Status": status}
        if volume.created_at:
            described["CreatedAt"] = volume.created_at
        return described

    def path(self, name: str) -> str:
        with self._lock:
            self._volume(name)
        return self._mounter.mountpoint(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._volumes)


Endpoint = Callable[[dict[str, Any]], dict[str, Any]]


def endpoints(driver: Driver) -> dict[str, Endpoint]:
    """The protocol's endpoints: request object → answer object."""

    def name_of(request: dict[str, Any]) -> str:
        return check_name(request.get("Name"))

    def create(request: dict[str, Any]) -> dict[str, Any]:
        driver.create(name_of(request), request.get("Opts"))
        return {}

    def remove(request: dict[str, Any]) -> dict[str, Any]:
        driver.remove(name_of(request))
        return {}

    def unmount(request: dict[str, Any]) -> dict[str, Any]:
        driver.unmount(name_of(request), request.get("ID"))
        return {}

    def volume_list(_request: dict[str, Any]) -> dict[str, Any]:
        return {"Volumes": [{"Name": name, "Mountpoint": driver.path(name)}
                            for name in driver.names()]}

    return {
        "/Plugin.Activate": lambda _request: {"Implements": ["VolumeDriver"]},
        "/VolumeDriver.Capabilities": lambda _request: {"Capabilities": {"Scope": "local"}},
        "/VolumeDriver.Create": create,
        "/VolumeDriver.Remove": remove,
        "/VolumeDriver.Mount": lambda request: {
            "Mountpoint": driver.mount(name_of(request), request.get("ID"))},
        "/VolumeDriver.Unmount": unmount,
        "/VolumeDriver.Path": lambda request: {"Mountpoint": driver.path(name_of(request))},
        "/VolumeDriver.Get": lambda request: {"Volume": driver.describe(name_of(request))},
        "/VolumeDriver.List": volume_list,
    }


class _RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Docker keeps its connection to a plugin open
    server: _Server

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        # Read the body even when it is not used: the connection stays open for more.
        body = self.rfile.read(length) if length > 0 else b""
        handler = self.server.handlers.get(self.path)
        if handler is None:
            self._reply(404, {"Err": f"unknown endpoint {self.path}"})
            return
        try:
            request = json.loads(body) if body.strip() else {}
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            self._reply(200, {"Err": "the request body is not a JSON object"})
            return
        log.debug("%s %s", self.path, request.get("Name", ""))
        try:
            answer = handler(request)
        except S3mountError as exc:
            log.info("%s %s: %s", self.path, request.get("Name", ""), exc.message)
            answer = {"Err": exc.message}
        except Exception as exc:
            log.exception("%s failed", self.path)
            answer = {"Err": f"internal error of the s3mount volume driver: "
                             f"{type(exc).__name__}; see its log"}
        self._reply(200, answer)

    def do_GET(self) -> None:
        self._reply(405, {"Err": "use POST"})

    def _reply(self, status: int, answer: dict[str, Any]) -> None:
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return "docker"  # a unix socket peer has no address

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handlers: dict[str, Endpoint]) -> None:
        self.handlers = handlers
        super().__init__(path, _RequestHandler, bind_and_activate=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is no error of the driver's; anything else is logged
        (socketserver would print it to stderr)."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("a client closed its connection early: %s", error)
        else:
            log.exception("serving a request failed")


def _bind(server: _Server, path: str) -> None:
    """Bind the socket: a stale socket file is replaced, a live driver is an error."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    if os.path.lexists(path):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(path) == 0:
                raise S3mountError(f"another driver is already serving {path}: stop it first")
        os.unlink(path)
    previous = os.umask(0o177)  # the socket is for root (Docker) only
    try:
        server.server_bind()
    finally:
        os.umask(previous)
    server.server_activate()


def serve(socket_path: str, state_dir: str, mount_root: str,
          environ: Mapping[str, str] = os.environ) -> int:
    store = VolumeStore(state_dir)
    driver = Driver(store, Mounter(mount_root, environ))
    socket_path = os.path.abspath(socket_path)
    server = _Server(socket_path, endpoints(driver))
    try:
        _bind(server, socket_path)
    except OSError as exc:
        server.server_close()
        raise S3mountError(f"cannot listen on {socket_path}: {exc.strerror}") from None
    except S3mountError:
        server.server_close()
        raise
    # Only once the socket is ours: another driver's mounts are not ours to clean up.
    # Requests wait in the socket's backlog meanwhile.
    driver.adopt_mounts()

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        # shutdown() waits for serve_forever(), which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    log.info("s3mount volume driver %s serving %s (%d volumes)", __version__, socket_path,
             len(driver.names()))
    notify_systemd("READY=1", environ)
    try:
        server.serve_forever()
    finally:
        notify_systemd("STOPPING=1", environ)
        server.server_close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
    log.info("stopped; volumes still mounted stay mounted for the next driver")
    return 0


def _setup_logging(level: str, log_file: str | None) -> None:
    handler: logging.Handler
    if log_file:
        handler = logging.FileHandler(log_file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


@click.command(context_settings={"help_option_names": ["-h", "--help"]},
               help="Serve the Docker volume plugin API: buckets as volumes, each mounted by "
                    "its own s3mount daemon.")
@click.option("--socket", "socket_path", default=DEFAULT_SOCKET, show_default=True,
              metavar="PATH", help="Unix socket to serve; Docker looks for NAME.sock in "
                                   "/run/docker/plugins and calls the driver NAME.")
@click.option("--state-dir", default=DEFAULT_STATE_DIR, show_default=True, metavar="DIR",
              help="Where volume definitions and their credentials are kept (mode 0700).")
@click.option("--mount-root", default=DEFAULT_MOUNT_ROOT, show_default=True, metavar="DIR",
              help="Volumes are mounted at DIR/NAME.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Log level of the driver (each mount logs as its options say).")
@click.option("--log-file", metavar="FILE", help="Log to FILE instead of stderr.")
@click.version_option(__version__, "--version", prog_name="s3mount-volume-driver",
                      message="%(prog)s %(version)s")
def command(socket_path: str, state_dir: str, mount_root: str, log_level: str,
            log_file: str | None) -> int:
    try:
        _setup_logging(log_level, log_file)
    except OSError as exc:
        raise S3mountError(f"cannot open the log file {log_file}: {exc.strerror}") from None
    return serve(socket_path, state_dir, mount_root)


def main(argv: list[str] | None = None) -> None:
    try:
        status = command.main(args=argv, prog_name="s3mount-volume-driver",
                              standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        print(f"s3mount-volume-driver: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except S3mountError as exc:
        print(f"s3mount-volume-driver: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except OSError as exc:
        print(f"s3mount-volume-driver: {exc.strerror}: {exc.filename}", file=sys.stderr)
        sys.exit(1)
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    main()
