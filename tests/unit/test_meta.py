"""Tests of s3mount.meta against s3fs-format.md §2 (on-bucket format)."""

from __future__ import annotations

import stat

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3mount.meta import (
    DIR_CONTENT_TYPE,
    FOLDER_SUFFIX,
    MAX_KEY_BYTES,
    MAX_METADATA_BYTES,
    MAX_NAME_BYTES,
    S3FS_METADATA_KEYS,
    Attr,
    decode_attr,
    decode_xattrs,
    encode_metadata,
    encode_xattrs,
    format_time_ns,
    is_directory_content_type,
    metadata_size,
    parse_time_ns,
    skip_reason,
    split_key,
    valid_name,
)

NS = 1_000_000_000
LM = 1_700_000_000 * NS  # Last-Modified of every object in these tests
DEF_UID = 1000
DEF_GID = 2000
OCTET = "application/octet-stream"

REG = stat.S_IFREG
DIR = stat.S_IFDIR
LNK = stat.S_IFLNK
FIFO = stat.S_IFIFO
CHR = stat.S_IFCHR
BLK = stat.S_IFBLK
SOCK = stat.S_IFSOCK
VALID_TYPES = {REG, DIR, LNK, FIFO, CHR, BLK, SOCK}

XATTR_KEY_VALUE = "%7B%22key%22%3A%22dmFsdWU%3D%22%7D"
XATTR_S3FS_190 = "%7B%22user.bin%22%3A%22AP8Q%22%2C%22user.k1%22%3A%22djE%3D%22%7D"


def decode(
    key: str = "obj",
    metadata: dict[str, str] | None = None,
    *,
    size: int = 0,
    content_type: str | None = OCTET,
) -> tuple[Attr, list[str]]:
    warnings: list[str] = []
    attr = decode_attr(
        key,
        size=size,
        content_type=content_type,
        last_modified_ns=LM,
        metadata=metadata or {},
        default_uid=DEF_UID,
        default_gid=DEF_GID,
        warn=warnings.append,
    )
    return attr, warnings


# --- objects observed on s3fs 1.90 (s3fs-format.md §2.1) ------------------------------

T1 = "1795258094"
S3FS_TIMES = {"atime": T1, "ctime": T1, "mtime": T1}


@pytest.mark.parametrize(
    ("key", "size", "content_type", "metadata", "expected"),
    [
        pytest.param(
            "d1/", 0, DIR_CONTENT_TYPE, {**S3FS_TIMES, "gid": "0", "mode": "493", "uid": "0"},
            Attr(DIR | 0o755, 0, 0, 4096, int(T1) * NS, int(T1) * NS, int(T1) * NS),
            id="mkdir-mode-493-without-S_IFDIR",
        ),
        pytest.param(
            "d1/", 0, DIR_CONTENT_TYPE, {**S3FS_TIMES, "gid": "0", "mode": "16872", "uid": "0"},
            Attr(DIR | 0o750, 0, 0, 4096, int(T1) * NS, int(T1) * NS, int(T1) * NS),
            id="dir-after-chmod-carries-S_IFDIR",
        ),
        pytest.param(
            "d1/h.html", 6, "text/html", {**S3FS_TIMES, "gid": "0", "mode": "33188", "uid": "0"},
            Attr(REG | 0o644, 0, 0, 6, int(T1) * NS, int(T1) * NS, int(T1) * NS),
            id="html-file",
        ),
        pytest.param(
            "d1/link", 8, OCTET, {**S3FS_TIMES, "gid": "0", "mode": "41471", "uid": "0"},
            Attr(LNK | 0o777, 0, 0, 8, int(T1) * NS, int(T1) * NS, int(T1) * NS),
            id="symlink",
        ),
        pytest.param(
            "f.txt", 0, "text/plain",
            {**S3FS_TIMES, "gid": "5678", "mode": "33184", "uid": "1234",
             "xattr": XATTR_S3FS_190},
            Attr(REG | 0o640, 1234, 5678, 0, int(T1) * NS, int(T1) * NS, int(T1) * NS),
            id="chmod-chown-file",
        ),
        pytest.param(
            "fifo1", 0, OCTET, {**S3FS_TIMES, "gid": "0", "mode": "4516", "uid": "0"},
            Attr(FIFO | 0o644, 0, 0, 0, int(T1) * NS, int(T1) * NS, int(T1) * NS),
            id="fifo",
        ),
        pytest.param(
            "cdev", 0, OCTET, {**S3FS_TIMES, "gid": "0", "mode": "8612", "uid": "0"},
            Attr(CHR | 0o644, 0, 0, 0, int(T1) * NS, int(T1) * NS, int(T1) * NS, rdev=0),
            id="char-device-without-rdev",
        ),
        pytest.param(
            "noext", 0, OCTET,
            {"atime": "1000000000.123456789", "ctime": "1000000000.123456789",
             "mtime": "1000000000.123456789", "gid": "0", "mode": "33188", "uid": "0"},
            Attr(REG | 0o644, 0, 0, 0, 1000000000123456789, 1000000000123456789,
                 1000000000123456789),
            id="touch-d-nanoseconds",
        ),
    ],
)
def test_s3fs_190_objects(
    key: str, size: int, content_type: str, metadata: dict[str, str], expected: Attr
) -> None:
    attr, warnings = decode(key, metadata, size=size, content_type=content_type)
    assert attr == expected
    assert warnings == []


# --- objects written by other tools (s3fs-format.md §2.5) -----------------------------


@pytest.mark.parametrize(
    ("key", "size", "content_type", "metadata", "expected"),
    [
        pytest.param(
            "ext/plain.txt", 11, "text/plain", {},
            Attr(REG | 0o640, DEF_UID, DEF_GID, 11, LM, LM, LM),
            id="plain-put",
        ),
        pytest.param(
            "ext/olddir", 0, DIR_CONTENT_TYPE, {},
            Attr(DIR | 0o640, DEF_UID, DEF_GID, 4096, LM, LM, LM),
            id="no-slash-x-directory",
        ),
        pytest.param(
            "ext/slashdir/", 0, "binary/octet-stream", {},
            Attr(DIR | 0o750, DEF_UID, DEF_GID, 4096, LM, LM, LM),
            id="slash-key-octet-stream",
        ),
        pytest.param(
            "ext/fold_$folder$", 0, OCTET, {},
            Attr(DIR | 0o750, DEF_UID, DEF_GID, 4096, LM, LM, LM),
            id="folder-suffix",
        ),
        pytest.param(
            "ext/m", 3, OCTET, {"mode": "0755"},
            Attr(REG | 0o755, DEF_UID, DEF_GID, 3, LM, LM, LM),
            id="octal-mode-string",
        ),
        pytest.param(
            "ext/gcs", 5, "text/plain",
            {"goog-reserved-posix-mode": "755", "goog-reserved-posix-uid": "42",
             "goog-reserved-posix-gid": "43", "goog-reserved-file-mtime": "1600000000"},
            Attr(REG | 0o755, 42, 43, 5, 1600000000 * NS, LM, LM),
            id="gcs-headers",
        ),
        pytest.param(
            "ext/gcsdir/", 0, "text/plain", {"goog-reserved-posix-mode": "0700"},
            Attr(DIR | 0o700, DEF_UID, DEF_GID, 4096, LM, LM, LM),
            id="gcs-dir-leading-zero",
        ),
        pytest.param(
            "ext/s3sync", 7, OCTET, {"permissions": "33261", "owner": "500", "group": "501"},
            Attr(REG | 0o755, 500, 501, 7, LM, LM, LM),
            id="s3sync-headers",
        ),
        pytest.param(
            "ext/nextcloud", 0, "httpd/unix-directory", {},
            Attr(DIR | 0o640, DEF_UID, DEF_GID, 4096, LM, LM, LM),
            id="nextcloud-dir",
        ),
        pytest.param(
            "ext/big-marker/", 12345, OCTET, {},
            Attr(DIR | 0o750, DEF_UID, DEF_GID, 4096, LM, LM, LM),
            id="dir-size-is-4096-whatever-the-object-size",
        ),
    ],
)
def test_foreign_objects(
    key: str, size: int, content_type: str, metadata: dict[str, str], expected: Attr
) -> None:
    attr, warnings = decode(key, metadata, size=size, content_type=content_type)
    assert attr == expected
    assert warnings == []


# --- mode -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        ("0755", REG | 0o755),
        ("0x1ed", REG | 0o755),
        ("0X1ED", REG | 0o755),
        ("493", REG | 0o755),
        (" 493 ", REG | 0o755),
        ("+493", REG | 0o755),
        ("33188", REG | 0o644),
        ("0100644", REG | 0o644),
        ("04755", REG | 0o4755),
        ("01777", REG | 0o1777),
        ("53247", SOCK | 0o7777),  # 0o147777
        ("49663", SOCK | 0o777),
        ("25060", BLK | 0o744),
    ],
)
def test_mode_parses_like_strtol_base_0(value: str, mode: int) -> None:
    attr, warnings = decode("f", {"mode": value})
    assert attr.mode == mode
    assert warnings == []


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "",
        "  ",
        "-1",
        "-0755",
        "99999999999",
        "65536",  # 0o177777 + 1
        "0o755",  # Python syntax, not C
        "08",  # leading 0 means octal
        "0x",
        "1_000",
        "493abc",
        "4.5",
        "\u0664\u0669\u0663",  # Arabic-Indic digits that Python's int() accepts
        "9" * 5000,  # would hit int()'s digit limit
    ],
)
def test_garbage_mode_is_default_and_warned(value: str) -> None:
    attr, warnings = decode("f", {"mode": value})
    assert attr.mode == REG | 0o640
    assert len(warnings) == 1
    assert "mode" in warnings[0]


def test_garbage_mode_on_directory_key_uses_directory_default() -> None:
    attr, warnings = decode("d/", {"mode": "abc"})
    assert attr.mode == DIR | 0o750
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("metadata", "mode"),
    [
        ({"mode": "0700", "permissions": "0711", "goog-reserved-posix-mode": "755"}, 0o700),
        ({"permissions": "0711", "goog-reserved-posix-mode": "755"}, 0o711),
        ({"goog-reserved-posix-mode": "755"}, 0o755),
        # the first present header decides, even when it is garbage
        ({"mode": "junk", "permissions": "0711"}, 0o640),
        # GCS modes are octal without any prefix rule
        ({"goog-reserved-posix-mode": "0x1ed"}, 0o640),
        ({"goog-reserved-posix-mode": "9"}, 0o640),
    ],
)
def test_mode_header_precedence(metadata: dict[str, str], mode: int) -> None:
    attr, _ = decode("f", metadata)
    assert attr.mode == REG | mode


@pytest.mark.parametrize(
    ("key", "content_type", "is_dir"),
    [
        ("a", DIR_CONTENT_TYPE, True),
        ("a", "Application/X-Directory", True),
        ("a", "application/x-directory; charset=utf-8", True),
        ("a", " httpd/unix-directory ;x=y", True),
        ("a", "text/plain", False),
        ("a", None, False),
        ("a", "", False),
        ("a", "application/x-directory-not", False),
        ("a/", "text/plain", True),
        ("a/", None, True),
        ("a_$folder$", "text/plain", True),
        ("a_$folder", OCTET, False),
    ],
)
def test_type_inferred_when_mode_has_no_type_bits(
    key: str, content_type: str | None, is_dir: bool
) -> None:
    attr, warnings = decode(key, {"mode": "0755"}, content_type=content_type)
    assert attr.mode == (DIR if is_dir else REG) | 0o755
    assert warnings == []


@pytest.mark.parametrize(
    ("mode_value", "expected"),
    [
        (str(FIFO | 0o600), FIFO | 0o600),
        (str(SOCK | 0o600), SOCK | 0o600),
        (str(BLK | 0o600), BLK | 0o600),
        (str(LNK | 0o777), LNK | 0o777),
        # explicit type bits beat the directory Content-Type
        (str(REG | 0o644), REG | 0o644),
    ],
)
def test_type_bits_win_over_content_type(mode_value: str, expected: int) -> None:
    attr, warnings = decode("x", {"mode": mode_value}, content_type=DIR_CONTENT_TYPE)
    assert attr.mode == expected
    assert warnings == []


@pytest.mark.parametrize("bits", [0o030000, 0o050000, 0o070000, 0o110000, 0o130000, 0o170000])
def test_invalid_type_bits_are_dropped_and_warned(bits: int) -> None:
    attr, warnings = decode("x", {"mode": str(bits | 0o644)}, content_type="text/plain")
    assert attr.mode == REG | 0o644
    assert len(warnings) == 1
    attr, _ = decode("x", {"mode": str(bits | 0o644)}, content_type=DIR_CONTENT_TYPE)
    assert attr.mode == DIR | 0o644


@pytest.mark.parametrize("key", ["d/", "d_$folder$"])
@pytest.mark.parametrize("ftype", [REG, LNK, FIFO])
def test_marker_key_with_non_directory_type_is_a_directory(key: str, ftype: int) -> None:
    attr, warnings = decode(key, {"mode": str(ftype | 0o644)}, size=3)
    assert attr.mode == DIR | 0o644
    assert attr.size == 4096
    assert len(warnings) == 1


@pytest.mark.parametrize(
    ("key", "content_type", "mode_value", "expected"),
    [
        ("f", OCTET, "0", REG | stat.S_IRUSR),
        ("f", OCTET, "07000", REG | 0o7000 | stat.S_IRUSR),
        ("d/", OCTET, "0", DIR | stat.S_IRUSR | stat.S_IXUSR),
        ("d", DIR_CONTENT_TYPE, "0", DIR | stat.S_IRUSR | stat.S_IXUSR),
        # chmod 000 writes the type bits too: that is deliberate and kept
        ("f", OCTET, str(REG), REG),
        ("d/", DIR_CONTENT_TYPE, str(DIR), DIR),
    ],
)
def test_empty_permissions_complemented_only_without_type_bits(
    key: str, content_type: str, mode_value: str, expected: int
) -> None:
    attr, warnings = decode(key, {"mode": mode_value}, content_type=content_type)
    assert attr.mode == expected
    assert warnings == []


def test_metadata_names_are_case_insensitive() -> None:
    attr, _ = decode("f", {"Mode": "0700", "UID": "7", "Gid": "8", "MTime": "5"})
    assert (attr.mode, attr.uid, attr.gid, attr.mtime_ns) == (REG | 0o700, 7, 8, 5 * NS)


def test_exact_lowercase_name_wins_over_other_case() -> None:
    attr, _ = decode("f", {"Mode": "0700", "mode": "0711"})
    assert attr.mode == REG | 0o711
    attr, _ = decode("f", {"mode": "0711", "MODE": "0700"})
    assert attr.mode == REG | 0o711


# --- uid / gid ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "uid", "gid", "warned"),
    [
        ({}, DEF_UID, DEF_GID, 0),
        ({"uid": "0", "gid": "0"}, 0, 0, 0),
        ({"uid": "0x10", "gid": "010"}, 16, 8, 0),
        ({"uid": "4294967294", "gid": "4294967294"}, 2**32 - 2, 2**32 - 2, 0),
        ({"owner": "5", "group": "6"}, 5, 6, 0),
        ({"goog-reserved-posix-uid": "7", "goog-reserved-posix-gid": "8"}, 7, 8, 0),
        ({"uid": "1", "owner": "2", "goog-reserved-posix-uid": "3"}, 1, DEF_GID, 0),
        ({"owner": "2", "goog-reserved-posix-uid": "3"}, 2, DEF_GID, 0),
        ({"gid": "1", "group": "2", "goog-reserved-posix-gid": "3"}, DEF_UID, 1, 0),
        ({"uid": "-1", "gid": "-1"}, DEF_UID, DEF_GID, 2),
        ({"uid": "4294967295"}, DEF_UID, DEF_GID, 1),
        ({"uid": "99999999999999999999"}, DEF_UID, DEF_GID, 1),
        ({"uid": "root", "gid": ""}, DEF_UID, DEF_GID, 2),
        ({"uid": "junk", "owner": "5"}, DEF_UID, DEF_GID, 1),
    ],
)
def test_uid_gid(metadata: dict[str, str], uid: int, gid: int, warned: int) -> None:
    attr, warnings = decode("f", metadata)
    assert (attr.uid, attr.gid) == (uid, gid)
    assert len(warnings) == warned


# --- times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ns"),
    [
        ("0", 0),
        ("1", NS),
        ("1700000000", 1700000000 * NS),
        ("1.123456789", NS + 123456789),
        ("1.000000001", NS + 1),
        ("1.5", NS + 500_000_000),  # s3fs would read 1 s + 5 ns
        ("1.05", NS + 50_000_000),
        ("1.1234567891", NS + 123456789),  # truncated to 9 digits
        ("1." + "9" * 5000, NS + 999_999_999),
        (" 12 ", 12 * NS),
        ("+5", 5 * NS),
        ("-1", -NS),
        ("-2.500000000", -1_500_000_000),  # timespec {-2, 500000000}
        ("-0.5", 500_000_000),
        ("9223372036", 9223372036 * NS),
        ("9223372036.854775807", 2**63 - 1),
        ("-9223372036", -9223372036 * NS),
        ("-9223372037.145224192", -(2**63)),
    ],
)
def test_parse_time_ns(value: str, ns: int) -> None:
    assert parse_time_ns(value) == ns


@pytest.mark.parametrize(
    "value",
    [
        "", " ", "abc", "1e99", "1e9", "1.", ".5", "1.2.3", "1,5", "0x10", "1 2", "--1",
        "9223372036.854775808",  # 2**63 ns
        "-9223372037.145224191",  # just below -(2**63) ns
        "9223372037", "99999999999999999999", "999999999999999999999",
        "\u0661",  # Arabic-Indic digit one
        "1.\u0665",
        "inf", "nan",
    ],
)
def test_parse_time_ns_garbage(value: str) -> None:
    assert parse_time_ns(value) is None


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0"),
        (NS, "1"),
        (1795258094 * NS, "1795258094"),
        (1000000000123456789, "1000000000.123456789"),
        (1, "0.000000001"),
        (NS + 500_000_000, "1.500000000"),
        (-NS, "-1"),
        (-1, "-1.999999999"),
        (-1_500_000_000, "-2.500000000"),
    ],
)
def test_format_time_ns(ns: int, text: str) -> None:
    assert format_time_ns(ns) == text
    assert parse_time_ns(text) == ns


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_time_round_trip(ns: int) -> None:
    text = format_time_ns(ns)
    assert parse_time_ns(text) == ns
    # s3fs form: no fraction, or exactly nine digits of it
    assert "." not in text or len(text.rsplit(".", 1)[1]) == 9


@pytest.mark.parametrize(
    ("metadata", "times", "warned"),
    [
        ({}, (LM, LM, LM), 0),
        ({"mtime": "1", "ctime": "2", "atime": "3"}, (NS, 2 * NS, 3 * NS), 0),
        ({"goog-reserved-file-mtime": "4"}, (4 * NS, LM, LM), 0),
        ({"mtime": "1", "goog-reserved-file-mtime": "4"}, (NS, LM, LM), 0),
        ({"mtime": "-100"}, (-100 * NS, LM, LM), 0),  # s3fs would ignore it
        ({"mtime": "0"}, (0, LM, LM), 0),
        ({"mtime": "1e99"}, (LM, LM, LM), 1),
        ({"mtime": "abc", "goog-reserved-file-mtime": "4"}, (LM, LM, LM), 1),
        ({"ctime": "", "atime": "99999999999999999999"}, (LM, LM, LM), 2),
        ({"mtime": "10.5", "ctime": "x", "atime": "7"}, (10 * NS + NS // 2, LM, 7 * NS), 1),
    ],
)
def test_times(metadata: dict[str, str], times: tuple[int, int, int], warned: int) -> None:
    attr, warnings = decode("f", metadata)
    assert (attr.mtime_ns, attr.ctime_ns, attr.atime_ns) == times
    assert len(warnings) == warned


# --- rdev -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "rdev_value", "rdev", "warned"),
    [
        (CHR | 0o644, "259", 259, 0),
        (BLK | 0o660, "2049", 2049, 0),
        (CHR | 0o644, None, 0, 0),
        (CHR | 0o644, "4294967295", 2**32 - 1, 0),
        (CHR | 0o644, "4294967296", 0, 1),
        (CHR | 0o644, "0x103", 0, 1),  # decimal only
        (CHR | 0o644, "-1", 0, 1),
        (BLK | 0o644, "sda", 0, 1),
        (REG | 0o644, "259", 0, 0),  # only devices have one
        (FIFO | 0o644, "junk", 0, 0),
    ],
)
def test_rdev(mode: int, rdev_value: str | None, rdev: int, warned: int) -> None:
    metadata = {"mode": str(mode)}
    if rdev_value is not None:
        metadata["rdev"] = rdev_value
    attr, warnings = decode("dev", metadata)
    assert attr.mode == mode
    assert attr.rdev == rdev
    assert len(warnings) == warned


# --- garbage never raises ---------------------------------------------------------------


GARBAGE = {
    "mode": "abc",
    "uid": "-1",
    "gid": "99999999999",
    "mtime": "1e99",
    "ctime": "\n",
    "atime": "x" * 10_000,
    "xattr": "%%%{",
}


def test_all_garbage_gives_defaults_and_one_line_warnings() -> None:
    attr, warnings = decode("some\nkey", GARBAGE, size=9, content_type="\x00")
    assert attr == Attr(REG | 0o640, DEF_UID, DEF_GID, 9, LM, LM, LM)
    assert len(warnings) == 6
    assert all("\n" not in w and len(w) < 200 for w in warnings)


def test_garbage_without_warn_callback() -> None:
    attr = decode_attr(
        "k", size=1, content_type=None, last_modified_ns=LM, metadata=GARBAGE,
        default_uid=1, default_gid=2,
    )
    assert attr == Attr(REG | 0o640, 1, 2, 1, LM, LM, LM)
    assert decode_xattrs("garbage") == {}


METADATA_NAMES = st.sampled_from(
    [
        "mode", "permissions", "goog-reserved-posix-mode", "uid", "owner",
        "goog-reserved-posix-uid", "gid", "group", "goog-reserved-posix-gid", "mtime",
        "goog-reserved-file-mtime", "ctime", "atime", "rdev", "xattr", "Mode", "UID",
    ]
)
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=30)
BIG_INTS = st.integers(min_value=-(2**70), max_value=2**70)
NUMBERISH = st.one_of(
    ANY_TEXT,
    BIG_INTS.map(str),
    BIG_INTS.map(oct),
    BIG_INTS.map(hex),
    st.tuples(BIG_INTS, BIG_INTS).map(lambda t: f"{t[0]}.{t[1]}"),
)


@given(
    key=ANY_TEXT,
    content_type=st.none() | ANY_TEXT,
    metadata=st.dictionaries(METADATA_NAMES | ANY_TEXT, NUMBERISH, max_size=8),
    size=st.integers(min_value=0, max_value=2**63 - 1),
)
def test_decode_attr_never_raises(
    key: str, content_type: str | None, metadata: dict[str, str], size: int
) -> None:
    warnings: list[str] = []
    attr = decode_attr(
        key, size=size, content_type=content_type, last_modified_ns=LM, metadata=metadata,
        default_uid=DEF_UID, default_gid=DEF_GID, warn=warnings.append,
    )
    assert stat.S_IFMT(attr.mode) in VALID_TYPES
    assert 0 <= attr.mode <= 0o177777
    assert 0 <= attr.uid <= 2**32 - 2 and 0 <= attr.gid <= 2**32 - 2
    for ns in (attr.mtime_ns, attr.ctime_ns, attr.atime_ns):
        assert -(2**63) <= ns < 2**63
    assert attr.size == (4096 if stat.S_ISDIR(attr.mode) else size)
    assert attr.rdev == 0 or stat.S_IFMT(attr.mode) in (CHR, BLK)
    assert all("\n" not in w for w in warnings)


@pytest.mark.parametrize("name", ["mode", "goog-reserved-posix-mode", "uid", "mtime"])
def test_a_warning_about_unprintable_garbage_stays_short(name: str) -> None:
    # 40 characters that repr() shows as 10 each: the warning is cut after escaping.
    warnings: list[str] = []
    decode_attr("k", size=0, content_type=None, last_modified_ns=LM,
                metadata={name: "\U0010ffff" * 40}, default_uid=DEF_UID,
                default_gid=DEF_GID, warn=warnings.append)
    [warning] = warnings
    assert len(warning) < 200, warning
    assert "..." in warning


# --- xattrs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "xattrs"),
    [
        (XATTR_KEY_VALUE, {"key": b"value"}),
        (XATTR_S3FS_190, {"user.bin": b"\x00\xff\x10", "user.k1": b"v1"}),
        ("%7B%22user.empty%22%3A%22%22%7D", {"user.empty": b""}),
        ("%7B%22user.p%22%3A%22%2Bw%3D%3D%22%7D", {"user.p": b"\xfb"}),
        ("%7B%22user.s%22%3A%22//8%3D%22%7D", {"user.s": b"\xff\xff"}),  # '/' kept
        ("%7B%22a%3Ab%3Ac%22%3A%22eA%3D%3D%22%7D", {"a:b:c": b"x"}),  # split at last ':'
        ("%7B%22caf%C3%A9%22%3A%22eA%3D%3D%22%7D", {"caf\u00e9": b"x"}),
        ("%7B%22n%FF%22%3A%22eA%3D%3D%22%7D", {"n\udcff": b"x"}),  # not UTF-8
        ("%7B%22%7B%7D%22%3A%22eA%3D%3D%22%7D", {"{}": b"x"}),
    ],
)
def test_xattr_header_round_trip(header: str, xattrs: dict[str, bytes]) -> None:
    warnings: list[str] = []
    assert decode_xattrs(header, warnings.append) == xattrs
    assert encode_xattrs(xattrs) == header
    assert warnings == []


def test_xattr_known_examples_exact() -> None:
    assert encode_xattrs({"key": b"value"}) == "%7B%22key%22%3A%22dmFsdWU%3D%22%7D"
    assert (
        encode_xattrs({"user.k1": b"v1", "user.bin": b"\x00\xff\x10"})
        == "%7B%22user.bin%22%3A%22AP8Q%22%2C%22user.k1%22%3A%22djE%3D%22%7D"
    )


def test_encode_xattrs_sorts_by_utf8_bytes() -> None:
    # U+DCFF (surrogate-escaped byte 0xFF) sorts before U+E000 as a code point but after
    # it as UTF-8 bytes (0xFF > 0xEE); s3fs's std::map orders bytes.
    header = encode_xattrs({"\udcff": b"", "\ue000": b"", "B": b"", "a": b""})
    assert header == (
        "%7B%22B%22%3A%22%22%2C%22a%22%3A%22%22%2C"
        "%22%EE%80%80%22%3A%22%22%2C%22%FF%22%3A%22%22%7D"
    )


@pytest.mark.parametrize(
    ("header", "xattrs"),
    [
        ("{}", {}),
        ("%7B%7D", {}),
        ('{"k":"dg=="}', {"k": b"v"}),  # not URL-encoded at all
        ("%7b%22k%22%3a%22dg%3d%3d%22%7d", {"k": b"v"}),  # lowercase hex
        ('{"k":"+w=="}', {"k": b"\xfb"}),  # '+' is base64, not a space
        ('{"k":"dg"}', {"k": b"v"}),  # missing padding
        ('{ "k" : "dg==" , "l":"dw==" }', {"k": b"v", "l": b"w"}),
        ("{k:dg==}", {"k": b"v"}),  # s3fs accepts unquoted parts
        ('junk{"k":"dg=="}junk', {"k": b"v"}),
        ('{"k":"dg==","k":"dw=="}', {"k": b"w"}),  # last one wins
    ],
)
def test_decode_xattrs_lenient_forms(header: str, xattrs: dict[str, bytes]) -> None:
    warnings: list[str] = []
    assert decode_xattrs(header, warnings.append) == xattrs
    assert warnings == []


@pytest.mark.parametrize(
    ("header", "xattrs", "warned"),
    [
        ('{"k":"dg==","nocolon","l":"dw=="}', {"k": b"v", "l": b"w"}, 1),
        ('{"k":"d!g=","l":"dw=="}', {"l": b"w"}, 1),  # bad base64
        ('{"k":"d"}', {}, 1),  # one base64 char is never valid
        ('{"k":"dg===="}', {}, 1),
        ('{"":"dg==","l":"dw=="}', {"l": b"w"}, 1),  # empty name
        ('{"a"b":"dg=="}', {}, 1),  # quote inside the name
        ('{"a:"dg=="}', {}, 1),  # unbalanced quote
        ('{"k":"dg==",}', {"k": b"v"}, 1),  # trailing comma
        ('{"k":"\u00e9"}', {}, 1),  # non-ASCII base64
        ("%7B%22k%22%3A%22dg%3D%3D%22", {}, 1),  # no closing brace
        ("garbage", {}, 1),
        ("", {}, 1),
        ("}{", {}, 1),
        ("%%%{", {}, 1),
        ("\ud800", {}, 1),  # a lone surrogate must not make encoding raise
    ],
)
def test_decode_xattrs_garbage(header: str, xattrs: dict[str, bytes], warned: int) -> None:
    warnings: list[str] = []
    assert decode_xattrs(header, warnings.append) == xattrs
    assert len(warnings) == warned
    assert all("\n" not in w for w in warnings)


def test_decode_xattrs_absent_header() -> None:
    warnings: list[str] = []
    assert decode_xattrs(None, warnings.append) == {}
    assert warnings == []


def test_encode_xattrs_empty_removes_header() -> None:
    assert encode_xattrs({}) is None


@pytest.mark.parametrize("name", ["a,b", 'a"b', ",", '"', "", "\ud800"])
def test_encode_xattrs_rejects_names_that_cannot_round_trip(name: str) -> None:
    with pytest.raises(ValueError):
        encode_xattrs({"user.ok": b"1", name: b"x"})


def _fs_name(raw: bytes) -> str:
    # How a name arrives from the kernel: bytes decoded with surrogateescape.
    return raw.decode("utf-8", "surrogateescape")


XATTR_NAMES = st.one_of(st.text(min_size=1), st.binary(min_size=1).map(_fs_name)).filter(
    lambda n: "," not in n and '"' not in n
)


@given(st.dictionaries(XATTR_NAMES, st.binary(max_size=300), max_size=8))
def test_xattr_round_trip_property(xattrs: dict[str, bytes]) -> None:
    header = encode_xattrs(xattrs)
    if not xattrs:
        assert header is None
        return
    assert header is not None
    warnings: list[str] = []
    assert decode_xattrs(header, warnings.append) == xattrs
    assert warnings == []
    assert set(header) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-_~/%"
    )


@given(ANY_TEXT)
def test_decode_xattrs_never_raises(header: str) -> None:
    warnings: list[str] = []
    result = decode_xattrs(header, warnings.append)
    assert all(name and isinstance(value, bytes) for name, value in result.items())
    assert all("\n" not in w for w in warnings)


# --- content type -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/x-directory", True),
        ("APPLICATION/X-DIRECTORY", True),
        ("application/x-directory;charset=UTF-8", True),
        ("httpd/unix-directory", True),
        ("application/octet-stream", False),
        ("binary/octet-stream", False),
        ("text/plain", False),
        ("x-directory", False),
        ("", False),
        (None, False),
    ],
)
def test_is_directory_content_type(content_type: str | None, expected: bool) -> None:
    assert is_directory_content_type(content_type) is expected


# --- names and keys ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a", None),
        ("...", None),
        (".hidden", None),
        ("a b", None),
        ("\u00e9" * 127, None),  # 254 bytes
        ("x" * MAX_NAME_BYTES, None),
        ("", "empty name"),
        (".", "name is '.' or '..'"),
        ("..", "name is '.' or '..'"),
        ("x" * (MAX_NAME_BYTES + 1), "name longer than 255 bytes"),
        ("\u00e9" * 128, "name longer than 255 bytes"),  # 128 chars, 256 bytes
        ("a/b", "name contains '/'"),
        ("a\0b", "name contains NUL"),
        ("\ud800", "name is not valid UTF-8"),
        ("\udcff", "name is not valid UTF-8"),  # an undecodable byte from the kernel
    ],
)
def test_skip_reason(name: str, reason: str | None) -> None:
    assert skip_reason(name) == reason
    assert valid_name(name) is (reason is None)


@pytest.mark.parametrize(
    ("prefix", "key", "expected"),
    [
        ("", "a", ("a", False)),
        ("", "a/", ("a", True)),
        ("", "a_$folder$", ("a", True)),
        ("", "/", None),  # root marker written by s3fs 1.92+
        ("", "a/b", None),
        ("", "a/b/", None),
        ("", "", None),
        ("d/", "d/", None),  # the directory's own marker
        ("d/", "d/f.txt", ("f.txt", False)),
        ("d/", "d/sub/", ("sub", True)),
        ("d/", "d/sub_$folder$", ("sub", True)),
        ("d/", "d/sub/deeper", None),
        ("d/", "d/sub/deeper_$folder$", None),
        ("d/", "d//", None),  # empty component
        ("d/", "d//x", None),
        ("d/", "d/.", None),
        ("d/", "d/../", None),
        ("d/", "d/_$folder$", None),
        ("d/", "d/" + "x" * 256, None),
        ("d/", "d/" + "x" * 255, ("x" * 255, False)),
        ("d/", "e/f", None),  # not under the prefix at all
        ("d/", "d", None),
        ("a/b/", "a/b/c d", ("c d", False)),
        ("a/b/", "a/b/x_$folder$/", ("x_$folder$", True)),
    ],
)
def test_split_key(prefix: str, key: str, expected: tuple[str, bool] | None) -> None:
    assert split_key(prefix, key) == expected


VALID_NAMES = st.text(min_size=1, max_size=80).filter(valid_name)
PREFIXES = st.lists(VALID_NAMES, max_size=3).map(lambda parts: "".join(p + "/" for p in parts))


@given(ANY_TEXT, ANY_TEXT)
def test_split_key_and_valid_name_never_raise(prefix: str, key: str) -> None:
    result = split_key(prefix, key)
    assert result is None or valid_name(result[0])
    assert valid_name(key) is (skip_reason(key) is None)


@given(PREFIXES, VALID_NAMES)
def test_split_key_accepts_valid_names(prefix: str, name: str) -> None:
    assert valid_name(name)
    assert split_key(prefix, prefix + name + "/") == (name, True)
    assert split_key(prefix, prefix + name + FOLDER_SUFFIX) == (name, True)
    if name.endswith(FOLDER_SUFFIX):
        # an old-style marker: the name is what precedes the suffix, if usable
        stem = name[: -len(FOLDER_SUFFIX)]
        assert split_key(prefix, prefix + name) == ((stem, True) if valid_name(stem) else None)
    else:
        assert split_key(prefix, prefix + name) == (name, False)


def test_max_key_bytes_is_the_s3_limit() -> None:
    assert MAX_KEY_BYTES == 1024


# --- encode_metadata (the write side, s3fs-format.md §2.1) ------------------------------


def test_encode_metadata_exact_for_a_regular_file() -> None:
    attr = Attr(REG | 0o644, 1000, 1000, 5, 1700000000 * NS + NS // 2, LM, 1700000001 * NS)
    assert encode_metadata(attr) == {
        "mode": "33188",
        "uid": "1000",
        "gid": "1000",
        "mtime": "1700000000.500000000",
        "ctime": "1700000000",
        "atime": "1700000001",
    }


T1_NS = int(T1) * NS


@pytest.mark.parametrize(
    ("attr", "xattrs", "observed"),
    [
        pytest.param(
            Attr(REG | 0o640, 1234, 5678, 0, T1_NS, T1_NS, T1_NS),
            {"user.k1": b"v1", "user.bin": b"\x00\xff\x10"},
            {**S3FS_TIMES, "gid": "5678", "mode": "33184", "uid": "1234",
             "xattr": XATTR_S3FS_190},
            id="chmod-chown-setfattr-file",
        ),
        pytest.param(
            Attr(DIR | 0o750, 0, 0, 4096, T1_NS, T1_NS, T1_NS), {},
            {**S3FS_TIMES, "gid": "0", "mode": "16872", "uid": "0"},
            id="dir-after-chmod",
        ),
        pytest.param(
            Attr(LNK | 0o777, 0, 0, 8, T1_NS, T1_NS, T1_NS), {},
            {**S3FS_TIMES, "gid": "0", "mode": "41471", "uid": "0"},
            id="symlink",
        ),
        pytest.param(
            Attr(FIFO | 0o644, 0, 0, 0, T1_NS, T1_NS, T1_NS), {},
            {**S3FS_TIMES, "gid": "0", "mode": "4516", "uid": "0"},
            id="fifo",
        ),
        pytest.param(
            Attr(CHR | 0o644, 0, 0, 0, T1_NS, T1_NS, T1_NS), {},
            {**S3FS_TIMES, "gid": "0", "mode": "8612", "uid": "0"},
            id="char-device-rdev-0",
        ),
        pytest.param(
            Attr(REG | 0o644, 0, 0, 0, 1000000000123456789, 1000000000123456789,
                 1000000000123456789), {},
            {"atime": "1000000000.123456789", "ctime": "1000000000.123456789",
             "mtime": "1000000000.123456789", "gid": "0", "mode": "33188", "uid": "0"},
            id="touch-d-nanoseconds",
        ),
    ],
)
def test_encode_metadata_matches_s3fs_190_objects(
    attr: Attr, xattrs: dict[str, bytes], observed: dict[str, str]
) -> None:
    assert encode_metadata(attr, xattrs) == observed


def test_encode_metadata_directory_carries_s_ifdir() -> None:
    attr = Attr(DIR | 0o755, 1, 2, 4096, NS, 2 * NS, 3 * NS)
    metadata = encode_metadata(attr)
    assert metadata["mode"] == "16877"
    for key in ("d/", "d_$folder$", "d"):
        decoded, warnings = decode(key, metadata, content_type=OCTET)
        assert decoded == attr
        assert warnings == []


@pytest.mark.parametrize(
    ("mode", "rdev", "stored"),
    [
        (CHR | 0o644, 259, "259"),
        (BLK | 0o660, 2049, "2049"),
        (CHR | 0o644, 2**32 - 1, "4294967295"),
        (CHR | 0o644, 0, None),  # as s3fs: no header, reads back as 0,0
        (REG | 0o644, 259, None),  # only devices have a device number
        (FIFO | 0o644, 1, None),
    ],
)
def test_encode_metadata_rdev(mode: int, rdev: int, stored: str | None) -> None:
    metadata = encode_metadata(Attr(mode, 0, 0, 0, 0, 0, 0, rdev=rdev))
    assert metadata.get("rdev") == stored
    assert ("rdev" in metadata) is (stored is not None)


def test_encode_metadata_without_xattrs_has_no_xattr_header() -> None:
    attr = Attr(REG | 0o644, 0, 0, 0, 0, 0, 0)
    assert "xattr" not in encode_metadata(attr)
    assert "xattr" not in encode_metadata(attr, {}, keep={"xattr": XATTR_KEY_VALUE})
    assert encode_metadata(attr, {"key": b"value"})["xattr"] == XATTR_KEY_VALUE


def test_encode_metadata_keep_preserves_foreign_and_replaces_owned() -> None:
    keep = {
        # foreign headers survive byte for byte, case included
        "s3cmd-attrs": "uid:0/gid:0/mode:33188",
        "Content-Owner": "team-a",
        "groupname": "x",
        "goog-reserved-other": "y",
        # owned: replaced by what we write, or removed
        "mode": "0",
        "UID": "99",
        "Mtime": "1",
        "ctime": "1",
        "atime": "1",
        "xattr": XATTR_KEY_VALUE,
        "rdev": "5",
        # superseded copies of mode/owner/mtime: dropped
        "permissions": "33261",
        "Owner": "500",
        "GROUP": "501",
        "goog-reserved-posix-mode": "755",
        "goog-reserved-posix-uid": "42",
        "Goog-Reserved-Posix-Gid": "43",
        "goog-reserved-file-mtime": "1600000000",
    }
    original = dict(keep)
    attr = Attr(REG | 0o600, 7, 8, 0, 2 * NS, 3 * NS, 4 * NS)
    assert encode_metadata(attr, keep=keep) == {
        "s3cmd-attrs": "uid:0/gid:0/mode:33188",
        "Content-Owner": "team-a",
        "groupname": "x",
        "goog-reserved-other": "y",
        "mode": "33152",
        "uid": "7",
        "gid": "8",
        "mtime": "2",
        "ctime": "3",
        "atime": "4",
    }
    assert keep == original


@pytest.mark.parametrize("name", ["a,b", 'a"b', "", "\ud800"])
def test_encode_metadata_rejects_unstorable_xattr_names(name: str) -> None:
    with pytest.raises(ValueError):
        encode_metadata(Attr(REG | 0o644, 0, 0, 0, 0, 0, 0), {name: b"x"})


def test_s3fs_metadata_keys() -> None:
    assert sorted(S3FS_METADATA_KEYS) == [
        "atime", "ctime", "gid", "mode", "mtime", "rdev", "uid", "xattr"
    ]


NON_DIR_TYPES = st.sampled_from([REG, LNK, FIFO, CHR, BLK, SOCK])
IDS = st.integers(min_value=0, max_value=2**32 - 2)
TIMES = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def non_dir_attrs(draw: st.DrawFn) -> Attr:
    ftype = draw(NON_DIR_TYPES)
    rdev = draw(st.integers(0, 2**32 - 1)) if ftype in (CHR, BLK) else 0
    return Attr(
        mode=ftype | draw(st.integers(0, 0o7777)),
        uid=draw(IDS),
        gid=draw(IDS),
        size=draw(st.integers(0, 2**63 - 1)),
        mtime_ns=draw(TIMES),
        ctime_ns=draw(TIMES),
        atime_ns=draw(TIMES),
        rdev=rdev,
    )


@given(
    attr=non_dir_attrs(),
    xattrs=st.dictionaries(XATTR_NAMES, st.binary(max_size=50), max_size=4),
    keep=st.dictionaries(METADATA_NAMES | ANY_TEXT, ANY_TEXT, max_size=6),
    content_type=st.sampled_from([OCTET, "text/plain", DIR_CONTENT_TYPE]),
)
def test_encode_metadata_round_trip(
    attr: Attr, xattrs: dict[str, bytes], keep: dict[str, str], content_type: str
) -> None:
    metadata = encode_metadata(attr, xattrs, keep=keep)
    warnings: list[str] = []
    decoded = decode_attr(
        "some/file", size=attr.size, content_type=content_type, last_modified_ns=LM,
        metadata=metadata, default_uid=DEF_UID, default_gid=DEF_GID, warn=warnings.append,
    )
    assert decoded == attr
    assert warnings == []
    assert decode_xattrs(metadata.get("xattr")) == xattrs
    superseded = {"permissions", "owner", "group", "goog-reserved-posix-mode",
                  "goog-reserved-posix-uid", "goog-reserved-posix-gid",
                  "goog-reserved-file-mtime"}
    foreign = {k: v for k, v in keep.items()
               if k.lower() not in S3FS_METADATA_KEYS | superseded}
    owned = {k: v for k, v in metadata.items() if k not in foreign}
    assert {k: metadata[k] for k in foreign} == foreign
    assert set(owned) <= S3FS_METADATA_KEYS
    assert all(v.isascii() for v in owned.values())


# --- metadata size ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "size"),
    [
        ({}, 0),
        ({"mode": "33188"}, 9),
        ({"mode": "33188", "uid": "0"}, 13),
        ({"caf\u00e9": "\u20ac"}, 8),  # counted in UTF-8 bytes, not characters
        ({"k": ""}, 1),
    ],
)
def test_metadata_size(metadata: dict[str, str], size: int) -> None:
    assert metadata_size(metadata) == size


def test_metadata_size_of_s3fs_190_file_and_the_limit() -> None:
    metadata = {**S3FS_TIMES, "gid": "5678", "mode": "33184", "uid": "1234",
                "xattr": XATTR_S3FS_190}
    assert metadata_size(metadata) == 3 * (5 + 10) + 7 + 9 + 7 + 5 + len(XATTR_S3FS_190)
    assert MAX_METADATA_BYTES == 2048
    # one xattr value big enough to pass the limit on its own
    big = encode_metadata(Attr(REG | 0o644, 0, 0, 0, 0, 0, 0), {"user.big": b"x" * 1500})
    assert metadata_size(big) > MAX_METADATA_BYTES
