"""Wiring and lifecycle: checks before mounting, client → filesystem → FUSE,
detaching after the mount is usable, and a clean exit.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping

import llfuse

from .config import MountConfig
from .credentials import resolve_credentials
from .errors import S3mountError
from .fs import Filesystem, FsSettings
from .fuse_ops import FuseOperations
from .log import redactor, setup_logging
from .mime import MimeTypes
from .store import Store, StoreSettings, default_region, verify_setting, wants_path_style
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


def store_settings(config: MountConfig, environ: Mapping[str, str]) -> StoreSettings:
    s = config.settings
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
        max_connections=2 * s.max_thread_count,
        anonymous=s.public_bucket,
        list_max_keys=min(1000, s.list_object_max_keys),
        write_extras=write_extras(config),
        only_instance_role=bool(s.iam_role),
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
    elif s.use_sse:
        extras["ServerSideEncryption"] = "aws:kms"
        key_id = s.use_sse.partition(":")[2] or os.environ.get("AWSSSEKMSID")
        if key_id:
            extras["SSEKMSKeyId"] = key_id
    return extras


def transfer_settings(config: MountConfig) -> TransferSettings:
    s = config.settings
    return TransferSettings(
        multipart_threshold=s.multipart_threshold * MiB,
        multipart_size=s.multipart_size * MiB,
        multipart_copy_size=s.multipart_copy_size * MiB,
        singlepart_copy_limit=s.singlepart_copy_limit * MiB,
        nomultipart=s.nomultipart,
        nocopyapi=s.nocopyapi,
        max_thread_count=s.max_thread_count,
    )


def cache_directory(config: MountConfig) -> str:
    """Where open files' data lives: below use_cache if given, else a private temp dir."""
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
        cache_dir=cache_dir,
    )


def fuse_options(config: MountConfig) -> set[str]:
    s = config.settings
    source = config.source if "," not in config.source else config.bucket
    options = {f"fsname={source}", "subtype=s3mount", "no_splice_read"}
    for name in ("ro", "allow_other", "allow_root", "default_permissions", "nonempty", "dev",
                 "suid"):
        if getattr(s, name):
            options.add(name)
    if not s.exec:
        options.add("noexec")
    if not s.atime:
        options.add("noatime")
    return options


def kernel_timeout(stat_cache_expire: float) -> float:
    return max(KERNEL_TIMEOUT_MIN, min(KERNEL_TIMEOUT_MAX, stat_cache_expire))


def prepare(config: MountConfig, environ: Mapping[str, str] = os.environ) -> Filesystem:
    """Everything that can fail with a user error, done before mounting."""
    s = config.settings
    check_mountpoint(config.mountpoint, s.nonempty)
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
    store = Store(store_settings(config, environ), credentials)
    store.probe(config.prefix)
    cache_dir = cache_directory(config)
    return Filesystem(store, fs_settings(config, cache_dir),
                      Transfer(store, transfer_settings(config)), mime)


def serve(config: MountConfig, fs: Filesystem, on_ready: Callable[[], None] | None) -> int:
    """Mount, run the FUSE loop until unmount or a signal, and clean up."""
    ops = FuseOperations(fs, attr_timeout=kernel_timeout(config.settings.stat_cache_expire),
                         bucket_size=config.settings.bucket_size, on_ready=on_ready)
    try:
        llfuse.init(ops, config.mountpoint, fuse_options(config))
    except RuntimeError as exc:
        raise S3mountError(
            f"cannot mount at {config.mountpoint} ({exc}; see the line from fuse above): is "
            "/dev/fuse available? (in a container: --device /dev/fuse --cap-add SYS_ADMIN)"
        ) from None
    log.info("mounted %s at %s", config.source, config.mountpoint)
    workers = 1 if config.single_threaded else max(2, config.settings.max_thread_count)
    status = 0
    try:
        signal_number = llfuse.main(workers=workers)
        if signal_number is not None:
            log.info("received signal %d, unmounting", signal_number)
    except Exception:
        log.exception("the FUSE loop failed")
        status = 1
    finally:
        failed = fs.close()
        llfuse.close(unmount=True)
        if not config.settings.use_cache:
            shutil.rmtree(fs.settings.cache_dir, ignore_errors=True)
    if failed:
        log.error("could not upload %d changed files: %s", len(failed), ", ".join(failed))
        status = 1
    log.info("unmounted %s", config.mountpoint)
    return status


def run(config: MountConfig) -> int:
    """Mount in the foreground, or detach once the mount is usable."""
    setup_logging(config.settings.dbglevel, to_stderr=True)
    fs = prepare(config)
    if config.foreground:
        return serve(config, fs, on_ready=None)
    return _detach_and_serve(config, fs)


def _detach_and_serve(config: MountConfig, fs: Filesystem) -> int:
    """Fork; the parent exits only once the child reports the mount usable or failed."""
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
            print("s3mount: the mount process ended before the mount was ready; see syslog",
                  file=sys.stderr)
        return 1

    os.close(read_end)
    os.setsid()
    os.chdir("/")
    setup_logging(config.settings.dbglevel, to_stderr=False)

    def ready() -> None:
        os.write(write_end, b"ready\n")
        os.close(write_end)
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)

    try:
        status = serve(config, fs, on_ready=ready)
    except S3mountError as exc:
        os.write(write_end, exc.message.encode())
        os._exit(exc.exit_code)
    except BaseException:
        log.exception("the mount process failed")
        os._exit(1)
    os._exit(status)
