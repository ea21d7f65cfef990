"""The table of ``-o`` options: the single source for the CLI, the fstab helper,
``--help``, the README and the man page.

Names and meanings follow s3fs-fuse, so an s3fs fstab line works unchanged
where s3mount supports the feature. Every option has a status:

* ``SUPPORTED``: implemented.
* ``PLANNED``: accepted by the parser but refused with "not yet supported", so
  an option is never silently ignored.
* ``UNSUPPORTED``: an s3fs option s3mount will not implement; refused with the
  reason and the alternative.
* ``IGNORED``: mount-table options (``_netdev``, ``nofail``, ...) and s3fs
  switches that have no meaning for s3mount; accepted and dropped.
"""

from __future__ import annotations

import dataclasses
import grp
import math
import os
import pwd
import re
from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from .errors import UsageError


class Status(Enum):
    SUPPORTED = "supported"
    PLANNED = "planned"
    UNSUPPORTED = "unsupported"
    IGNORED = "ignored"


def _flag(value: str | None) -> bool:
    if value is None:
        return True
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected no value, or 1/0")


_DECIMAL = re.compile(r"[+-]?[0-9]+", re.ASCII)
_OCTAL = re.compile(r"[0-7]+", re.ASCII)
# C's strtol with base 0: 0x hex, leading-0 octal, else decimal.
_C_INTEGER = re.compile(r"(0[xX][0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*)", re.ASCII)


def _integer(minimum: int | None = None, maximum: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        if not _DECIMAL.fullmatch(value):
            raise ValueError("expected a whole number")
        number = int(value, 10)
        if minimum is not None and number < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"must be at most {maximum}")
        return number

    return parse


def _dirty_window(value: str) -> int:
    number = _integer(-1)(value)
    if 0 <= number < 50:
        raise ValueError("must be -1 or at least 50")
    return number


def _number(minimum: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("expected a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if number < minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return number

    return parse


def _octal_mask(value: str) -> int:
    if not _OCTAL.fullmatch(value):
        raise ValueError("expected an octal mask such as 022")
    mask = int(value, 8)
    if not 0 <= mask <= 0o777:
        raise ValueError("must be between 000 and 777")
    return mask


def _c_integer(value: str) -> int:
    """Parse like C's strtol with base 0, as s3fs does for uid/gid."""
    match = _C_INTEGER.fullmatch(value)
    if match is None:
        raise ValueError("not a number")
    hexadecimal, octal, decimal = match.groups()
    if hexadecimal:
        return int(hexadecimal, 16)
    return int(octal, 8) if octal else int(decimal, 10)


def _id_parser(lookup: Callable[[str], int], what: str) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = _c_integer(value)
        except ValueError:
            try:
                return lookup(value)
            except KeyError:
                raise ValueError(f"no such {what}") from None
        if not 0 <= number < 2**32 - 1:
            raise ValueError(f"{what} id out of range")
        return number

    return parse


def _string(value: str) -> str:
    if not value:
        raise ValueError("needs a value")
    return value


def _instance_name(value: str) -> str:
    # It goes into log lines and the User-Agent header: a plain token only.
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ValueError("use 1 to 64 letters, digits, '.', '_' or '-'")
    return value


def _absolute_path(value: str) -> str:
    # The daemon changes its directory to / when it detaches.
    return os.path.abspath(_string(value))


def _url(value: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("the port is not a number") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://HOST[:PORT] or https://HOST[:PORT]")
    return value.rstrip("/")


def _proxy(value: str) -> str:
    """s3fs's form, [scheme://]host[:port]; without a scheme, http."""
    return _url(value if "://" in value else "http://" + value)


_SIZE = re.compile(r"([0-9]+)\s*([KMGTPE]?)(i?)B?", re.ASCII | re.IGNORECASE)


def _byte_size(value: str) -> int:
    """s3fs's bucket_size: a number of bytes with an optional GB/GiB/TB/TiB/PB/PiB/EB/EiB."""
    match = _SIZE.fullmatch(value.strip())
    if match is None:
        raise ValueError("expected a size such as 1099511627776, 500GiB or 2PB")
    number, unit, binary = match.groups()
    power = "KMGTPE".find(unit.upper()) + 1 if unit else 0
    size = int(number) * (1024 if binary else 1000) ** power
    if size < 1:
        raise ValueError("must be at least 1 byte")
    return size


def _sse(value: str) -> str:
    """s3fs's use_sse: 1 (SSE-S3), kmsid[:ID] / k[:ID] (SSE-KMS), or custom[:FILE] /
    c[:FILE] / FILE (SSE-C), the last three returned as custom or custom:FILE."""
    lowered = value.lower()
    if lowered in ("1", "kmsid", "k") or lowered.startswith(("kmsid:", "k:")):
        return value
    if lowered in ("custom", "c"):
        return "custom"
    if lowered.startswith(("custom:", "c:")):
        path = value.partition(":")[2]
        if not path:
            raise ValueError("expected custom:FILE, the file of SSE-C keys")
        return "custom:" + path
    if "/" in value:  # s3fs's old form: use_sse=FILE
        return "custom:" + value
    raise ValueError("expected 1 (SSE-S3), kmsid[:KEY_ID] (SSE-KMS) or custom[:FILE] (SSE-C)")


def _iam_role(value: str) -> bool:
    if value != "auto":
        raise ValueError("only iam_role or iam_role=auto: s3mount takes the instance's role")
    return True


_LOG_LEVELS = {
    "crit": "critical", "critical": "critical",
    "err": "error", "error": "error",
    "warn": "warning", "warning": "warning",
    "info": "info", "information": "info",
    "debug": "debug", "dbg": "debug",
}


def _log_level(value: str) -> str:
    try:
        return _LOG_LEVELS[value.lower()]
    except KeyError:
        raise ValueError("expected crit, err, warn, info or debug") from None


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any] | None  # None: a flag (bare, or =1/=0)
    default: Any
    group: str
    status: Status = Status.SUPPORTED
    _: dataclasses.KW_ONLY
    help: str = ""
    aliases: tuple[str, ...] = ()
    # Names whose bare presence sets this flag to False (rw → ro=False).
    negations: tuple[str, ...] = ()
    metavar: str = ""
    # The value a value option takes when given without one (s3fs's iam_role).
    bare_value: str | None = None
    # For PLANNED / UNSUPPORTED: what to tell the user.
    note: str = ""

    @property
    def is_flag(self) -> bool:
        return self.parse is None

    def convert(self, value: str | None) -> Any:
        if self.parse is None:
            return _flag(value)
        if value is None:
            if self.bare_value is None:
                raise ValueError("needs a value")
            value = self.bare_value
        return self.parse(value)


CREDENTIALS = "Credentials"
ENDPOINT = "Endpoint and addressing"
PERMISSIONS = "Permissions and ownership"
CACHE = "Caching"
UPLOAD = "Upload and copy"
NETWORK = "Network and retries"
COMPAT = "Compatibility"
LOGGING = "Logging"
MOUNT = "Mount behaviour"

GROUPS = (CREDENTIALS, ENDPOINT, PERMISSIONS, CACHE, UPLOAD, NETWORK, COMPAT, LOGGING, MOUNT)

_P = Status.PLANNED
_U = Status.UNSUPPORTED
_I = Status.IGNORED
_WRITES = "planned"
_ACLS = ("private", "public-read", "public-read-write", "authenticated-read",
         "bucket-owner-read", "bucket-owner-full-control", "aws-exec-read", "log-delivery-write")
_STORAGE_CLASSES = ("standard", "standard_ia", "onezone_ia", "reduced_redundancy",
                    "intelligent_tiering", "glacier", "glacier_ir", "deep_archive",
                    "express_onezone")


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.lower() not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return value.lower()

    return parse

OPTIONS: tuple[Option, ...] = (
    # Credentials
    Option("passwd_file", _string, None, CREDENTIALS, metavar="FILE",
           help="Credentials file in s3fs format (ACCESS:SECRET or BUCKET:ACCESS:SECRET lines); "
                "must not be accessible by others. Default: the first of ~/.passwd-s3mount, "
                "~/.passwd-s3fs, /etc/passwd-s3mount, /etc/passwd-s3fs that exists, "
                "after environment variables and ~/.aws/credentials."),
    Option("profile", _string, None, CREDENTIALS, metavar="NAME",
           help="Profile in ~/.aws/credentials (default: $AWS_PROFILE, else 'default')."),
    Option("use_session_token", None, False, CREDENTIALS,
           help="Require AWS_SESSION_TOKEN when credentials come from the environment."),
    Option("public_bucket", None, False, CREDENTIALS,
           help="Send anonymous (unsigned) requests; for public buckets."),
    Option("iam_role", _iam_role, False, CREDENTIALS, bare_value="auto", metavar="auto",
           help="Take credentials only from the EC2 instance's role (IMDSv2), skipping "
                "passwd files and the environment. A named role is not supported."),
    Option("ecs", None, False, CREDENTIALS, _U,
           note="s3mount uses container credentials automatically when "
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI is set; remove ecs"),
    Option("imdsv1only", None, False, CREDENTIALS, _U,
           note="s3mount uses botocore's instance metadata client (IMDSv2 with fallback)"),
    Option("ibm_iam_auth", None, False, CREDENTIALS, _U, note="IBM IAM is not supported"),
    Option("ibm_iam_endpoint", _string, None, CREDENTIALS, _U, note="IBM IAM is not supported"),
    Option("credlib", _string, None, CREDENTIALS, _U,
           note="use credential_process in ~/.aws/config with -o profile instead"),
    Option("credlib_opts", _string, None, CREDENTIALS, _U,
           note="use credential_process in ~/.aws/config with -o profile instead"),
    Option("accessKeyId", _string, None, CREDENTIALS, _U, aliases=("secretAccessKey",),
           note="keys on the command line are visible in ps; use passwd_file or "
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"),
    # Endpoint
    Option("url", _url, None, ENDPOINT, aliases=("host",), metavar="URL",
           help="S3 endpoint, http:// or https:// (default: AWS for the region)."),
    Option("region", _string, None, ENDPOINT, aliases=("endpoint",), metavar="REGION",
           help="SigV4 signing region (default: $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)."),
    Option("use_path_request_style", None, False, ENDPOINT,
           help="Path-style requests (http://host/bucket/key); needed by most S3-compatible "
                "servers. Used automatically when the url host is an IP address or localhost."),
    Option("bucket", _string, None, ENDPOINT, metavar="NAME[:/PREFIX]",
           help="Bucket (and prefix) when not given as the first argument."),
    Option("no_check_certificate", None, False, ENDPOINT,
           help="Do not verify the server's TLS certificate (insecure)."),
    Option("ca_bundle", _string, None, ENDPOINT, aliases=("ssl_ca_bundle",), metavar="FILE",
           help="CA certificates (PEM) to verify the server (default: $AWS_CA_BUNDLE, "
                "$CURL_CA_BUNDLE, then botocore's bundle)."),
    Option("proxy", _proxy, None, ENDPOINT, metavar="[SCHEME://]HOST[:PORT]",
           help="HTTP(S) proxy for all requests (default: $HTTPS_PROXY/$HTTP_PROXY)."),
    Option("sigv4", None, True, ENDPOINT, _I, help="Accepted; s3mount always signs with SigV4."),
    Option("sigv2", None, False, ENDPOINT, _U, note="only SigV4 signing is supported"),
    Option("listobjectsv2", None, True, ENDPOINT, _I,
           help="Accepted; s3mount always lists with ListObjectsV2."),
    Option("requester_pays", None, False, ENDPOINT,
           help="Send 'x-amz-request-payer: requester' with every request, for Requester "
                "Pays buckets: the requests and transfers are billed to you."),
    Option("servicepath", _string, None, ENDPOINT, _P),
    Option("ssl_verify_hostname", _string, None, ENDPOINT, _U,
           note="use no_check_certificate or ca_bundle"),
    Option("proxy_cred_file", _string, None, ENDPOINT, _P),
    Option("ssl_client_cert", _string, None, ENDPOINT, _P),
    Option("cipher_suites", _string, None, ENDPOINT, _U,
           note="TLS ciphers come from the system's OpenSSL configuration"),
    Option("ipresolve", _string, None, ENDPOINT, _U, note="the system resolver decides"),
    Option("nodnscache", None, False, ENDPOINT, _I,
           help="Accepted; s3mount keeps no DNS cache of its own."),
    Option("nosscache", None, False, ENDPOINT, _I,
           help="Accepted; s3mount keeps no TLS session cache of its own."),
    Option("noua", None, False, ENDPOINT, _I,
           help="Accepted; the User-Agent is botocore's plus s3mount/VERSION."),
    Option("noxmlns", None, False, ENDPOINT, _I, help="Accepted; obsolete in s3fs too."),
    # Permissions and ownership
    Option("uid", _id_parser(lambda n: pwd.getpwnam(n).pw_uid, "user"), None, PERMISSIONS,
           metavar="ID|NAME",
           help="Owner shown for every entry (default: from x-amz-meta-uid, else the "
                "mounting user). Only root may give 0."),
    Option("gid", _id_parser(lambda n: grp.getgrnam(n).gr_gid, "group"), None, PERMISSIONS,
           metavar="ID|NAME",
           help="Group shown for every entry (default: from x-amz-meta-gid, else the "
                "mounting user's group). Only root may give 0."),
    Option("umask", _octal_mask, None, PERMISSIONS, metavar="OCTAL",
           help="Permission bits of every entry become 0777 & ~umask (default: from "
                "x-amz-meta-mode)."),
    Option("mp_umask", _octal_mask, 0, PERMISSIONS, metavar="OCTAL",
           help="Permission bits of the mount point (with allow_other: 0777 & ~mp_umask; "
                "else 0700) when the bucket stores none for it."),
    Option("allow_other", None, False, PERMISSIONS,
           help="Let other users access the mount (implies default_permissions; non-root "
                "users need user_allow_other in /etc/fuse.conf)."),
    Option("allow_root", None, False, PERMISSIONS,
           help="Let root access the mount of another user."),
    Option("default_permissions", None, False, PERMISSIONS,
           help="Let the kernel check access against the mode, owner and group."),
    Option("default_acl", _choice(_ACLS), None, PERMISSIONS, metavar="ACL",
           help="Canned ACL sent with every new object, e.g. public-read (default: none, "
                "so the bucket's default applies; s3fs sends private)."),
    # Caching
    Option("stat_cache_expire", _number(0), 60.0, CACHE, metavar="SECONDS",
           help="How long attributes and listings are trusted before asking S3 again; "
                "while a directory is being read, lookups of its names use its listing until "
                "this long after its last readdir (s3fs: 900)."),
    Option("max_stat_cache_size", _integer(0), 100000, CACHE, metavar="ENTRIES",
           help="Maximum number of cached attribute entries; cached directory listings "
                "count their entries against it too (in a larger directory, each lookup "
                "costs a LIST and a HEAD)."),
    Option("enable_negative_cache", None, True, CACHE, aliases=("enable_noobj_cache",),
           negations=("disable_negative_cache", "disable_noobj_cache"),
           help="Remember names that do not exist for stat_cache_expire (default on; "
                "turn off with disable_negative_cache)."),
    Option("use_cache", _string, None, CACHE, metavar="DIR",
           help="Directory for the data of open files and the journal of changes not yet "
                "uploaded, kept across mounts: a mount after a crash uploads what the "
                "killed one left (default: a private directory in tmpdir, removed at exit, "
                "so nothing survives a crash). Data read from objects, and data of files "
                "written once they are uploaded, is kept there too, in 1 MiB blocks, and "
                "reused by later mounts while the object's ETag and size are unchanged."),
    Option("check_cache_dir_exist", None, False, CACHE,
           help="Fail instead of creating the use_cache directory."),
    Option("del_cache", None, False, CACHE,
           help="Delete the cached data of objects read (the read cache in the cache "
                "directory) at mount and at unmount; the journal of changes not yet "
                "uploaded is kept."),
    Option("ensure_diskfree", _integer(0), None, CACHE, metavar="MB",
           help="Disk space that must stay free on the cache directory's disk; a write "
                "that would use it waits for uploads to free space, else fails with ENOSPC "
                "(default: none)."),
    Option("free_space_ratio", _integer(0, 100), None, CACHE, metavar="PERCENT",
           help="Like ensure_diskfree, in percent of the cache directory's disk (the larger "
                "of the two counts; s3fs's default is 10, s3mount's none)."),
    Option("max_cache_size", _integer(1), None, CACHE, metavar="MB",
           help="Most disk space the data of open and not yet uploaded files and the "
                "read cache may take in the cache directory; the least recently read "
                "blocks are evicted first, then a write beyond it waits for uploads to "
                "free space, else fails with ENOSPC (default: no limit but the disk; the "
                "read cache always leaves 5% of the disk free)."),
    Option("attrs_from_list", None, False, CACHE,
           help="For read-mostly data sets: stat shows listed entries with what LIST "
                "says (size, Last-Modified as the times) and no HEAD per entry, so a cold "
                "ls -l of 1,000 files is one request. Modes and owners are then those of "
                "umask=/uid=/gid= (else 0640 for files, 0750 for directories, and the "
                "mounting user), not the stored ones; symbolic links and special files "
                "look like regular files, and ls sees no ACL or SELinux label. Reads, "
                "other xattrs and changes still HEAD the object."),
    Option("read_ahead_max", _integer(2, 1024), 32, CACHE, metavar="MB",
           help="Largest read-ahead window of a file read sequentially: it starts at 1.125 "
                "MiB and doubles up to this, fetched in parallel ranged GETs of up to 8 MiB."),
    Option("read_ahead_memory", _integer(0, 64 * 1024), 64, CACHE, metavar="MB",
           help="Memory that the read-ahead of all open files may hold together; beyond it "
                "reads fetch only what they ask for (0: no read-ahead)."),
    Option("tmpdir", _string, None, CACHE, metavar="DIR",
           help="Where the private cache directory is made when use_cache is not given "
                "(default: $TMPDIR or /tmp)."),
    Option("stat_cache_interval_expire", _integer(0), None, CACHE, _P),
    Option("kernel_cache", None, False, CACHE, _I,
           help="Accepted; s3mount always keeps a file's pages in the kernel's page cache "
                "across opens, and drops them when it finds the object changed (another "
                "ETag or size)."),
    Option("fake_diskfree", _integer(0), None, CACHE, _P),
    Option("set_check_cache_sigusr1", _string, None, CACHE, _U,
           note="s3mount's cache needs no integrity dump"),
    # Upload and copy
    Option("multipart_size", _integer(5, 5 * 1024), 10, UPLOAD, metavar="MB",
           help="Part size of multipart uploads; grown when a file would need more than "
                "10,000 parts."),
    Option("multipart_threshold", _integer(5, 5 * 1024), 25, UPLOAD, metavar="MB",
           help="Files of this size and larger are uploaded in parallel parts."),
    Option("multipart_copy_size", _integer(5, 5 * 1024), 512, UPLOAD, metavar="MB",
           help="Part size of server-side multipart copies (objects above "
                "singlepart_copy_limit)."),
    Option("singlepart_copy_limit", _integer(0, 5 * 1024), 512, UPLOAD, metavar="MB",
           help="Largest object copied with one CopyObject request."),
    Option("putheader_mp_threshold", _integer(5), None, UPLOAD, _P, note=_WRITES),
    Option("async_upload", None, False, UPLOAD,
           help="Write-back: close() returns once the data is safe on local disk and "
                "uploads run in the background (fsync() still waits for the upload). Needs "
                "use_cache to survive a crash; a failed background upload is retried and "
                "reported by the next close() or fsync() as EIO."),
    Option("nomultipart", None, False, UPLOAD,
           help="Never use multipart uploads (files above 5 GiB then fail with EFBIG)."),
    Option("nomixupload", None, False, UPLOAD,
           help="Upload every part of a changed file: no unchanged range is copied "
                "server-side (UploadPartCopy) into its multipart upload, and big files "
                "are not uploaded while written, as that ends in such a copy."),
    Option("streamupload", None, False, UPLOAD,
           help="Upload a big file written from its start while it is written: parts go "
                "up in the background once multipart_threshold bytes are written (without "
                "it: once half of max_dirty_data is), and close() sends only the tail, "
                "completes, and sets the final attributes with one server-side copy. Pays "
                "where uploading is slower than writing."),
    Option("max_dirty_data", _dirty_window, 5120, UPLOAD, metavar="MB",
           help="The most of a file being streamed that stays on local disk; a file written "
                "from its start streams once half of this is written, even without "
                "streamupload. A writer more than this ahead of the upload waits for its "
                "parts; parts uploaded already leave the cache (reading or rewriting them "
                "first completes the upload, as fsync would). At least 50; -1: no limit (and "
                "no streaming without streamupload). Never more than half of max_cache_size."),
    Option("nocopyapi", None, False, UPLOAD,
           help="Never copy server-side: metadata changes and renames download and "
                "re-upload (for servers without CopyObject; also detected automatically)."),
    Option("norenameapi", None, False, UPLOAD,
           help="Rename by download and re-upload instead of server-side copies; other "
                "copies (chmod, utimes) stay server-side. As in s3fs, it implies "
                "nomixupload."),
    Option("storage_class", _choice(_STORAGE_CLASSES), None, UPLOAD, aliases=("use_rrs",),
           metavar="CLASS",
           help="Storage class of new objects: " + ", ".join(_STORAGE_CLASSES) + " (use_rrs "
                "means reduced_redundancy)."),
    Option("use_sse", _sse, None, UPLOAD, bare_value="1", metavar="1|kmsid[:ID]|custom[:FILE]",
           help="Server-side encryption of new objects: 1 for SSE-S3; kmsid:ID (or k:ID) for "
                "SSE-KMS, without an ID $AWSSSEKMSID or the bucket's default key; custom:FILE "
                "(or c:FILE) for SSE-C with customer keys, one a line: the first encrypts, all "
                "decrypt. custom alone takes the keys from load_sse_c, else $AWSSSECKEYS "
                "(keys separated by ':'). A key is 32 characters, or 32 bytes in base64; the "
                "file must not be accessible by group or others (chmod 600)."),
    Option("load_sse_c", _string, None, UPLOAD, metavar="FILE",
           help="SSE-C keys (same file format as use_sse=custom:FILE) to read objects "
                "encrypted with them. New objects are encrypted only with use_sse=custom; "
                "without use_sse, copies (chmod, rename) keep an object's SSE-C key."),
    Option("enable_content_md5", None, False, UPLOAD,
           help="Send the MD5 of every uploaded body (PutObject, UploadPart) as Content-MD5, "
                "so that the server checks the data it stores and refuses a body damaged on "
                "the way (BadDigest, retried). Costs an MD5 of every byte uploaded."),
    Option("enable_unsigned_payload", None, False, UPLOAD,
           help="Sign requests without the SHA-256 of their body (UNSIGNED-PAYLOAD): less "
                "CPU per byte uploaded, but the signature no longer covers the data. Over "
                "https with enable_content_md5 that is botocore's default anyway."),
    Option("ahbe_conf", _string, None, UPLOAD, _P, note=_WRITES),
    Option("mime", _string, None, UPLOAD, metavar="FILE",
           help="MIME table for Content-Type by file extension (default: /etc/mime.types, "
                "else Python's built-in table)."),
    Option("hard_remove", None, True, UPLOAD, _I,
           help="Accepted; s3mount always deletes an unlinked object at once, and open "
                "descriptors keep working."),
    Option("max_read", _integer(4096), None, UPLOAD, metavar="BYTES",
           help="Largest read request the kernel sends to the mount (a FUSE mount "
                "option); libfuse 2 caps it at 128 KiB, which is also the default."),
    Option("max_thread_count", _integer(1, 256), 10, UPLOAD,
           aliases=("parallel_count",), metavar="N",
           help="Parallel S3 requests of transfers (parts of uploads, copies and "
                "read-ahead), and the number of FUSE worker threads."),
    Option("multireq_max", _integer(1, 256), 64, UPLOAD, metavar="N",
           help="Parallel HEAD requests that fetch the attributes of a listed "
                "directory's entries (ls -l), apart from max_thread_count. "
                "s3fs's default is 20: over a long round trip, the HEADs in "
                "flight set the time of a cold ls -l."),
    # Network and retries
    Option("retries", _integer(0, 100), 5, NETWORK, metavar="N",
           help="Retries of a failed request: 5xx answers, throttling (503 SlowDown, 429), "
                "connection errors, time-outs, and downloads cut short or failing their "
                "checksum. The waits between attempts double from 0.25-0.5 s up to 10-20 s "
                "(exponential backoff with jitter); when the retries are spent the operation "
                "fails with EIO."),
    Option("connect_timeout", _number(0.1), 10.0, NETWORK, metavar="SECONDS",
           help="Timeout for opening a connection; a time-out is a failed attempt, retried "
                "(s3fs: 300)."),
    Option("readwrite_timeout", _number(0.1), 60.0, NETWORK, metavar="SECONDS",
           help="Timeout for a stalled read or write on a connection; a time-out is a failed "
                "attempt, retried (s3fs: 120)."),
    Option("list_object_max_keys", _integer(1), 1000, NETWORK, metavar="N",
           help="Keys asked for per ListObjectsV2 page; S3 returns at most 1000, so larger "
                "values (s3fs allows them) count as 1000."),
    # Compatibility
    Option("compat_dir", None, True, COMPAT, negations=("notsup_compat_dir",),
           help="Recognise old directory forms ('dir' without slash, 'dir_$folder$') and "
                "directories that exist only as a key prefix (default on)."),
    Option("complement_stat", None, True, COMPAT, _I,
           help="Accepted; missing modes are always filled in."),
    Option("use_xattr", None, True, COMPAT, _I,
           help="Accepted; extended attributes in x-amz-meta-xattr are always readable."),
    Option("use_wtf8", None, False, COMPAT, _P),
    Option("update_parent_dir_stat", None, True, COMPAT,
           help="Store a directory's new mtime/ctime in its marker when entries are added "
                "or removed, coalesced to one request per directory every few seconds "
                "(default on; s3fs: off). =0 keeps the times in memory only."),
    Option("bucket_size", _byte_size, None, COMPAT, metavar="SIZE",
           help="Size that df reports, e.g. 1PiB (default: about 256 TiB, like s3fs)."),
    Option("instance_name", _instance_name, None, LOGGING, metavar="NAME",
           help="Name of this mount in its log lines ([NAME] in front of each message) "
                "and in the User-Agent of its requests, to tell mounts apart."),
    Option("fd_page_size", _string, None, COMPAT, _I, help="Accepted; obsolete in s3fs too."),
    # Logging
    Option("dbglevel", _log_level, "warning", LOGGING, aliases=("f2",),
           metavar="LEVEL", help="Log level: crit, err, warn, info or debug (s3fs: crit)."),
    Option("logfile", _absolute_path, None, LOGGING, metavar="FILE",
           help="Log to FILE instead of syslog (detached) or stderr (-f); reopened on "
                "SIGHUP, for logrotate."),
    Option("curldbg", _string, None, LOGGING, _U, note="use dbglevel=debug"),
    Option("insecure_logging", None, False, LOGGING, _U, note="secrets are never logged"),
    Option("no_time_stamp_msg", None, False, LOGGING,
           help="Log lines to logfile or stderr without the date and time in front "
                "(for journald and other collectors that add their own; syslog lines "
                "never have it)."),
    # Mount behaviour (FUSE and mount(8))
    Option("ro", None, False, MOUNT, negations=("rw",),
           help="Read-only mount: every change fails with EROFS."),
    Option("nonempty", None, False, MOUNT,
           help="Allow mounting over a non-empty directory (its files are hidden)."),
    Option("dev", None, False, MOUNT, negations=("nodev",),
           help="Honour device files (FUSE default: nodev)."),
    Option("suid", None, False, MOUNT, negations=("nosuid",),
           help="Honour set-user-ID and set-group-ID bits (FUSE default: nosuid)."),
    Option("exec", None, True, MOUNT, negations=("noexec",),
           help="Allow executing programs from the mount (noexec forbids it)."),
    Option("atime", None, True, MOUNT, negations=("noatime",),
           help="Accepted for mount(8) compatibility; access times are not updated (noatime, "
                "relatime accepted too)."),
    Option("relatime", None, False, MOUNT, _I, aliases=("strictatime", "lazytime"),
           help="Accepted; access times are not updated."),
    Option("_netdev", None, False, MOUNT, _I,
           aliases=("nofail", "auto", "noauto", "user", "users", "nouser", "owner",
                    "defaults", "comment", "sync", "async"),
           help="Mount-table options (also nofail, auto, noauto, user, users, nouser, "
                "owner, defaults, comment=, sync, async, x-*): accepted and ignored."),
)

OPTION_BY_NAME: dict[str, Option] = {option.name: option for option in OPTIONS}

# Every spelling → (option, fixed value or None to parse the given value).
_SPELLINGS: dict[str, tuple[Option, bool | None]] = {}
for _option in OPTIONS:
    for _spelling in (_option.name, *_option.aliases):
        _SPELLINGS[_spelling] = (_option, None)
    for _spelling in _option.negations:
        _SPELLINGS[_spelling] = (_option, False)
# s3fs aliases that imply a value when given bare.
_VALUE_FOR_BARE_ALIAS = {"f2": "debug", "use_rrs": "reduced_redundancy"}


def split_option_strings(option_strings: Iterable[str]) -> list[tuple[str, str | None]]:
    """Split ``-o a,b=c`` strings into (name, value) pairs, in order."""
    pairs: list[tuple[str, str | None]] = []
    for text in option_strings:
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            pairs.append((name.strip(), value.strip() if sep else None))
    return pairs


def parse_options(option_strings: Iterable[str]) -> dict[str, Any]:
    """Parse ``-o`` strings into {canonical name: value} for the options given.

    Later occurrences win, like mount(8). Raises UsageError with one line on
    an unknown option, a bad value, or an option that is planned or unsupported.
    """
    given: dict[str, Any] = {}
    for name, value in split_option_strings(option_strings):
        if name.startswith("x-"):
            continue
        try:
            option, fixed = _SPELLINGS[name]
        except KeyError:
            raise UsageError(
                f"unknown option '{name}' (see 's3mount --help' for the -o options)"
            ) from None
        if option.status is Status.IGNORED:
            if option.is_flag and name == option.name and value is not None:
                _check(option, name, value)
            continue
        if option.status is Status.PLANNED:
            hint = f" ({option.note})" if option.note else ""
            raise UsageError(
                f"option '{name}' is not yet supported by this version of s3mount{hint}; "
                "remove it to mount"
            )
        if option.status is Status.UNSUPPORTED:
            raise UsageError(f"option '{name}' is not supported: {option.note}")
        if fixed is not None:
            if value is not None:
                raise UsageError(f"option '{name}' takes no value")
            given[option.name] = fixed
            continue
        if name in _VALUE_FOR_BARE_ALIAS and value in (None, "1"):
            value = _VALUE_FOR_BARE_ALIAS[name]
        given[option.name] = _check(option, name, value)
    return given


def _check(option: Option, name: str, value: str | None) -> Any:
    try:
        return option.convert(value)
    except ValueError as exc:
        if value is None:
            raise UsageError(f"option '{name}' needs a value") from None
        raise UsageError(f"bad value '{value}' for option '{name}': {exc}") from None


def _settings_class() -> type:
    fields = [(option.name, Any, dataclasses.field(default=option.default)) for option in OPTIONS]
    return dataclasses.make_dataclass("Settings", fields, frozen=True)


Settings = _settings_class()
Settings.__doc__ = "Every option's effective value, as attributes named like the option."


def settings_from(given: Mapping[str, Any]) -> Any:
    """Build Settings: the defaults of the table overlaid with the given values."""
    return Settings(**given)


def help_rows(group: str) -> list[tuple[str, str]]:
    """(spelling, help) rows for the options of a group that a user can give."""
    rows = []
    for option in OPTIONS:
        if option.group != group or option.status in (Status.PLANNED, Status.UNSUPPORTED):
            continue
        spelling = option.name
        if option.metavar:
            spelling += "=" + option.metavar
        if option.aliases and option.name != "_netdev":
            spelling += " (also: " + ", ".join(option.aliases) + ")"
        if option.negations:
            spelling += " (off: " + ", ".join(option.negations) + ")"
        rows.append((spelling, option.help))
    return rows


def not_available() -> list[Option]:
    """Options recognised but refused: planned or unsupported."""
    return [o for o in OPTIONS if o.status in (Status.PLANNED, Status.UNSUPPORTED)]
