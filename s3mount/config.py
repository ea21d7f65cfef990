"""MountConfig: everything a mount needs, validated, built from the command line."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from typing import Any

from .errors import UsageError
from .options import parse_options, settings_from

# s3fs refuses these in bucket names (s3fs_cred.cpp); S3 itself is stricter.
_BAD_BUCKET_CHARS = re.compile(r"[/:\\;!@#$%^&*?|+=\s]")


@dataclasses.dataclass(frozen=True)
class MountConfig:
    bucket: str
    prefix: str  # "" or "some/prefix/": the key prefix that the mount root shows
    mountpoint: str
    foreground: bool
    debug: bool
    single_threaded: bool
    settings: Any  # options.Settings

    @property
    def source(self) -> str:
        return self.bucket + (":/" + self.prefix.rstrip("/") if self.prefix else "")


def split_bucket_argument(argument: str) -> tuple[str, str]:
    """``bucket[:/path]`` → (bucket, "path/" or "")."""
    if "://" in argument:
        raise UsageError(
            f"'{argument}' looks like a URL; give the bucket name and put the endpoint in "
            "-o url=..."
        )
    bucket, sep, path = argument.partition(":")
    if sep and not path.startswith("/"):
        raise UsageError(f"bad bucket argument '{argument}': the path after ':' must start with /")
    if not bucket:
        raise UsageError("the bucket name is empty")
    if _BAD_BUCKET_CHARS.search(bucket):
        raise UsageError(f"'{bucket}' is not a valid bucket name")
    prefix = path.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise UsageError(f"bad prefix '{path}': it has an empty path component, '.' or '..'")
    return bucket, (prefix + "/" if prefix else "")


def build_config(arguments: list[str], option_strings: list[str], *, foreground: bool,
                 debug: bool, single_threaded: bool,
                 environ: Mapping[str, str] = os.environ) -> MountConfig:
    """Arguments and -o options win over S3MOUNT_BUCKET, S3MOUNT_MOUNTPOINT and
    S3MOUNT_OPTIONS, which let containers and systemd units configure a mount."""
    from_environment = [environ["S3MOUNT_OPTIONS"]] if environ.get("S3MOUNT_OPTIONS") else []
    given = parse_options(from_environment + option_strings)
    if debug:
        given["dbglevel"] = "debug"
    if len(arguments) > 2:
        raise UsageError("expected BUCKET[:/PREFIX] MOUNTPOINT (see s3mount --help)")
    if len(arguments) == 2:
        source, mountpoint = arguments
        if "bucket" in given:
            raise UsageError("the bucket is given twice: as an argument and as -o bucket=")
    else:
        source = given.get("bucket") or environ.get("S3MOUNT_BUCKET", "")
        mountpoint = arguments[0] if arguments else environ.get("S3MOUNT_MOUNTPOINT", "")
        if not source or not mountpoint:
            missing = "the bucket" if not source else "the mount point"
            raise UsageError(
                f"{missing} is missing: expected BUCKET[:/PREFIX] MOUNTPOINT, or the "
                "environment variables S3MOUNT_BUCKET and S3MOUNT_MOUNTPOINT")
    bucket, prefix = split_bucket_argument(source)
    if os.geteuid() != 0 and (given.get("uid") == 0 or given.get("gid") == 0):
        raise UsageError("only root can use uid=0 or gid=0")
    if given.get("allow_other"):
        given["default_permissions"] = True
    return MountConfig(
        bucket=bucket,
        prefix=prefix,
        mountpoint=os.path.abspath(mountpoint),
        foreground=foreground or debug,
        debug=debug,
        single_threaded=single_threaded,
        settings=settings_from(given),
    )
