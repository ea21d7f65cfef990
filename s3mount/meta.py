"""Codec between S3 object headers and POSIX attributes, in s3fs's on-bucket format.

Pure logic: nothing here talks to S3 or FUSE. Every decoder is total: a garbage header
value is replaced by the documented default and reported through ``warn``, because one
bad object written by some other tool must not make a whole directory unreadable.
"""

from __future__ import annotations

import base64
import binascii
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import quote, unquote_to_bytes

FOLDER_SUFFIX = "_$folder$"
DIR_CONTENT_TYPE = "application/x-directory"
MAX_NAME_BYTES = 255
MAX_KEY_BYTES = 1024

# Nextcloud marks its directory objects with the second type.
_DIR_CONTENT_TYPES = frozenset({DIR_CONTENT_TYPE, "httpd/unix-directory"})

_NS_PER_SEC = 1_000_000_000
_DIR_SIZE = 4096
_MAX_MODE = 0o177777
# (uid_t)-1 means "leave unchanged" to chown(2), so it cannot be a real owner.
_MAX_ID = 2**32 - 2
# fuse_attr.rdev is 32 bits wide: a larger device number cannot reach the kernel.
_MAX_RDEV = 2**32 - 1
_VALID_TYPES = frozenset(
    {
        stat.S_IFREG,
        stat.S_IFDIR,
        stat.S_IFLNK,
        stat.S_IFIFO,
        stat.S_IFCHR,
        stat.S_IFBLK,
        stat.S_IFSOCK,
    }
)

# C strtol(base=0) syntax. re.ASCII because Python's \d and int() also accept non-ASCII
# digits, which no C writer would ever produce.
_STRTOL_RE = re.compile(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\s*", re.ASCII)
_OCTAL_RE = re.compile(r"\s*([0-7]+)\s*", re.ASCII)
_DECIMAL_RE = re.compile(r"\s*([0-9]+)\s*", re.ASCII)
# At most 20 digits of seconds keeps int() far from its digit limit and is still far
# beyond the ±2**63 ns range checked afterwards.
_TIME_RE = re.compile(r"\s*([+-]?[0-9]{1,20})(?:\.([0-9]+))?\s*", re.ASCII)
# Anything longer is not a number any writer produces; refusing it early keeps int()
# away from its 4300-digit limit.
_MAX_NUMBER_CHARS = 64
_SHOW_CHARS = 40

Warn = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Attr:
    """POSIX attributes of one object, as getattr reports them."""

    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    rdev: int = 0


def _show(value: str) -> str:
    """A header value for a one-line log message: repr() escapes newlines, and long
    garbage is cut so that one object cannot flood the log."""
    shown = repr(value)
    # Bounded after escaping: one unprintable character shows as up to 10.
    return shown if len(shown) <= 2 * _SHOW_CHARS else shown[:2 * _SHOW_CHARS] + "..."


def _parse_c_int(value: str) -> int | None:
    """Parse like C strtol(value, &end, 0) with *end == '\\0' required, as s3fs's
    cvt_strtoofft does: "0755" is octal, "0x1ed" hex, "493" decimal."""
    if len(value) > _MAX_NUMBER_CHARS:
        return None
    m = _STRTOL_RE.fullmatch(value)
    if m is None:
        return None
    sign, digits = m.groups()
    if digits[:2] in ("0x", "0X"):
        number = int(digits, 16)
    elif digits.startswith("0"):
        number = int(digits, 8)
    else:
        number = int(digits)
    return -number if sign == "-" else number


def _parse_octal(value: str) -> int | None:
    if len(value) > _MAX_NUMBER_CHARS:
        return None
    m = _OCTAL_RE.fullmatch(value)
    return None if m is None else int(m.group(1), 8)


def _parse_decimal(value: str) -> int | None:
    if len(value) > _MAX_NUMBER_CHARS:
        return None
    m = _DECIMAL_RE.fullmatch(value)
    return None if m is None else int(m.group(1))


def parse_time_ns(value: str) -> int | None:
    """Parse an x-amz-meta-{m,c,a}time value into ns since the epoch; None for garbage.

    The value is "SECONDS" or "SECONDS.FRACTION", read as a struct timespec: the fraction
    is a non-negative part of a second that is *added* to SECONDS, even when SECONDS is
    negative ("-2.500000000" is -1.5 s). That is how s3fs prints and reads a normalised
    timespec, so negative times round-trip with s3fs.

    s3fs differs: it takes the fraction digits as an unscaled count of nanoseconds, so
    rclone's "1.5" becomes 1 s + 5 ns. Here the fraction is a decimal fraction of a second
    (padded or truncated to 9 digits); for what s3fs writes (no fraction or exactly 9
    digits) both readings agree.
    """
    m = _TIME_RE.fullmatch(value)
    if m is None:
        return None
    seconds, fraction = m.groups()
    ns = int(seconds) * _NS_PER_SEC
    if fraction:
        ns += int(fraction[:9].ljust(9, "0"))
    if not -(2**63) <= ns < 2**63:
        return None
    return ns


def format_time_ns(ns: int) -> str:
    """Format ns since the epoch as s3fs does: "SECONDS", or "SECONDS.NNNNNNNNN" with
    exactly 9 digits when there is a sub-second part (see parse_time_ns for negatives)."""
    seconds, nanos = divmod(ns, _NS_PER_SEC)
    if nanos == 0:
        return str(seconds)
    return f"{seconds}.{nanos:09d}"


def is_directory_content_type(content_type: str | None) -> bool:
    """True for the Content-Types that mark a directory object (parameters ignored)."""
    if content_type is None:
        return False
    return content_type.split(";", 1)[0].strip().lower() in _DIR_CONTENT_TYPES


def _lowercase_keys(metadata: Mapping[str, str]) -> dict[str, str]:
    """S3 lowercases user-metadata names, but some S3-compatible servers return them
    capitalised ("X-Amz-Meta-Mode" reaches us as "Mode"). An exact lowercase name wins
    over a differently cased duplicate."""
    lowered = {k.lower(): v for k, v in metadata.items() if k != k.lower()}
    lowered.update((k, v) for k, v in metadata.items() if k == k.lower())
    return lowered


class _Decoder:
    """Header lookups for one object, reporting each replaced garbage value."""

    def __init__(self, key: str, meta: dict[str, str], warn: Warn | None) -> None:
        self.key = key
        self.meta = meta
        self.warn = warn

    def garbage(self, name: str, value: str, why: str, fallback: str) -> None:
        if self.warn is not None:
            self.warn(
                f"{self.key!r}: ignoring x-amz-meta-{name}={_show(value)} ({why}); "
                f"using {fallback}"
            )

    def note(self, message: str) -> None:
        if self.warn is not None:
            self.warn(f"{self.key!r}: {message}")

    def first_present(self, names: tuple[str, ...]) -> tuple[str, str] | None:
        """The first of the alternative headers that is present, even if it is garbage:
        s3fs's precedence decides which header counts, not which one parses."""
        for name in names:
            if name in self.meta:
                return name, self.meta[name]
        return None

    def mode(self, default: int) -> int:
        found = self.first_present(("mode", "permissions", "goog-reserved-posix-mode"))
        if found is None:
            return default
        name, value = found
        # GCS writes the mode as a bare octal string; the others are strtol base 0.
        parsed = _parse_octal(value) if name.startswith("goog-") else _parse_c_int(value)
        if parsed is None or not 0 <= parsed <= _MAX_MODE:
            self.garbage(name, value, "not a mode", f"{default:#o}")
            return default
        return parsed

    def ident(self, names: tuple[str, ...], default: int) -> int:
        found = self.first_present(names)
        if found is None:
            return default
        name, value = found
        parsed = _parse_c_int(value)
        if parsed is None or not 0 <= parsed <= _MAX_ID:
            self.garbage(name, value, "not a user or group id", str(default))
            return default
        return parsed

    def time(self, names: tuple[str, ...], fallback_ns: int) -> int:
        # s3fs differs: it ignores times <= 0 (treats them as absent), which loses
        # `touch -d 1960-01-01`; every value in range is honoured here.
        found = self.first_present(names)
        if found is None:
            return fallback_ns
        name, value = found
        parsed = parse_time_ns(value)
        if parsed is None:
            self.garbage(name, value, "not a time", "Last-Modified")
            return fallback_ns
        return parsed

    def rdev(self) -> int:
        value = self.meta.get("rdev")
        if value is None:
            return 0
        parsed = _parse_decimal(value)
        if parsed is None or parsed > _MAX_RDEV:
            self.garbage("rdev", value, "not a device number", "0")
            return 0
        return parsed


def _file_type(mode: int, decoder: _Decoder, marker_key: bool, content_type: str | None) -> int:
    """The S_IFMT bits the object really has; 0 is never returned."""
    ftype = stat.S_IFMT(mode)
    if ftype and ftype not in _VALID_TYPES:
        decoder.note(f"mode {mode:o} has unknown file type bits; inferring the type")
        ftype = 0
    if marker_key and ftype not in (0, stat.S_IFDIR):
        # s3fs differs: it would show "d/" with a file mode as a file named "d" whose
        # data lives under a key that opening "d" never uses. A key that can only be
        # a directory marker is shown as a directory.
        decoder.note(f"mode {mode:o} is not a directory but the key is a directory marker")
        return stat.S_IFDIR
    if ftype:
        return ftype
    # s3fs differs: it infers no type at all for s3sync's `permissions` header, leaving
    # a mode without type bits; the same inference applies to every source here.
    if marker_key or is_directory_content_type(content_type):
        return stat.S_IFDIR
    return stat.S_IFREG


def decode_attr(
    key: str,
    *,
    size: int,
    content_type: str | None,
    last_modified_ns: int,
    metadata: Mapping[str, str],
    default_uid: int,
    default_gid: int,
    warn: Warn | None = None,
) -> Attr:
    """Attributes of the object ``key`` from its HEAD response (s3fs-format.md §2.2, §2.5).

    ``metadata`` is botocore's ``Metadata`` (names without the x-amz-meta- prefix).
    Never raises: each garbage value becomes its default and is reported to ``warn``.
    """
    decoder = _Decoder(key, _lowercase_keys(metadata), warn)
    marker_key = key.endswith(("/", FOLDER_SUFFIX))

    stored = decoder.mode(0o750 if marker_key else 0o640)
    ftype = _file_type(stored, decoder, marker_key, content_type)
    perms = stat.S_IMODE(stored)
    # Only a mode without type bits was written by a tool that knows nothing of POSIX
    # modes, and only then is an empty permission set an accident rather than chmod 000
    # (this is s3fs's complement_stat rule, applied always).
    if stat.S_IFMT(stored) not in _VALID_TYPES and perms & 0o777 == 0:
        perms |= stat.S_IRUSR | (stat.S_IXUSR if ftype == stat.S_IFDIR else 0)

    return Attr(
        mode=ftype | perms,
        uid=decoder.ident(("uid", "owner", "goog-reserved-posix-uid"), default_uid),
        gid=decoder.ident(("gid", "group", "goog-reserved-posix-gid"), default_gid),
        # s3fs 1.94+ reports 4096 whatever the marker object's size.
        size=_DIR_SIZE if ftype == stat.S_IFDIR else size,
        mtime_ns=decoder.time(("mtime", "goog-reserved-file-mtime"), last_modified_ns),
        ctime_ns=decoder.time(("ctime",), last_modified_ns),
        atime_ns=decoder.time(("atime",), last_modified_ns),
        rdev=decoder.rdev() if ftype in (stat.S_IFCHR, stat.S_IFBLK) else 0,
    )


def encode_xattrs(xattrs: Mapping[str, bytes]) -> str | None:
    """The x-amz-meta-xattr header value for ``xattrs``, or None when there are none
    (the header must then be removed, as s3fs does).

    s3fs's format is URL-encode('{"name":"base64(value)",...}') with raw names, so a name
    containing ',' or '"' cannot be read back; such a name raises ValueError, as does an
    empty name or one that is not encodable as UTF-8 (with surrogateescape).
    """
    if not xattrs:
        return None
    pairs: list[tuple[bytes, bytes]] = []
    for name, value in xattrs.items():
        if not name:
            raise ValueError("empty xattr name")
        if "," in name or '"' in name:
            raise ValueError(f"xattr name {name!r} contains ',' or '\"'")
        try:
            raw_name = name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as exc:
            raise ValueError(f"xattr name {name!r} is not encodable as UTF-8") from exc
        pairs.append((raw_name, base64.b64encode(value)))
    # s3fs keeps xattrs in a std::map, i.e. sorted by name bytes.
    pairs.sort()
    body = b"{" + b",".join(b'"' + n + b'":"' + v + b'"' for n, v in pairs) + b"}"
    # quote() always keeps A-Za-z0-9 _ . - ~; s3fs's urlEncodePath also keeps '/'.
    return quote(body, safe="/")


def _unquote_part(part: str) -> str | None:
    """Remove the double quotes around one side of a pair; None if quoting is broken."""
    part = part.strip()
    if '"' not in part:
        return part
    if len(part) >= 2 and part[0] == part[-1] == '"' and '"' not in part[1:-1]:
        return part[1:-1]
    return None


def _b64decode(value: str) -> bytes | None:
    # s3fs always pads, but its own decoder does not require padding, so neither do we.
    padded = value + "=" * (-len(value) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_xattrs(header: str | None, warn: Warn | None = None) -> dict[str, bytes]:
    """Parse an x-amz-meta-xattr header value as s3fs does (string_util.cpp:746-802).

    Never raises: malformed pairs are skipped and a header that is not "{...}" at all
    yields no attributes. Either is reported to ``warn`` once per header, however many
    pairs are bad, so that one hostile header cannot flood the log.
    """
    if header is None:
        return {}

    def report(message: str) -> None:
        if warn is not None:
            warn(f"xattr header: {message}")

    # surrogatepass: a str from anywhere must not make encoding raise.
    text = unquote_to_bytes(header.encode("utf-8", "surrogatepass")).decode(
        "utf-8", "surrogateescape"
    )
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end < start:
        report(f"{_show(text)} is not a {{...}} object; ignoring it")
        return {}
    inner = text[start + 1 : end]
    result: dict[str, bytes] = {}
    if not inner.strip():
        return result
    skipped: list[str] = []
    for pair in inner.split(","):
        # Base64 never contains ':', so the last one separates name and value even when
        # the name contains colons.
        name_part, colon, value_part = pair.rpartition(":")
        name = _unquote_part(name_part)
        value = _unquote_part(value_part)
        if not colon or name is None or value is None:
            skipped.append(f"malformed pair {_show(pair)}")
        elif not name:
            skipped.append(f"pair with empty name {_show(pair)}")
        else:
            data = _b64decode(value)
            if data is None:
                skipped.append(f"{_show(name)}: value is not base64")
            else:
                result[name] = data
    if len(skipped) == 1:
        report(f"skipping {skipped[0]}")
    elif skipped:
        report(f"skipping {len(skipped)} malformed pairs, the first: {skipped[0]}")
    return result


def skip_reason(name: str) -> str | None:
    """Why ``name`` cannot be a file name component, or None if it can."""
    if not name:
        return "empty name"
    if name in (".", ".."):
        return "name is '.' or '..'"
    if "/" in name:
        return "name contains '/'"
    if "\0" in name:
        return "name contains NUL"
    try:
        # S3 keys are UTF-8: a name with bytes that are not (the kernel's bytes arrive
        # surrogate-escaped) could be neither stored nor read back unchanged.
        length = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if length > MAX_NAME_BYTES:
        return f"name longer than {MAX_NAME_BYTES} bytes"
    return None


def valid_name(name: str) -> bool:
    """True if ``name`` is usable as one file name component."""
    return skip_reason(name) is None


def split_key(prefix: str, key: str) -> tuple[str, bool] | None:
    """Classify a key or common prefix listed under the directory prefix ``prefix``
    ("" for the bucket root, else ending in "/").

    Returns (name, is_dir_marker_form) for a direct child with a usable name: "p/name/"
    and "p/name_$folder$" are marker forms, "p/name" is not. Returns None for the
    directory's own marker "p", for anything deeper, and for unusable names (the caller
    reports those, see skip_reason).
    """
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix) :]
    if rest.endswith("/"):
        name, marker = rest[:-1], True
    elif rest.endswith(FOLDER_SUFFIX):
        name, marker = rest[: -len(FOLDER_SUFFIX)], True
    else:
        name, marker = rest, False
    if skip_reason(name) is not None:
        return None
    return name, marker


# --- the write side ---------------------------------------------------------------------

S3FS_METADATA_KEYS = frozenset({"mode", "uid", "gid", "mtime", "ctime", "atime", "xattr", "rdev"})

# Other tools' copies of what s3mount writes. decode_attr prefers s3fs's own names anyway,
# but s3sync and GCS read these first, so a copy left beside a newer `mode` would show
# them the old value.
_SUPERSEDED_KEYS = frozenset(
    {
        "permissions",
        "owner",
        "group",
        "goog-reserved-posix-mode",
        "goog-reserved-posix-uid",
        "goog-reserved-posix-gid",
        "goog-reserved-file-mtime",
    }
)

# S3 refuses a request whose x-amz-meta-* names and values together exceed this.
MAX_METADATA_BYTES = 2048

_NO_XATTRS: Mapping[str, bytes] = MappingProxyType({})
_NO_METADATA: Mapping[str, str] = MappingProxyType({})


def encode_metadata(
    attr: Attr,
    xattrs: Mapping[str, bytes] = _NO_XATTRS,
    *,
    keep: Mapping[str, str] = _NO_METADATA,
) -> dict[str, str]:
    """User metadata for ``attr`` and ``xattrs`` in s3fs's format (s3fs-format.md §2.1),
    named as botocore's ``Metadata=`` wants (without the x-amz-meta- prefix).

    ``keep`` is the object's current metadata: headers of other tools survive unchanged,
    except the ones s3mount owns (any case) and the superseded s3sync/GCS copies of mode,
    owner and mtime. ``attr.size`` is not stored: it is the object's length.

    Raises ValueError for an xattr name that cannot be stored (see encode_xattrs).
    """
    xattr = encode_xattrs(xattrs)
    metadata = {
        name: value
        for name, value in keep.items()
        if name.lower() not in S3FS_METADATA_KEYS and name.lower() not in _SUPERSEDED_KEYS
    }
    # Directories carry S_IFDIR too, as s3fs writes after a chmod (its mkdir leaves the
    # type out): the mode alone then says "directory", whatever the Content-Type.
    metadata["mode"] = str(attr.mode)
    metadata["uid"] = str(attr.uid)
    metadata["gid"] = str(attr.gid)
    metadata["mtime"] = format_time_ns(attr.mtime_ns)
    metadata["ctime"] = format_time_ns(attr.ctime_ns)
    metadata["atime"] = format_time_ns(attr.atime_ns)
    if xattr is not None:
        metadata["xattr"] = xattr
    # s3fs differs: it stores no device number, so its devices read back as 0,0. s3fs
    # ignores the extra header, and leaving it out for 0 keeps such objects identical.
    if stat.S_IFMT(attr.mode) in (stat.S_IFCHR, stat.S_IFBLK) and attr.rdev:
        metadata["rdev"] = str(attr.rdev)
    return metadata


def metadata_size(metadata: Mapping[str, str]) -> int:
    """Bytes that S3 counts against MAX_METADATA_BYTES for ``metadata`` (names without
    the x-amz-meta- prefix): the UTF-8 length of every name and value."""
    # surrogatepass only so that counting never raises; such a string cannot be sent
    # anyway, and over-counting it errs on the safe side.
    return sum(
        len(name.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
        for name, value in metadata.items()
    )
