"""Wiring and lifecycle: checks before mounting, client → filesystem → FUSE,
detaching after the mount is usable, and a clean exit.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping

import llfuse

from .config import MountConfig
from .credentials import resolve_credentials
from .daemon import SignalThread, detach, is_mounted, notify_systemd, tune_malloc
from .errors import S3mountError
from .fs import Filesystem, FsSettings
from .fuse_ops import FuseOperations, StopRequested
from .log import redactor, reopen_log_files, setup_logging
from .mime import MimeTypes
from .stats import Stats, log_stats
from .store import SseC, Store, StoreSettings, default_region, verify_setting, wants_path_style
from .transfer import MiB, Transfer, TransferSettings

log = logging.getLogger(__name__)

# Kernel attribute and entry timeouts: short, because other clients change the
# bucket too, but never 0, which would make every stat a request.
KERNEL_TIMEOUT_MAX = 1.0
KERNEL_TIMEOUT_MIN = 0.1


def check_mountpoint(path: str, nonempty: bool) -> None:
    if not os.path.lexists(path):
        raise S3mountError(f"mount point {path} does not exist: create it with mkdir -p {path}")
    try:
        if os.path.ismount(path):
            raise S3mountError(
                f"{path} is already a mount point: unmount it first (fusermount -u {path})")
        entries = os.listdir(path)
    except NotADirectoryError:
        raise S3mountError(f"mount point {path} is not a directory") from None
    except PermissionError:
        raise S3mountError(f"mount point {path} is not accessible to this user") from None
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise S3mountError(
                f"{path} is a dead mount (transport endpoint is not connected): "
                f"run fusermount -u {path}") from None
        raise S3mountError(f"cannot use mount point {path}: {exc.strerror}") from None
    if entries and not nonempty:
        raise S3mountError(
            f"mount point {path} is not empty: use an empty directory or -o nonempty")


def check_allow_other(allow_other: bool, allow_root: bool,
                      fuse_conf: str = "/etc/fuse.conf") -> None:
    """fusermount refuses allow_other/allow_root to users unless fuse.conf allows it."""
    if not (allow_other or allow_root) or os.geteuid() == 0:
        return
    try:
        with open(fuse_conf, encoding="utf-8", errors="replace") as f:
            allowed = any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        allowed = False
    if not allowed:
        option = "allow_other" if allow_other else "allow_root"
        raise S3mountError(
            f"{option} needs the line 'user_allow_other' in {fuse_conf} when a user who is "
            "not root mounts: ask root to add it, or mount without it")


def store_settings(config: MountConfig, environ: Mapping[str, str]) -> StoreSettings:
    s = config.settings
    sse_c = SseC.from_options(s.use_sse, s.load_sse_c, environ)
    if sse_c is not None:
        redactor.add_secrets(sse_c.secrets())
    return StoreSettings(
        bucket=config.bucket,
        url=s.url,
        region=s.region or default_region(environ),
        path_style=s.use_path_request_style or wants_path_style(s.url),
        verify=verify_setting(s.no_check_certificate, s.ca_bundle, environ),
        proxy=s.proxy,
        connect_timeout=s.connect_timeout,
        read_timeout=s.readwrite_timeout,
        retries=s.retries,
        # Transfers and FUSE workers, plus the listing's attribute prefetches.
        max_connections=2 * s.max_thread_count + s.multireq_max,
        anonymous=s.public_bucket,
        list_max_keys=min(1000, s.list_object_max_keys),
        write_extras=write_extras(config),
        only_instance_role=bool(s.iam_role),
        sse_c=sse_c,
        requester_pays=s.requester_pays,
        content_md5=s.enable_content_md5,
        unsigned_payload=s.enable_unsigned_payload,
        instance_name=s.instance_name,
    )


def write_extras(config: MountConfig) -> dict[str, str]:
    s = config.settings
    extras = {}
    if s.default_acl:
        extras["ACL"] = s.default_acl
    if s.storage_class:
        extras["StorageClass"] = s.storage_class.upper()
    if s.use_sse == "1":
        extras["ServerSideEncryption"] = "AES256"
    elif s.use_sse and s.use_sse.partition(":")[0] == "custom":
        pass  # SSE-C: the Store adds the key to every request (StoreSettings.sse_c)
    elif s.use_sse:
        extras["ServerSideEncryption"] = "aws:kms"
        key_id = s.use_sse.partition(":")[2] or os.environ.get("AWSSSEKMSID")
        if key_id:
            extras["SSEKMSKeyId"] = key_id
    return extras


def dirty_window(max_dirty_data: int, max_cache_size: int | None) -> int | None:
    """Bytes of a streamed file kept on local disk at most (None: all of it), from
    the options (in MB): at most half of max_cache_size, else a file bigger than
    the cache could not be written at all."""
    limits = [mb * MiB for mb in (max_dirty_data,) if mb >= 0]
    if max_cache_size is not None:
        limits.append(max_cache_size * MiB // 2)
    return min(limits, default=None)


def transfer_settings(config: MountConfig) -> TransferSettings:
    s = config.settings
    return TransferSettings(
        multipart_threshold=s.multipart_threshold * MiB,
        multipart_size=s.multipart_size * MiB,
        multipart_copy_size=s.multipart_copy_size * MiB,
        singlepart_copy_limit=s.singlepart_copy_limit * MiB,
        nomultipart=s.nomultipart,
        streamupload=s.streamupload,
        max_dirty_data=dirty_window(s.max_dirty_data, s.max_cache_size),
        nocopyapi=s.nocopyapi,
        nomixupload=s.nomixupload,
        norenameapi=s.norenameapi,
        max_thread_count=s.max_thread_count,
    )


def cache_directory(config: MountConfig) -> str:
    """Where open files' data and the write journal live: below use_cache if given
    (kept across mounts, so a mount after a crash finds what was not uploaded),
    else a private temporary directory (removed at exit: nothing survives a crash)."""
    s = config.settings
    if s.use_cache:
        if s.check_cache_dir_exist and not os.path.isdir(s.use_cache):
            raise S3mountError(f"cache directory {s.use_cache} does not exist "
                               "(check_cache_dir_exist is set)")
        path = os.path.join(s.use_cache, f".s3mount-{config.bucket}")
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise S3mountError(f"cannot use cache directory {s.use_cache}: "
                               f"{exc.strerror}") from None
        return path
    try:
        return tempfile.mkdtemp(prefix="s3mount-", dir=s.tmpdir)
    except OSError as exc:
        raise S3mountError(f"cannot create a temporary directory in {s.tmpdir or '/tmp'}: "
                           f"{exc.strerror}; check -o tmpdir=") from None


def fs_settings(config: MountConfig, cache_dir: str) -> FsSettings:
    s = config.settings
    return FsSettings(
        prefix=config.prefix,
        uid=s.uid,
        gid=s.gid,
        umask=s.umask,
        mp_umask=s.mp_umask,
        allow_other=s.allow_other,
        stat_cache_expire=s.stat_cache_expire,
        max_stat_cache_size=s.max_stat_cache_size,
        enable_negative_cache=s.enable_negative_cache,
        compat_dir=s.compat_dir,
        max_thread_count=s.max_thread_count,
        multireq_max=s.multireq_max,
        cache_dir=cache_dir,
        journal=bool(s.use_cache),
        async_upload=s.async_upload,
        max_cache_size=s.max_cache_size * MiB if s.max_cache_size is not None else None,
        del_cache=s.del_cache,
        ensure_diskfree=(s.ensure_diskfree or 0) * MiB,
        free_space_ratio=s.free_space_ratio or 0,
        update_parent_dir_stat=s.update_parent_dir_stat,
        read_ahead_max=s.read_ahead_max * MiB,
        read_ahead_total=s.read_ahead_memory * MiB,
        attrs_from_list=s.attrs_from_list,
    )


def fuse_options(config: MountConfig) -> set[str]:
    s = config.settings
    source = config.source if "," not in config.source else config.bucket
    # big_writes: without it libfuse 2 hands writes over in 4 KiB pieces, and a
    # sequential write costs a handler call per page (256 MiB: 6 s instead of 0.8 s).
    options = {f"fsname={source}", "subtype=s3mount", "no_splice_read", "big_writes"}
    for name in ("ro", "allow_other", "allow_root", "default_permissions", "nonempty", "dev",
                 "suid"):
        if getattr(s, name):
            options.add(name)
    if not s.exec:
        options.add("noexec")
    if not s.atime:
        options.add("noatime")
    if s.max_read:
        options.add(f"max_read={s.max_read}")
    return options


def kernel_timeout(stat_cache_expire: float) -> float:
    return max(KERNEL_TIMEOUT_MIN, min(KERNEL_TIMEOUT_MAX, stat_cache_expire))


def prepare(config: MountConfig, environ: Mapping[str, str] = os.environ) -> Filesystem:
    """Everything that can fail with a user error, done before mounting."""
    s = config.settings
    check_mountpoint(config.mountpoint, s.nonempty)
    check_allow_other(s.allow_other, s.allow_root)
    credentials = None
    if not s.public_bucket and not s.iam_role:
        credentials = resolve_credentials(
            config.bucket, passwd_file=s.passwd_file, profile=s.profile,
            use_session_token=s.use_session_token, environ=environ)
    if credentials is not None:
        redactor.add_secrets([credentials.secret_key, credentials.session_token])
        log.info("using credentials from %s", credentials.source)
    try:
        mime = MimeTypes.load(s.mime)
    except OSError as exc:
        raise S3mountError(f"cannot read the MIME table {s.mime}: {exc.strerror}; check "
                           "-o mime=") from None
    store = Store(store_settings(config, environ), credentials, Stats())
    store.probe(config.prefix)
    cache_dir = cache_directory(config)
    if s.async_upload and not s.use_cache:
        log.warning("async_upload without use_cache: files not uploaded yet are lost if "
                    "the daemon is killed (give -o use_cache=DIR to keep them)")
    try:
        return Filesystem(store, fs_settings(config, cache_dir),
                          Transfer(store, transfer_settings(config)), mime)
    except OSError as exc:
        raise S3mountError(f"cannot use the cache directory {cache_dir}: "
                           f"{exc.strerror}") from None


def serve(config: MountConfig, fs: Filesystem, on_ready: Callable[[], None]) -> int:
    """Mount, run the FUSE loop until unmount or a stop signal, and clean up."""
    if not tune_malloc():
        log.info("cannot tune malloc (not glibc): memory freed by big transfers may stay "
                 "with the process")
    ops = FuseOperations(fs, attr_timeout=kernel_timeout(config.settings.stat_cache_expire),
                         bucket_size=config.settings.bucket_size, on_ready=on_ready)
    loop_ended = threading.Event()
    workers = 1 if config.single_threaded else max(2, config.settings.max_thread_count)
    mountpoint = os.path.realpath(config.mountpoint)
    signals = SignalThread(
        on_stop=lambda _signum: _stop_serving(ops, config.mountpoint, loop_ended, workers),
        on_reload=reopen_log_files,
        on_stats=lambda: log_stats(fs.stats),
        serving=lambda: not loop_ended.is_set() and is_mounted(mountpoint))
    with signals.installed():
        # After detach(): recovery uses thread pools, which a fork would break.
        fs.recover()
        try:
            llfuse.init(ops, config.mountpoint, fuse_options(config))
        except RuntimeError as exc:
            if os.path.exists("/dev/fuse") and not os.access("/dev/fuse", os.R_OK | os.W_OK):
                raise S3mountError(
                    f"cannot mount at {config.mountpoint}: this user may not open /dev/fuse; "
                    "ask root to make it usable (mode 0666 is the usual default)") from None
            raise S3mountError(
                f"cannot mount at {config.mountpoint} ({exc}; see the line from fuse above): "
                "is /dev/fuse available? (in a container: --device /dev/fuse --cap-add "
                "SYS_ADMIN)") from None
        log.info("mounted %s at %s", config.source, config.mountpoint)
        _tune_garbage_collector()
        status = 0
        try:
            llfuse.main(workers=workers, handle_signals=False)
        except StopRequested:
            pass
        except Exception:
            log.exception("the FUSE loop failed")
            status = 1
        finally:
            loop_ended.set()
            notify_systemd("STOPPING=1")
            failed = fs.close()
            llfuse.close(unmount=True)
            if not config.settings.use_cache:
                shutil.rmtree(fs.settings.cache_dir, ignore_errors=True)
    if failed:
        kept = (f"; they stay in the journal in {fs.journal.directory} and are uploaded by "
                "the next mount with this use_cache" if fs.journal.durable else "")
        log.error("could not upload %d changed files: %s%s", len(failed), ", ".join(failed),
                  kept)
        status = 1
    log.info("statistics at unmount: %s", fs.stats.to_json())
    log.info("unmounted %s", config.mountpoint)
    return status


def _tune_garbage_collector() -> None:
    """Keep Python's cycle collector from walking the start-up objects again and
    again (the S3 client with its service model is about 60,000 of them): each
    FUSE request and S3 answer allocates containers, and the older
    generations' collections looked at all of them. Measured with perf: about
    14% of the daemon's CPU in a sequential read, none after this."""
    gc.collect()
    gc.freeze()


def _stop_serving(ops: FuseOperations, mountpoint: str, loop_ended: threading.Event,
                  workers: int) -> None:
    ops.request_stop()
    # Every request now ends the worker that takes it. Make requests rather than
    # wait for them (the kernel never caches extended attributes, so each one
    # reaches the daemon). One is not always enough: llfuse wakes idle workers
    # with a signal that a worker can miss, and a worker that reads a request
    # after the loop has ended drops it unanswered. So each poke runs in a
    # thread of its own (a dropped one returns when the mount goes away), and
    # they go on until the loop has ended.
    for _ in range(2 * workers + 2):
        if loop_ended.is_set():
            return
        threading.Thread(target=_poke, args=(mountpoint,), name="s3mount-stop",
                         daemon=True).start()
        loop_ended.wait(0.05)


def _poke(mountpoint: str) -> None:
    with contextlib.suppress(OSError):
        os.getxattr(mountpoint, "user.s3mount.stop")


def run(config: MountConfig) -> int:
    """Mount in the foreground, or detach once the mount is usable."""
    s = config.settings
    start_logging(config, to_stderr=True)
    fs = prepare(config)
    if config.foreground:
        return serve(config, fs, on_ready=lambda: notify_systemd("READY=1"))

    def serve_detached(ready: Callable[[], None]) -> int:
        def on_ready() -> None:
            notify_systemd(f"READY=1\nMAINPID={os.getpid()}")
            ready()

        return serve(config, fs, on_ready)

    return detach(serve_detached,
                  after_fork=lambda: setup_logging(s.dbglevel, to_stderr=False,
                                                   logfile=s.logfile,
                                                   timestamps=not s.no_time_stamp_msg,
                                                   instance=s.instance_name))


def start_logging(config: MountConfig, *, to_stderr: bool) -> None:
    s = config.settings
    try:
        setup_logging(s.dbglevel, to_stderr=to_stderr, logfile=s.logfile,
                      timestamps=not s.no_time_stamp_msg, instance=s.instance_name)
    except OSError as exc:
        raise S3mountError(f"cannot open the log file {s.logfile}: {exc.strerror}; check "
                           "-o logfile=") from None
