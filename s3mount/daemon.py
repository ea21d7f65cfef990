"""Running as a service: detaching once the mount is usable, systemd's
notification socket, and signals (stop, log reopening, statistics).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping

from .errors import S3mountError

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP
# SIGUSR1 has two senders: a user who asks for the statistics, and llfuse, which
# interrupts its worker threads with it once the loop has ended (without a
# handler its default action would kill the process). llfuse sends it only when
# the mount is going away, so a SIGUSR1 while the mount serves is a user's.
STATS_SIGNAL = signal.SIGUSR1


# glibc's mallopt parameters.
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# Buffers from this size up get memory of their own from the kernel, and give it
# back when freed.
MMAP_THRESHOLD = 1024 * 1024
ARENA_MAX = 2


def tune_malloc() -> bool:
    """Make freed transfer buffers go back to the system (glibc only; False elsewhere).

    By default glibc raises its mmap threshold to the size of the largest block
    freed (up to 32 MiB), so once a multi-MiB part buffer was freed the next
    ones come from the heap, and each worker thread's arena keeps what it once
    held: the daemon's resident memory grew with every big transfer and never
    shrank. A fixed threshold turns that dynamic adjustment off; fewer arenas
    keep the many threads from holding memory each.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt)
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_ARENA_MAX, ARENA_MAX))


def is_mounted(mountpoint: str, mountinfo: str = "/proc/self/mountinfo") -> bool:
    """Whether ``mountpoint`` (a real path: resolving one would ask the mount's
    daemon, maybe this very process) is in the mount table."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split(" ")
                # The mount point is the fifth field, with space, tab, newline and
                # backslash written as octal escapes.
                if len(fields) > 4 and _unescape_mountinfo(fields[4]) == mountpoint:
                    return True
    except OSError:
        return True  # cannot tell: assume it still is
    return False


def _unescape_mountinfo(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def notify_systemd(state: str, environ: Mapping[str, str] = os.environ) -> None:
    """Send ``state`` (e.g. "READY=1") to systemd's notification socket, if any."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", environ["NOTIFY_SOCKET"], exc.strerror)


def _ignore(_signum: int, _frame: object) -> None:
    """The Python-level handler has nothing to do: the wakeup pipe carries the signal."""


class SignalThread:
    """Handles signals in a thread of its own.

    The main thread waits inside llfuse's C loop, where Python-level signal
    handlers never get to run; but Python's C-level handler writes each signal
    number to the wakeup fd at once, from whichever thread the signal hit.
    """

    def __init__(self, on_stop: Callable[[int], None], on_reload: Callable[[], None],
                 on_stats: Callable[[], None] = lambda: None,
                 serving: Callable[[], bool] = lambda: True) -> None:
        """``serving()`` says whether the mount still serves (see STATS_SIGNAL)."""
        self._on_stop = on_stop
        self._on_reload = on_reload
        self._on_stats = on_stats
        self._serving = serving
        self._stopping = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route the signals to this thread while the block runs (main thread only)."""
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(write_end, False)
        previous = {sig: signal.signal(sig, _ignore)
                    for sig in (*STOP_SIGNALS, RELOAD_SIGNAL, STATS_SIGNAL)}
        previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        thread = threading.Thread(target=self._run, args=(read_end,), name="signals",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous_fd)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.write(write_end, b"\0")  # ends the thread
            thread.join()
            os.close(read_end)
            os.close(write_end)

    def _run(self, read_end: int) -> None:
        while True:
            for signum in os.read(read_end, 64):
                if signum == 0:
                    return
                self._dispatch(signum)

    def _dispatch(self, signum: int) -> None:
        try:
            if signum in STOP_SIGNALS and not self._stopping:
                self._stopping = True
                log.info("received %s, unmounting", signal.Signals(signum).name)
                self._on_stop(signum)
            elif signum == RELOAD_SIGNAL:
                log.info("received SIGHUP, reopening the log file")
                self._on_reload()
                log.info("log file reopened after SIGHUP")
            elif signum == STATS_SIGNAL and not self._stopping and self._serving():
                self._on_stats()
        except Exception:
            log.exception("handling signal %d failed", signum)


def detach(serve: Callable[[Callable[[], None]], int], after_fork: Callable[[], None]) -> int:
    """Fork; the parent exits only once the child reports the mount usable or failed.

    ``serve(ready)`` runs in the child and must call ``ready()`` once the mount
    is usable; an S3mountError before that is passed to the parent as its message.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            report = pipe.read().decode("utf-8", "replace").strip()
        if report == "ready":
            return 0
        if report:
            print(f"s3mount: {report}", file=sys.stderr)
        else:
            print("s3mount: the mount process ended before the mount was ready; see the log",
                  file=sys.stderr)
        return 1

    os.close(read_end)
    os.setsid()
    os.chdir("/")
    after_fork()

    def ready() -> None:
        os.write(write_end, b"ready\n")
        os.close(write_end)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)

    try:
        status = serve(ready)
    except S3mountError as exc:
        os.write(write_end, exc.message.encode())
        os._exit(exc.exit_code)
    except BaseException:
        log.exception("the mount process failed")
        os._exit(1)
    os._exit(status)
