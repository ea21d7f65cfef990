"""Docker volume options → an s3mount command line, checked at Create time.

A volume's options (``docker volume create -o KEY=VALUE`` or the ``mount_config``
of Cloud Foundry's S3 volume service) are either s3mount ``-o`` options by any of
their spellings, or one of the Cloud Foundry keys in :data:`CLOUD_FOUNDRY_KEYS`.
Docker sends every value as a string; Cloud Foundry's JSON also has booleans,
numbers and the ``mount_options`` map.

The access keys never become part of the command line: :class:`VolumeSpec` keeps
them apart, and the driver writes them to a private passwd file.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from .config import build_config
from .errors import UsageError
from .options import OPTIONS, Option, parse_options

# The keys of Cloud Foundry's S3 volume service mount_config (s3-volume-release,
# which runs goofys), with what each means here.
CLOUD_FOUNDRY_KEYS: dict[str, str] = {
    "endpoint": "the S3 endpoint URL (s3mount's url); without a scheme, a region (s3fs)",
    "access_key_id": "access key, written to a private passwd file",
    "secret_access_key": "secret key, written to a private passwd file",
    "bucket": "BUCKET or BUCKET:/PREFIX",
    "region": "signing region",
    "acl": "canned ACL of new objects (s3mount's default_acl)",
    "subdomain": "true: virtual-hosted requests; false: path-style (use_path_request_style)",
    "storage_class": "storage class of new objects",
    "use_content_type": "true (s3mount always sets Content-Type from the file extension)",
    "use_sse": "true: SSE-S3 (or an s3mount use_sse value)",
    "use_kms": "true: SSE-KMS, with kms_key_id or the bucket's default key",
    "kms_key_id": "KMS key of SSE-KMS (with use_kms)",
    "region_set": "accepted; the region key decides",
    "mount_options": "a map of further s3mount -o options",
    "mode": "r or ro: read-only; rw: read-write",
}

# Every spelling of an s3mount option: name, aliases and negations (rw for ro).
_SPELLINGS: dict[str, Option] = {
    spelling: option
    for option in OPTIONS
    for spelling in (option.name, *option.aliases, *option.negations)
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclasses.dataclass(frozen=True)
class VolumeSpec:
    """What the driver runs for a volume: ``s3mount SOURCE MOUNTPOINT -o OPTIONS``."""

    source: str  # BUCKET or BUCKET:/PREFIX
    options: tuple[str, ...]  # -o items; never a secret
    access_key: str | None = dataclasses.field(default=None, repr=False)
    secret_key: str | None = dataclasses.field(default=None, repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.access_key, self.secret_key) if s)


def _boolean(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (*_TRUE, *_FALSE, ""):
        return value.lower() in (*_TRUE, "")
    raise UsageError(f"volume option '{key}' must be true or false")


def _text(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UsageError(f"volume option '{key}' must be a string or a number")
    text = str(value)
    if "," in text:
        raise UsageError(f"the value of volume option '{key}' contains a comma, which s3mount "
                         "cannot take in a -o option")
    return text


def _option_item(key: str, value: Any) -> str:
    """One s3mount option given as a volume option → its -o item (``name`` or ``name=value``)."""
    option = _SPELLINGS[key]
    if value is None or value is True or value == "":
        return key
    if value is False:
        if not option.is_flag:
            raise UsageError(f"volume option '{key}' needs a value, not false")
        return f"{key}=0"
    text = _text(key, value)
    if option.name == "region" and "://" in text:
        raise UsageError(f"'{key}' in mount_options is the region (as in s3fs): give the "
                         "endpoint URL as url")
    return f"{key}={text}"


def _unknown(key: str) -> UsageError:
    return UsageError(
        f"unknown volume option '{key}': give an s3mount -o option (see s3mount --help) or a "
        "Cloud Foundry mount_config key (" + ", ".join(CLOUD_FOUNDRY_KEYS) + ")")


def volume_spec(opts: Mapping[str, Any] | None) -> VolumeSpec:
    """Translate and check a volume's options; raises UsageError with one clear sentence."""
    opts = dict(opts or {})
    items: list[str] = []
    extra = opts.pop("mount_options", None)
    if extra is not None and not isinstance(extra, Mapping):
        raise UsageError("volume option 'mount_options' must be a map of s3mount -o options")
    for key in list(opts):
        if key not in CLOUD_FOUNDRY_KEYS and key not in _SPELLINGS and not key.startswith("x-"):
            raise _unknown(key)
    for key in extra or {}:
        if key not in _SPELLINGS:
            raise UsageError(f"unknown option '{key}' in mount_options: give s3mount -o "
                             "options (see s3mount --help)")

    bucket = opts.pop("bucket", None)
    if not bucket:
        raise UsageError("the volume needs a bucket: add -o bucket=NAME (or NAME:/PREFIX)")
    source = _text("bucket", bucket)

    access_key = opts.pop("access_key_id", None)
    secret_key = opts.pop("secret_access_key", None)
    if (access_key is None) != (secret_key is None):
        raise UsageError("give both access_key_id and secret_access_key, or neither")
    if access_key is not None:
        access_key, secret_key = _text("access_key_id", access_key), str(secret_key)
        if not access_key or not secret_key or ":" in access_key or "\n" in secret_key:
            raise UsageError("access_key_id and secret_access_key must be non-empty, and the "
                             "access key cannot contain ':'")
        if "passwd_file" in opts:
            raise UsageError("give either access_key_id and secret_access_key or passwd_file, "
                             "not both")

    endpoint = opts.pop("endpoint", None)
    if endpoint is not None:
        endpoint = _text("endpoint", endpoint)
        if "://" in endpoint:
            if "url" in opts or "host" in opts:
                raise UsageError("the endpoint URL is given twice: as endpoint and as url")
            items.append(f"url={endpoint}")
        elif "." in endpoint or ":" in endpoint:
            raise UsageError(f"endpoint '{endpoint}' looks like a host name: write it as a URL, "
                             f"https://{endpoint}")
        else:
            items.append(f"region={endpoint}")  # s3fs's endpoint: the region

    if "acl" in opts:
        items.append(f"default_acl={_text('acl', opts.pop('acl'))}")
    if "subdomain" in opts and not _boolean("subdomain", opts.pop("subdomain")):
        items.append("use_path_request_style")
    if "use_content_type" in opts and not _boolean("use_content_type",
                                                   opts.pop("use_content_type")):
        raise UsageError("use_content_type=false is not supported: s3mount always sets "
                         "Content-Type from the file name extension; remove it")
    if "region_set" in opts:
        _boolean("region_set", opts.pop("region_set"))
    if "mode" in opts:
        mode = _text("mode", opts.pop("mode")).lower()
        if mode not in ("r", "ro", "rw"):
            raise UsageError(f"volume option 'mode' must be r, ro or rw, not '{mode}'")
        items.append("ro" if mode in ("r", "ro") else "ro=0")

    use_kms = _boolean("use_kms", opts.pop("use_kms")) if "use_kms" in opts else False
    kms_key_id = opts.pop("kms_key_id", None)
    if kms_key_id is not None and not use_kms:
        raise UsageError("kms_key_id needs use_kms=true")
    sse = opts.pop("use_sse", None)
    if isinstance(sse, bool) or (isinstance(sse, str) and sse.lower() in (*_TRUE, *_FALSE)):
        sse = "1" if _boolean("use_sse", sse) else None  # Cloud Foundry's true/false
    if use_kms:
        if sse not in (None, "1"):
            raise UsageError("use_kms=true and use_sse are different encryptions: give one")
        sse = "kmsid" + (f":{_text('kms_key_id', kms_key_id)}" if kms_key_id else "")
    if sse is not None:
        items.append(f"use_sse={_text('use_sse', sse)}")

    for key, value in [*opts.items(), *(extra or {}).items()]:
        if key.startswith("x-"):
            continue
        items.append(_option_item(key, value))

    spec = VolumeSpec(source, tuple(items), access_key, secret_key)
    check(spec)
    return spec


def check(spec: VolumeSpec) -> None:
    """Run the options through s3mount's own parser and checks (values, bucket name)."""
    parse_options(spec.options)
    # Any absolute path: the mount point is only checked when mounting.
    build_config([spec.source, os.sep], list(spec.options), foreground=False, debug=False,
                 single_threaded=False, environ={})
